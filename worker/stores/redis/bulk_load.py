"""Load a whole model version into a Redis namespace (retrain promotion, restore, rollback).

The namespace is written completely (vectors, id indices, seen-hashes, popularity counts,
Grams, checkpoints) *before* anything points at it; the pointer switch is a separate step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from online_als.factors import Factors, ModelArrays
from online_als.kernels.implicit_foldin import gram_inverse
from worker.stores.redis.keys import (
    FIELD_AUX,
    FIELD_BIAS,
    FIELD_COUNT,
    FIELD_FACTORS,
    FORMAT_VERSION,
    VECTOR_DTYPE,
)
from worker.stores.redis.script_batch import read_replies
from worker.stores.redis.store import RedisStore

PIPELINE_CHUNK = 2000


def delete_namespace(store: RedisStore, version: int) -> int:
    """Delete every key of a version (never call it on the current one)."""
    deleted = 0
    batch: list[bytes] = []
    for key in store.client.scan_iter(match=store.keys.version_pattern(version), count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += int(store.client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(store.client.unlink(*batch))
    return deleted


def _write_vectors(store: RedisStore, version: int, kind: str, side: Factors,
                   counts: np.ndarray | None) -> None:
    ids = side.id_list()
    keys = store.vector_keys(version, kind, ids)
    f = np.ascontiguousarray(side.vectors, dtype=VECTOR_DTYPE)
    b = np.ascontiguousarray(side.biases, dtype=VECTOR_DTYPE)
    stride = f.shape[1] * 4
    fb, bb = f.tobytes(), b.tobytes()
    a = None if side.aux is None else np.ascontiguousarray(side.aux, dtype=VECTOR_DTYPE)
    index = store.keys.user_index(version) if kind == "u" else store.keys.item_index(version)
    if not store.cluster:  # encoded here and streamed, as the seen-hashes (write_seen)
        _stream(store, (_vector_commands(keys, ids, fb, bb, stride, counts, index, start,
                                         min(start + PIPELINE_CHUNK, len(keys)), a)
                        for start in range(0, len(keys), PIPELINE_CHUNK)))
        return
    for start in range(0, len(keys), PIPELINE_CHUNK):
        stop = min(start + PIPELINE_CHUNK, len(keys))
        pipe = store.client.pipeline(transaction=False)
        for j in range(start, stop):
            mapping: dict[Any, Any] = {FIELD_FACTORS: fb[j * stride:(j + 1) * stride],
                                       FIELD_BIAS: bb[j * 4:(j + 1) * 4]}
            if counts is not None:
                mapping[FIELD_COUNT] = int(counts[j])
            if a is not None:
                mapping[FIELD_AUX] = a[j].tobytes()
            pipe.hset(keys[j], mapping=mapping)
        pipe.sadd(index, *ids[start:stop])
        pipe.execute()


def _vector_commands(keys: list[str], ids: list[str], fb: bytes, bb: bytes, stride: int,
                     counts: np.ndarray | None, index: str, start: int,
                     stop: int, aux: np.ndarray | None = None) -> tuple[bytes, int]:
    """``HSET key f <factors> b <bias> [n <count>] [a <aux>]`` per id (field names from
    worker.stores.redis.keys), then one SADD of the ids to the version's index: what the pipeline path
    sends, as RESP."""
    head = b"*%d\r\n$4\r\nHSET\r\n" % (6 + 2 * (counts is not None) + 2 * (aux is not None))
    atok = _token(FIELD_AUX.encode()) + b"$%d\r\n" % (4 * aux.shape[1]) if aux is not None else b""
    ftok = _token(FIELD_FACTORS.encode()) + b"$%d\r\n" % stride
    btok = b"\r\n" + _token(FIELD_BIAS.encode()) + b"$4\r\n"
    ntok = _token(FIELD_COUNT.encode())
    out = []
    for j in range(start, stop):
        out += [head, _token(keys[j].encode()), ftok, fb[j * stride:(j + 1) * stride], btok,
                bb[j * 4:(j + 1) * 4], b"\r\n"]
        if counts is not None:
            out += [ntok, _token(b"%d" % int(counts[j]))]
        if aux is not None:
            out += [atok, aux[j].tobytes(), b"\r\n"]
    out += [b"*%d\r\n$4\r\nSADD\r\n" % (2 + stop - start), _token(index.encode())]
    out += [_token(i.encode()) for i in ids[start:stop]]
    return b"".join(out), stop - start + 1


def write_seen(store: RedisStore, version: int, users: list[str], items: list[str],
               indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """Seen-hashes from a CSR user x item matrix (rows = ``users``, columns = ``items``).

    One HSET per user. On a single Redis the commands are encoded here (:func:`seen_commands`)
    and streamed on one connection, reading each chunk's replies only after the next chunk is
    sent, so Redis executes one chunk while this process encodes the next (a redis-py pipeline
    waits for every reply before it packs more; at ML-20M shape that wait was half the load).
    A cluster client keeps the pipeline, which routes each key to its node."""
    indptr, indices = np.asarray(indptr, np.int64), np.asarray(indices, np.int64)
    if store.cluster:
        _write_seen_pipeline(store, version, users, items, indptr, indices, values)
        return
    tables = _seen_tables(items, values)
    _stream(store, (seen_commands(store, version, users, indptr, indices, tables, start,
                                  min(start + PIPELINE_CHUNK, len(users)))
                    for start in range(0, len(users), PIPELINE_CHUNK)))


def _stream(store: RedisStore, chunks: Iterable[tuple[bytes, int]]) -> None:
    """Send each chunk of RESP commands on one connection and read its replies after the next
    chunk is sent (Redis executes one chunk while the next is encoded). An error reply is
    raised once every reply is read; any other failure drops the connection."""
    pool = store.client.connection_pool
    conn = pool.get_connection()
    pending, error = 0, None
    try:
        for buf, n in chunks:
            if n:
                conn.send_packed_command([buf], check_health=False)
            error = _read_replies(conn, pending) or error
            pending = n
        error = _read_replies(conn, pending) or error
    except BaseException:
        conn.disconnect()  # replies may be left unread: never hand this stream back as is
        raise
    finally:
        pool.release(conn)
    if error is not None:
        raise error


def _read_replies(conn: Any, n: int) -> Exception | None:
    """Read ``n`` replies; the first error reply is returned after all are read (in sync)."""
    return next((r for r in read_replies(conn, n) if isinstance(r, Exception)), None)


def _token(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def _seen_tables(items: list[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item id and each *distinct* value as a RESP bulk string (implicit sums and explicit
    ratings take few values, so formatting every value was most of the encoding cost), and
    each value's row in the value table."""
    uniq, inv = np.unique(values.astype(np.float64), return_inverse=True)
    item_tok = np.array([_token(i.encode()) for i in items] or [b""], dtype=object)
    val_tok = np.array([_token(v.encode()) for v in np.char.mod("%.9g", uniq).tolist()] or [b""],
                       dtype=object)
    return item_tok, val_tok, inv.astype(np.int64).ravel()


def seen_commands(store: RedisStore, version: int, users: list[str], indptr: np.ndarray,
                  indices: np.ndarray, tables: tuple[np.ndarray, np.ndarray, np.ndarray],
                  start: int, stop: int) -> tuple[bytes, int]:
    """The RESP bytes of ``HSET seen(user) item value ...`` for rows ``start:stop`` with any
    fields (what redis-py would send, field order kept), and how many commands they hold."""
    item_tok, val_tok, inv = tables
    counts = np.diff(indptr[start:stop + 1])
    rows = np.flatnonzero(counts)
    if not rows.size:
        return b"", 0
    s0, s1 = int(indptr[start]), int(indptr[stop])
    heads = [b"*%d\r\n$4\r\nHSET\r\n%s" % (2 + 2 * int(counts[r]),
                                              _token(store.keys.seen(version, users[start + r])
                                                     .encode())) for r in rows.tolist()]
    parts = np.empty(2 * (s1 - s0) + len(rows), dtype=object)
    at = 2 * (indptr[start + rows] - s0) + np.arange(len(rows))  # each head before its fields
    body = np.ones(len(parts), dtype=bool)
    body[at] = False
    fields = np.empty(2 * (s1 - s0), dtype=object)
    fields[0::2] = item_tok[indices[s0:s1]]
    fields[1::2] = val_tok[inv[s0:s1]]
    parts[body] = fields
    parts[at] = heads
    return b"".join(parts.tolist()), len(rows)


def _write_seen_pipeline(store: RedisStore, version: int, users: list[str], items: list[str],
                         indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    item_arr = np.asarray(items, dtype=object)
    vals = np.char.mod("%.9g", values.astype(np.float64)).astype(object)
    pipe = store.client.pipeline(transaction=False)
    queued = 0
    for row, uid in enumerate(users):
        s, e = int(indptr[row]), int(indptr[row + 1])
        if e == s:
            continue
        flat = np.empty(2 * (e - s), dtype=object)
        flat[0::2] = item_arr[indices[s:e]]
        flat[1::2] = vals[s:e]
        pipe.hset(store.keys.seen(version, uid), items=flat.tolist())
        queued += 1
        if queued >= PIPELINE_CHUNK:
            pipe.execute()
            pipe = store.client.pipeline(transaction=False)
            queued = 0
    pipe.execute()


def load_version(store: RedisStore, version: int, model: ModelArrays, *,
                 item_counts: np.ndarray | None = None, checkpoints: dict[int, int] | None = None,
                 topic: str = "", implicit_reg: float = 0.05, source: str = "",
                 extra_meta: dict[str, Any] | None = None,
                 seen: tuple[Iterable[Any], ...] | None = None) -> float:
    """Write ``model`` into namespace ``version`` (replacing any partial one). Returns seconds.

    ``seen`` is ``(indptr, indices, values)`` of the user x item history matrix whose rows and
    columns follow ``model.users.ids``/``model.items.ids``.
    """
    t0 = time.perf_counter()
    delete_namespace(store, version)
    store.write_meta(version, {
        "format": FORMAT_VERSION, "mode": model.mode, "rank": model.rank,
        "global_mean": float(model.global_mean), "status": "loading", "created_at": time.time(),
        "source": source, **(extra_meta or {}),
    })
    _write_vectors(store, version, "u", model.users, None)
    _write_vectors(store, version, "i", model.items, item_counts)
    if seen is not None:
        indptr, indices, values = (np.asarray(a) for a in seen)
        write_seen(store, version, model.users.id_list(), model.items.id_list(), indptr, indices,
                   values)
    if model.mode == "implicit":
        store.write_grams(version, gram_inverse(model.items.vectors, implicit_reg),
                          gram_inverse(model.users.vectors, implicit_reg))
    if checkpoints:
        store.set_checkpoints(version, topic, checkpoints)
    store.write_meta(version, {"status": "ready"})
    return time.perf_counter() - t0

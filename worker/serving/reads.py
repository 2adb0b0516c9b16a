"""The serving client's Redis reads: a user's vector, bias and seen items (one round trip on
the calling thread's own connection), several users in one pipeline, and the vectors and event
counts of every item (one Lua call per 2,000 keys). Keys and field names come from
``worker/stores/redis/keys.py``.

Every read here is a read command or a read-only script run by ``EVAL_RO`` (flagged
``no-writes``), never ``EVALSHA``: a serving role whose ACL allows only reads
(``-@all +@read +@connection +eval_ro``, see ``docs/operations.md``, Roles) serves, and Redis
itself refuses a write from it, inside a script too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import redis

from worker.serving.cache import (
    UserRecord,
    VersionCache,
)
from worker.stores.redis.keys import (
    FIELD_BIAS,
    FIELD_COUNT,
    FIELD_FACTORS,
    VECTOR_DTYPE,
)
from worker.stores.redis.store import RedisStore

_Pack: TypeAlias = Callable[[tuple[str, ...]], bytes]
_pack_command: _Pack | None
try:  # redis[hiredis] is a dependency; without it redis-py packs the commands
    import hiredis

    _pack_command = hiredis.pack_command  # type: ignore[assignment]  # its stub takes 1-tuples
except ImportError:  # pragma: no cover - hiredis missing
    _pack_command = None


F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_COUNT_CHUNK = 2000  # keys per read script call / pipeline (bounds how long Redis blocks)
# Counts of many items in one call: ~10x faster than 26k pipelined HGETs parsed in Python.
_COUNTS_LUA = """#!lua flags=no-writes
local out = {}
for j = 1, #KEYS do out[j] = redis.call('HGET', KEYS[j], ARGV[1]) or '0' end
return table.concat(out, ',')
"""
# Factors and bias of many keys: {factors blob, biases blob, flags}, flags[j] '1' present (its
# factors field has the width ARGV[1]), '0' missing (zeros); a missing bias reads as zero.
# The serving side of the worker's read_vectors.lua, without the recovery of pending batches.
_VECTORS_LUA = """#!lua flags=no-writes
local fw = tonumber(ARGV[1])
local zf, zb = string.rep('\\0', fw), string.rep('\\0', 4)
local f, b, flags = {}, {}, {}
for j = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[j], ARGV[2], ARGV[3])
  if v[1] and #v[1] == fw then
    f[j], flags[j] = v[1], '1'
    if v[2] and #v[2] == 4 then b[j] = v[2] else b[j] = zb end
  else
    f[j], b[j], flags[j] = zf, zb, '0'
  end
end
return {table.concat(f), table.concat(b), table.concat(flags)}
"""


class Vectors(NamedTuple):
    """Factors (n, rank), biases (n,) and which keys exist (n,) of the keys read."""

    factors: F32
    biases: F32
    present: npt.NDArray[np.bool_]


class RedisReads:
    """Reads of one key space; safe to share between threads (each gets its own connection
    for the single-user read)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.client: Any = store.client
        self.keys = store.keys
        self._local = threading.local()  # each thread's own connection for the user read

    def read_vectors(self, keys: list[str], rank: int) -> Vectors:
        """Factors and biases of ``keys`` (zeros where missing): the read-only script per
        2,000 keys in one pipeline; on a cluster (keys span slots) pipelined ``HMGET``s, routed
        per key."""
        n = len(keys)
        factors = np.zeros((n, rank), dtype=np.float32)
        biases = np.zeros(n, dtype=np.float32)
        present = np.zeros(n, dtype=bool)
        pipe = self.client.pipeline(transaction=False)
        if self.store.cluster:
            for key in keys:
                pipe.hmget(key, [FIELD_FACTORS, FIELD_BIAS])
            for j, (f, b) in enumerate(pipe.execute()):
                if f is not None and len(f) == 4 * rank:
                    factors[j] = np.frombuffer(f, dtype=VECTOR_DTYPE)
                    present[j] = True
                    if b is not None and len(b) == 4:
                        biases[j] = np.frombuffer(b, dtype=VECTOR_DTYPE)[0]
            return Vectors(factors, biases, present)
        starts = range(0, n, _COUNT_CHUNK)
        for s in starts:
            chunk = keys[s:s + _COUNT_CHUNK]
            pipe.execute_command("EVAL_RO", _VECTORS_LUA, len(chunk), *chunk, 4 * rank,
                                 FIELD_FACTORS, FIELD_BIAS)
        for s, (f, b, flags) in zip(starts, pipe.execute(), strict=True):
            m = min(_COUNT_CHUNK, n - s)
            factors[s:s + m] = np.frombuffer(f, dtype=VECTOR_DTYPE).reshape(m, rank)
            biases[s:s + m] = np.frombuffer(b, dtype=VECTOR_DTYPE)
            present[s:s + m] = np.frombuffer(flags, dtype=np.uint8) == ord("1")
        return Vectors(factors, biases, present)

    def read_counts(self, version: int, ids: list[str]) -> I64:
        keys = self.store.vector_keys(version, "i", ids)
        chunks = [(s, keys[s:s + _COUNT_CHUNK]) for s in range(0, len(keys), _COUNT_CHUNK)]
        out = np.zeros(len(ids), dtype=np.int64)
        pipe = self.client.pipeline(transaction=False)
        if self.store.cluster:  # keys of a chunk span hash slots: plain HGETs, routed per key
            for key in keys:
                pipe.hget(key, FIELD_COUNT)
            out[:] = [int(v) if v is not None else 0 for v in pipe.execute()]
            return out
        for _, chunk in chunks:
            pipe.execute_command("EVAL_RO", _COUNTS_LUA, len(chunk), *chunk, FIELD_COUNT)
        for (s, chunk), joined in zip(chunks, pipe.execute(), strict=True):
            out[s:s + len(chunk)] = np.array(joined.split(b","), dtype=np.int64)
        return out

    # -- users ---------------------------------------------------------------------------
    def _decode_user(self, cache: VersionCache, fb: Sequence[bytes | None],
                     seen: Mapping[bytes, bytes] | None) -> UserRecord:
        f, b = fb
        vec = None
        if f is not None and len(f) == 4 * cache.rank:
            vec = np.frombuffer(f, dtype=VECTOR_DTYPE).astype(np.float32)
        bias = float(np.frombuffer(b, dtype=VECTOR_DTYPE)[0]) if b is not None and len(b) == 4 else 0.0
        return UserRecord(vec, bias, seen or {})

    def read_users(self, cache: VersionCache, user_ids: Sequence[str],
                   with_seen: bool = True) -> list[UserRecord]:
        """Users of ``cache``'s version in one pipeline (one round trip per hash slot)."""
        pipe = self.client.pipeline(transaction=False)
        v = cache.version
        for uid in user_ids:
            pipe.hmget(self.keys.user(v, uid), [FIELD_FACTORS, FIELD_BIAS])
            if with_seen:
                pipe.hgetall(self.keys.seen(v, uid))
        res = pipe.execute()
        step = 2 if with_seen else 1
        return [self._decode_user(cache, res[j * step], res[j * step + 1] if with_seen else None)
                for j in range(len(user_ids))]

    def read_user(self, cache: VersionCache, user_id: str, with_seen: bool = True) -> UserRecord:
        return self.read_users(cache, [user_id], with_seen)[0]

    def _own_connection(self) -> redis.Connection | None:
        """This thread's connection for the user read (same settings as the client's pool), or
        None for a cluster or a client without a plain connection pool (then: pipelines)."""
        conn: redis.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        pool = getattr(self.client, "connection_pool", None)
        if self.store.cluster or not isinstance(pool, redis.ConnectionPool):
            return None
        # not taken from the pool: get/release cost ~30 µs per call (a poll, bookkeeping)
        conn = pool.connection_class(**pool.connection_kwargs)
        self._local.conn, self._local.pid = conn, os.getpid()  # a forked child makes its own
        return conn

    def read_user_seen_rows(self, cache: VersionCache, user_id: str) -> tuple[UserRecord, I64]:
        """The user's vector and bias, and the rows of their seen items, in one round trip
        (``HMGET f b`` + ``HKEYS``: only the ids are needed to exclude them)."""
        conn = self._own_connection()
        if conn is not None:
            v = cache.version
            cmds = (("HMGET", self.keys.user(v, user_id), FIELD_FACTORS, FIELD_BIAS),
                    ("HKEYS", self.keys.seen(v, user_id)))
            try:
                pack = _pack_command
                conn.send_packed_command(
                    [pack(cmds[0]) + pack(cmds[1])] if pack is not None
                    else conn.pack_commands(cmds), check_health=False)
                fb = conn.read_response(disable_decoding=True)
                ids = conn.read_response(disable_decoding=True)
            except (redis.ConnectionError, redis.TimeoutError):
                conn.disconnect()  # reconnects on next use; this call goes through the client's
                # own pipeline, with its retry policy
            except BaseException:
                conn.disconnect()  # a reply may be left unread: never reuse the socket as is
                raise
            else:
                return self._decode_user(cache, fb, None), cache.rows_of(ids)
        user = self.read_user(cache, user_id, with_seen=True)
        return user, cache.seen_rows(user)

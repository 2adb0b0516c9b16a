"""The factor store in Redis: batched reads/writes of vectors, checkpoints, versions.

Keys come from :mod:`worker.stores.redis.keys` (spec: ``docs/redis-keys.md``). Every vector write is
idempotent on its own (a per-key record of the last batch end offset per partition), so the
design holds on a Redis Cluster, where the client groups keys by hash slot.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import msgpack
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from online_als.factors import Factors
from worker.config import RedisSettings
from worker.stores.redis.batch_args import PartitionTags, SeenUpdates, parse_spec
from worker.stores.redis.keys import (
    FIELD_BATCH,
    FIELD_BEFORE_PREFIX,
    FIELD_BIAS,
    FIELD_COUNT,
    FIELD_FACTORS,
    FIELD_OFFSET_PREFIX,
    GRAM_DTYPE,
    READABLE_FORMATS,
    VECTOR_DTYPE,
    RedisKeys,
)
from worker.stores.redis.script_batch import ScriptBatch

_FIELD_NAMES = [FIELD_OFFSET_PREFIX, FIELD_BEFORE_PREFIX, FIELD_BATCH, FIELD_COUNT]
MAX_KEYS_PER_CALL = 64  # default bound on how long one script blocks Redis (~0.7 ms at k=64)


_CAS_CURRENT = """
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def _script(name: str) -> str:
    return resources.files("worker.stores.redis").joinpath("lua", name).read_text()


@dataclass(frozen=True)
class VersionMeta:
    version: int
    mode: str
    rank: int
    global_mean: float
    status: str
    gram_serial: int
    extra: dict[str, str]


@dataclass(frozen=True)
class Checkpoint:
    offset: int | None  # next offset to consume; None when the partition was never applied
    pending_end: int | None  # end offset of a batch whose writes may be partial
    pending_batch: str | None

    @property
    def has_pending(self) -> bool:
        return (
            self.pending_end is not None
            and (self.offset is None or self.pending_end >= self.offset)
        )


@dataclass
class VectorBlock:
    """Vectors of a set of ids read in one call."""

    factors: np.ndarray  # float32 (n, k), a writable copy
    biases: np.ndarray  # float32 (n,)
    present: np.ndarray  # bool (n,)
    from_before_image: np.ndarray  # bool (n,): format 1 keys read from their before-images
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # further state fields (n, w)
    written: np.ndarray | None = None  # bool (n,): written by the batch being recovered


def connect(settings: RedisSettings, retries: int | None = None) -> redis.Redis:
    """A client for the configured Redis (a cluster client when ``cluster`` is set), with
    TLS and an ACL user when configured (``redis.tls*``, ``redis.username``).

    ``retries`` (an int) replaces redis-py's own retries of a failed call: the worker passes
    0, since its :class:`worker.runtime.redis_retry.RedisRetry` retries, logs the stall once
    and its recovery once; redis-py's default (3 silent retries with backoff) turned a 5 s
    socket timeout into about 20 s of silence. None keeps redis-py's default (serving)."""
    password = settings.password.get_secret_value() if settings.password else None
    common: dict[str, Any] = {"username": settings.username, "password": password}
    if retries is not None:
        common["retry"] = Retry(NoBackoff(), retries)
    if settings.tls:
        common.update(ssl=True, ssl_ca_certs=settings.tls_ca_file,
                      ssl_certfile=settings.tls_cert_file, ssl_keyfile=settings.tls_key_file,
                      ssl_check_hostname=settings.tls_check_hostname,
                      ssl_cert_reqs="required")
    if settings.cluster:
        return redis.RedisCluster(  # type: ignore[return-value]
            host=settings.host, port=settings.port, socket_timeout=settings.socket_timeout_s,
            **common,
        )
    return redis.Redis(
        host=settings.host, port=settings.port, db=settings.db,
        socket_timeout=settings.socket_timeout_s, socket_connect_timeout=settings.socket_timeout_s,
        **common,
    )


class RedisStore:
    """Batched access to one online-als key space."""

    @classmethod
    def from_settings(cls, settings: RedisSettings, retries: int | None = None) -> RedisStore:
        """The store for ``settings`` (client, key prefix and cluster mode all from there);
        ``retries`` as in :func:`connect`."""
        return cls(connect(settings, retries), RedisKeys(settings.key_prefix), cluster=settings.cluster,
                   max_keys_per_call=settings.max_keys_per_script)

    def __init__(self, client: redis.Redis, keys: RedisKeys, cluster: bool = False,
                 max_keys_per_call: int = MAX_KEYS_PER_CALL) -> None:
        self.client = client
        self.keys = keys
        self.cluster = cluster
        self.max_keys = max_keys_per_call
        self._read = client.register_script(_script("read_vectors.lua"))
        self._write = client.register_script(_script("write_vectors.lua"))
        self._cas = client.register_script(_CAS_CURRENT)
        self._ckpt = client.register_script(_script("checkpoint.lua"))
        self._pool: ThreadPoolExecutor | None = None

    # -- versions -----------------------------------------------------------------------
    def current_version(self) -> int | None:
        value = self.client.get(self.keys.current())
        return int(value) if value is not None else None

    def allocate_version(self, floor: int = 0) -> int:
        """A new version number: the counter, first raised to ``floor`` (the highest version
        the caller knows elsewhere, e.g. in Cassandra), plus one, in one atomic script. So a
        counter that went back in time (Redis restarted from an old RDB, a promoted replica)
        never hands out a number that is already taken."""
        script = ("local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
                  "local f = tonumber(ARGV[1]) "
                  "if c < f then redis.call('SET', KEYS[1], f) end "
                  "return redis.call('INCR', KEYS[1])")
        return int(self.client.eval(script, 1, self.keys.version_counter(), int(floor)))

    def write_meta(self, version: int, fields: dict[str, Any]) -> None:
        encoded = {k: (v if isinstance(v, bytes | str) else json.dumps(v)) for k, v in fields.items()}
        self.client.hset(self.keys.meta(version), mapping=encoded)  # type: ignore[arg-type]

    def read_meta(self, version: int) -> VersionMeta | None:
        raw: Any = self.client.hgetall(self.keys.meta(version))
        if not raw:
            return None
        meta = {k.decode(): v for k, v in raw.items()}
        fmt = int(meta.get("format", b"0"))
        if fmt not in READABLE_FORMATS:
            raise RuntimeError(
                f"Redis version {version} has key format {fmt}, this code reads "
                f"{', '.join(map(str, READABLE_FORMATS))}; "
                "restore it with `online-als restore` or use a matching online-als release"
            )
        extra = {k: v.decode(errors="replace") for k, v in meta.items() if not k.startswith("gram_")}
        return VersionMeta(
            version=version,
            mode=meta["mode"].decode(),
            rank=int(meta["rank"]),
            global_mean=float(meta.get("global_mean", b"0")),
            status=meta.get("status", b"").decode(),
            gram_serial=int(meta.get("gram_serial", b"0")),
            extra=extra,
        )

    def read_grams(self, version: int, rank: int) -> tuple[np.ndarray, np.ndarray] | None:
        raw: Any = self.client.hmget(self.keys.meta(version), ["gram_items_inv", "gram_users_inv"])
        gy, gx = raw
        if gy is None or gx is None:
            return None
        shape = (rank, rank)
        return (
            np.frombuffer(gy, dtype=GRAM_DTYPE).reshape(shape).astype(np.float64),
            np.frombuffer(gx, dtype=GRAM_DTYPE).reshape(shape).astype(np.float64),
        )

    def write_grams(self, version: int, gy_inv: np.ndarray, gx_inv: np.ndarray) -> None:
        key = self.keys.meta(version)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={
            "gram_items_inv": np.ascontiguousarray(gy_inv, dtype=GRAM_DTYPE).tobytes(),
            "gram_users_inv": np.ascontiguousarray(gx_inv, dtype=GRAM_DTYPE).tobytes(),
        })
        pipe.hincrby(key, "gram_serial", 1)
        pipe.execute()

    def compare_and_switch(self, expected: int | None, version: int, reason: str,
                           actor: str = "") -> bool:
        """Point serving at ``version`` only if it still points at ``expected`` (None: at
        nothing); log the switch. Only :mod:`worker.control.lifecycle` calls this."""
        ok = bool(self._cas(keys=[self.keys.current()],
                            args=["" if expected is None else str(expected), str(version)]))
        if ok:
            record = json.dumps({"to": version, "from": expected, "reason": reason,
                                 "actor": actor, "at": time.time()})
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.keys.switch_log(), record)
            pipe.ltrim(self.keys.switch_log(), 0, 999)
            pipe.execute()
        return ok

    def node_identities(self) -> dict[str, str]:
        """``host:port`` -> ``run_id`` of every master: a run_id changes when the process
        restarts and when a replica takes over (see :mod:`worker.runtime.cluster_nodes`)."""
        if not self.cluster:
            info: Any = self.client.info("server")
            return {"standalone": str(info["run_id"])}
        out: dict[str, str] = {}
        for node in self.client.get_primaries():  # type: ignore[attr-defined]
            info = self.client.info("server", target_nodes=node)  # type: ignore[call-arg]
            out[f"{node.host}:{node.port}"] = str(info["run_id"])
        return out

    def last_switch(self) -> dict[str, Any] | None:
        """The newest record of the switch log (``to``, ``from``, ``reason``, ``actor``,
        ``at``), or None."""
        raw: Any = self.client.lindex(self.keys.switch_log(), 0)
        return json.loads(raw) if raw is not None else None

    def probe(self, version: int) -> tuple[int | None, bool, str | None]:
        """(current version, meta of ``version`` exists, generation token) in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.current())
        pipe.exists(self.keys.meta(version))
        pipe.get(self.keys.generation())
        current, exists, gen = pipe.execute()
        return (int(current) if current is not None else None, bool(exists),
                gen.decode() if gen is not None else None)

    def generation(self) -> str | None:
        value: Any = self.client.get(self.keys.generation())
        return value.decode() if value is not None else None

    # -- vectors -------------------------------------------------------------------------
    def vector_keys(self, version: int, kind: str, ids: list[str]) -> list[str]:
        build = self.keys.user if kind == "u" else self.keys.item
        return [build(version, i) for i in ids]

    def _groups(self, keys: list[str]) -> list[np.ndarray]:
        """Index groups of at most ``max_keys`` keys, one hash slot each on a cluster."""
        n, m = len(keys), self.max_keys
        if not self.cluster:
            return [np.arange(s, min(s + m, n)) for s in range(0, n, m)]
        slots = np.fromiter((key_slot(k.encode()) for k in keys), dtype=np.int64, count=n)
        order = np.argsort(slots, kind="stable")
        bounds = np.flatnonzero(np.diff(slots[order])) + 1
        return [g[s:s + m] for g in np.split(order, bounds) for s in range(0, len(g), m)]

    def read_vectors(self, keys: list[str], rank: int, recovery: str = "",
                     extra: dict[str, int] | None = None,
                     written_by: dict[int, int] | None = None) -> VectorBlock:
        """The factors and biases of ``keys`` (zeros where missing) in bounded script calls;
        ``extra`` names further float32 state fields and their widths in floats. With
        ``recovery`` (a batch id) keys that batch wrote are read from their before-images."""
        n = len(keys)
        fields = [(FIELD_FACTORS, rank), (FIELD_BIAS, 1), *(extra or {}).items()]
        arrays = [np.zeros((n, w), dtype=np.float32) for _, w in fields]
        flags = np.zeros(n, dtype=np.uint8)
        if n:
            spec = [x for name, w in fields for x in (name, 4 * w)]
            groups = self._groups(keys)
            ends = ",".join(f"{p},{e}" for p, e in sorted((written_by or {}).items()))
            head = [recovery, FIELD_BATCH, FIELD_BEFORE_PREFIX, ends, FIELD_OFFSET_PREFIX]
            calls = [([keys[i] for i in g], [*head, *spec]) for g in groups]
            for g, res in zip(groups, self._run_scripts(self._read, calls), strict=True):
                for a, blob, (_, w) in zip(arrays, res, fields, strict=False):
                    a[g] = np.frombuffer(blob, dtype=VECTOR_DTYPE).reshape(len(g), w)
                flags[g] = np.frombuffer(res[-1], dtype=np.uint8)
        return VectorBlock(arrays[0], arrays[1][:, 0].copy(), flags != ord("0"), flags == ord("r"),
                           {name: a for (name, _), a in zip(fields[2:], arrays[2:], strict=True)},
                           flags == ord("w"))

    def write_vectors(
        self,
        keys: list[str],
        parts_spec: str,
        expected_f: np.ndarray,
        new_f: np.ndarray,
        expected_b: np.ndarray,
        new_b: np.ndarray,
        tags: PartitionTags | None = None,
        counts: np.ndarray | None = None,
        seen: SeenUpdates | None = None,
        pipe: ScriptBatch | None = None,
        batch_id: str = "",
        extra: list[tuple[str, np.ndarray, np.ndarray]] | None = None,
    ) -> Any:
        """Queue the idempotent write of a batch's vectors on ``pipe`` (or run them now).

        ``tags`` lists, per key, the partitions whose events touched it in the batch: the key
        records the batch's end offset for each of them (``o:<p>``), so a batch recovered
        partition by partition is applied once per (key, partition); one before-image per key
        and field (``bf``/``bb``/..., of batch ``bid``) serves the recovery read. ``extra``
        adds state fields as (name, expected (n, w), new (n, w)) float32 arrays.
        """
        own = pipe is None
        batch = pipe if pipe is not None else self.batch()
        n = len(keys)
        states = [(FIELD_FACTORS, expected_f, new_f),
                  (FIELD_BIAS, np.reshape(expected_b, (n, 1)), np.reshape(new_b, (n, 1))),
                  *(extra or [])]
        names = [name for name, _, _ in states]
        blobs = [(np.ascontiguousarray(e, dtype=VECTOR_DTYPE).reshape(n, -1),
                  np.ascontiguousarray(v, dtype=VECTOR_DTYPE).reshape(n, -1)) for _, e, v in states]
        widths = [4 * e.shape[1] for e, _ in blobs]
        ends_flat = [int(x) for pair in parse_spec(parts_spec) for x in pair]
        cnt = counts if counts is not None else np.zeros(n, dtype=np.int64)
        tags = tags if tags is not None else PartitionTags.none(n)
        calls: list[tuple[list[str], list[Any]]] = []
        for g in self._groups(keys):
            seen_keys, seen_index, seen_pairs = (seen.for_group(g) if seen is not None
                                                 else ([], [], []))
            tag_flat, tag_starts = tags.for_group(g)
            header = msgpack.packb([
                len(g), names, widths, ends_flat, tag_flat, tag_starts,
                cnt[g].tolist() if counts is not None else [],
                seen.mode if seen is not None else "set", seen_index, seen_pairs, batch_id,
                _FIELD_NAMES,
            ])
            args: list[Any] = [header]
            for e, v in blobs:
                args += [e[g].tobytes(), v[g].tobytes()]
            calls.append(([keys[i] for i in g] + seen_keys, args))
        for call_keys, call_args in calls:
            batch.script(self._write, call_keys, call_args)
        return batch.execute() if own else batch

    def batch(self) -> ScriptBatch:
        """An empty :class:`worker.stores.redis.script_batch.ScriptBatch` on this store's client."""
        if self.cluster and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="redis-slot")
        return ScriptBatch(self.client, self.cluster, self._pool)

    def _run_scripts(self, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script calls in one batch (one send on a standalone Redis, concurrently per
        slot on a cluster)."""
        batch = self.batch()
        for call_keys, call_args in calls:
            batch.script(script, call_keys, call_args)
        return batch.execute()

    def add_to_index(self, version: int, kind: str, ids: list[str], batch: Any) -> None:
        """Queue SADDs of ``ids`` to a version's id set on ``batch`` (a ScriptBatch or a
        redis-py pipeline), in bounded chunks like the scripts."""
        key = self.keys.user_index(version) if kind == "u" else self.keys.item_index(version)
        for start in range(0, len(ids), self.max_keys):
            batch.sadd(key, *ids[start:start + self.max_keys])

    # -- checkpoints ---------------------------------------------------------------------
    def read_checkpoints(self, version: int, topic: str, partitions: list[int]) -> dict[int, Checkpoint]:
        pipe = self.client.pipeline(transaction=False)
        for p in partitions:
            pipe.hmget(self.keys.checkpoint(version, topic, p), ["offset", "pending_end", "pending_batch"])
        out: dict[int, Checkpoint] = {}
        for p, (off, pend, batch) in zip(partitions, pipe.execute(), strict=True):
            out[p] = Checkpoint(
                offset=int(off) if off is not None else None,
                pending_end=int(pend) if pend is not None else None,
                pending_batch=batch.decode() if batch is not None else None,
            )
        return out

    def read_pending_before(self, version: int, topic: str, partitions: list[int],
                            batch_id: str) -> dict[int, bytes]:
        """The before-state blobs of a pending batch in ``partitions`` (absent ones left out)."""
        pipe = self.client.pipeline(transaction=False)
        for p in partitions:
            pipe.get(self.keys.pending_before(version, topic, p, batch_id))
        return {p: blob for p, blob in zip(partitions, pipe.execute(), strict=True) if blob}

    def queue_pending_before(self, batch: ScriptBatch, version: int, topic: str, batch_id: str,
                             blobs: dict[int, bytes], ttl_s: int) -> None:
        """Queue the SETs of a batch's before-state blobs (plain commands: a big argument is
        not copied into Lua)."""
        for p, blob in blobs.items():
            key = self.keys.pending_before(version, topic, p, batch_id)
            batch.command(key, "SET", key, blob, "EX", ttl_s)
            index = self.keys.pending_befores(version, topic, p)
            batch.command(index, "SADD", index, batch_id)

    def queue_drop_pending_before(self, batch: ScriptBatch, version: int, topic: str,
                                  blobs: list[tuple[int, str]]) -> None:
        """Queue the deletion of the (partition, batch id) before-state blobs."""
        for p, batch_id in blobs:
            key = self.keys.pending_before(version, topic, p, batch_id)
            batch.command(key, "DEL", key)
            index = self.keys.pending_befores(version, topic, p)
            batch.command(index, "SREM", index, batch_id)

    def stale_pending_before(self, version: int, topic: str, partitions: list[int],
                             keep: dict[int, str | None]) -> list[tuple[int, str]]:
        """The (partition, batch id) blobs of ``partitions`` other than the pending batch's
        (``keep``): what crashed owners left behind."""
        pipe = self.client.pipeline(transaction=False)
        for p in partitions:
            pipe.smembers(self.keys.pending_befores(version, topic, p))
        return [(p, m.decode()) for p, members in zip(partitions, pipe.execute(), strict=True)
                for m in members if m.decode() != keep.get(p)]

    def checkpoint_step(self, version: int, topic: str, step: str, token: str | dict[int, str],
                        args: dict[int, list[Any]]) -> dict[int, int]:
        """Run one fenced step of ``worker/stores/redis/lua/checkpoint.lua`` ('own' | 'intent' | 'commit')
        on each partition's checkpoint, all in one pipeline; ``token`` is the caller's owner
        token, or one per partition. Returns partition -> 1 done, 0 refused (another owner),
        2 already there. Only :class:`worker.runtime.commit.CommitProtocol` calls this."""
        batch = self.batch()
        parts = self.queue_checkpoint_step(batch, version, topic, step, token, args)
        return {p: int(r) for p, r in zip(parts, batch.execute(), strict=True)}

    def queue_checkpoint_step(self, batch: ScriptBatch, version: int, topic: str, step: str,
                              token: str | dict[int, str], args: dict[int, list[Any]]) -> list[int]:
        """Queue :meth:`checkpoint_step` on ``batch``; returns the partitions in reply order."""
        parts = sorted(args)
        tokens = token if isinstance(token, dict) else dict.fromkeys(parts, token)
        for p in parts:
            batch.script(self._ckpt, [self.keys.checkpoint(version, topic, p)],
                         [step, tokens.get(p, ""), *args[p]])
        return parts

    def set_checkpoints(self, version: int, topic: str, offsets: dict[int, int]) -> None:
        """Set next-offset checkpoints directly (bulk load of a snapshot with its cutoff)."""
        pipe = self.client.pipeline(transaction=False)
        for p, off in offsets.items():
            key = self.keys.checkpoint(version, topic, p)
            pipe.hset(key, mapping={"offset": off, "updated_at": time.time()})
            pipe.hdel(key, "pending_end", "pending_batch")
        pipe.execute()

    def heartbeat(self, worker_name: str, ttl_s: int, info: dict[str, Any]) -> None:
        self.client.set(self.keys.heartbeat(worker_name), json.dumps(info), ex=ttl_s)


def dump_vectors(store: RedisStore, version: int, kind: str, rank: int) -> Factors:
    """Every vector of one kind ('u' or 'i') in a version, ids sorted (tests, warm starts)."""
    index = store.keys.user_index(version) if kind == "u" else store.keys.item_index(version)
    ids = sorted(m.decode() for m in store.client.smembers(index))  # type: ignore[union-attr]
    block = store.read_vectors(store.vector_keys(version, kind, ids), rank)
    return Factors(ids, block.factors, block.biases)

"""Load a whole model version into a Redis namespace (retrain promotion, restore, rollback).

The namespace is written completely (vectors, id indices, seen-hashes, popularity counts,
Grams, checkpoints) *before* anything points at it; the pointer switch is a separate step.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_als.kernels.implicit_foldin import gram_inverse
from worker.keys import FORMAT_VERSION, VECTOR_DTYPE
from worker.redis_store import RedisStore

PIPELINE_CHUNK = 2000


@dataclass(frozen=True)
class ModelArrays:
    """A model version as plain arrays (what Cassandra snapshots and retrains produce)."""

    mode: str
    rank: int
    global_mean: float
    user_ids: list[str]
    user_factors: np.ndarray
    user_bias: np.ndarray
    item_ids: list[str]
    item_factors: np.ndarray
    item_bias: np.ndarray


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


def _write_vectors(store: RedisStore, version: int, kind: str, ids: list[str],
                   factors: np.ndarray, biases: np.ndarray, counts: np.ndarray | None) -> None:
    keys = store.vector_keys(version, kind, ids)
    f = np.ascontiguousarray(factors, dtype=VECTOR_DTYPE)
    b = np.ascontiguousarray(biases, dtype=VECTOR_DTYPE)
    stride = f.shape[1] * 4
    fb, bb = f.tobytes(), b.tobytes()
    index = store.keys.user_index(version) if kind == "u" else store.keys.item_index(version)
    for start in range(0, len(keys), PIPELINE_CHUNK):
        stop = min(start + PIPELINE_CHUNK, len(keys))
        pipe = store.client.pipeline(transaction=False)
        for j in range(start, stop):
            mapping: dict[Any, Any] = {"f": fb[j * stride:(j + 1) * stride], "b": bb[j * 4:(j + 1) * 4]}
            if counts is not None:
                mapping["n"] = int(counts[j])
            pipe.hset(keys[j], mapping=mapping)
        pipe.sadd(index, *ids[start:stop])
        pipe.execute()


def write_seen(store: RedisStore, version: int, users: list[str], items: list[str],
               indptr: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """Seen-hashes from a CSR user x item matrix (rows = ``users``, columns = ``items``)."""
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
    columns follow ``model.user_ids``/``model.item_ids``.
    """
    t0 = time.perf_counter()
    delete_namespace(store, version)
    store.write_meta(version, {
        "format": FORMAT_VERSION, "mode": model.mode, "rank": model.rank,
        "global_mean": float(model.global_mean), "status": "loading", "created_at": time.time(),
        "source": source, **(extra_meta or {}),
    })
    _write_vectors(store, version, "u", model.user_ids, model.user_factors, model.user_bias, None)
    _write_vectors(store, version, "i", model.item_ids, model.item_factors, model.item_bias,
                   item_counts)
    if seen is not None:
        indptr, indices, values = (np.asarray(a) for a in seen)
        write_seen(store, version, model.user_ids, model.item_ids, indptr, indices, values)
    if model.mode == "implicit":
        store.write_grams(version, gram_inverse(model.item_factors, implicit_reg),
                          gram_inverse(model.user_factors, implicit_reg))
    if checkpoints:
        store.set_checkpoints(version, topic, checkpoints)
    store.write_meta(version, {"status": "ready"})
    return time.perf_counter() - t0

"""Rebuild Redis from Cassandra: the latest persisted factors, seen-hashes and checkpoints.

After a restore the workers resume from the persisted offsets and replay Kafka, reaching the
state Redis had before it was lost (the kernels are deterministic and the persisted vectors
were captured at a batch boundary together with the offsets they reflect).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from online_als.retrain.matrix import build_matrix
from worker.bulk_load import ModelArrays, load_version
from worker.config import Settings
from worker.redis_store import RedisStore

log = logging.getLogger("online_als.restore")


@dataclass(frozen=True)
class RestoreReport:
    version: int
    users: int
    items: int
    log_events: int
    checkpoints: dict[int, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def serving_version(cass: Any) -> int | None:
    """The version that was serving: the newest switch record, else the newest promoted one."""
    switches = cass.list_switches(limit=1)
    if switches:
        return int(switches[0].version)
    latest = cass.latest_version(("promoted",))
    return int(latest.version) if latest else None


def load_from_cassandra(cass: Any, store: RedisStore, settings: Settings, version: int,
                        checkpoints: dict[int, int], source: str) -> tuple[int, int, int]:
    """Load ``version`` into its Redis namespace with seen-hashes rebuilt from the log."""
    meta = cass.get_version(version)
    if meta is None:
        raise LookupError(f"Cassandra has no model version {version}")
    topic = settings.kafka.topic
    user_ids, uf, ub = cass.read_factors(version, "u")
    item_ids, itf, ib = cass.read_factors(version, "i")
    chunks = ((c[0], c[1], c[2]) for c in cass.iter_log(topic, checkpoints or None,
                                                        settings.retrain.chunk_rows))
    from online_als.idmap import IdMap

    users, items = IdMap.from_list(user_ids), IdMap.from_list(item_ids)
    dup: Literal["sum", "last"] = "last" if meta.mode == "explicit" else "sum"
    hist = build_matrix(chunks, dup, users=users, items=items)
    m = hist.matrix.tocsr()
    # ids in the log but absent from the snapshot were never persisted: no vector, no history
    m = m[: len(user_ids), : len(item_ids)].tocsr()
    counts = np.diff(m.tocsc().indptr).astype(np.int64)
    model = ModelArrays(meta.mode, meta.rank, float(meta.params.get("global_mean", 0.0)),
                        user_ids, uf, ub, item_ids, itf, ib)
    load_version(store, version, model, item_counts=counts, checkpoints=checkpoints,
                 topic=topic, implicit_reg=settings.model.foldin_regularization,
                 source=source, seen=(m.indptr, m.indices, m.data))
    return len(user_ids), len(item_ids), int(hist.events)


def restore(settings: Settings, cass: Any, store: RedisStore, force: bool = False) -> RestoreReport:
    """Rebuild the serving version in Redis from Cassandra and point at it."""
    t0 = time.perf_counter()
    if store.current_version() is not None and not force:
        raise RuntimeError("Redis already holds a current model version; use --force to replace")
    version = serving_version(cass)
    if version is None:
        raise LookupError("Cassandra holds no promoted model version to restore")
    topic = settings.kafka.topic
    checkpoints = cass.load_persist_checkpoint(version, topic)
    meta = cass.get_version(version)
    if not checkpoints and meta is not None:
        checkpoints = dict(meta.cutoff)
    users, items, events = load_from_cassandra(cass, store, settings, version, checkpoints,
                                               "restore")
    counter = store.keys.version_counter()
    highest = max([v.version for v in cass.list_versions()] + [version])
    if int(store.client.get(counter) or 0) < highest:
        store.client.set(counter, highest)
    store.switch_current(version, "restore from Cassandra", "online-als restore")
    report = RestoreReport(version, users, items, events, checkpoints, time.perf_counter() - t0)
    log.info("restored version %d: %d users, %d items, %d log events in %.1fs",
             version, users, items, events, report.seconds)
    return report

"""Write-behind persistence to Cassandra, off the hot path.

The worker thread only enqueues: each applied batch's accepted ratings (the durable log), and
every ``worker.persist_interval_s`` a *flush job* holding the vectors changed since the last
one, read from Redis at a batch boundary together with the offsets they reflect. A background
thread writes the queue in order, so a persist checkpoint is never written before the log and
factors it covers. While Cassandra is away the thread retries with capped backoff and the
queue grows; the worker keeps updating Redis and pauses consuming only if the queue exceeds
``max_pending_events`` (nothing is dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.applier import EventBatch
from worker.metrics import WorkerMetrics
from worker.redis_store import RedisStore

log = logging.getLogger("online_als.persistence")


@dataclass(frozen=True)
class LogBlock:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    user_ids: list[str]
    item_ids: list[str]
    values: np.ndarray
    ts: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class FlushJob:
    version: int
    topic: str
    offsets: dict[int, int]  # next offset per partition that these vectors reflect
    user_ids: list[str]
    user_factors: np.ndarray
    user_bias: np.ndarray
    item_ids: list[str]
    item_factors: np.ndarray
    item_bias: np.ndarray


@dataclass(frozen=True)
class VersionJob:
    """Make sure Cassandra knows a Redis version the worker writes to (bootstrap versions)."""

    version: int
    mode: str
    rank: int
    topic: str
    global_mean: float


class WriteBehind:
    def __init__(self, cassandra_factory: Any, metrics: WorkerMetrics, topic: str,
                 interval_s: float, max_pending_events: int = 2_000_000,
                 backoff_max_s: float = 30.0) -> None:
        self._factory = cassandra_factory
        self._cass: Any = None
        self.metrics = metrics
        self.topic = topic
        self.interval_s = interval_s
        self.max_pending_events = max_pending_events
        self.backoff_max_s = backoff_max_s
        self._queue: deque[LogBlock | FlushJob | VersionJob] = deque()
        self._cv = threading.Condition()
        self._pending_events = 0
        self._dirty_users: set[str] = set()
        self._dirty_items: set[str] = set()
        self._last_flush = time.monotonic()
        self._closing = False
        self.persisted_events = 0
        self.flushes = 0
        self._thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
        self._thread.start()

    # -- worker thread -------------------------------------------------------------------
    def on_batch(self, batch: EventBatch, applied: np.ndarray) -> None:
        ok = applied.astype(bool)
        blocks = []
        for p in np.unique(batch.partitions).tolist():
            sel = (batch.partitions == p) & ok
            if not sel.any():
                continue
            offs = batch.offsets[sel]
            blocks.append(LogBlock(self.topic, int(p), int(offs[0]), int(offs[-1]),
                                   batch.user_ids[sel].tolist(), batch.item_ids[sel].tolist(),
                                   batch.values[sel].astype(np.float32),
                                   batch.event_ts[sel].astype(np.float64), offs.astype(np.int64)))
        self._dirty_users.update(batch.user_ids[ok].tolist())
        self._dirty_items.update(batch.item_ids[ok].tolist())
        with self._cv:
            for b in blocks:
                self._queue.append(b)
                self._pending_events += len(b)
            self._cv.notify()

    def register_version(self, job: VersionJob) -> None:
        with self._cv:
            self._queue.append(job)
            self._cv.notify()

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.interval_s

    def flush(self, store: RedisStore, version: int, rank: int, positions: dict[int, int]) -> None:
        """Capture changed vectors now (a batch boundary) and queue them with ``positions``."""
        self._last_flush = time.monotonic()
        users, items = sorted(self._dirty_users), sorted(self._dirty_items)
        self._dirty_users, self._dirty_items = set(), set()
        ub = store.read_vectors(store.vector_keys(version, "u", users), rank)
        ib = store.read_vectors(store.vector_keys(version, "i", items), rank)
        job = FlushJob(version, self.topic, dict(positions), users, ub.factors, ub.biases,
                       items, ib.factors, ib.biases)
        with self._cv:
            self._queue.append(job)
            self._cv.notify()

    def backlog(self) -> int:
        return self._pending_events

    def overloaded(self) -> bool:
        return self._pending_events > self.max_pending_events

    def close(self, timeout_s: float = 60.0) -> bool:
        """Drain the queue (or give up after ``timeout_s``); True when everything persisted."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout_s)
        if self._cass is not None:
            self._cass.close()
        return not self._queue

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._queue:
                return True
            time.sleep(0.05)
        return False

    # -- background thread ---------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.2
        while True:
            with self._cv:
                while not self._queue and not self._closing:
                    self._cv.wait(0.5)
                if not self._queue and self._closing:
                    return
                item = self._queue[0]
            try:
                self._write(item)
            except Exception as exc:  # Cassandra away or failing: keep the item, retry later
                self.metrics.set_server_up("cassandra", False)
                self.metrics.reconnects.labels("cassandra").inc()
                log.warning("cassandra unavailable (%s); %d events waiting, retry in %.1fs",
                            exc, self._pending_events, delay)
                self._cass = None
                time.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            delay = 0.2
            self.metrics.set_server_up("cassandra", True)
            with self._cv:
                self._queue.popleft()
                if isinstance(item, LogBlock):
                    self._pending_events -= len(item)
                    self.persisted_events += len(item)

    def _store(self) -> Any:
        if self._cass is None:
            self._cass = self._factory()
        return self._cass

    def _write(self, item: LogBlock | FlushJob | VersionJob) -> None:
        cass = self._store()
        t0 = time.perf_counter()
        if isinstance(item, VersionJob):
            if cass.get_version(item.version) is None:
                from worker.cassandra_store import ModelVersion

                empty = np.zeros((0, item.rank), dtype=np.float32)
                cass.write_factors(item.version, "u", [], empty)
                cass.write_factors(item.version, "i", [], empty)
                cass.create_version(ModelVersion(
                    version=item.version, status="promoted", mode=item.mode, rank=item.rank,
                    topic=item.topic, params={"global_mean": item.global_mean},
                    notes="bootstrap: online updates only"))
            return
        if isinstance(item, LogBlock):
            cass.append_log_blocks(item.topic, item.partition, item.first_offset,
                                   item.last_offset, item.user_ids, item.item_ids, item.values,
                                   item.ts, item.offsets)
            self.metrics.cassandra_latency.labels("write").observe(time.perf_counter() - t0)
            return
        if item.user_ids:
            cass.upsert_factors(item.version, "u", item.user_ids, item.user_factors, item.user_bias)
        if item.item_ids:
            cass.upsert_factors(item.version, "i", item.item_ids, item.item_factors, item.item_bias)
        cass.save_persist_checkpoint(item.version, item.topic, item.offsets)
        self.flushes += 1
        self.metrics.cassandra_latency.labels("write").observe(time.perf_counter() - t0)

"""What the worker loop reports about itself: per-batch metrics, consumer lag, known ids.

Kept apart from :mod:`worker.runtime.loop` so the loop reads as the commit order only.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from confluent_kafka import Consumer

from online_als.ratings import Ratings
from worker.metrics import WorkerMetrics
from worker.runtime.applier import ApplyResult
from worker.stores import kafka as kafka_io
from worker.stores.redis.store import RedisStore


def observe_batch(m: WorkerMetrics, batch: Ratings, result: ApplyResult, seconds: float,
                  rating_range: tuple[float, float] | None) -> int:
    """Count a finished batch; ``rating_range`` clips explicit predictions (None: implicit,
    scored against ``value > 0``). Returns the events applied."""
    applied = int(result.applied.sum())
    refused = len(batch) - applied
    m.events_applied.inc(applied)
    if refused:
        m.nan_guard_refusals.inc(refused)
    m.batch_size.observe(len(batch))
    m.batch_latency.observe(seconds)
    for op, secs in result.timings.items():
        if op != "kernel":
            m.redis_latency.labels(op).observe(secs)
    ok = result.applied.astype(bool)
    if rating_range is not None:
        pred = np.clip(result.predictions[ok], *rating_range)
        m.observe_prequential(pred, batch.values[ok])
    else:
        m.observe_prequential(result.predictions[ok], (batch.values[ok] > 0).astype(np.float32))
    m.set_event_time_lag(batch.timestamps)
    ts = batch.timestamps[ok]  # 0: a file without times; NaN: no time at all (both skipped)
    m.freshness.observe_many(np.maximum(time.time() - ts[ts > 0], 0.0))
    return applied


def probe_lag(m: WorkerMetrics, consumer: Consumer, topic: str, positions: dict[int, int],
              cached: bool) -> None:
    """Consumer lag per partition from the end offsets; ``cached`` takes those the last fetch
    carried (no round trip), otherwise a broker round trip that also proves Kafka is up."""
    highs = kafka_io.high_watermarks(consumer, topic, list(positions), cached=cached)
    for p, high in highs.items():
        m.set_consumer_lag(topic, p, max(0, high - positions.get(p, high)))
    if highs and not cached:
        m.set_server_up("kafka", True)


def count_known(m: WorkerMetrics, store: RedisStore, version: int) -> None:
    """Users and items present in the version (two SCARDs, one round trip)."""
    pipe: Any = store.client.pipeline(transaction=False)
    pipe.scard(store.keys.user_index(version))
    pipe.scard(store.keys.item_index(version))
    users, items = pipe.execute()
    m.users_known.set(users)
    m.items_known.set(items)

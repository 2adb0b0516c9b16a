"""The worker's periodic chores between batches: heartbeat, Gram refresh (implicit mode),
known-id counts and the consumer-lag probe. A mixin of :class:`worker.runtime.loop.Worker`,
relying on the attributes it declares."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer

from worker.config import Settings
from worker.metrics import WorkerMetrics
from worker.runtime.applier import BatchApplier, VersionState
from worker.runtime.commit import CommitProtocol
from worker.runtime.grams import gram_serial, refresh_grams
from worker.runtime.observe import count_known, probe_lag
from worker.stores.redis.store import RedisStore


class Housekeeping:
    """Chores run by the loop once per round, each on its own timer."""

    settings: Settings
    store: RedisStore
    applier: BatchApplier
    metrics: WorkerMetrics
    commit: CommitProtocol
    topic: str
    applied_total: int
    _consumer: Consumer | None
    _state: VersionState | None
    _with_redis_retry: Callable[[Callable[[], Any]], Any]
    _last_heartbeat: float
    _last_lag_probe: float
    _lag_probes: int
    _last_gram_refresh: float

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= 1.0:
            self._last_heartbeat = now
            version = self._state.version if self._state else None
            self._with_redis_retry(lambda: self.store.heartbeat(
                self.settings.worker.name, self.settings.worker.heartbeat_ttl_s,
                {"version": version, "partitions": sorted(self.commit.positions),
                 "applied": self.applied_total, "at": time.time()}))
            self._with_redis_retry(self._maybe_refresh_grams)
        if now - self._last_lag_probe >= 5.0 and self._consumer is not None:
            self._with_redis_retry(self._count_known)
            self._last_lag_probe = now
            # the lag from the last fetch response costs no round trip; every 30 s a real
            # broker round trip also proves Kafka is reachable (kafka_up)
            self._lag_probes += 1
            probe_lag(self.metrics, self._consumer, self.topic, self.commit.positions,
                      cached=self._lag_probes % 6 != 1)

    def _maybe_refresh_grams(self) -> None:
        state, m = self._state, self.settings.model
        if state is None or state.meta.mode != "implicit":
            return
        if m.gram_refresh_s > 0 and time.monotonic() - self._last_gram_refresh >= m.gram_refresh_s:
            self._last_gram_refresh = time.monotonic()
            refresh_grams(self.store, state.version, state.meta.rank, m.foldin_regularization)
        serial = gram_serial(self.store, state.version)
        if serial != state.meta.gram_serial:
            self._state = self.applier.load_version(state.version)

    def _count_known(self) -> None:
        if self._state is not None:
            count_known(self.metrics, self.store, self._state.version)

    def _redis_state(self, up: bool) -> None:
        self.metrics.set_server_up("redis", up)
        if not up:
            self.metrics.reconnects.labels("redis").inc()

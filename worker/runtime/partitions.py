"""Which partitions a worker consumes: assignment and revocation by the group, repositioning
at the checkpoints Redis holds (a version switch, Redis going back in time), fenced partitions
taken back, and readiness.

A mixin of :class:`worker.runtime.loop.Worker`, kept apart so that the loop reads as the
batch path; it relies on the attributes listed below, which ``Worker.__init__`` sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from worker import faults
from worker.metrics import MetricsServer, WorkerMetrics
from worker.runtime.applier import VersionState
from worker.runtime.commit import CommitProtocol, Fenced, Regressed
from worker.stores.redis.store import RedisStore

log = logging.getLogger("online_als.worker")


class PartitionOwnership:
    """Assignment, repositioning and fenced-partition handling of one worker."""

    topic: str
    commit: CommitProtocol
    metrics: WorkerMetrics
    server: MetricsServer | None
    _consumer: Consumer | None
    _state: VersionState | None
    _with_redis_retry: Callable[[Callable[[], Any]], Any]
    # fenced partitions the group may still count as ours: taken back after the next
    # consume() unless a revoke came (partition -> consume() calls since the fence)
    _parked: dict[int, int]
    _regressed: Regressed | None  # Redis went back in time: reposition before the next batch
    _switched_at: float  # when the pointer was moved to the version served (its switch record)
    store: RedisStore

    def _drain(self) -> None:  # the loop's: finish the batch in flight
        raise NotImplementedError

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain()  # rebalances happen between batches, never during one
        assert self._state is not None
        ids = [tp.partition for tp in partitions]
        version = self._state.version
        starts = self._with_redis_retry(lambda: self.commit.assign(version, ids))
        consumer.incremental_assign([
            TopicPartition(self.topic, p, s if s is not None else OFFSET_BEGINNING)
            for p, s in starts.items()])
        self._set_ready(True)
        log.info("assigned %s (pending recovery: %s)", ids, sorted(self.commit.pending))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain()
        for tp in partitions:
            self.metrics.forget_partition(self.topic, tp.partition)
        self.commit.revoke([tp.partition for tp in partitions])
        consumer.incremental_unassign(partitions)
        log.info("revoked %s", [tp.partition for tp in partitions])

    def _reposition(self, partitions: list[int]) -> None:
        """Take ``partitions`` again at the checkpoints Redis holds now (own, read, seek)."""
        if partitions and self._consumer is not None:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            self._consumer.incremental_unassign(tps)
            self._on_assign(self._consumer, tps)

    def _set_ready(self, ready: bool) -> None:
        if self.server is not None:
            self.server.ready = ready

    def _update_ready(self) -> None:
        """/readyz: ready while every partition the group assigned here is being consumed."""
        if self.server is None or self._consumer is None or not self.server.ready:
            return
        assigned = {tp.partition for tp in self._consumer.assignment()}
        if not assigned <= set(self.commit.positions):
            self.server.ready = False

    def _on_fenced(self, exc: Fenced) -> None:
        self.metrics.fenced_writes.inc()
        log.error("%s; this worker dropped its batch for them (a zombie past "
                  "max.poll.interval.ms?) and takes them back only if the group still assigns "
                  "them here after its next poll", exc)
        self._parked.update(dict.fromkeys(exc.partitions, 0))
        self._set_ready(False)
        faults.reached("after_fence")

    def _on_regressed(self, exc: Regressed) -> None:
        """Stop writing: the loop repositions every partition before its next batch."""
        self.metrics.redis_regressions.inc()
        self.commit.carry = []
        self._regressed = exc

    def _take_back_parked(self) -> None:
        """A fenced partition that the group still assigns here after a poll is ours: a revoke
        would have come with that poll had another member taken it. Take it again (own, read,
        seek) so that no partition stays assigned and unconsumed."""
        if not self._parked or self._consumer is None:
            return
        held = {tp.partition for tp in self._consumer.assignment()}
        for p in list(self._parked):
            self._parked[p] += 1
            if p not in held or p in self.commit.positions:
                del self._parked[p]
        due = sorted(p for p, polls in self._parked.items() if polls >= 2)
        if due:
            log.warning("partitions %s were fenced but the group still assigns them to this "
                        "worker; taking them back at their stored checkpoints", due)
            for p in due:
                del self._parked[p]
            self._reposition(due)

    def _publish_version(self) -> None:
        assert self._state is not None
        self.metrics.model_version.set(self._state.version)
        # when the serving pointer was last moved to this version: a later switch whose own
        # record is older than this one came from a Redis that went back in time
        last = self._with_redis_retry(self.store.last_switch)
        self._switched_at = (float(last["at"]) if last and last.get("to") == self._state.version
                             else 0.0)

    def _switch_went_back(self, current: int) -> bool:
        """Whether a switch to ``current`` is Redis going back in time: its switch record is
        older than the one this worker followed last (a legitimate switch, a rollback
        included, is a newer record)."""
        last = self.store.last_switch()
        return last is None or last.get("to") != current or float(last["at"]) < self._switched_at

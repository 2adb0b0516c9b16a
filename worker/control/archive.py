"""The archiver: Kafka -> the Cassandra ratings log, complete by construction.

A consumer group of its own (``kafka.group_id`` + ``archive.group_suffix``) reads the ratings
topic. For each partition it writes idempotent blocks keyed by (topic, partition, first offset)
that cover every offset from its checkpoint to the batch's last offset (rejected messages are
covered but not stored: they are in the dead-letter topic), and only then moves the
partition's checkpoint in Cassandra, with a compare-and-set on the value it read. Kafka is the
buffer: after a crash or a Cassandra outage the archiver re-reads from the checkpoint and
rewrites the same blocks. So the log holds exactly the accepted events of each partition,
contiguously, for the offsets ``[start_offset, next_offset)`` of ``archive_checkpoints``.

A log that starts late is refused, loudly: a partition with no checkpoint whose Kafka log no
longer starts at offset 0 (retention or ``delete_records`` dropped its oldest events), or whose
checkpoint lies below Kafka's first offset, is logged at ERROR with its low watermark, counted
in ``online_als_archive_log_gaps_total`` (alert ``OnlineAlsArchiveLogGap``) and not archived.
``archive.allow_late_start = true`` accepts a log without a checkpoint that starts at the low
watermark instead; a checkpoint below it is a hole in the log and is always refused.

The archiver that owns partition 0 also takes stream snapshots of the serving version
(:mod:`worker.control.materialize`), which bound the replay a restore or rollback needs.

Run it with ``online-als archive``; ``Archiver(settings).run(idle_exit_s=5)`` in tests.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from prometheus_client import CollectorRegistry, Counter, Gauge

from online_als.ratings import Ratings, object_ids
from worker.config import Settings
from worker.runtime.applier import decode_messages
from worker.stores import kafka as kafka_io
from worker.stores.cassandra.ratings_log import MAX_BLOCK_SPAN

log = logging.getLogger("online_als.archive")


#: A partition's batch with no accepted event still gets a (covering, empty) block.
_NO_EVENTS = Ratings.trusted(object_ids([]), object_ids([]), np.zeros(0, np.float32),
                             np.zeros(0, np.float64), None, np.zeros(0, np.int32),
                             np.zeros(0, np.int64))

#: Every series the archiver exports (checked against alerts and dashboards by the tests).
ARCHIVE_METRIC_NAMES = (
    "online_als_archive_events_total",
    "online_als_archive_offsets_total",
    "online_als_archive_checkpoint_offset",
    "online_als_archive_lag_messages",
    "online_als_archive_retries_total",
    "online_als_archive_conflicts_total",
    "online_als_archive_snapshots_total",
    "online_als_archive_snapshot_events",
    "online_als_archive_log_gaps_total",
    "online_als_archive_refused_partitions",
)


class Stopped(Exception):
    """Asked to stop while waiting for Cassandra: nothing more was checkpointed."""


class ArchiveMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.archived = Counter("online_als_archive_events_total",
                                "Accepted events written to the Cassandra ratings log", registry=r)
        self.covered = Counter("online_als_archive_offsets_total",
                               "Kafka offsets the log covers (accepted + rejected)", registry=r)
        self.checkpoint = Gauge("online_als_archive_checkpoint_offset",
                                "Next offset after the contiguous log", ["partition"], registry=r)
        self.lag = Gauge("online_als_archive_lag_messages",
                         "Messages in Kafka not yet in the log", ["partition"], registry=r)
        self.retries = Counter("online_als_archive_retries_total",
                               "Cassandra writes retried after an error", registry=r)
        self.conflicts = Counter("online_als_archive_conflicts_total",
                                 "Checkpoint moves refused: another archiver owns the partition",
                                 registry=r)
        self.snapshots = Counter("online_als_archive_snapshots_total",
                                 "Stream snapshots committed", registry=r)
        self.snapshot_offsets = Gauge("online_als_archive_snapshot_events",
                                      "Log offsets (summed) the newest stream snapshot reflects",
                                      registry=r)
        self.log_gaps = Counter("online_als_archive_log_gaps_total",
                                "Partitions found whose Kafka log no longer holds the offset the "
                                "Cassandra log continues from (it would start late)",
                                ["partition"], registry=r)
        self.refused = Gauge("online_als_archive_refused_partitions",
                             "Assigned partitions this archiver refuses to archive (log gap)",
                             registry=r)


class Archiver:
    """One archiver process (any number may run: Kafka assigns each partition to one)."""

    def __init__(self, settings: Settings, metrics: ArchiveMetrics | None = None) -> None:
        from worker.runtime.applier import decode_config

        self.settings = settings
        self.topic = settings.kafka.topic
        self.metrics = metrics or ArchiveMetrics()
        self.decode_cfg = decode_config(settings)
        self._stop = threading.Event()
        self._cass: Any = None
        self._consumer: Consumer | None = None
        self.positions: dict[int, int | None] = {}  # next offset to archive; None = first
        self.refused: dict[int, int] = {}  # partition -> Kafka low watermark (a log gap)
        self.archived_total = 0
        self._mat: Any = None  # the materialised serving version (partition 0's owner)
        self._last_snapshot = time.monotonic()
        self._last_lag = 0.0

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- Cassandra with capped backoff ---------------------------------------------------
    def _cassandra(self) -> Any:
        if self._cass is None:
            from worker.stores.cassandra.store import CassandraStore

            store = CassandraStore(self.settings.cassandra)
            store.migrate()
            self._cass = store
        return self._cass

    def _with_cassandra(self, what: str, fn: Any) -> Any:
        delay = 0.2
        while True:
            try:
                return fn(self._cassandra())
            except Exception as exc:
                from worker.stores.cassandra.store import ArchiveConflict

                if isinstance(exc, ArchiveConflict):
                    raise
                self.metrics.retries.inc()
                log.warning("cassandra %s:%d: %s failed (%s); retrying in %.1fs",
                            ",".join(self.settings.cassandra.hosts), self.settings.cassandra.port,
                            what, exc, delay)
                if self._cass is not None:
                    try:
                        self._cass.close()
                    except Exception:  # the connection is being replaced anyway
                        log.debug("closing a failed Cassandra session", exc_info=True)
                    self._cass = None
                if self._stop.wait(delay):
                    raise Stopped(what) from exc
                delay = min(delay * 2, self.settings.worker.reconnect_backoff_max_s)

    # -- main loop -----------------------------------------------------------------------
    def run(self, idle_exit_s: float | None = None) -> None:
        k, a = self.settings.kafka, self.settings.archive
        kafka_io.ensure_topics(k, {k.topic: k.partitions, k.dead_letter_topic: 1})
        try:
            self._with_cassandra("connect", lambda c: None)
        except Stopped:
            log.warning("stopped before Cassandra answered; nothing archived")
            return
        group = f"{k.group_id}{a.group_suffix}"
        self._consumer = kafka_io.make_consumer(k, **{"group.id": group})
        self._consumer.subscribe([k.topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_revoke)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs = kafka_io.consume_batch(self._consumer, a.batch_max_events,
                                              a.batch_max_wait_ms / 1000.0, self._on_kafka_error)
                if msgs and self._archive(msgs) or not (self.positions or self.refused):
                    idle_since = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
                self._probe_lag()
                self._maybe_snapshot()
        except Stopped as exc:
            log.warning("stopped while Cassandra was unavailable (%s); the checkpoint did not "
                        "move, so the next archiver re-reads those messages from Kafka", exc)
        finally:
            self._consumer.close()
            if self._cass is not None:
                self._cass.close()
            log.info("archiver stopped: archived=%d", self.archived_total)

    def _on_kafka_error(self, err: KafkaError) -> None:
        log.warning("kafka %s: %s (librdkafka reconnects with backoff)",
                    self.settings.kafka.bootstrap_servers, err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ranges = self._with_cassandra("read checkpoints",
                                      lambda c: c.archive_ranges(self.topic))
        assign = []
        for tp in partitions:
            r = ranges.get(tp.partition)
            if not self._admit(consumer, tp.partition, r):
                continue
            self.positions[tp.partition] = r.next if r else None
            assign.append(TopicPartition(self.topic, tp.partition,
                                         r.next if r else OFFSET_BEGINNING))
        # Refused partitions stay assigned to this member (the group cannot give them to an
        # archiver that would do better) but are never fetched.
        consumer.incremental_assign(assign)
        log.info("archiving %s from %s", [tp.partition for tp in assign],
                 {p: self.positions[p] for p in sorted(self.positions)})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop(tp.partition, None)
            self.refused.pop(tp.partition, None)
        self.metrics.refused.set(len(self.refused))
        consumer.incremental_unassign(partitions)

    def _low_watermark(self, consumer: Consumer, p: int) -> int:
        """Kafka's first offset of partition ``p`` (a broker round trip, retried; an archiver
        that cannot learn it fails rather than guess where the log starts)."""
        for attempt in range(3):
            try:
                low, _ = consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                        timeout=10.0, cached=False)
                return int(low)
            except KafkaException as exc:
                if attempt == 2:
                    raise RuntimeError(f"kafka {self.settings.kafka.bootstrap_servers}: cannot "
                                       f"read the first offset of {self.topic}[{p}]: {exc}") from exc
                log.warning("kafka %s: reading the first offset of %s[%d] failed (%s); retrying",
                            self.settings.kafka.bootstrap_servers, self.topic, p, exc)
        raise AssertionError("unreachable")

    def _admit(self, consumer: Consumer, p: int, r: Any) -> bool:
        """Whether partition ``p`` can be archived from its checkpoint ``r`` (None: none):
        False, with an ERROR line and the gap metric, when Kafka no longer holds the offset
        the log must continue from."""
        start = r.next if r is not None else 0
        low = self._low_watermark(consumer, p)
        if low <= start:
            return True
        self.metrics.log_gaps.labels(str(p)).inc()
        where = f"kafka {self.settings.kafka.bootstrap_servers} {self.topic}[{p}]"
        if r is None and self.settings.archive.allow_late_start:
            log.error("%s has no archive checkpoint and its log starts at offset %d, not 0 "
                      "(retention dropped offsets 0..%d): archiving from %d because "
                      "archive.allow_late_start is set; the Cassandra log starts late",
                      where, low, low - 1, low)
            return True
        if r is None:
            log.error("%s has no archive checkpoint and its log starts at offset %d, not 0 "
                      "(retention dropped offsets 0..%d): refusing to write a Cassandra log "
                      "that starts late. Restore the keyspace's archive_checkpoints from a "
                      "backup, or set archive.allow_late_start = true to accept a log that "
                      "starts at %d", where, low, low - 1, low)
        else:
            log.error("%s: the archive checkpoint is %d but Kafka's log starts at %d: offsets "
                      "%d..%d expired before they were archived, so the Cassandra log would "
                      "have a hole; refusing to archive this partition (raise the topic's "
                      "retention, then rebuild the log from a source that still has them)",
                      where, r.next, low, r.next, low - 1)
        self.refused[p] = low
        self.metrics.refused.set(len(self.refused))
        return False

    def _archive(self, msgs: list[Message]) -> bool:
        fresh = [m for m in msgs if m.partition() in self.positions
                 and (self.positions[m.partition()] is None  # type: ignore[index]
                      or m.offset() >= self.positions[m.partition()])]  # type: ignore[index,operator]
        if not fresh:
            return False
        decoded = decode_messages(fresh, self.decode_cfg)
        batch = decoded.batch
        for p, last in sorted(decoded.ends.items()):
            expected = self.positions.get(p)
            first: int = expected if expected is not None else min(
                m.offset() or 0 for m in fresh if m.partition() == p)
            sel = np.flatnonzero(batch.partitions == p) if batch is not None else np.zeros(0, int)
            try:
                self._write_partition(p, first, last, sel, batch)
                self._with_cassandra(f"checkpoint {self.topic}[{p}] at {last + 1}",
                                     lambda c, p=p, e=expected, f=first, n=last + 1:
                                     c.archive.advance(self.topic, p, e, f, n))
            except Exception as exc:
                from worker.stores.cassandra.store import ArchiveConflict

                if not isinstance(exc, ArchiveConflict):
                    raise
                self.metrics.conflicts.inc()
                log.warning("%s; re-reading it", exc)
                self._reposition(p)
                continue
            self.positions[p] = last + 1
            self.metrics.checkpoint.labels(str(p)).set(last + 1)
            self.metrics.covered.inc(last + 1 - first)
            self.metrics.archived.inc(len(sel))
            self.archived_total += len(sel)
        return True

    def _write_partition(self, p: int, first: int, last: int, sel: np.ndarray,
                         batch: Ratings | None) -> None:
        """Blocks covering [first, last] of partition p, none spanning more than MAX_BLOCK_SPAN."""
        events = batch.take(sel) if batch is not None else _NO_EVENTS
        offsets = events.offsets
        assert offsets is not None  # decoded Kafka events carry their offsets
        lo = first
        while lo <= last:
            hi = min(last, lo + MAX_BLOCK_SPAN - 1)
            block = events.take((offsets >= lo) & (offsets <= hi))
            self._with_cassandra(
                f"log block {self.topic}[{p}] offsets {lo}..{hi}",
                lambda c, lo=lo, hi=hi, b=block: c.append_log_blocks(self.topic, p, lo, hi, b))
            lo = hi + 1

    def _reposition(self, p: int) -> None:
        """Continue ``p`` from the stored checkpoint (after a refused move: another archiver
        moved it, or Cassandra lost it). A checkpoint that vanished means the beginning of
        Kafka's log, never the consumer's current position: that would start the log late."""
        ranges = self._with_cassandra("read checkpoints", lambda c: c.archive_ranges(self.topic))
        r = ranges.get(p)
        if self._consumer is None:
            self.positions[p] = r.next if r else None
            return
        if not self._admit(self._consumer, p, r):
            self.positions.pop(p, None)
            self._consumer.incremental_unassign([TopicPartition(self.topic, p)])
            return
        self.positions[p] = r.next if r else None
        self._consumer.seek(TopicPartition(self.topic, p, r.next if r else OFFSET_BEGINNING))

    def _probe_lag(self) -> None:
        now = time.monotonic()
        if self._consumer is None or now - self._last_lag < 5.0 or not self.positions:
            return
        self._last_lag = now
        highs = kafka_io.high_watermarks(self._consumer, self.topic, list(self.positions))
        for p, high in highs.items():
            pos = self.positions.get(p)
            self.metrics.lag.labels(str(p)).set(max(0, high - (pos or 0)))

    # -- stream snapshots ----------------------------------------------------------------
    def _maybe_snapshot(self, force: bool = False) -> None:
        a = self.settings.archive
        if 0 not in self.positions or (a.snapshot_interval_s == 0 and not force):
            return
        if not force and time.monotonic() - self._last_snapshot < a.snapshot_interval_s:
            return
        self._last_snapshot = time.monotonic()
        try:
            self._with_cassandra("stream snapshot", self.snapshot_once)
        except Stopped:
            raise
        except Exception:  # never stop archiving for a snapshot; the next one retries
            log.exception("stream snapshot failed; archiving goes on")

    def snapshot_once(self, cass: Any) -> Any:
        """Materialise the serving version up to the contiguous log and store it."""
        from worker.control.lifecycle import serving_version
        from worker.control.materialize import advance, load_base

        version = serving_version(cass)
        if version is None:
            return None
        if self._mat is None or self._mat.version != version:
            self._mat = load_base(cass, self.settings, version)
        upto = {p: max(o, self._mat.offsets.get(p, 0))
                for p, o in cass.contiguous_offsets(self.topic).items()}
        new = sum(upto.values()) - sum(self._mat.offsets.get(p, 0) for p in upto)
        if new < self.settings.archive.snapshot_min_events:
            return None
        try:
            advance(cass, self.settings, self._mat, upto)
        except Exception:
            self._mat = None  # half-advanced: start from the stored snapshot next time
            raise
        arrays = self._mat.arrays()
        snap = cass.archive.write_snapshot(version, self._mat.offsets, arrays.users, arrays.items)
        self.metrics.snapshots.inc()
        self.metrics.snapshot_offsets.set(sum(snap.offsets.values()))
        log.info("stream snapshot %d of version %d at %s: %d users, %d items",
                 snap.seq, version, snap.offsets, snap.users, snap.items)
        return snap

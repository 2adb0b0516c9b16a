"""The streaming worker: Kafka consumer group -> decode -> numba kernel -> Redis.

Exactly-once effect: each partition's position is the Redis checkpoint of the serving
version, written in the same ordered pipeline as the factor changes it reflects (see
``docs/exactly-once.md``). The loop is single-threaded: rebalance callbacks run inside
``consume`` between batches, never in the middle of one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from typing import Any

import redis
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from online_als.ratings import Ratings
from worker.config import Settings
from worker.events import INTERNAL
from worker.metrics import MetricsServer, WorkerMetrics
from worker.runtime.applier import (
    BatchApplier,
    DecodedMessages,
    VersionState,
    decode_config,
    decode_messages,
)
from worker.runtime.cluster_nodes import NodeWatch, restore_after_node_change
from worker.runtime.commit import CommitProtocol, Fenced, InFlight, Regressed, Selection
from worker.runtime.dead_letters import DeadLetterSink, DeadLetterUndelivered
from worker.runtime.housekeeping import Housekeeping
from worker.runtime.observe import observe_batch
from worker.runtime.partitions import PartitionOwnership
from worker.runtime.redis_retry import RedisRetry
from worker.stores import kafka as kafka_io
from worker.stores.redis.store import RedisStore

log = logging.getLogger("online_als.worker")


class Worker(PartitionOwnership, Housekeeping):
    """One worker process of the consumer group.

    ``run(idle_exit_s=...)`` returns after that many idle seconds (burst mode for tests and
    replays); otherwise it runs until SIGTERM/SIGINT or ``stop()``.
    """

    def __init__(self, settings: Settings, metrics: WorkerMetrics | None = None,
                 server: MetricsServer | None = None) -> None:
        self.settings = settings
        self.server = server
        self.topic = settings.kafka.topic
        self.metrics = metrics or WorkerMetrics(window=settings.worker.prequential_window)
        self.store = RedisStore.from_settings(settings.redis, retries=0)  # RedisRetry retries
        self.applier = BatchApplier(self.store, settings.model, self.topic)
        self.decode_cfg = decode_config(settings)
        self._stop = threading.Event()
        r = settings.redis
        self._with_redis_retry = RedisRetry(
            f"{r.host}:{r.port}", settings.worker.redis_retry_budget_s,
            settings.worker.reconnect_backoff_max_s, self._stop, self._redis_state)
        self.commit = CommitProtocol(self.store, self.applier, self.topic,
                                     owner=f"{settings.worker.name}:{uuid.uuid4().hex[:8]}",
                                     owned_users_max=settings.worker.owned_users_max)
        self._state: VersionState | None = None
        self._consumer: Consumer | None = None
        self._dlq: Any = None
        self._last_lag_probe = 0.0
        self._lag_probes = 0
        self._inflight: tuple[InFlight, float] | None = None  # a batch whose writes are in Redis's hands
        self._parked: dict[int, int] = {}
        self._regressed: Regressed | None = None
        self._last_heartbeat = 0.0
        self._last_kafka_log = 0.0
        self._paused = False
        self._loop_beat = time.monotonic()
        self._generation: str | None = None
        self._switched_at = 0.0  # see _publish_version
        self._nodes = NodeWatch(self.store) if settings.redis.cluster else None
        self.losses = 0  # times this worker found Redis had lost its state
        self.on_batch: Any = None  # optional callback(applied, window_rmse), e.g. for reports
        self._last_gram_refresh = time.monotonic()
        self.applied_total = 0
        self.dead_lettered_total = 0

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _connect(self) -> None:
        k = self.settings.kafka
        kafka_io.ensure_topics(k, {k.topic: k.partitions, k.dead_letter_topic: 1})
        self._with_redis_retry(self._ensure_key_space)
        self._dlq = DeadLetterSink(kafka_io.make_producer(k), k.dead_letter_topic,
                                   k.bootstrap_servers, self.metrics)
        budget_ms = int((self.settings.worker.redis_retry_budget_s + 60) * 1000)
        self._consumer = kafka_io.make_consumer(k, error_cb=self._on_kafka_error,
                                                **{"max.poll.interval.ms": budget_ms})
        self._consumer.subscribe([k.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def _start_watchdog(self) -> None:
        """/healthz turns 503 when the loop has not come round for ``worker.stall_timeout_s``
        (a stuck loop is what a liveness probe is for); it recovers if the loop does."""
        if self.server is None:
            return
        self._loop_beat = time.monotonic()
        limit = self.settings.worker.stall_timeout_s

        def watch() -> None:
            while not self._stop.wait(1.0):
                if self.server is not None:
                    self.server.alive = time.monotonic() - self._loop_beat < limit

        threading.Thread(target=watch, name="loop-watchdog", daemon=True).start()

    def _ensure_key_space(self) -> None:
        """Serve the current version, restored or bootstrapped when Redis has none."""
        from worker.control import lifecycle

        current = lifecycle.ensure_serving(self.settings, self.store, self._stop)
        if current is None:
            raise RuntimeError("stopped before Redis held a model version")
        self._generation = lifecycle.ensure_generation(self.store)
        self._state = self.applier.load_version(current)
        self._publish_version()

    def run(self, idle_exit_s: float | None = None, max_batches: int | None = None) -> None:
        self._connect()
        assert self._consumer is not None
        w = self.settings.worker
        idle_since = time.monotonic()
        batches = 0
        self._start_watchdog()
        try:
            while not self._stop.is_set():
                self._loop_beat = time.monotonic()
                # the previous batch's writes run in Redis while this consumes (and a
                # rebalance callback finishes that batch first: see _drain)
                msgs = kafka_io.consume_batch(
                    self._consumer, w.batch_max_events, w.batch_max_wait_ms / 1000.0,
                    self._on_kafka_error)
                self._drain()
                self._take_back_parked()
                self._housekeeping()
                if self._check_cluster_nodes() or self._check_version_switch():
                    continue
                self._update_ready()
                if msgs and self._process(msgs):
                    idle_since = time.monotonic()
                    batches += 1
                    if max_batches is not None and batches >= max_batches:
                        break
                elif not self.commit.positions:
                    idle_since = time.monotonic()  # not idle before partitions are assigned
                elif idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    break
        finally:
            self._set_ready(False)
            try:
                self._drain()
                self.commit.drop_finished_blobs()
            except Exception:  # its intent is in Redis: the next owner recovers the batch
                log.exception("the batch in flight did not finish before shutdown")
            self._consumer.close()  # leaves the group; checkpoints are already in Redis
            if self._dlq is not None:
                self._dlq.close()
            log.info("worker stopped: applied=%d dead_lettered=%d",
                     self.applied_total, self.dead_lettered_total)

    # -- rebalance ------------------------------------------------------------------------
    def _on_kafka_error(self, err: KafkaError) -> None:
        self.metrics.set_server_up("kafka", False)
        self.metrics.reconnects.labels("kafka").inc()
        now = time.monotonic()
        if now - self._last_kafka_log >= 5.0:  # librdkafka retries every few ms; log sparsely
            self._last_kafka_log = now
            log.warning("kafka unavailable or erroring (%s); librdkafka reconnects with backoff",
                        err)

    # -- versions -------------------------------------------------------------------------
    def _check_cluster_nodes(self) -> bool:
        """Before each batch on a Redis Cluster: a master that restarted or failed over makes
        the key space suspect (:mod:`worker.runtime.cluster_nodes`); it is restored from
        Cassandra before anything more is written."""
        if self._nodes is None or not self._with_redis_retry(self._nodes.changed):
            return False
        self.metrics.redis_regressions.inc()
        self.commit.regressions_total += 1
        self._with_redis_retry(lambda: restore_after_node_change(
            self.settings, self.store, self._generation, self._stop))
        return self._check_version_switch() or True  # the new generation: reposition

    def _check_version_switch(self) -> bool:
        """Before each batch: follow a version switch, and stop writing when Redis lost its
        state (pointer, meta or generation gone or changed) until it has been restored."""
        assert self._state is not None and self._consumer is not None
        state = self._state
        current, has_meta, generation = self._with_redis_retry(lambda: self.store.probe(state.version))
        lost = current is None or generation != self._generation or (
            current == state.version and not has_meta)
        regressed, self._regressed = self._regressed, None
        if lost:
            self.losses += 1
            self.metrics.redis_state_lost.inc()
            log.error("redis %s:%d lost the model state (current=%s, meta=%s, generation %s); "
                      "not writing until it is restored", self.settings.redis.host,
                      self.settings.redis.port, current, has_meta,
                      "changed" if generation else "gone")
            self.commit.carry = []
            # a batch another worker had in flight when Redis lost its state lands within that
            # worker's socket timeout (its retry is refused at the intent): let it land before
            # the restore clears the namespace it may have written into
            self._stop.wait(min(self.settings.redis.socket_timeout_s, 5.0))
            self._with_redis_retry(self._ensure_key_space)
        elif current == state.version and regressed is not None:
            log.error("redis %s:%d went back in time (a restart from an older RDB or AOF, or a "
                      "promoted replica): %s; replaying Kafka from the checkpoints it holds",
                      self.settings.redis.host, self.settings.redis.port, regressed)
        elif current == state.version:
            return False
        else:
            assert current is not None  # `lost` covers that
            went_back = regressed is not None or self._with_redis_retry(
                lambda: self._switch_went_back(current))
            if went_back and regressed is None:
                self.metrics.redis_regressions.inc()
                self.commit.regressions_total += 1
            log.log(logging.ERROR if went_back else logging.INFO,
                    "model version switched %d -> %d%s; repositioning", state.version, current,
                    " (redis went back in time to an older serving version: Cassandra may "
                    "record a newer one as promoted; `online-als rollback` to it serves it "
                    "again)" if went_back else "")
            switched = current
            self._state = self._with_redis_retry(lambda: self.applier.load_version(switched))
            self._publish_version()
        self._reposition(self.commit.reset())
        return True

    # -- one batch ------------------------------------------------------------------------
    def _process(self, msgs: list[Message], sync: bool = False) -> bool:
        """poll -> select -> decode -> commit; a message that fails in an unexpected way is
        dead-lettered as ``internal`` instead of stopping its partition."""
        try:
            return self._process_batch(msgs, sync)
        except (redis.ConnectionError, redis.TimeoutError, KafkaException, Fenced, Regressed,
                DeadLetterUndelivered):
            raise
        except Exception as exc:
            return self._one_by_one(msgs, exc)

    def _one_by_one(self, msgs: list[Message], exc: Exception) -> bool:
        selected = [m for m in msgs if _part(m) in self.commit.positions
                    and _off(m) >= self.commit.positions[_part(m)]]
        if len(selected) > 1:  # find the culprit: one message at a time, in order
            log.error("batch failed (%s: %s); applying its messages one by one",
                      type(exc).__name__, exc)
            done = False
            for m in selected:
                if self._regressed is not None:
                    break  # repositioned before anything else is applied
                done = self._process([m], sync=True) or done
            return done
        if not selected:
            raise exc
        m = selected[0]
        log.error("%s[%d] offset %d failed (%s: %s); dead-lettering it as internal",
                  m.topic(), m.partition(), m.offset(), type(exc).__name__, exc)
        self._dead_letter([m], [(0, INTERNAL, f"{type(exc).__name__}: {exc}"[:500])])
        state = self._state
        assert state is not None
        decoded = DecodedMessages(None, [], {_part(m): _off(m)})
        try:
            self._with_redis_retry(lambda: self.commit.commit(
                state, decoded, Selection([m], uuid.uuid4().hex, False)))
        except Fenced as fenced:
            self._on_fenced(fenced)
        except Regressed as regressed:
            self._on_regressed(regressed)
        return True

    def _process_batch(self, msgs: list[Message], sync: bool = False) -> bool:
        selection = self.commit.select(msgs)
        if selection is None:
            return False
        fresh = selection.messages
        self.metrics.events_consumed.inc(len(fresh))
        t0 = time.perf_counter()
        decoded = decode_messages(fresh, self.decode_cfg)
        if decoded.rejects:
            self._dead_letter(fresh, decoded.rejects)
        assert self._state is not None
        try:
            flight = self.commit.start(self._state, decoded, selection, self._with_redis_retry,
                                       background=not sync)
        except Fenced as exc:
            self._on_fenced(exc)
            return True
        except Regressed as exc:
            self._on_regressed(exc)
            return True
        if sync:
            self._finish(flight, t0)
        else:
            self._inflight = (flight, t0)
        return True

    def _drain(self) -> None:
        """Finish the batch in flight, if any: before the next batch, a rebalance, a version
        check or shutdown looks at positions."""
        if self._inflight is None:
            return
        flight, t0 = self._inflight
        self._inflight = None
        try:
            self._finish(flight, t0)
        except (redis.ConnectionError, redis.TimeoutError, KafkaException, DeadLetterUndelivered):
            raise
        except Exception as exc:
            self._one_by_one(flight.selection.messages, exc)

    def _finish(self, flight: InFlight, t0: float) -> None:
        try:
            result = self.commit.finish(flight, self._with_redis_retry)
        except Fenced as exc:
            self._on_fenced(exc)
            return
        except Regressed as exc:
            self._on_regressed(exc)
            return
        batch = flight.decoded.batch
        if result is not None and batch is not None:
            self._observe(batch, result, time.perf_counter() - t0)
        self._commit_informational(flight.decoded.ends)
        self.metrics.last_checkpoint.set(time.time())

    def _dead_letter(self, msgs: list[Message], rejects: list[Any]) -> None:
        assert self._dlq is not None
        self._dlq.send(msgs, rejects)
        self.dead_lettered_total = self._dlq.total

    def _observe(self, batch: Ratings, result: Any, seconds: float) -> None:
        mo = self.settings.model
        explicit = self._state is not None and self._state.meta.mode == "explicit"
        applied = observe_batch(self.metrics, batch, result, seconds,
                                (mo.rating_min, mo.rating_max) if explicit else None)
        self.applied_total += applied
        if self.on_batch is not None:
            self.on_batch(applied, self.metrics.prequential.rmse())

    def _commit_informational(self, ends: dict[int, int]) -> None:
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=[TopicPartition(self.topic, p, e + 1)
                                           for p, e in ends.items()], asynchronous=True)
        except Exception as exc:  # lag tools only; the Redis checkpoint is the truth
            log.debug("informational commit failed: %s", exc)



def _part(msg: Message) -> int:
    return msg.partition()  # type: ignore[return-value]  # None only for error events


def _off(msg: Message) -> int:
    return msg.offset()  # type: ignore[return-value]

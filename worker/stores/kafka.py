"""Thin confluent-kafka adapter: client configs, topic creation, batched consumption.

Offsets are handled explicitly: no auto commit, no auto offset store. The worker's position
comes from the Redis checkpoint of the serving version; Kafka commits are informational (for
lag tools) and happen only after a checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from worker.config import KafkaSettings

log = logging.getLogger(__name__)


class LibrdkafkaLog:
    """Where every client's librdkafka log goes: the project's logger ``online_als.librdkafka``,
    at most one line per facility and level every ``interval_s`` (the next one says how many
    were left out).

    librdkafka logs a ``FAIL`` line for every broker connection it retries, every few
    milliseconds: hundreds of lines a second while Kafka is down. Those go at DEBUG, because
    the same failure reaches the caller through the client's error callback or exception,
    which the commands turn into one line and exit code 3; the last one is kept
    (:attr:`last_failure`) so that line can say which broker failed and how.
    confluent-kafka calls :meth:`log` from the thread that polls the client.
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.logger = logging.getLogger("online_als.librdkafka")
        self.last_failure: str | None = None
        self._last: dict[tuple[str, int], float] = {}
        self._left_out: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """confluent-kafka's call: ``fmt`` is ``"%s [%s] %s"`` over (facility, client, text)."""
        facility = str(args[0]) if args else ""
        text = str(args[-1]) if args else fmt
        if facility == "FAIL":
            self.last_failure = text.split("]: ", 1)[-1]  # without librdkafka's thread name
            level = logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        key, now = (facility, level), time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self.interval_s) < self.interval_s:
                self._left_out[key] = self._left_out.get(key, 0) + 1
                return
            self._last[key] = now
            left_out = self._left_out.pop(key, 0)
        suffix = f" ({left_out} similar lines left out)" if left_out else ""
        self.logger.log(level, "%s%s", fmt % args if args else fmt, suffix)


LIBRDKAFKA_LOG = LibrdkafkaLog()


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka settings shared by every client: brokers, TLS and SASL (secrets included:
    never log the result)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "logger": LIBRDKAFKA_LOG,
    }
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username or ""
        conf["sasl.password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        )
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.ssl_endpoint_identification else "none")
        for key, value in (("ssl.ca.location", settings.ssl_ca_location),
                           ("ssl.certificate.location", settings.ssl_certificate_location),
                           ("ssl.key.location", settings.ssl_key_location)):
            if value:
                conf[key] = value
        if settings.ssl_key_password:
            conf["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return conf


def consumer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.session_timeout_ms,
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": 65536,
        "enable.partition.eof": False,
        **extra,
    }


def producer_config(settings: KafkaSettings, **extra: Any) -> dict[str, Any]:
    return {
        **client_config(settings),
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        **extra,
    }


def ensure_topics(settings: KafkaSettings, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create topics (name -> partitions) that do not exist yet; existing ones are left alone."""
    admin = AdminClient(client_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException:
        admin.poll(0)  # hands librdkafka's queued log to LIBRDKAFKA_LOG: the error line names it
        raise
    wanted = [NewTopic(name, num_partitions=n, replication_factor=-1)
              for name, n in topics.items() if name not in existing]
    if not wanted:
        return
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        log.info("created topic %s", name)


def topic_partitions(consumer_or_admin: Any, topic: str, timeout_s: float = 10.0) -> list[int]:
    md = consumer_or_admin.list_topics(topic, timeout=timeout_s)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return []
    return sorted(t.partitions)


def consume_batch(consumer: Consumer, max_events: int, max_wait_s: float,
                  on_error: Callable[[KafkaError], None]) -> list[Message]:
    """Poll until ``max_events`` messages or ``max_wait_s`` passed (whichever first)."""
    out: list[Message] = []
    deadline = time.monotonic() + max_wait_s
    while len(out) < max_events:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        msgs = consumer.consume(num_messages=min(max_events - len(out), 10000), timeout=remaining)
        for msg in msgs:
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                on_error(err)
    return out


def make_consumer(settings: KafkaSettings, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, **extra))


def make_producer(settings: KafkaSettings, **extra: Any) -> Producer:
    return Producer(producer_config(settings, **extra))


def high_watermarks(consumer: Consumer, topic: str, partitions: list[int],
                    timeout_s: float = 2.0, cached: bool = False) -> dict[int, int]:
    """Each partition's end offset; ``cached`` takes the one the last fetch response carried
    (no broker round trip: what a lag metric on the hot path wants), leaving out partitions
    that have none yet."""
    out: dict[int, int] = {}
    for p in partitions:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s,
                                                     cached=cached)
        except KafkaException:
            continue
        if high >= 0:
            out[p] = high
    return out

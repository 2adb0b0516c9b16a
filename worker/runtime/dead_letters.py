"""The worker's dead-letter sink: rejected messages go to the dead-letter topic with a reason
(``docs/event-schema.md``), are counted per reason, and are durable before the checkpoint that
moves past them."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message, Producer

from worker.events import dead_letter_key, dead_letter_record
from worker.metrics import WorkerMetrics


class DeadLetterUndelivered(RuntimeError):
    """The dead-letter topic did not take the rejects: the checkpoint must not move."""


class DeadLetterSink:
    def __init__(self, producer: Producer, topic: str, bootstrap: str,
                 metrics: WorkerMetrics) -> None:
        self.producer, self.topic, self.bootstrap, self.metrics = producer, topic, bootstrap, metrics
        self.total = 0

    def send(self, msgs: list[Message], rejects: list[Any]) -> None:
        """Dead-letter ``msgs[pos]`` for each (pos, reason, detail) and wait until Kafka has
        them all; raises :class:`DeadLetterUndelivered` if it does not within 30 s."""
        for pos, reason, detail in rejects:
            m = msgs[pos]
            value, headers = dead_letter_record(m.value() or b"", reason, detail, m.topic(),
                                                m.partition(), m.offset())
            self._produce(value, headers, dead_letter_key(m.key()))
            self.metrics.events_dead_lettered.labels(reason).inc()
        self.total += len(rejects)
        remaining = self.producer.flush(30)
        if remaining:
            raise DeadLetterUndelivered(
                f"kafka {self.bootstrap}: {remaining} dead-letter messages to {self.topic} not "
                "delivered; not checkpointing past them")

    def _produce(self, value: bytes | None, headers: Any, key: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, headers=headers)
                return
            except BufferError:  # the local queue is full: let librdkafka deliver some first
                self.producer.poll(0.1)

    def close(self) -> None:
        self.producer.flush(10)

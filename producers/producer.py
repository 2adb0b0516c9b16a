"""``RatingProducer``: rating/interaction events -> Kafka, with delivery accounting.

Guarantees: key = user id, so one user's events land on one partition in send order;
``enable.idempotence`` (enforced) keeps that order and avoids duplicates across retries;
a full local queue blocks (poll, retry) and never drops an event.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from confluent_kafka import KafkaError, Message, Producer

from online_als.datasets import Ratings
from online_als.model import MODES, Mode
from worker.config import KafkaSettings
from worker.events import encode_binary, encode_json
from worker.stores.kafka import producer_config

__all__ = ["ProducerStats", "RatingProducer", "TokenBucket", "replay"]

WireFormat = Literal["json", "binary"]
BatchLike = Ratings | Sequence[npt.ArrayLike]

_FULL_WAIT_S = 0.05
# Rows encoded at a time. orjson 3.13 returns each message in a ~4 KiB buffer (measured:
# 100,000 JSON events held at once = 400 MB RSS), and produce() copies the value anyway.
_ENCODE_ROWS = 4096


@dataclass
class ProducerStats:
    """Counters since the producer was created."""

    sent: int = 0  # handed to librdkafka
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0  # delivery report with an error
    skipped: int = 0  # rows not sent because they cannot be valid (e.g. NaN rating)
    queue_full_waits: int = 0  # times produce() found the local queue full and waited
    bytes: int = 0  # message value bytes sent
    failure_reasons: Counter[str] = field(default_factory=Counter)
    skip_reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def in_flight(self) -> int:
        return self.sent - self.delivered - self.failed

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["failure_reasons"] = dict(self.failure_reasons)
        out["skip_reasons"] = dict(self.skip_reasons)
        out["in_flight"] = self.in_flight
        return out


class RatingProducer:
    """Send :class:`Ratings` (or column arrays) to a topic as JSON or binary events.

    ``mode="explicit"`` sends ``rating``; ``mode="implicit"`` sends ``event`` when the batch
    has an event column (a finite value becomes a ``weight`` override only with
    ``send_weights``), else the values as raw ``weight``.
    ``ts`` is the row's timestamp (omitted when 0, i.e. unknown). The Kafka message timestamp
    is the produce time unless ``kafka_timestamps="event"``.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str | None = None,
        *,
        fmt: WireFormat = "json",
        mode: Mode = "explicit",
        linger_ms: float = 20,
        batch_size: int = 1 << 20,
        compression: str = "lz4",
        queue_max_messages: int | None = None,
        send_weights: bool = False,
        event_id_prefix: str | None = None,
        kafka_timestamps: Literal["produce", "event"] = "produce",
        config: dict[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        if fmt not in ("json", "binary"):
            raise ValueError(f"fmt must be 'json' or 'binary', got {fmt!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be 'explicit' or 'implicit', got {mode!r}")
        if event_id_prefix is not None and fmt == "binary":
            raise ValueError("the binary format has no event_id; use fmt='json'")
        extra: dict[str, Any] = {
            "linger.ms": linger_ms,
            "batch.size": batch_size,
            "compression.type": compression,
            # Java's partitioner: the same key lands on the same partition as with
            # kafka-console-producer or any Java client feeding the same topic.
            "partitioner": "murmur2_random",
            "on_delivery": self._on_delivery,
        }
        if queue_max_messages is not None:
            extra["queue.buffering.max.messages"] = queue_max_messages
        extra.update(config or {})
        if str(extra.get("enable.idempotence", True)).lower() not in ("true", "1"):
            raise ValueError("enable.idempotence must stay on: it keeps per-user order")
        self.config = producer_config(settings, **extra)
        self.topic = topic or settings.topic
        self.fmt = fmt
        self.mode = mode
        self.send_weights = send_weights
        self.event_id_prefix = event_id_prefix
        self.kafka_timestamps = kafka_timestamps
        self.stats = ProducerStats()
        self._seq = 0
        self._client = client if client is not None else Producer(self.config)

    # ------------------------------------------------------------------ delivery accounting

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            self.stats.failure_reasons[f"{err.name()}: {err.str()}"] += 1

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports (waiting up to ``timeout`` seconds for one)."""
        return int(self._client.poll(timeout))

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every sent event's delivery report; returns how many are still pending."""
        return int(self._client.flush(timeout))

    def __len__(self) -> int:
        """Events in the local queue (not yet acknowledged)."""
        return len(self._client)

    def __enter__(self) -> RatingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    # ------------------------------------------------------------------ sending

    def send(
        self,
        user_id: str,
        item_id: str,
        *,
        rating: float | None = None,
        event: str | None = None,
        weight: float | None = None,
        ts: float | None = None,
    ) -> None:
        """Send one event (no mode check: the fields given are the fields sent)."""
        if self.fmt == "binary":
            value = encode_binary(user_id, item_id, rating=rating, event=event, weight=weight,
                                  ts=ts)
        else:
            value = encode_json(user_id, item_id, rating=rating, event=event, weight=weight,
                                ts=ts, event_id=self._next_event_id())
        self._produce([user_id.encode()], [value], None)

    def send_batch(self, batch: BatchLike) -> int:
        """Send every valid row of ``batch`` in order; returns the number sent.

        ``batch`` is a :class:`Ratings` or ``(user_ids, item_ids, values[, timestamps[,
        events]])``. Rows that cannot be valid events are counted in ``stats.skipped``.
        """
        r = batch if isinstance(batch, Ratings) else Ratings.from_columns(*batch)
        r = self._drop_invalid(r)
        for start in range(0, len(r), _ENCODE_ROWS):
            part = r.slice(start, start + _ENCODE_ROWS)
            users: list[str] = part.user_ids.tolist()
            with _gc_paused():
                values = self._encode(part, users)
            stamps: list[int] | None = None
            if self.kafka_timestamps == "event":
                # NaN (no time) -> 0, which librdkafka reads as "now"
                stamps = [int(t) for t in np.round(np.nan_to_num(part.timestamps) * 1000)]
            self._produce([u.encode() for u in users], values, stamps)
        return len(r)

    def _drop_invalid(self, r: Ratings) -> Ratings:
        finite = np.isfinite(r.values)
        if self.mode == "explicit":
            bad, reason = ~finite, "rating missing or not finite"
        elif r.events is None:
            bad, reason = ~finite, "weight missing or not finite"
        else:
            bad, reason = (r.events == "") & ~finite, "no event type and no weight"
        n_bad = int(np.count_nonzero(bad))
        if not n_bad:
            return r
        self.stats.skipped += n_bad
        self.stats.skip_reasons[reason] += n_bad
        return r.take(~bad)

    def _encode(self, r: Ratings, users: list[str]) -> list[bytes]:
        """Column arrays -> message values, reusing the worker's encoders (one call per row)."""
        items: list[str] = r.item_ids.tolist()
        # 6 decimals in float64: float32 widening would print 3.7 as 3.700000047683716.
        vals: list[float] = np.round(r.values.astype(np.float64), 6).tolist()
        # whole seconds go out as JSON integers, as they were read (float64 holds them exactly)
        stamps: list[float | None] = [(int(t) if t.is_integer() else t) if t else None
                                      for t in r.timestamps.tolist()]
        rows = zip(users, items, vals, stamps, strict=True)
        if self.fmt == "binary":
            if self.mode == "explicit":
                return [encode_binary(u, i, rating=v, ts=t) for u, i, v, t in rows]
            if r.events is None:
                return [encode_binary(u, i, weight=v, ts=t) for u, i, v, t in rows]
            return [encode_binary(u, i, **self._implicit(v, e), ts=t)
                    for (u, i, v, t), e in zip(rows, r.events.tolist(), strict=True)]
        ids = [self._next_event_id() for _ in users] if self.event_id_prefix else [None] * len(users)
        if self.mode == "explicit":
            return [encode_json(u, i, rating=v, ts=t, event_id=e)
                    for (u, i, v, t), e in zip(rows, ids, strict=True)]
        if r.events is None:
            return [encode_json(u, i, weight=v, ts=t, event_id=e)
                    for (u, i, v, t), e in zip(rows, ids, strict=True)]
        return [encode_json(u, i, **self._implicit(v, ev), ts=t, event_id=e)
                for (u, i, v, t), ev, e in zip(rows, r.events.tolist(), ids, strict=True)]

    def _implicit(self, value: float, event: str) -> dict[str, Any]:
        """Fields of one implicit row: the event type, plus a weight when one is wanted."""
        if not event:  # no type: the row's weight is the event
            return {"weight": value}
        if self.send_weights and value == value:
            return {"event": event, "weight": value}
        return {"event": event}

    def _next_event_id(self) -> str | None:
        if self.event_id_prefix is None:
            return None
        self._seq += 1
        return f"{self.event_id_prefix}{self._seq}"

    def _produce(self, keys: list[bytes], values: list[bytes], stamps: list[int] | None) -> None:
        """Hand messages to librdkafka in order; on a full queue, poll and retry (never drop)."""
        client = self._client
        produce = client.produce
        topic = self.topic
        stats = self.stats
        for j, (key, value) in enumerate(zip(keys, values, strict=True)):
            while True:
                try:
                    if stamps is None:
                        produce(topic, value, key)
                    else:
                        produce(topic, value, key, timestamp=stamps[j])
                    break
                except BufferError:
                    stats.queue_full_waits += 1
                    client.poll(_FULL_WAIT_S)
        stats.sent += len(values)
        stats.bytes += sum(map(len, values))
        client.poll(0)  # serve delivery reports every few thousand rows, not only when full


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: encoding allocates one short-lived dict per row and the collector
    they trigger cost ~4x the encoding itself (measured on ML-100K); no cycles are made."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class TokenBucket:
    """Pace to ``rate`` events/s with bursts of at most ``burst`` events.

    ``acquire(n)`` may overdraw (n > burst is allowed) and then waits the debt off, so large
    requests keep the long-run rate exact. ``wait`` is how to pass the time: the producer's
    ``poll`` serves delivery reports meanwhile.
    """

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate / 10))
        self.clock = clock
        self.tokens = self.burst
        self.last = clock()

    def acquire(self, n: int, wait: Callable[[float], object] = time.sleep) -> None:
        """Take ``n`` tokens, waiting (via ``wait(seconds)``) until any debt is paid."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - n
        self.last = now
        if self.tokens >= 0:
            return
        due = now - self.tokens / self.rate
        # A microsecond of slack: float rounding must not turn into endless tiny waits.
        while (left := due - self.clock()) > 1e-6:
            wait(left)
        now = self.clock()
        self.tokens = min(self.burst, max(0.0, now - due) * self.rate)
        self.last = now


def replay(
    producer: RatingProducer,
    chunks: Iterable[Ratings],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], object] | None = None,
    flush_timeout: float = 60.0,
) -> ProducerStats:
    """Send every chunk, paced to ``rate`` events/s when given, then flush."""
    bucket = TokenBucket(rate) if rate else None
    # Small slices under a rate limit keep the pacing smooth (~100 sends per second).
    step = max(1, int(rate // 100)) if rate else 0
    for chunk in chunks:
        pieces = chunk.iter_batches(step) if step else (chunk,)
        for piece in pieces:
            if bucket is not None:
                bucket.acquire(len(piece), wait=producer.poll)
            producer.send_batch(piece)
            if on_progress is not None:
                on_progress(len(piece))
    producer.flush(flush_timeout)
    return producer.stats

"""Dead-letter records: the original bytes (cut to a safe size when huge), the why in headers.

Dead-lettering must never fail, or the checkpoint cannot move past the bad message and the
partition is stuck for good. A Kafka topic accepts records of about 1,048,588 bytes by
default, while a producer refuses anything over its ``message.max.bytes`` (1,000,000 by
default): a message that fitted in the source topic can be too big for the DLQ producer. So
an original over :data:`DLQ_MAX_VALUE_BYTES` is truncated, and headers say so
(``dlq.truncated``, ``dlq.original_length``, ``dlq.original_sha256``).
"""

from __future__ import annotations

import hashlib
import time

from worker.events.schema import DLQ_REASONS

_DETAIL_MAX_BYTES = 1024  # headers travel with every DLQ message; keep them small

#: Largest value kept whole. Leaves ~100 KB of the producer's 1,000,000-byte limit for the
#: key and the headers (keys are user ids, far smaller; see :func:`dead_letter_key`).
DLQ_MAX_VALUE_BYTES = 900_000
#: Largest key passed on to the DLQ; longer keys are cut (the value keeps the evidence).
DLQ_MAX_KEY_BYTES = 64 * 1024

Headers = list[tuple[str, bytes]]


def dead_letter_record(
    original: bytes | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    *,
    now_ms: int | None = None,
    max_value_bytes: int = DLQ_MAX_VALUE_BYTES,
) -> tuple[bytes | None, Headers]:
    """Build ``(value, headers)`` for the DLQ topic.

    ``value`` is ``original`` unchanged when it has at most ``max_value_bytes`` bytes, else
    its first ``max_value_bytes`` bytes. Headers: ``dlq.reason``, ``dlq.detail``,
    ``dlq.topic``, ``dlq.partition``, ``dlq.offset``, ``dlq.ts`` (epoch millis when
    dead-lettered), and for a truncated value also ``dlq.truncated`` (``1``),
    ``dlq.original_length`` (bytes) and ``dlq.original_sha256`` (hex of the whole original);
    all UTF-8 strings.
    """
    if reason not in DLQ_REASONS:
        raise ValueError(f"unknown reject reason {reason!r}")
    detail_b = detail.encode("utf-8", "replace")[:_DETAIL_MAX_BYTES]
    # A cut may split a multi-byte char; re-decode so the header stays valid UTF-8.
    detail_b = detail_b.decode("utf-8", "ignore").encode("utf-8")
    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    headers: Headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail_b),
        ("dlq.topic", topic.encode("utf-8", "replace")[:_DETAIL_MAX_BYTES]),
        ("dlq.partition", str(int(partition)).encode()),
        ("dlq.offset", str(int(offset)).encode()),
        ("dlq.ts", str(ts).encode()),
    ]
    value = original
    if original is not None and len(original) > max_value_bytes:
        value = bytes(original[:max_value_bytes])
        headers += [
            ("dlq.truncated", b"1"),
            ("dlq.original_length", str(len(original)).encode()),
            ("dlq.original_sha256", hashlib.sha256(original).hexdigest().encode()),
        ]
    return value, headers


def dead_letter_key(key: bytes | None, max_key_bytes: int = DLQ_MAX_KEY_BYTES) -> bytes | None:
    """The key to give the DLQ record: the original, cut to ``max_key_bytes``."""
    if key is None or len(key) <= max_key_bytes:
        return key
    return bytes(key[:max_key_bytes])

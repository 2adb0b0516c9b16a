"""Dead-letter records: the original bytes untouched, the why in headers."""

from __future__ import annotations

import time

from worker.events.schema import REASONS

_DETAIL_MAX_BYTES = 1024  # headers travel with every DLQ message; keep them small

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
) -> tuple[bytes | None, Headers]:
    """Build ``(value, headers)`` for the DLQ topic; ``value`` is ``original`` unchanged.

    Headers: ``dlq.reason``, ``dlq.detail``, ``dlq.topic``, ``dlq.partition``,
    ``dlq.offset``, ``dlq.ts`` (epoch millis when dead-lettered), all UTF-8 strings.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown reject reason {reason!r}")
    detail_b = detail.encode("utf-8", "replace")[:_DETAIL_MAX_BYTES]
    # A cut may split a multi-byte char; re-decode so the header stays valid UTF-8.
    detail_b = detail_b.decode("utf-8", "ignore").encode("utf-8")
    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    headers: Headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail_b),
        ("dlq.topic", topic.encode("utf-8", "replace")),
        ("dlq.partition", str(int(partition)).encode()),
        ("dlq.offset", str(int(offset)).encode()),
        ("dlq.ts", str(ts).encode()),
    ]
    return original, headers

"""Compact little-endian binary event encoding (version 1) for high-rate producers.

Layout (all integers unsigned, little-endian)::

    offset  size   field
    0       1      magic 0xA1  (never a valid first byte of JSON, which starts with '{')
    1       1      version 0x01
    2       2      u16 user_len
    4       U      user_id, UTF-8
    4+U     2      u16 item_len
    6+U     I      item_id, UTF-8
    6+U+I   4      f32 value   (kind 0: rating; 1: weight override, NaN = use the event map;
                                2: raw implicit weight)
    10+U+I  1      u8 kind     (0 rating, 1 named event, 2 raw implicit weight)
    11+U+I  8      f64 ts      (unix seconds, or epoch millis if > 1e11; NaN = absent)
    19+U+I  1      u8 event_len (must be 0 unless kind == 1)
    20+U+I  E      event type, UTF-8
    total = 20 + U + I + E bytes; trailing bytes are an error.

Kind 1 carries the event *name* rather than a numeric code so producer and worker never have
to agree on a code table that could drift between deployments.
"""

from __future__ import annotations

import math
import struct
from typing import Final

from worker.events.schema import (
    UNDECODABLE,
    WRONG_MODE,
    DecodeConfig,
    Reject,
    check_id_bytes,
    check_rating,
    check_weight,
    event_weight,
    normalise_ts,
)

MAGIC: Final = b"\xa1"
VERSION: Final = 1
HEADER: Final = MAGIC + bytes([VERSION])

KIND_RATING: Final = 0
KIND_EVENT: Final = 1
KIND_WEIGHT: Final = 2

_U16 = struct.Struct("<H")
_TAIL = struct.Struct("<fBdB")  # value, kind, ts, event_len
_MAX_U16 = 0xFFFF


def _utf8(value: str | int, name: str, limit: int) -> bytes:
    data = (str(value) if type(value) is int else value).encode("utf-8")  # type: ignore[union-attr]
    if len(data) > limit:
        raise ValueError(f"{name} is {len(data)} bytes; the binary format allows {limit}")
    return data


def encode_binary(
    user_id: str | int,
    item_id: str | int,
    *,
    rating: float | None = None,
    event: str | None = None,
    weight: float | None = None,
    ts: float | None = None,
) -> bytes:
    """Encode one event. Exactly one of ``rating`` / (``event`` and/or ``weight``).

    Only structural limits are enforced here; value ranges are the decoder's job so a producer
    cannot disagree with the worker's configuration.
    """
    if rating is not None:
        if event is not None or weight is not None:
            raise ValueError("give either rating or event/weight, not both")
        kind, value, ev = KIND_RATING, rating, b""
    elif event is not None:
        kind, value, ev = (
            KIND_EVENT,
            (math.nan if weight is None else weight),
            _utf8(event, "event", 255),
        )
    elif weight is not None:
        kind, value, ev = KIND_WEIGHT, weight, b""
    else:
        raise ValueError("one of rating, event or weight is required")
    user = _utf8(user_id, "user_id", _MAX_U16)
    item = _utf8(item_id, "item_id", _MAX_U16)
    return b"".join(
        (
            HEADER,
            _U16.pack(len(user)),
            user,
            _U16.pack(len(item)),
            item,
            _TAIL.pack(value, kind, math.nan if ts is None else ts, len(ev)),
            ev,
        )
    )


def decode_binary(
    raw: bytes | bytearray | memoryview, cfg: DecodeConfig
) -> tuple[str, str, float, str, float]:
    """Decode and validate one binary event -> (user, item, value, event_type, ts or NaN)."""
    try:
        if raw[1] != VERSION:
            raise Reject(UNDECODABLE, f"unsupported binary version {raw[1]}")
        (n_user,) = _U16.unpack_from(raw, 2)
        p = 4 + n_user
        user_raw = raw[4:p]
        (n_item,) = _U16.unpack_from(raw, p)
        q = p + 2 + n_item
        item_raw = raw[p + 2 : q]
        value, kind, ts, n_event = _TAIL.unpack_from(raw, q)
    except (IndexError, struct.error):
        raise Reject(UNDECODABLE, f"truncated binary event ({len(raw)} bytes)") from None
    end = q + _TAIL.size + n_event
    if end != len(raw):
        raise Reject(UNDECODABLE, f"binary event length {len(raw)} != encoded length {end}")
    if kind > KIND_WEIGHT:
        raise Reject(UNDECODABLE, f"unknown binary kind {kind}")
    if n_event and kind != KIND_EVENT:
        raise Reject(UNDECODABLE, "event name present but kind is not 1")
    user = check_id_bytes(user_raw, "user_id", cfg.max_id_bytes)
    item = check_id_bytes(item_raw, "item_id", cfg.max_id_bytes)
    if (kind == KIND_RATING) != cfg.explicit:
        raise Reject(WRONG_MODE, f"binary kind {kind} in {cfg.mode} mode")
    event = ""
    if kind == KIND_RATING:
        value = check_rating(value, cfg)
    elif kind == KIND_WEIGHT:
        value = check_weight(value, cfg)
    else:
        try:
            event = str(raw[end - n_event : end], "utf-8")
        except UnicodeDecodeError:
            raise Reject(UNDECODABLE, "event name is not UTF-8") from None
        base = event_weight(event, cfg)
        value = base if value != value else check_weight(value, cfg)  # NaN: map weight
    return user, item, value, event, normalise_ts(ts)

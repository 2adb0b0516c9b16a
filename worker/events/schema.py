"""Event contract shared by the JSON and binary decoders: reason codes, config, field checks.

The checks raise :class:`Reject`; the batch loop turns that into a reject row.  Raising keeps
the good path free of result-tuple bookkeeping and costs only on bad messages, which are rare.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from online_als.events import DEFAULT_WEIGHTS
from online_als.model import MODES, Mode

UNDECODABLE: Final = "undecodable"
NOT_AN_OBJECT: Final = "not_an_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
NON_FINITE: Final = "non_finite"
OUT_OF_RANGE: Final = "out_of_range"
UNKNOWN_EVENT: Final = "unknown_event"
ID_TOO_LONG: Final = "id_too_long"
EMPTY_ID: Final = "empty_id"
WRONG_MODE: Final = "wrong_mode"
INTERNAL: Final = "internal"  # an unexpected error while handling this one message

#: Stable reject reason codes: metric label values and the ``dlq.reason`` header. Append only.
REASONS: Final[tuple[str, ...]] = (
    UNDECODABLE,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    NON_FINITE,
    OUT_OF_RANGE,
    UNKNOWN_EVENT,
    ID_TOO_LONG,
    EMPTY_ID,
    WRONG_MODE,
)

#: Every ``dlq.reason``: the decoder's :data:`REASONS` plus ``internal`` (the worker hit an
#: unexpected error while handling that one message). Append only.
DLQ_REASONS: Final[tuple[str, ...]] = (*REASONS, INTERNAL)

#: ``ts`` values above this are epoch milliseconds (1e11 s is year 5138; 1e11 ms is 1973).
MILLIS_THRESHOLD: Final = 1e11

#: The one default event-weight table (:data:`online_als.events.DEFAULT_WEIGHTS`); the
#: worker passes its configured map (``model.event_weights``).
DEFAULT_EVENT_WEIGHTS: Final[Mapping[str, float]] = DEFAULT_WEIGHTS

_DETAIL_MAX: Final = 200


class Reject(Exception):
    """A message failed validation; ``reason`` is one of :data:`REASONS`."""

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def short(value: object) -> str:
    """``repr`` cut to a bounded length: details go to DLQ headers and logs."""
    text = repr(value)
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    """What a worker accepts. ``event_weights`` maps implicit event type -> default weight."""

    mode: Mode = "explicit"
    rating_min: float = 0.5
    rating_max: float = 5.0
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)
    weight_max: float = 1e4
    max_id_bytes: int = 256
    # Derived once here because the decoder reads them per message.
    explicit: bool = field(init=False, repr=False, compare=False)
    _weights: dict[str, float] = field(init=False, repr=False, compare=False)
    _short_id_chars: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'explicit' or 'implicit', got {self.mode!r}")
        if not (math.isfinite(self.rating_min) and math.isfinite(self.rating_max)):
            raise ValueError("rating range must be finite")
        if self.rating_min > self.rating_max:
            raise ValueError("rating_min > rating_max")
        if not (math.isfinite(self.weight_max) and self.weight_max > 0):
            raise ValueError("weight_max must be finite and > 0")
        if self.max_id_bytes < 1:
            raise ValueError("max_id_bytes must be >= 1")
        weights = {str(k): float(v) for k, v in self.event_weights.items()}
        for name, w in weights.items():
            if not name:
                raise ValueError("event type names must be non-empty")
            if not (math.isfinite(w) and abs(w) <= self.weight_max):
                raise ValueError(f"weight of event {name!r} must be in [-weight_max, weight_max]")
        # Private copy so later mutation of the caller's mapping cannot change decoding.
        object.__setattr__(self, "event_weights", MappingProxyType(weights))
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "explicit", self.mode == "explicit")
        # Strings of at most this many chars fit max_id_bytes whatever they contain (<= 4 B/char).
        object.__setattr__(self, "_short_id_chars", self.max_id_bytes // 4)


def check_id(value: object, name: str, max_bytes: int) -> str:
    """Validate a JSON id (str or int; int -> decimal string)."""
    if type(value) is str:
        if not value:
            raise Reject(EMPTY_ID, f"{name} is empty")
        # A UTF-8 char is at most 4 bytes, so short strings skip the encode entirely.
        if len(value) * 4 > max_bytes and len(value.encode("utf-8")) > max_bytes:
            raise Reject(ID_TOO_LONG, f"{name} exceeds {max_bytes} UTF-8 bytes")
        return value
    if value is None:
        raise Reject(MISSING_FIELD, f"{name} missing")
    if type(value) is int:  # `type is`, not isinstance: bool is an int subclass
        return str(value)
    raise Reject(WRONG_TYPE, f"{name} must be a string or integer, got {type(value).__name__}")


def check_id_bytes(raw: bytes | bytearray | memoryview, name: str, max_bytes: int) -> str:
    """Validate a binary-encoded id (UTF-8 bytes)."""
    if not raw:
        raise Reject(EMPTY_ID, f"{name} is empty")
    if len(raw) > max_bytes:
        raise Reject(ID_TOO_LONG, f"{name} exceeds {max_bytes} UTF-8 bytes")
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise Reject(UNDECODABLE, f"{name} is not UTF-8: {exc.reason}") from None


def check_number(value: object, name: str) -> float:
    """A JSON number (not bool) as a finite float."""
    tp = type(value)
    if tp is float:
        num: float = value  # type: ignore[assignment]
    elif tp is int:
        # orjson yields ints only within 64 bits, so float() cannot overflow here.
        num = float(value)  # type: ignore[arg-type]
    else:
        raise Reject(WRONG_TYPE, f"{name} must be a number, got {tp.__name__}")
    if not math.isfinite(num):
        raise Reject(NON_FINITE, f"{name} is {num}")
    return num


def check_rating(value: float, cfg: DecodeConfig) -> float:
    if not math.isfinite(value):
        raise Reject(NON_FINITE, f"rating is {value}")
    if not cfg.rating_min <= value <= cfg.rating_max:
        raise Reject(OUT_OF_RANGE, f"rating {value!r} outside [{cfg.rating_min}, {cfg.rating_max}]")
    return value


def check_weight(value: float, cfg: DecodeConfig) -> float:
    if not math.isfinite(value):
        raise Reject(NON_FINITE, f"weight is {value}")
    # Negative weights are legitimate (e.g. dislike = -4: preference 0, confidence |w|).
    if not -cfg.weight_max <= value <= cfg.weight_max:
        raise Reject(
            OUT_OF_RANGE, f"weight {value!r} outside [-{cfg.weight_max}, {cfg.weight_max}]"
        )
    return value


def event_weight(event: str, cfg: DecodeConfig) -> float:
    weight = cfg._weights.get(event)
    if weight is None:
        raise Reject(UNKNOWN_EVENT, f"unknown event {short(event)}")
    return weight


def normalise_ts(value: float) -> float:
    """Event time in unix seconds; values above 1e11 are epoch millis. NaN = absent."""
    if value != value:  # NaN: absent, caller falls back to the Kafka timestamp
        return value
    if not math.isfinite(value):
        raise Reject(NON_FINITE, f"ts is {value}")
    if value < 0:
        raise Reject(OUT_OF_RANGE, f"ts {value!r} is negative")
    if value > MILLIS_THRESHOLD:
        value /= 1000.0
        # Still huge after /1000: microseconds or garbage; refusing beats a year-50000 event.
        if value > MILLIS_THRESHOLD:
            raise Reject(OUT_OF_RANGE, f"ts {value * 1000.0!r} too large for seconds or millis")
    return value

"""Batched decoding of Kafka message values (JSON or binary) into numpy columns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from online_als.ratings import Ratings, object_ids
from worker.events.binary import MAGIC, decode_binary
from worker.events.binary_batch import fast_binary
from worker.events.schema import (
    MILLIS_THRESHOLD,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    UNDECODABLE,
    WRONG_MODE,
    WRONG_TYPE,
    DecodeConfig,
    Reject,
    check_id,
    check_number,
    check_rating,
    check_weight,
    event_weight,
    normalise_ts,
    short,
)

RejectRow = tuple[int, str, str]
#: A Kafka message value as confluent-kafka returns it (None for a tombstone).
RawValue = bytes | bytearray | memoryview | None
_NAN = math.nan
_MAX_MILLIS = MILLIS_THRESHOLD * 1000.0


@dataclass(slots=True)
class DecodedBatch:
    """Good events as :class:`~online_als.ratings.Ratings` (row j came from input position
    ``index[j]``; ``events`` holds the implicit event name, "" for ratings and raw weights;
    ``timestamps`` NaN when neither the event nor Kafka gave a time) plus the rejects."""

    ratings: Ratings
    index: npt.NDArray[np.int64]
    event_ids: list[str | None]
    rejects: list[RejectRow] = field(default_factory=list)  # (position, reason, detail)

    def __len__(self) -> int:
        return len(self.ratings)


def _from_json(raw: Any, cfg: DecodeConfig) -> tuple[str, str, float, str, float, str | None]:
    """Decode and validate one JSON event -> (user, item, value, event_type, ts|NaN, event_id).

    Each field has an inline fast path for the common well-formed case; anything else falls
    through to the ``check_*`` helpers, which either normalise the value or raise the exact
    reason. This keeps the good path at a handful of type checks per message.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Reject(UNDECODABLE, str(exc)[:200]) from None
    if type(obj) is not dict:
        raise Reject(NOT_AN_OBJECT, f"top-level JSON {type(obj).__name__}")
    get = obj.get
    short_id = cfg._short_id_chars
    user = get("user_id")
    if type(user) is not str or not 0 < len(user) <= short_id:
        user = check_id(user, "user_id", cfg.max_id_bytes)
    item = get("item_id")
    if type(item) is not str or not 0 < len(item) <= short_id:
        item = check_id(item, "item_id", cfg.max_id_bytes)
    # null counts as absent everywhere, so producers may serialise unset optionals as null.
    rating = get("rating")
    event = get("event")
    weight = get("weight")
    implicit = event is not None or weight is not None
    etype = ""
    if rating is not None:
        if implicit:
            raise Reject(WRONG_MODE, "both rating and event/weight present")
        if not cfg.explicit:
            raise Reject(WRONG_MODE, "rating in implicit mode")
        tp = type(rating)
        # Comparisons are False for NaN, so only finite in-range numbers take the fast path.
        if (tp is float or tp is int) and cfg.rating_min <= rating <= cfg.rating_max:
            value = rating
        else:
            value = check_rating(check_number(rating, "rating"), cfg)
    elif implicit:
        if cfg.explicit:
            raise Reject(WRONG_MODE, "event/weight in explicit mode")
        if event is not None:
            if type(event) is not str:
                raise Reject(WRONG_TYPE, f"event must be a string, got {type(event).__name__}")
            value = cfg._weights.get(event) or event_weight(event, cfg)
            etype = event
        if weight is not None:
            value = check_weight(check_number(weight, "weight"), cfg)
    else:
        missing = "rating" if cfg.explicit else "event or weight"
        raise Reject(MISSING_FIELD, f"{missing} missing")
    ts = get("ts")
    if ts is None:
        ts = _NAN
    else:
        tp = type(ts)
        if tp is int and MILLIS_THRESHOLD < ts <= _MAX_MILLIS:
            ts = ts / 1000.0  # epoch millis, the common producer default
        elif not ((tp is float or tp is int) and 0 <= ts <= MILLIS_THRESHOLD):
            ts = normalise_ts(check_number(ts, "ts"))
    eid = get("event_id")
    if eid is not None and (type(eid) is not str or not 0 < len(eid) <= short_id):
        eid = check_id(eid, "event_id", cfg.max_id_bytes)
    return user, item, value, etype, ts, eid


def _kafka_seconds(kafka_ts_ms: Any, n: int) -> npt.NDArray[np.float64]:
    if kafka_ts_ms is None:
        return np.full(n, np.nan)
    kts = np.asarray(kafka_ts_ms, dtype=np.float64).reshape(-1)
    if kts.shape[0] != n:
        raise ValueError(f"kafka_ts_ms has {kts.shape[0]} entries for {n} values")
    # librdkafka reports -1 when the broker gave no timestamp.
    return np.where(kts >= 0, kts / 1000.0, np.nan)


def decode_batch(
    values: Sequence[RawValue], kafka_ts_ms: Any, config: DecodeConfig
) -> DecodedBatch:
    """Decode a poll batch. Never raises on message content: bad messages become rejects.

    ``kafka_ts_ms`` holds each message's Kafka timestamp in epoch millis (-1 = none, or None
    for the whole batch); it is the event time of messages without a ``ts`` field.
    Raises ValueError only if ``kafka_ts_ms`` does not match ``values`` in length.
    """
    kafka_s = _kafka_seconds(kafka_ts_ms, len(values))
    fast = fast_binary(values, config)
    taken = np.zeros(len(values), dtype=bool)
    taken[fast.positions] = True
    users: list[str] = []
    items: list[str] = []
    vals: list[float] = []
    etypes: list[str] = []
    tss: list[float] = []
    index: list[int] = []
    eids: list[str | None] = []
    rejects: list[RejectRow] = []
    from_json = _from_json
    from_binary = decode_binary
    for pos in np.flatnonzero(~taken).tolist():  # JSON, and binary the fast path left
        raw = values[pos]
        try:
            if raw[:1] == MAGIC:  # type: ignore[index]
                u, i, v, et, t = from_binary(raw, config)  # type: ignore[arg-type]
                eid = None
            else:
                u, i, v, et, t, eid = from_json(raw, config)
        except Reject as rej:
            rejects.append((pos, rej.reason, rej.detail))
            continue
        except Exception as exc:  # contract: never raise (e.g. None, str)
            rejects.append((pos, UNDECODABLE, f"{type(exc).__name__}: {short(exc)}"))
            continue
        users.append(u)
        items.append(i)
        vals.append(v)
        etypes.append(et)
        tss.append(t)
        index.append(pos)
        eids.append(eid)
    idx = np.concatenate((fast.positions, np.array(index, dtype=np.int64)))
    ts = np.concatenate((fast.ts, np.array(tss, dtype=np.float64)))
    value = np.concatenate((fast.values, np.array(vals, dtype=np.float64))).astype(np.float32)
    user_ids, item_ids = fast.user_ids + users, fast.item_ids + items
    etypes = [""] * len(fast.positions) + etypes
    no_ids: list[str | None] = [None] * len(fast.positions)
    eids = no_ids + eids
    if index and len(fast.positions):  # both paths took some: back to input order
        order = np.argsort(idx, kind="stable")
        idx, ts, value = idx[order], ts[order], value[order]
        ol = order.tolist()
        user_ids = [user_ids[j] for j in ol]
        item_ids = [item_ids[j] for j in ol]
        etypes = [etypes[j] for j in ol]
        eids = [eids[j] for j in ol]
    absent = np.isnan(ts)
    ts[absent] = kafka_s[idx[absent]]
    ratings = Ratings.trusted(object_ids(user_ids), object_ids(item_ids), value, ts, object_ids(etypes))
    return DecodedBatch(ratings, idx, eids, rejects)


def encode_json(
    user_id: str | int,
    item_id: str | int,
    *,
    rating: float | None = None,
    event: str | None = None,
    weight: float | None = None,
    ts: float | None = None,
    event_id: str | None = None,
) -> bytes:
    """Encode one event as the documented JSON object (unset fields omitted)."""
    doc: dict[str, object] = {"user_id": user_id, "item_id": item_id}
    for key, val in (
        ("rating", rating),
        ("event", event),
        ("weight", weight),
        ("ts", ts),
        ("event_id", event_id),
    ):
        if val is not None:
            doc[key] = val
    return orjson.dumps(doc)

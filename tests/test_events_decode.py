"""Event schema, batched decoder, binary encoding and dead-letter records (worker.events)."""

from __future__ import annotations

import functools
import math
import os
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.events import (
    DEFAULT_EVENT_WEIGHTS,
    MAGIC,
    REASONS,
    DecodeConfig,
    dead_letter_record,
    decode_batch,
    decode_binary,
    encode_binary,
    encode_json,
)

EXPLICIT = DecodeConfig()
IMPLICIT = DecodeConfig(mode="implicit")
EXPLICIT_1_10 = DecodeConfig(rating_min=1.0, rating_max=10.0)
CONFIGS = (EXPLICIT, IMPLICIT, EXPLICIT_1_10)
KAFKA_MS = 1_718_000_000_000

_TAIL = struct.Struct("<fBdB")
_U16 = struct.Struct("<H")


def raw_binary(user: bytes, item: bytes, value: float, kind: int, ts: float, event: bytes) -> bytes:
    """Binary v1 built by hand, so tests can express layouts encode_binary refuses."""
    return b"".join(
        (
            b"\xa1\x01",
            _U16.pack(len(user)),
            user,
            _U16.pack(len(item)),
            item,
            _TAIL.pack(value, kind, ts, len(event)),
            event,
        )
    )


# --------------------------------------------------------------------------------------------
# Strategies. A case is (raw value, expected): expected is a reason string for a bad message,
# or the decoded row (user, item, float32 value, event type, ts or None, event_id) for a good one.
# --------------------------------------------------------------------------------------------

Row = tuple[str, str, np.float32, str, float | None, str | None]


@dataclass(frozen=True)
class Case:
    raw: Any
    expected: str | Row


# Text is drawn char by char, so it is kept short; the long edge cases come from st.just.
ids = st.one_of(
    st.text(min_size=1, max_size=12),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(["€" * 85, "a" * 254 + "é", "z" * 256]),  # 255/256/256 UTF-8 bytes
)
long_ids = st.one_of(
    st.integers(257, 600).map(lambda n: "x" * n),
    st.integers(86, 200).map(lambda n: "€" * n),  # >= 258 bytes but few characters
    st.just("a" * 255 + "é"),  # 257 bytes in 256 characters
)
seconds = st.one_of(
    st.floats(0, 1e11), st.integers(0, 10**11), st.none(), st.integers(10**11 + 1, 10**14)
)
json_ints = st.integers(-(2**63), 2**63 - 1)  # orjson's range
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    json_ints,
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
extras = st.dictionaries(
    st.text(max_size=8).filter(
        lambda k: k not in {"user_id", "item_id", "rating", "event", "weight", "ts", "event_id"}
    ),
    json_scalars,
    max_size=3,
)
not_number = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "4.5", "1e999"]),
    st.booleans(),
    st.lists(json_ints, max_size=2),
    st.dictionaries(st.text(max_size=3), json_ints, max_size=2),
)
not_id = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(json_ints, max_size=2),
    st.dictionaries(st.text(max_size=3), json_ints, max_size=2),
)


_T = TypeVar("_T")


def per_config(fn: Callable[[DecodeConfig], _T]) -> Callable[[DecodeConfig], _T]:
    """Build a config's strategy once: fresh strategy objects per draw are slow to validate."""
    memo: dict[int, _T] = {}

    @functools.wraps(fn)
    def cached(cfg: DecodeConfig) -> _T:
        if id(cfg) not in memo:
            memo[id(cfg)] = fn(cfg)
        return memo[id(cfg)]

    return cached


def as_id(value: str | int) -> str:
    return value if isinstance(value, str) else str(value)


def expected_ts(ts: float | None) -> float | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return float(ts) / 1000.0 if ts > 1e11 else float(ts)


@per_config
def implicit_value(cfg: DecodeConfig) -> st.SearchStrategy[dict[str, Any]]:
    """The value part of a good implicit message: event, event + weight, or weight only."""
    events = st.sampled_from(sorted(cfg.event_weights))
    weights = st.floats(-cfg.weight_max, cfg.weight_max)
    return st.one_of(
        events.map(lambda e: {"event": e}),
        st.tuples(events, weights).map(lambda t: {"event": t[0], "weight": t[1]}),
        weights.map(lambda w: {"weight": w}),
    )


@per_config
def value_part(cfg: DecodeConfig) -> st.SearchStrategy[dict[str, Any]]:
    if cfg.explicit:
        return st.one_of(
            st.floats(cfg.rating_min, cfg.rating_max),
            st.integers(math.ceil(cfg.rating_min), math.floor(cfg.rating_max)),
        ).map(lambda r: {"rating": r})
    return implicit_value(cfg)


def expected_value(doc: dict[str, Any], cfg: DecodeConfig) -> tuple[np.float32, str]:
    if doc.get("rating") is not None:
        return np.float32(doc["rating"]), ""
    if doc.get("weight") is not None:
        return np.float32(doc["weight"]), doc.get("event") or ""
    return np.float32(cfg.event_weights[doc["event"]]), doc["event"]


@st.composite
def _good_doc(draw: st.DrawFn, cfg: DecodeConfig) -> dict[str, Any]:
    doc: dict[str, Any] = draw(extras)
    doc.update(user_id=draw(ids), item_id=draw(ids))
    doc.update(draw(value_part(cfg)))
    ts = draw(seconds)
    if ts is not None or draw(st.booleans()):
        doc["ts"] = ts  # None here is an explicit JSON null: same as absent
    if draw(st.booleans()):
        doc["event_id"] = draw(optional_ids)
    return doc


good_doc = per_config(_good_doc)
optional_ids = st.one_of(st.none(), ids)


def row_of(doc: dict[str, Any], cfg: DecodeConfig) -> Row:
    value, etype = expected_value(doc, cfg)
    eid = doc.get("event_id")
    return (
        as_id(doc["user_id"]),
        as_id(doc["item_id"]),
        value,
        etype,
        expected_ts(doc.get("ts")),
        None if eid is None else as_id(eid),
    )


@per_config
def good_json(cfg: DecodeConfig) -> st.SearchStrategy[Case]:
    def build(doc: dict[str, Any], padded: bool) -> Case:
        raw = orjson.dumps(doc)
        if padded:
            raw = b" \n" + raw + b"\t"  # insignificant whitespace is still an object
        return Case(raw, row_of(doc, cfg))

    return st.builds(build, good_doc(cfg), st.booleans())


binary_ts = st.one_of(st.none(), st.floats(0, 1e11), st.floats(1.0000001e11, 1e14))


@per_config
def good_binary(cfg: DecodeConfig) -> st.SearchStrategy[Case]:
    if cfg.explicit:
        value = st.floats(cfg.rating_min, cfg.rating_max, width=32).map(lambda r: {"rating": r})
    else:
        event = st.one_of(st.none(), st.sampled_from(sorted(cfg.event_weights)))
        weight = st.one_of(st.none(), st.floats(-cfg.weight_max, cfg.weight_max, width=32))
        value = st.builds(lambda e, w: {"event": e, "weight": w}, event, weight).map(
            lambda d: d if d["event"] is not None or d["weight"] is not None else {"weight": 1.0}
        )

    def build(user: str | int, item: str | int, fields: dict[str, Any], ts: float | None) -> Case:
        raw = encode_binary(user, item, ts=ts, **fields)
        val, etype = expected_value(fields, cfg)
        return Case(raw, (as_id(user), as_id(item), val, etype, expected_ts(ts), None))

    return st.builds(build, ids, ids, value, binary_ts)


def with_field(cfg: DecodeConfig, **fields: Any) -> st.SearchStrategy[bytes]:
    """A good JSON message with some fields replaced (a value of ... deletes the field)."""

    def patch(doc: dict[str, Any]) -> bytes:
        for key, val in fields.items():
            if val is ...:
                doc.pop(key, None)
            else:
                doc[key] = val
        return orjson.dumps(doc)

    return good_doc(cfg).map(patch)


def mutate(cfg: DecodeConfig, key: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.tuples(good_doc(cfg), values).map(lambda t: orjson.dumps({**t[0], key: t[1]}))


@per_config
def binary_good_fields(cfg: DecodeConfig) -> st.SearchStrategy[tuple[bytes, bytes]]:
    return st.tuples(ids, ids).map(lambda t: (as_id(t[0]).encode(), as_id(t[1]).encode()))


def good_kind_value(cfg: DecodeConfig) -> tuple[int, float]:
    return (0, cfg.rating_min) if cfg.explicit else (2, 1.0)


@per_config
def bad_cases(cfg: DecodeConfig) -> dict[str, st.SearchStrategy[bytes | None]]:
    """One strategy per reason that can occur in this mode; each yields only that reason."""
    kind, val = good_kind_value(cfg)
    bin_ids = binary_good_fields(cfg)
    good_bin = good_binary(cfg).map(lambda c: c.raw)
    value_field = "rating" if cfg.explicit else "weight"
    lo, hi = (cfg.rating_min, cfg.rating_max) if cfg.explicit else (-cfg.weight_max, cfg.weight_max)
    out_of_range_values = st.one_of(
        st.floats(max_value=lo, exclude_max=True, allow_nan=False, allow_infinity=False),
        st.floats(min_value=hi, exclude_min=True, allow_nan=False, allow_infinity=False),
        st.sampled_from([1e300, -1e300]),
    )
    other_mode = (
        st.sampled_from(sorted(cfg.event_weights)).map(lambda e: {"event": e})
        if cfg.explicit
        else st.floats(0.5, 5).map(lambda r: {"rating": r})
    )
    non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
    cases: dict[str, st.SearchStrategy[Any]] = {
        "undecodable": st.one_of(
            st.binary(max_size=40).map(lambda b: b"\xff" + b),  # never valid UTF-8
            good_json(cfg).map(lambda c: c.raw.rstrip()[:-1]),  # closing brace cut off
            st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]).map(
                lambda lit: b'{"user_id":"u","item_id":"i","%s":%s}' % (value_field.encode(), lit)
            ),
            st.tuples(good_bin, st.integers(1, 100)).map(
                lambda t: t[0][: max(1, len(t[0]) - t[1])]
            ),
            st.tuples(good_bin, st.binary(min_size=1, max_size=8)).map(lambda t: t[0] + t[1]),
            good_bin.map(lambda b: b[:1] + b"\x02" + b[2:]),  # unknown version
            st.tuples(bin_ids, st.integers(3, 255)).map(
                lambda t: raw_binary(*t[0], val, t[1], 0.0, b"")
            ),  # unknown kind
            bin_ids.map(lambda u: raw_binary(b"\xff\xfe", u[1], val, kind, 0.0, b"")),
            bin_ids.map(lambda u: raw_binary(u[0], u[1], val, 0, 0.0, b"view")),
            st.sampled_from([None, b"", b"\xa1", b"\xa1\x01"]),
        ),
        "not_an_object": st.one_of(
            st.lists(json_scalars, max_size=3),
            json_ints,
            st.text(),
            st.none(),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
        ).map(orjson.dumps),
        "missing_field": st.one_of(
            with_field(cfg, user_id=...),
            with_field(cfg, item_id=...),
            with_field(cfg, user_id=None),
            with_field(cfg, item_id=None),
            with_field(cfg, rating=..., event=..., weight=...),
            with_field(cfg, rating=None, event=None, weight=None),
        ),
        "wrong_type": st.one_of(
            mutate(cfg, "user_id", not_id),
            mutate(cfg, "item_id", not_id),
            mutate(cfg, "event_id", not_id),
            mutate(cfg, "ts", not_number),
            (
                mutate(cfg, "rating", not_number)
                if cfg.explicit
                else st.one_of(
                    mutate(cfg, "weight", not_number),
                    mutate(
                        cfg,
                        "event",
                        st.one_of(
                            st.integers(-9, 9),
                            st.booleans(),
                            st.lists(st.text(max_size=3), max_size=2),
                        ),
                    ),
                )
            ),
        ),
        "non_finite": st.one_of(
            st.tuples(bin_ids, non_finite).map(lambda t: raw_binary(*t[0], t[1], kind, 0.0, b"")),
            st.tuples(bin_ids, st.sampled_from([math.inf, -math.inf])).map(
                lambda t: raw_binary(*t[0], val, kind, t[1], b"")
            ),  # ts
        ),
        "out_of_range": st.one_of(
            mutate(cfg, value_field, out_of_range_values).map(_drop_other_value(cfg)),
            st.tuples(bin_ids, out_of_range_values.filter(lambda v: abs(v) < 1e38))
            .map(lambda t: raw_binary(*t[0], t[1], kind, 0.0, b""))
            .filter(lambda raw: not _f32_in(raw, lo, hi)),
            mutate(
                cfg,
                "ts",
                st.one_of(
                    st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False),
                    st.integers(-(2**63), -1),
                    st.floats(min_value=1e15, allow_nan=False, allow_infinity=False),
                ),
            ),
        ),
        "id_too_long": st.one_of(
            mutate(cfg, "user_id", long_ids),
            mutate(cfg, "item_id", long_ids),
            mutate(cfg, "event_id", long_ids),
            st.tuples(bin_ids, long_ids).map(
                lambda t: raw_binary(t[1].encode(), t[0][1], val, kind, 0.0, b"")
            ),
        ),
        "empty_id": st.one_of(
            mutate(cfg, "user_id", st.just("")),
            mutate(cfg, "item_id", st.just("")),
            mutate(cfg, "event_id", st.just("")),
            bin_ids.map(lambda u: raw_binary(u[0], b"", val, kind, 0.0, b"")),
        ),
        "wrong_mode": st.one_of(
            st.tuples(good_doc(cfg), other_mode).map(
                lambda t: orjson.dumps({**_without_values(t[0]), **t[1]})
            ),
            # both kinds in one message is ambiguous in either mode
            st.tuples(good_doc(cfg), other_mode).map(lambda t: orjson.dumps({**t[0], **t[1]})),
            bin_ids.map(lambda u: raw_binary(*u, 1.0, 2 if cfg.explicit else 0, 0.0, b"")),
        ),
    }
    if not cfg.explicit:
        unknown = st.text(max_size=12).filter(lambda e: e not in cfg.event_weights)
        cases["unknown_event"] = st.one_of(
            st.tuples(good_doc(cfg), unknown).map(
                lambda t: orjson.dumps({**_without_values(t[0]), "event": t[1]})
            ),
            st.tuples(bin_ids, unknown).map(
                lambda t: raw_binary(*t[0], math.nan, 1, 0.0, t[1].encode())
            ),
        )
    return cases


def _without_values(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("rating", "event", "weight")}


def _drop_other_value(cfg: DecodeConfig) -> Any:
    def drop(raw: bytes) -> bytes:
        doc = orjson.loads(raw)
        if not cfg.explicit:
            doc.pop("event", None)  # an event alone is fine; keep only the bad weight
        return orjson.dumps(doc)

    return drop


def _f32_in(raw: bytes, lo: float, hi: float) -> bool:
    n_user = _U16.unpack_from(raw, 2)[0]
    n_item = _U16.unpack_from(raw, 4 + n_user)[0]
    value = _TAIL.unpack_from(raw, 6 + n_user + n_item)[0]
    return bool(lo <= value <= hi)


REPEAT = 2  # copies of every branch per batch


@per_config
def batch_for(cfg: DecodeConfig) -> st.SearchStrategy[list[tuple[Case, int]]]:
    """REPEAT cases of every branch (good JSON, good binary, each reason), shuffled.

    Fixed slots rather than ``one_of``: hypothesis biases branch choice towards the first
    alternatives, and the test promises a minimum count of every reason.
    """
    bad = bad_cases(cfg)
    # unknown_event exists only in implicit mode (1 config of 3): triple it to even the counts.
    copies = {"unknown_event": 3}
    slots = [good_json(cfg), good_binary(cfg)] + [
        bad[reason].map(functools.partial(Case, expected=reason))
        for reason in bad
        for _ in range(copies.get(reason, 1))
    ]
    slots = slots * REPEAT
    kafka = st.lists(
        st.sampled_from([-1, KAFKA_MS, KAFKA_MS + 7]), min_size=len(slots), max_size=len(slots)
    )
    return st.builds(
        lambda cases, order, kts: [(cases[i], kts[i]) for i in order],
        st.tuples(*slots),
        st.permutations(range(len(slots))),
        kafka,
    )


def check_batch(cfg: DecodeConfig, cases: list[tuple[Case, int]]) -> Counter[str]:
    values = [c.raw for c, _ in cases]
    kafka = np.array([k for _, k in cases], dtype=np.int64)
    out = decode_batch(values, kafka, cfg)  # must not raise, whatever the bytes

    want_good = [
        (i, c.expected) for i, (c, _) in enumerate(cases) if not isinstance(c.expected, str)
    ]
    want_bad = [(i, c.expected) for i, (c, _) in enumerate(cases) if isinstance(c.expected, str)]
    got_bad = [(pos, reason) for pos, reason, _ in out.rejects]
    assert got_bad == want_bad, [(p, r, d, values[p]) for p, r, d in out.rejects]
    assert all(not d.startswith("internal") for _, _, d in out.rejects)
    assert out.index.tolist() == [i for i, _ in want_good]  # order preserved
    rows = [e for _, e in want_good]
    assert out.ratings.user_ids.tolist() == [r[0] for r in rows]  # type: ignore[index]
    assert out.ratings.item_ids.tolist() == [r[1] for r in rows]  # type: ignore[index]
    assert out.ratings.values.dtype == np.float32 and out.ratings.timestamps.dtype == np.float64
    assert out.index.dtype == np.int64
    np.testing.assert_array_equal(out.ratings.values, np.array([r[2] for r in rows], np.float32))  # type: ignore[index]
    assert out.ratings.events.tolist() == [r[3] for r in rows]  # type: ignore[index]
    assert out.event_ids == [r[5] for r in rows]  # type: ignore[index]
    want_ts = [
        r[4] if r[4] is not None else (kafka[i] / 1000.0 if kafka[i] >= 0 else math.nan)  # type: ignore[index]
        for (i, _), r in zip(want_good, rows, strict=True)
    ]
    np.testing.assert_array_equal(out.ratings.timestamps, np.array(want_ts, dtype=np.float64))
    return Counter(reason for _, reason in want_bad)


def test_fuzzed_batches_reject_every_bad_message_with_its_reason() -> None:
    """>= 1,000 generated bad messages per reason, mixed with good ones, in every mode."""
    seen: Counter[str] = Counter()
    examples = int(os.environ.get("FUZZ_EXAMPLES", "200"))  # per config
    for cfg in CONFIGS:

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.just(cfg), batch_for(cfg))
        def run(config: DecodeConfig, cases: list[tuple[Case, int]]) -> None:
            seen.update(check_batch(config, cases))

        run()
    print("fuzzed bad messages per reason:", dict(sorted(seen.items())))
    assert set(seen) == set(REASONS)
    if examples >= 200:
        assert min(seen.values()) >= 1000, seen


@given(st.lists(st.binary(max_size=64), max_size=50), st.sampled_from(CONFIGS))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(values: list[bytes], cfg: DecodeConfig) -> None:
    out = decode_batch(values, None, cfg)
    positions = sorted(out.index.tolist() + [p for p, _, _ in out.rejects])
    assert positions == list(range(len(values)))
    assert {r for _, r, _ in out.rejects} <= set(REASONS)


# --------------------------------------------------------------------------------------------
# Binary encoding
# --------------------------------------------------------------------------------------------


@given(
    ids,
    ids,
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.one_of(st.none(), st.floats(0, 1e11)),
)
def test_binary_roundtrip_raw_weight(
    user: str | int, item: str | int, w: float, ts: float | None
) -> None:
    raw = encode_binary(user, item, weight=w, ts=ts)
    assert raw[:2] == b"\xa1\x01" and raw[:1] == MAGIC
    cfg = DecodeConfig(mode="implicit", weight_max=3.5e38)
    u, i, v, ev, t = decode_binary(raw, cfg)
    assert (u, i, v, ev) == (as_id(user), as_id(item), w, "")
    assert (math.isnan(t) and ts is None) or t == ts


def test_binary_layout_is_as_documented() -> None:
    raw = encode_binary("u1", 42, rating=4.5, ts=1718000000.25)
    assert raw == (
        b"\xa1\x01"
        + b"\x02\x00u1"
        + b"\x02\x0042"
        + struct.pack("<f", 4.5)
        + b"\x00"
        + struct.pack("<d", 1718000000.25)
        + b"\x00"
    )
    assert len(raw) == 20 + 2 + 2
    ev = encode_binary("u", "i", event="like")
    assert ev.endswith(b"\x04like") and math.isnan(struct.unpack_from("<f", ev, 8)[0])


def test_binary_event_with_and_without_weight_override() -> None:
    no_override = encode_binary("u", "i", event="purchase")
    override = encode_binary("u", "i", event="purchase", weight=2.5)
    out = decode_batch([no_override, override], [KAFKA_MS, KAFKA_MS], IMPLICIT)
    assert out.ratings.values.tolist() == [8.0, 2.5]
    assert out.ratings.events.tolist() == ["purchase", "purchase"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"rating": 1.0, "event": "view"}, {"rating": 1.0, "weight": 1.0}],
)
def test_encode_binary_needs_exactly_one_kind(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_binary("u", "i", **kwargs)


def test_encode_binary_refuses_structural_overflow() -> None:
    with pytest.raises(ValueError):
        encode_binary("x" * 70000, "i", rating=1.0)
    with pytest.raises(ValueError):
        encode_binary("u", "i", event="e" * 256)


# --------------------------------------------------------------------------------------------
# Decoder details
# --------------------------------------------------------------------------------------------

EXAMPLES: list[tuple[bytes | None, DecodeConfig, str]] = [
    (b"not json", EXPLICIT, "undecodable"),
    (b'{"user_id":"u","item_id":"i","rating":NaN}', EXPLICIT, "undecodable"),
    (b'{"user_id":"u","item_id":"i","rating":1e400}', EXPLICIT, "undecodable"),
    (None, EXPLICIT, "undecodable"),  # tombstone
    (b"[1,2]", EXPLICIT, "not_an_object"),
    (b'{"item_id":"i","rating":4}', EXPLICIT, "missing_field"),
    (b'{"user_id":"u","item_id":"i"}', EXPLICIT, "missing_field"),
    (b'{"user_id":"u","item_id":"i","rating":null}', EXPLICIT, "missing_field"),
    (b'{"user_id":true,"item_id":"i","rating":4}', EXPLICIT, "wrong_type"),
    (b'{"user_id":1.0,"item_id":"i","rating":4}', EXPLICIT, "wrong_type"),
    (b'{"user_id":"u","item_id":"i","rating":"4"}', EXPLICIT, "wrong_type"),
    (b'{"user_id":"u","item_id":"i","rating":"NaN"}', EXPLICIT, "wrong_type"),
    (b'{"user_id":"u","item_id":"i","rating":4,"ts":"2024-01-01"}', EXPLICIT, "wrong_type"),
    (b'{"user_id":"u","item_id":"i","rating":5.01}', EXPLICIT, "out_of_range"),
    (b'{"user_id":"u","item_id":"i","rating":1e300}', EXPLICIT, "out_of_range"),
    (b'{"user_id":"u","item_id":"i","rating":4,"ts":-1}', EXPLICIT, "out_of_range"),
    (b'{"user_id":"u","item_id":"i","rating":4,"ts":1718000000000000}', EXPLICIT, "out_of_range"),
    (b'{"user_id":"u","item_id":"i","weight":1e5}', IMPLICIT, "out_of_range"),
    (b'{"user_id":"u","item_id":"i","event":"hover"}', IMPLICIT, "unknown_event"),
    (b'{"user_id":"u","item_id":"i","event":""}', IMPLICIT, "unknown_event"),
    (b'{"user_id":"' + b"a" * 257 + b'","item_id":"i","rating":4}', EXPLICIT, "id_too_long"),
    (b'{"user_id":"","item_id":"i","rating":4}', EXPLICIT, "empty_id"),
    (b'{"user_id":"u","item_id":"i","event":"view"}', EXPLICIT, "wrong_mode"),
    (b'{"user_id":"u","item_id":"i","rating":4}', IMPLICIT, "wrong_mode"),
    (b'{"user_id":"u","item_id":"i","rating":4,"event":"view"}', IMPLICIT, "wrong_mode"),
    (encode_binary("u", "i", rating=math.nan), EXPLICIT, "non_finite"),
    (encode_binary("u", "i", rating=4.0, ts=math.inf), EXPLICIT, "non_finite"),
    (encode_binary("u", "i", event="view", weight=math.inf), IMPLICIT, "non_finite"),
    (encode_binary("u", "i", event="hover"), IMPLICIT, "unknown_event"),
    (encode_binary("u", "i", rating=4.0), IMPLICIT, "wrong_mode"),
    (encode_binary("", "i", rating=4.0), EXPLICIT, "empty_id"),
    (encode_binary("u", "i", rating=4.0)[:-3], EXPLICIT, "undecodable"),
]


@pytest.mark.parametrize(("raw", "cfg", "reason"), EXAMPLES)
def test_documented_reject_examples(raw: bytes | None, cfg: DecodeConfig, reason: str) -> None:
    out = decode_batch([raw], [KAFKA_MS], cfg)
    assert len(out) == 0
    [(pos, got, detail)] = out.rejects
    assert (pos, got) == (0, reason) and detail


def test_reason_codes_are_stable() -> None:
    assert REASONS == (
        "undecodable",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "non_finite",
        "out_of_range",
        "unknown_event",
        "id_too_long",
        "empty_id",
        "wrong_mode",
    )


def test_id_limit_counts_utf8_bytes_not_characters() -> None:
    ok = "a" * 254 + "é"  # 256 bytes
    too_long = "a" * 255 + "é"  # 257 bytes, 256 characters
    out = decode_batch(
        [encode_json(ok, "i", rating=3), encode_json(too_long, "i", rating=3)], None, EXPLICIT
    )
    assert out.ratings.user_ids.tolist() == [ok] and out.rejects[0][:2] == (1, "id_too_long")


def test_integer_ids_become_decimal_strings_and_nulls_are_absent() -> None:
    raw = b'{"user_id":-7,"item_id":18446744073709551615,"rating":3,"ts":null,"event_id":null}'
    out = decode_batch([raw], [KAFKA_MS], EXPLICIT)
    assert out.ratings.user_ids.tolist() == ["-7"] and out.ratings.item_ids.tolist() == ["18446744073709551615"]
    assert out.event_ids == [None] and out.ratings.timestamps.tolist() == [KAFKA_MS / 1000]


def test_ts_seconds_millis_and_kafka_fallback() -> None:
    values = [
        encode_json("u", "i", rating=3, ts=1718000000),
        encode_json("u", "i", rating=3, ts=1718000000123),
        encode_json("u", "i", rating=3),
        encode_json("u", "i", rating=3),
        encode_binary("u", "i", rating=3.0, ts=1718000000500.0),
    ]
    out = decode_batch(values, [0, 0, KAFKA_MS, -1, 0], EXPLICIT)
    np.testing.assert_array_equal(
        out.ratings.timestamps, [1718000000.0, 1718000000.123, KAFKA_MS / 1000, math.nan, 1718000000.5]
    )


def test_rating_range_is_a_parameter() -> None:
    values = [encode_json("u", "i", rating=r) for r in (0.5, 1, 7.5, 10, 10.5)]
    out = decode_batch(values, None, EXPLICIT_1_10)
    assert out.ratings.values.tolist() == [1.0, 7.5, 10.0]
    assert [(p, r) for p, r, _ in out.rejects] == [(0, "out_of_range"), (4, "out_of_range")]


def test_negative_event_weights_and_unknown_fields() -> None:
    raw = b'{"user_id":"u","item_id":"i","event":"dislike","extra":{"x":[1]},"v":2}'
    out = decode_batch([raw], None, IMPLICIT)
    assert out.ratings.values.tolist() == [-4.0] and out.ratings.events.tolist() == ["dislike"]


def test_buffer_types_are_accepted() -> None:
    raw_json = encode_json("u", "i", rating=4)
    raw_bin = encode_binary("u", "i", rating=4.0)
    out = decode_batch(
        [bytearray(raw_json), memoryview(raw_json), memoryview(raw_bin), bytearray(raw_bin)],
        None,
        EXPLICIT,
    )
    assert out.ratings.user_ids.tolist() == ["u"] * 4 and not out.rejects


def test_empty_batch_and_length_mismatch() -> None:
    out = decode_batch([], [], EXPLICIT)
    assert len(out) == 0 and out.ratings.values.dtype == np.float32 and out.index.dtype == np.int64
    with pytest.raises(ValueError):
        decode_batch([b"{}"], [1, 2], EXPLICIT)


def test_config_validation_and_isolation() -> None:
    weights = {"view": 1.0}
    cfg = DecodeConfig(mode="implicit", event_weights=weights)
    weights["hover"] = 1.0  # later mutation of the caller's dict must not leak in
    assert decode_batch([encode_json("u", "i", event="hover")], None, cfg).rejects[0][1] == (
        "unknown_event"
    )
    assert dict(DecodeConfig().event_weights) == dict(DEFAULT_EVENT_WEIGHTS)
    for bad in (
        {"mode": "both"},
        {"rating_min": 5.0, "rating_max": 1.0},
        {"rating_max": math.inf},
        {"event_weights": {"": 1.0}},
        {"event_weights": {"view": math.nan}},
        {"max_id_bytes": 0},
    ):
        with pytest.raises(ValueError):
            DecodeConfig(**bad)


# --------------------------------------------------------------------------------------------
# Dead-letter records
# --------------------------------------------------------------------------------------------


def test_dead_letter_record_keeps_bytes_and_explains() -> None:
    original = b"\xff\x00 not json"
    value, headers = dead_letter_record(
        original, "undecodable", "bad " * 1000 + "€", "ratings", 3, 12345, now_ms=1718000000000
    )
    assert value is original
    h = dict(headers)
    assert list(h) == [
        "dlq.reason",
        "dlq.detail",
        "dlq.topic",
        "dlq.partition",
        "dlq.offset",
        "dlq.ts",
    ]
    assert h["dlq.reason"] == b"undecodable" and h["dlq.topic"] == b"ratings"
    assert (h["dlq.partition"], h["dlq.offset"], h["dlq.ts"]) == (b"3", b"12345", b"1718000000000")
    assert len(h["dlq.detail"]) <= 1024
    h["dlq.detail"].decode("utf-8")  # still valid UTF-8 after truncation
    with pytest.raises(ValueError):
        dead_letter_record(original, "bogus", "", "t", 0, 0)


def test_dead_letter_from_decode_rejects() -> None:
    values = [b"{}", encode_json("u", "i", rating=4)]
    out = decode_batch(values, None, EXPLICIT)
    for pos, reason, detail in out.rejects:
        value, headers = dead_letter_record(values[pos], reason, detail, "ratings", 0, pos)
        assert value == values[pos] and dict(headers)["dlq.reason"] == b"missing_field"

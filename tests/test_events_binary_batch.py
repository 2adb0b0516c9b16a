"""The vectorised binary decoder agrees with the per-message decoder on every input."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.events import DecodeConfig, decode_batch, decode_binary, encode_binary
from worker.events.binary_batch import fast_binary
from worker.events.schema import Reject

EXPLICIT = DecodeConfig(mode="explicit", rating_min=0.5, rating_max=5.0, max_id_bytes=16)
IMPLICIT = DecodeConfig(mode="implicit", event_weights={"view": 1.0, "buy": 4.0}, max_id_bytes=16)

ids = st.one_of(st.text(min_size=0, max_size=20), st.sampled_from(["u1", "é", "a\x00b", "x" * 16]))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.5, 5.0, 5.5, -1.0, 3.0]))
stamps = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1.7e9, 1.7e12, 1e11, 1e11 + 1, 1e14, 1e15, -5.0]))


@st.composite
def records(draw: st.DrawFn) -> bytes | None:
    user, item = draw(ids), draw(ids)
    ts = draw(stamps)
    choice = draw(st.integers(0, 2))
    try:
        if choice == 0:
            raw = encode_binary(user, item, rating=draw(floats), ts=ts)
        elif choice == 1:
            raw = encode_binary(user, item, weight=draw(floats), ts=ts)
        else:
            raw = encode_binary(user, item, event=draw(st.sampled_from(["view", "buy", "x"])),
                                ts=ts)
    except ValueError:
        return None
    mutation = draw(st.integers(0, 5))
    if mutation == 1 and raw:  # truncate
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif mutation == 2 and raw:  # flip a byte
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    elif mutation == 3:  # trailing garbage
        raw = raw + b"\x00"
    return raw


def reference(values: list[bytes | None], cfg: DecodeConfig) -> list[tuple[object, ...] | str]:
    out: list[tuple[object, ...] | str] = []
    for raw in values:
        try:
            u, i, v, _, t = decode_binary(raw, cfg)  # type: ignore[arg-type]
            out.append((u, i, float(np.float32(v)), t))
        except Reject as rej:
            out.append(rej.reason)
        except Exception:
            out.append("undecodable")
    return out


def batch_view(values: list[bytes | None], cfg: DecodeConfig) -> list[tuple[object, ...] | str]:
    kafka = np.full(len(values), -1.0)
    d = decode_batch(values, kafka, cfg)  # type: ignore[arg-type]
    out: list[tuple[object, ...] | str] = ["?"] * len(values)
    for pos, reason, _ in d.rejects:
        out[pos] = reason
    for j, pos in enumerate(d.index.tolist()):
        out[pos] = (d.ratings.user_ids[j], d.ratings.item_ids[j], float(d.ratings.values[j]), float(d.ratings.timestamps[j]))
    return out


def same(a: list[tuple[object, ...] | str], b: list[tuple[object, ...] | str]) -> bool:
    def norm(x: tuple[object, ...] | str) -> object:
        if isinstance(x, tuple):
            return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in x)
        return x
    return [norm(x) for x in a] == [norm(x) for x in b]


@settings(max_examples=300, deadline=None)
@given(st.lists(records().filter(lambda r: r is not None and r[:1] == b"\xa1"), min_size=1,
                max_size=40))
def test_batch_decoder_equals_per_message_decoder(values: list[bytes]) -> None:
    for cfg in (EXPLICIT, IMPLICIT):
        assert same(batch_view(values, cfg), reference(values, cfg))  # type: ignore[arg-type]


def test_fast_path_takes_the_common_records() -> None:
    good = [encode_binary(f"u{j}", f"i{j}", rating=4.0, ts=1.7e9 + j) for j in range(100)]
    millis = [encode_binary("u", "i", rating=1.0, ts=1.7e12)]
    named = [encode_binary("u", "i", event="view")]
    fast = fast_binary(good + millis + named + [b"{}", b""], EXPLICIT)
    assert fast.positions.tolist() == list(range(101))
    assert fast.user_ids[:3] == ["u0", "u1", "u2"] and fast.ts[100] == 1.7e9
    assert fast_binary(named, IMPLICIT).positions.tolist() == []  # names: the per-message path

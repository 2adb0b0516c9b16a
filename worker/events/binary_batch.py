"""Vectorised decoding of a batch of binary events (the high-rate producer path).

:func:`decode_binary` validates one message in Python; at tens of thousands of events per
second that loop was the worker's largest cost after Redis. :func:`fast_binary` parses every
binary message of a batch at once with NumPy over one concatenated buffer and accepts only the
records whose every check it can decide exactly as :func:`decode_binary` would (ratings in
explicit mode, raw weights in implicit mode, ASCII ids, no event name). Everything else --
named events, non-ASCII ids, anything malformed -- is left to :func:`decode_binary`, which also
writes the reject reasons. ``tests/test_events_binary_batch.py`` checks that both paths give
the same result on random and hostile input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from online_als.arrays import concat_ranges
from worker.events.binary import KIND_RATING, KIND_WEIGHT, MAGIC, VERSION
from worker.events.schema import MILLIS_THRESHOLD, DecodeConfig

_MAGIC = MAGIC[0]
_TAIL = 14  # f32 value, u8 kind, f64 ts, u8 event_len


@dataclass(frozen=True)
class FastRecords:
    """The records the vectorised path accepted, in input order."""

    positions: npt.NDArray[np.int64]
    user_ids: list[str]
    item_ids: list[str]
    values: npt.NDArray[np.float64]
    ts: npt.NDArray[np.float64]  # unix seconds, NaN when absent


def _u16(buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return buf[at].astype(np.int64) | (buf[at + 1].astype(np.int64) << 8)


def _gather(buf: npt.NDArray[np.uint8], at: npt.NDArray[np.int64], width: int,
            dtype: str) -> npt.NDArray[Any]:
    cols = buf[at[:, None] + np.arange(width)]
    return np.ascontiguousarray(cols).view(dtype).reshape(-1)


def _ids(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64],
         lengths: npt.NDArray[np.int64]) -> list[str]:
    """ASCII ids (no NUL byte, checked by the caller) as str, via one decode and one split."""
    if len(starts) == 0:
        return []
    out = np.zeros(int(lengths.sum()) + len(starts), dtype=np.uint8)
    sep = np.cumsum(lengths + 1) - 1
    keep = np.ones(len(out), dtype=bool)
    keep[sep] = False
    out[keep] = buf[concat_ranges(starts, lengths)]
    return out.tobytes().decode("ascii").split("\x00")[:-1]


def _ascii_ok(buf: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64],
              lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Per id: every byte in 1..127 (an empty id passes here; the caller rejects it)."""
    b = buf[concat_ranges(starts, lengths)]
    bad = np.concatenate(([0], np.cumsum((b == 0) | (b >= 128))))
    ends = np.cumsum(lengths)
    return bad[ends] - bad[ends - lengths] == 0


def fast_binary(values: Sequence[Any], cfg: DecodeConfig) -> FastRecords:
    """The binary records of ``values`` that decode on the vectorised path."""
    n = len(values)
    raw = [v if type(v) is bytes else b"" for v in values]
    lens = np.fromiter(map(len, raw), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(raw) + bytes(8), dtype=np.uint8)  # padding: reads stay inside
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    ends = starts + lens
    # header, then each length field only where the previous one left room for it
    ok = (lens >= 4 + 2 + 2 + _TAIL)
    ok &= buf[np.where(ok, starts, 0)] == _MAGIC
    ok &= buf[np.where(ok, starts + 1, 0)] == VERSION
    s = starts[ok]
    pos = np.flatnonzero(ok)
    n_user = _u16(buf, s + 2)
    p = s + 4 + n_user
    room = p + 2 + _TAIL <= ends[pos]
    pos, s, n_user, p = pos[room], s[room], n_user[room], p[room]
    n_item = _u16(buf, p)
    q = p + 2 + n_item
    room = q + _TAIL == ends[pos]  # exact: also means no event name and no trailing bytes
    pos, s, n_user, p, n_item, q = (a[room] for a in (pos, s, n_user, p, n_item, q))
    kind = buf[q + 4]
    good = (buf[q + 13] == 0) & (kind == (KIND_RATING if cfg.explicit else KIND_WEIGHT))
    good &= (n_user > 0) & (n_user <= cfg.max_id_bytes)
    good &= (n_item > 0) & (n_item <= cfg.max_id_bytes)
    value = _gather(buf, q, 4, "<f4").astype(np.float64)
    ts = _gather(buf, q + 5, 8, "<f8")
    finite = np.isfinite(value)
    if cfg.explicit:
        good &= finite & (value >= cfg.rating_min) & (value <= cfg.rating_max)
    else:
        good &= finite & (value >= -cfg.weight_max) & (value <= cfg.weight_max)
    absent = np.isnan(ts)
    seconds = (ts >= 0) & (ts <= MILLIS_THRESHOLD)
    millis = (ts > MILLIS_THRESHOLD) & (ts / 1000.0 <= MILLIS_THRESHOLD)
    good &= absent | seconds | millis
    ts = np.where(millis, ts / 1000.0, ts)
    u0, i0 = s + 4, p + 2
    good &= _ascii_ok(buf, u0, n_user) & _ascii_ok(buf, i0, n_item)
    return FastRecords(pos[good], _ids(buf, u0[good], n_user[good]),
                       _ids(buf, i0[good], n_item[good]), value[good], ts[good])

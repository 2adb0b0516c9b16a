"""The one columnar shape of rating events, from a dataset file to a decoded Kafka batch, the
ratings log and a retrain's input.

A :class:`Ratings` holds four aligned columns, plus optional ones:

- ``user_ids``, ``item_ids``: 1-D arrays of ``str`` (fixed-width ``'U'`` or ``object``),
- ``values``: ``float32`` (the rating, or an implicit weight; ``NaN`` when a file left it empty),
- ``timestamps``: ``float64`` unix seconds (0 when a file had no time column; ``NaN`` when a
  Kafka event carried no time at all). The online kernels' clock is
  :func:`online_als.adaptive.event_seconds` of it;
- ``events``: ``None`` or a ``str`` array (event type, e.g. ``"view"``; ``""`` for a rating
  or a raw weight);
- ``partitions`` (``int32``) and ``offsets`` (``int64``): where each event sits in Kafka, set
  for events read from Kafka or from the ratings log, ``None`` for a dataset.

It is immutable by convention: every operation returns a new container and never mutates
the arrays it was given (``take`` copies through fancy indexing).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Ratings", "as_str_array", "concat", "object_ids", "sort_by_time"]

_COLUMNS = ("user_ids", "item_ids", "values", "timestamps", "events", "partitions", "offsets")


def object_ids(ids: Sequence[str]) -> np.ndarray:
    """A list of str as a 1-D ``object`` array, without NumPy guessing a shape or a width.

    >>> object_ids(["a", "bc"]).dtype, object_ids([]).shape
    (dtype('O'), (0,))
    """
    out = np.empty(len(ids), dtype=object)
    out[:] = ids
    return out


def as_str_array(ids: npt.ArrayLike) -> np.ndarray:
    """Return ``ids`` as a 1-D array of ``str`` (``'U'`` or ``object`` kept as is).

    Integers are formatted in decimal, so ``[196, 242]`` becomes ``['196', '242']``.

    >>> as_str_array([196, 242]).tolist()
    ['196', '242']
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O":
        if all(isinstance(x, str) for x in arr.tolist()):
            return arr
        return np.array([str(x) for x in arr.tolist()], dtype=object)
    if arr.dtype.kind == "S":
        return np.char.decode(arr, "utf-8")
    if arr.dtype.kind == "f" and arr.size and np.all(np.mod(arr, 1) == 0):
        arr = arr.astype(np.int64)
    if arr.dtype.kind in "iu":
        if arr.size == 0:
            return np.empty(0, np.str_)
        width = max(len(str(arr.min())), len(str(arr.max())))
        return arr.astype(f"U{width}")  # not the default U21 of int64: 4x less memory
    return arr.astype(np.str_)


@dataclass(frozen=True, eq=False, slots=True)
class Ratings:
    """Aligned rating columns; see the module docstring for dtypes.

    >>> r = Ratings.from_columns([1, 1, 2], [10, 20, 10], [4, 3, 5], [30, 10, 20])
    >>> len(r), r.n_users, r.n_items
    (3, 2, 2)
    >>> r.sort_by_time().timestamps.tolist()
    [10.0, 20.0, 30.0]
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    events: np.ndarray | None = None
    partitions: np.ndarray | None = None
    offsets: np.ndarray | None = None

    def __post_init__(self) -> None:
        users = as_str_array(self.user_ids)
        n = users.shape[0]
        cols: dict[str, np.ndarray | None] = {
            "user_ids": users,
            "item_ids": as_str_array(self.item_ids),
            "values": np.asarray(self.values, dtype=np.float32).reshape(-1),
            "timestamps": np.asarray(self.timestamps, dtype=np.float64).reshape(-1),
            "events": None if self.events is None else as_str_array(self.events),
            "partitions": (None if self.partitions is None
                           else np.asarray(self.partitions, np.int32).reshape(-1)),
            "offsets": None if self.offsets is None else np.asarray(self.offsets, np.int64).reshape(-1),
        }  # fmt: skip
        bad = {k: len(v) for k, v in cols.items() if v is not None and len(v) != n}
        if bad:
            raise ValueError(f"Ratings columns differ in length: user_ids={n}, {bad}")
        for name, col in cols.items():
            object.__setattr__(self, name, col)

    @classmethod
    def from_columns(
        cls,
        user_ids: npt.ArrayLike,
        item_ids: npt.ArrayLike,
        values: npt.ArrayLike,
        timestamps: npt.ArrayLike | None = None,
        events: npt.ArrayLike | None = None,
    ) -> Ratings:
        """Build from array-likes; ids are converted to ``str``, missing timestamps are 0."""
        users = as_str_array(user_ids)
        stamps = np.zeros(users.shape[0]) if timestamps is None else timestamps
        return cls(users, as_str_array(item_ids), np.asarray(values, np.float32),
                   np.asarray(stamps, np.float64), None if events is None else as_str_array(events))

    @classmethod
    def trusted(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        values: np.ndarray,
        timestamps: np.ndarray,
        events: np.ndarray | None = None,
        partitions: np.ndarray | None = None,
        offsets: np.ndarray | None = None,
    ) -> Ratings:
        """Build from columns that already have the module's dtypes and one length (row
        subsets of a valid container, a decoder's or the log's own arrays): no checks, no
        copies, for the hot paths."""
        obj = object.__new__(cls)
        for name, col in zip(_COLUMNS, (user_ids, item_ids, values, timestamps, events,
                                        partitions, offsets), strict=True):  # fmt: skip
            object.__setattr__(obj, name, col)
        return obj

    @classmethod
    def empty(cls) -> Ratings:
        """A container with zero rows."""
        return cls(np.empty(0, np.str_), np.empty(0, np.str_), np.empty(0, np.float32),
                   np.empty(0, np.float64))  # fmt: skip

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def __repr__(self) -> str:
        return f"Ratings(n={len(self)}, users={self.n_users}, items={self.n_items})"

    @property
    def n_users(self) -> int:
        """Number of distinct users."""
        return int(np.unique(self.user_ids).shape[0])

    @property
    def n_items(self) -> int:
        """Number of distinct items."""
        return int(np.unique(self.item_ids).shape[0])

    def _map(self, select: Any) -> Ratings:
        cols = [getattr(self, name) for name in _COLUMNS]
        return Ratings.trusted(*(None if c is None else select(c) for c in cols))  # type: ignore[arg-type]

    def take(self, index: npt.ArrayLike) -> Ratings:
        """Rows selected by an integer index array or a boolean mask (copies)."""
        idx = np.asarray(index)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64, copy=False)
        return self._map(lambda c: c[idx])

    def slice(self, start: int, stop: int) -> Ratings:
        """Rows ``start:stop`` (views, no copy)."""
        return self._map(lambda c: c[start:stop])

    def sort_by_time(self) -> Ratings:
        """Rows ordered by timestamp; ties keep their original order (stable sort)."""
        return sort_by_time(self)

    def sort_by_offset(self) -> Ratings:
        """Rows ordered by (partition, offset): the order a worker applies and a replay
        repeats (needs both columns)."""
        if self.partitions is None or self.offsets is None:
            raise ValueError("sort_by_offset needs the partitions and offsets columns")
        return self.take(np.lexsort((self.offsets, self.partitions)))

    def iter_batches(self, batch_size: int) -> Iterator[Ratings]:
        """Consecutive slices of at most ``batch_size`` rows."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for start in range(0, len(self), batch_size):
            yield self.slice(start, start + batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Columns as a plain dict of arrays (optional ones only when present)."""
        out: dict[str, Any] = {
            "user_id": self.user_ids,
            "item_id": self.item_ids,
            "rating": self.values,
            "timestamp": self.timestamps,
        }
        for key, col in (("event", self.events), ("partition", self.partitions),
                         ("offset", self.offsets)):  # fmt: skip
            if col is not None:
                out[key] = col
        return out


def sort_by_time(ratings: Ratings) -> Ratings:
    """Return ``ratings`` ordered by timestamp, stable for equal timestamps.

    >>> r = Ratings.from_columns(["a", "b", "c"], ["x", "y", "z"], [1, 2, 3], [5, 1, 5])
    >>> sort_by_time(r).user_ids.tolist()
    ['b', 'a', 'c']
    """
    order = np.argsort(ratings.timestamps, kind="stable")
    return ratings.take(order)


def concat(parts: Sequence[Ratings]) -> Ratings:
    """Concatenate containers row-wise; an optional column is kept only if every part has it.

    >>> a = Ratings.from_columns(["1"], ["2"], [3.0], [4])
    >>> len(concat([a, a, Ratings.empty()]))
    2
    """
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if not parts:
        return Ratings.empty()
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        if any(a is None for a in arrays):
            return None
        if any(a.dtype == object for a in arrays):
            arrays = [a.astype(object) for a in arrays]
        return np.concatenate(arrays)

    return Ratings.trusted(*(cat(name) for name in _COLUMNS))  # type: ignore[arg-type]

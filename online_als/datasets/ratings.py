"""Columnar container for rating events.

A :class:`Ratings` holds four aligned columns (plus an optional event-type column):

- ``user_ids``, ``item_ids``: 1-D arrays of ``str`` (fixed-width ``'U'`` or ``object``),
- ``values``: ``float32`` (the rating, or an implicit weight; ``NaN`` when a file left it empty),
- ``timestamps``: ``int64`` unix seconds (0 when the source had no time column),
- ``events``: ``None`` or a ``str`` array (event type, e.g. ``"view"``).

It is immutable by convention: every operation returns a new container and never mutates
the arrays it was given (``take`` copies through fancy indexing).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Ratings", "as_str_array", "concat", "sort_by_time"]


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
    [10, 20, 30]
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    events: np.ndarray | None = None

    def __post_init__(self) -> None:
        users = as_str_array(self.user_ids)
        items = as_str_array(self.item_ids)
        values = np.asarray(self.values, dtype=np.float32).reshape(-1)
        stamps = np.asarray(self.timestamps, dtype=np.int64).reshape(-1)
        events = None if self.events is None else as_str_array(self.events)
        n = users.shape[0]
        lengths = {
            "item_ids": items.shape[0],
            "values": values.shape[0],
            "timestamps": stamps.shape[0],
        }
        if events is not None:
            lengths["events"] = events.shape[0]
        bad = {k: v for k, v in lengths.items() if v != n}
        if bad:
            raise ValueError(f"Ratings columns differ in length: user_ids={n}, {bad}")
        object.__setattr__(self, "user_ids", users)
        object.__setattr__(self, "item_ids", items)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", stamps)
        object.__setattr__(self, "events", events)

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
        stamps = np.zeros(users.shape[0], np.int64) if timestamps is None else timestamps
        return cls(
            users,
            as_str_array(item_ids),
            np.asarray(values, dtype=np.float32),
            np.asarray(stamps, dtype=np.int64),
            None if events is None else as_str_array(events),
        )

    @classmethod
    def _trusted(
        cls,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        values: np.ndarray,
        timestamps: np.ndarray,
        events: np.ndarray | None,
    ) -> Ratings:
        """Build from columns already validated (row subsets of a valid container)."""
        obj = object.__new__(cls)
        for name, col in (
            ("user_ids", user_ids),
            ("item_ids", item_ids),
            ("values", values),
            ("timestamps", timestamps),
            ("events", events),
        ):
            object.__setattr__(obj, name, col)
        return obj

    @classmethod
    def empty(cls) -> Ratings:
        """A container with zero rows."""
        return cls(
            np.empty(0, np.str_),
            np.empty(0, np.str_),
            np.empty(0, np.float32),
            np.empty(0, np.int64),
        )

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

    def take(self, index: npt.ArrayLike) -> Ratings:
        """Rows selected by an integer index array or a boolean mask (copies)."""
        idx = np.asarray(index)
        if idx.dtype != np.bool_:
            idx = idx.astype(np.int64, copy=False)
        return Ratings._trusted(
            self.user_ids[idx],
            self.item_ids[idx],
            self.values[idx],
            self.timestamps[idx],
            None if self.events is None else self.events[idx],
        )

    def slice(self, start: int, stop: int) -> Ratings:
        """Rows ``start:stop`` (views, no copy)."""
        return Ratings._trusted(
            self.user_ids[start:stop],
            self.item_ids[start:stop],
            self.values[start:stop],
            self.timestamps[start:stop],
            None if self.events is None else self.events[start:stop],
        )

    def sort_by_time(self) -> Ratings:
        """Rows ordered by timestamp; ties keep their original order (stable sort)."""
        return sort_by_time(self)

    def iter_batches(self, batch_size: int) -> Iterator[Ratings]:
        """Consecutive slices of at most ``batch_size`` rows."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for start in range(0, len(self), batch_size):
            yield self.slice(start, start + batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Columns as a plain dict of arrays (``events`` only when present)."""
        out: dict[str, Any] = {
            "user_id": self.user_ids,
            "item_id": self.item_ids,
            "rating": self.values,
            "timestamp": self.timestamps,
        }
        if self.events is not None:
            out["event"] = self.events
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
    """Concatenate containers row-wise; ``events`` is kept only if every part has it.

    >>> a = Ratings.from_columns(["1"], ["2"], [3.0], [4])
    >>> len(concat([a, a, Ratings.empty()]))
    2
    """
    parts = [p for p in parts if len(p)] or list(parts[:1])
    if not parts:
        return Ratings.empty()
    if len(parts) == 1:
        return parts[0]
    with_events = all(p.events is not None for p in parts)

    def cat(name: str) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        if any(a.dtype == object for a in arrays):
            arrays = [a.astype(object) for a in arrays]
        return np.concatenate(arrays)

    return Ratings._trusted(
        cat("user_ids"),
        cat("item_ids"),
        cat("values"),
        cat("timestamps"),
        cat("events") if with_events else None,
    )

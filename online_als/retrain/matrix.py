"""Build a users x items CSR matrix from a stream of chunks, in bounded extra memory.

Each chunk is a :class:`~online_als.ratings.Ratings` (its user ids, item ids and values) or a
bare ``(user_ids, item_ids, values)`` triplet: string or integer ids (an integer id is its
decimal string, as everywhere in :class:`online_als.idmap.IdMap`), or, with
``ids_are_rows=True``, already-mapped int rows. ``values=None`` means 1.0 for every event.

Duplicate (user, item) pairs:

* ``"sum"`` (implicit feedback): weights are summed, in float64, stored as float32; a pair
  whose weights sum to exactly 0 (e.g. +1 then -1) is dropped, i.e. treated as unobserved
  (``implicit`` would otherwise read a stored 0 as confidence 0, not 1).
* ``"last"`` (explicit ratings): the value seen last wins, in stream order (chunk order,
  then position inside a chunk). Stored zeros are kept: 0 is a rating.

Non-finite values are dropped and counted (``RatingMatrix.dropped``).

Memory: every event costs 12 bytes (int64 key + float32 value) while it waits; pending
events are merged (stable sort + reduce, vectorised) into the compacted set whenever they
outnumber it, so peak memory is about ``2 x 12 x (distinct pairs + one chunk)`` bytes however
many duplicates the stream repeats. No Python loop runs per event (the IdMap lookup aside).

Example
-------
>>> import numpy as np
>>> m = build_matrix([(["a", "b"], ["x", "x"], [1.0, 2.0]), (["a"], ["x"], [3.0])], "sum")
>>> m.matrix.toarray().tolist(), m.users.ids, m.items.ids
([[4.0], [2.0]], ['a', 'b'], ['x'])
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from online_als.idmap import IdMap
from online_als.ratings import Ratings

Duplicates = Literal["sum", "last"]
Chunk = Ratings | tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None]

__all__ = ["Chunk", "Duplicates", "MatrixBuilder", "RatingMatrix", "build_matrix"]

_SHIFT = np.int64(32)
_LOW = np.int64(0xFFFFFFFF)
_MAX_ROW = 2**31 - 1


@dataclass(frozen=True)
class RatingMatrix:
    """A users x items CSR (float32 data, int32 sorted indices) with its id maps.

    ``users``/``items`` are ``None`` when the chunks carried rows (``ids_are_rows=True``) and
    no map was given. ``events`` counts events read, ``dropped`` the non-finite ones skipped,
    ``seconds`` the time spent in ``add`` + ``build``.
    """

    matrix: sp.csr_matrix
    users: IdMap | None
    items: IdMap | None
    duplicates: Duplicates
    events: int
    dropped: int
    seconds: float

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))


def _as_ids(ids: npt.ArrayLike) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
    return arr


def _as_rows(rows: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(rows)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be a 1-D int array when ids_are_rows=True")
    out = arr.astype(np.int64, copy=False)
    if out.size and (out.min() < 0 or out.max() > _MAX_ROW):
        raise ValueError(f"{name} must lie in [0, 2**31)")
    return out


def _reduce(
    keys: npt.NDArray[np.int64], vals: npt.NDArray[np.float32], how: Duplicates
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Sort by key (stable: stream order kept inside a key) and merge equal keys."""
    if keys.size == 0:
        return keys, vals
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    vals = vals[order]
    first = np.empty(keys.size, dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    if starts.size == keys.size:
        return keys, vals
    if how == "sum":
        merged = np.add.reduceat(vals.astype(np.float64), starts).astype(np.float32)
    else:
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:] - 1
        ends[-1] = keys.size - 1
        merged = vals[ends]
    return keys[starts], merged


class MatrixBuilder:
    """Incremental form of :func:`build_matrix`: ``add`` chunks, then ``build`` once.

    Pass the current model's ``users``/``items`` maps to keep their rows (new ids are
    appended; the maps are updated in place). ``compact_min`` is the smallest number of
    pending events worth a merge.
    """

    def __init__(
        self,
        duplicates: Duplicates,
        *,
        users: IdMap | None = None,
        items: IdMap | None = None,
        ids_are_rows: bool = False,
        compact_min: int = 1 << 20,
        keep_zeros: bool = False,
    ) -> None:
        if duplicates not in ("sum", "last"):
            raise ValueError(f"duplicates must be 'sum' or 'last', got {duplicates!r}")
        self.duplicates: Duplicates = duplicates
        self.ids_are_rows = ids_are_rows
        # summed weights that cancel out (a like and a dislike) are dropped from a training
        # matrix, but a seen-history keeps them: the user did interact with the item
        self.keep_zeros = keep_zeros
        if ids_are_rows:
            self.users, self.items = users, items
        else:
            self.users = users if users is not None else IdMap()
            self.items = items if items is not None else IdMap()
        self.compact_min = compact_min
        self._keys: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._vals: npt.NDArray[np.float32] = np.empty(0, dtype=np.float32)
        self._pending_keys: list[npt.NDArray[np.int64]] = []
        self._pending_vals: list[npt.NDArray[np.float32]] = []
        self._pending = 0
        self._max_row = -1
        self._max_col = -1
        self.events = 0
        self.dropped = 0
        self._seconds = 0.0
        self._built = False

    def _map(self, ids: npt.ArrayLike, idmap: IdMap | None, name: str) -> npt.NDArray[np.int64]:
        if self.ids_are_rows:
            rows = _as_rows(ids, name)
            if idmap is not None and rows.size and rows.max() >= len(idmap):
                raise ValueError(f"{name} has rows beyond its IdMap ({len(idmap)} ids)")
            return rows
        assert idmap is not None
        rows = idmap.rows_for(_as_ids(ids), add=True)
        if rows.size and rows.max() > _MAX_ROW:
            raise ValueError(f"more than 2**31 distinct {name}")
        return rows

    def add(
        self, user_ids: npt.ArrayLike, item_ids: npt.ArrayLike, values: npt.ArrayLike | None = None
    ) -> None:
        """Add one chunk of events (equal-length 1-D arrays)."""
        if self._built:
            raise RuntimeError("build() was already called")
        t0 = time.perf_counter()
        n = len(np.asarray(user_ids))
        if len(np.asarray(item_ids)) != n:
            raise ValueError("user_ids and item_ids differ in length")
        if values is None:
            vals = np.ones(n, dtype=np.float32)
        else:
            vals = np.asarray(values, dtype=np.float32).reshape(-1)
            if vals.size != n:
                raise ValueError("values and ids differ in length")
        rows = self._map(user_ids, self.users, "user_ids")
        cols = self._map(item_ids, self.items, "item_ids")
        self.events += n
        ok = np.isfinite(vals)
        if not ok.all():
            self.dropped += int(n - ok.sum())
            rows, cols, vals = rows[ok], cols[ok], vals[ok]
        if rows.size:
            self._max_row = max(self._max_row, int(rows.max()))
            self._max_col = max(self._max_col, int(cols.max()))
            self._pending_keys.append((rows << _SHIFT) | cols)
            self._pending_vals.append(vals)
            self._pending += rows.size
            if self._pending >= max(self.compact_min, self._keys.size):
                self._compact()
        self._seconds += time.perf_counter() - t0

    def _compact(self) -> None:
        keys = np.concatenate([self._keys, *self._pending_keys])
        vals = np.concatenate([self._vals, *self._pending_vals])
        self._pending_keys.clear()
        self._pending_vals.clear()
        self._pending = 0
        self._keys, self._vals = _reduce(keys, vals, self.duplicates)

    def build(self, shape: tuple[int, int] | None = None) -> RatingMatrix:
        """Merge what is pending and return the matrix (the builder cannot be reused).

        The shape is the largest of: the id maps' sizes, the largest row/column seen + 1, and
        ``shape`` when given (useful with ``ids_are_rows``).
        """
        if self._built:
            raise RuntimeError("build() was already called")
        t0 = time.perf_counter()
        self._compact()
        self._built = True
        keys, vals = self._keys, self._vals
        if self.duplicates == "sum" and not self.keep_zeros:
            keep = vals != 0.0
            if not keep.all():
                keys, vals = keys[keep], vals[keep]
        n_users = max(self._max_row + 1, len(self.users) if self.users is not None else 0)
        n_items = max(self._max_col + 1, len(self.items) if self.items is not None else 0)
        if shape is not None:
            n_users, n_items = max(n_users, shape[0]), max(n_items, shape[1])
        rows = keys >> _SHIFT
        indices = (keys & _LOW).astype(np.int32)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
        if indptr[-1] < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        csr = sp.csr_matrix((vals, indices, indptr), shape=(n_users, n_items))
        csr.has_sorted_indices = True
        self._keys = np.empty(0, dtype=np.int64)
        self._vals = np.empty(0, dtype=np.float32)
        self._seconds += time.perf_counter() - t0
        return RatingMatrix(
            matrix=csr,
            users=self.users,
            items=self.items,
            duplicates=self.duplicates,
            events=self.events,
            dropped=self.dropped,
            seconds=self._seconds,
        )


def build_matrix(
    chunks: Iterable[Chunk],
    duplicates: Duplicates,
    *,
    users: IdMap | None = None,
    items: IdMap | None = None,
    ids_are_rows: bool = False,
    shape: tuple[int, int] | None = None,
    keep_zeros: bool = False,
) -> RatingMatrix:
    """Build a :class:`RatingMatrix` from :class:`~online_als.ratings.Ratings` or
    ``(user_ids, item_ids, values)`` chunks.

    ``duplicates="sum"`` for implicit weights, ``"last"`` for explicit ratings (see the
    module docstring). ``users``/``items`` (updated in place) keep existing rows.
    ``keep_zeros`` keeps summed weights of 0 as explicit entries (a seen-history).
    """
    builder = MatrixBuilder(duplicates, users=users, items=items, ids_are_rows=ids_are_rows,
                            keep_zeros=keep_zeros)
    for chunk in chunks:
        if isinstance(chunk, Ratings):
            builder.add(chunk.user_ids, chunk.item_ids, chunk.values)
        else:
            builder.add(*chunk)
    return builder.build(shape)

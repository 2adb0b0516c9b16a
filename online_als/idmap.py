"""String id <-> dense row index, growing as new ids arrive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

IdLike = str | int


def as_id_list(ids: Iterable[Any] | np.ndarray) -> list[str]:
    """Normalise ids to ``list[str]``: strings as is, integers through ``str()``.

    Anything else (floats, bytes, None, bools) raises ``TypeError``: ``str(4.0)`` would
    silently make ``"4.0"`` a different id from ``4``. A ``list`` of ``str`` is returned as is.
    """
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind == "U":
            return ids.ravel().tolist()
        if ids.dtype.kind in "iu":
            return [str(v) for v in ids.ravel().tolist()]
        ids = ids.ravel().tolist()
    if isinstance(ids, list) and all(type(v) is str for v in ids):
        return ids  # fast path; callers never mutate the result
    out: list[str] = []
    for v in ids:
        if type(v) is str:
            out.append(v)
        elif isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
            out.append(str(int(v)))
        elif isinstance(v, str):
            out.append(str(v))
        else:
            raise TypeError(f"ids must be str or int, got {type(v).__name__}: {v!r}")
    return out


class IdMap:
    """Bijection between string ids and rows ``0..len-1``, in order of first appearance.

    >>> m = IdMap()
    >>> m.rows_for(["a", "b", "a", 7]).tolist()
    [0, 1, 0, 2]
    >>> m.rows_for(["b", "zz"], add=False).tolist()
    [1, -1]
    >>> m.ids
    ['a', 'b', '7']
    """

    __slots__ = ("_ids", "_index")

    def __init__(self, ids: Iterable[IdLike] = ()) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self.rows_for(list(ids), add=True)

    def rows_for(self, ids: Iterable[Any] | np.ndarray, add: bool = True) -> NDArray[np.int64]:
        """Rows of ``ids`` as int64; unknown ids are appended when ``add``, else -1."""
        keys = as_id_list(ids)
        index = self._index
        if add:
            try:  # common case, all known: C-level lookups only
                return np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))
            except KeyError:
                pass
            new = [s for s in dict.fromkeys(keys) if s not in index]  # first-seen order
            if "" in new:
                raise ValueError("empty string is not a valid id")
            index.update(zip(new, range(len(self._ids), len(self._ids) + len(new)), strict=True))
            self._ids.extend(new)
        return np.fromiter(map(index.get, keys, repeat(-1)), np.int64, len(keys))

    def row(self, id_: IdLike) -> int:
        """Row of one id, or -1."""
        return self._index.get(as_id_list([id_])[0], -1)

    @property
    def ids(self) -> list[str]:
        """Ids in row order. The live list: do not mutate it."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id_: object) -> bool:
        try:
            return self.row(id_) >= 0  # type: ignore[arg-type]
        except TypeError:
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids == other._ids

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)})"

    def to_list(self) -> list[str]:
        """A copy of the ids in row order."""
        return list(self._ids)

    @classmethod
    def from_list(cls, ids: Sequence[IdLike]) -> IdMap:
        """Rebuild from ids in row order; duplicates raise ``ValueError``."""
        m = cls(ids)
        if len(m) != len(ids):
            raise ValueError(f"duplicate ids: {len(ids)} given, {len(m)} distinct")
        return m

    def to_utf8(self) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """Ids as concatenated UTF-8 bytes plus ``n + 1`` offsets (npz-friendly, no pickle)."""
        encoded = [s.encode("utf-8", "surrogatepass") for s in self._ids]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets

    @classmethod
    def from_utf8(cls, data: NDArray[np.uint8], offsets: NDArray[np.int64]) -> IdMap:
        """Inverse of :meth:`to_utf8`; raises ``ValueError`` on malformed input."""
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(data):
            raise ValueError("id offsets must start at 0 and end at the byte length")
        if np.any(np.diff(offsets) < 0):
            raise ValueError("id offsets must be non-decreasing")
        raw = data.tobytes()
        bounds = offsets.tolist()
        ids = [
            raw[a:b].decode("utf-8", "surrogatepass")
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        return cls.from_list(ids)

"""Cosine nearest neighbours among item (or user) vectors, with a cached normalised matrix.

Build one :class:`SimilarityIndex` per factor matrix (``item_f`` for similar items,
``user_f`` for similar users) and keep it while the factors do not change: normalising is
the only O(n k) preparation and queries reuse it. Rows with a zero vector (no information)
are never returned; a zero query returns nothing.

Example
-------
>>> import numpy as np
>>> idx = SimilarityIndex(np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32))
>>> rows, sims = idx.similar(0, 2)
>>> rows.tolist()
[1, 2]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from online_als.serving._kernels import dense_scores
from online_als.serving.topn import Allow, top_n_scores

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

__all__ = ["SimilarityIndex", "normalize_rows"]


def normalize_rows(factors: npt.ArrayLike) -> tuple[F32, npt.NDArray[np.bool_]]:
    """Unit-norm float32 copy of ``factors`` (zero rows stay 0) and the nonzero-row mask."""
    f = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(f, axis=1)
    valid = norms > 0
    out = np.zeros_like(f, dtype=np.float32, order="C")
    out[valid] = f[valid] / norms[valid, None]
    return out, valid


class SimilarityIndex:
    """Cosine similarity queries over the rows of one factor matrix."""

    def __init__(self, factors: npt.ArrayLike) -> None:
        self.normalized, self.valid = normalize_rows(factors)
        self._zero_rows = np.flatnonzero(~self.valid)

    def __len__(self) -> int:
        return int(self.normalized.shape[0])

    def similar_to_vector(
        self,
        vec: npt.ArrayLike,
        n: int,
        *,
        exclude: npt.ArrayLike | None = None,
        allow: Allow = None,
    ) -> tuple[I64, F32]:
        """The ``n`` rows most cosine-similar to ``vec``, best first, with their cosines."""
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(v))
        if norm == 0.0 or not np.isfinite(norm):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        scores = np.empty(len(self), dtype=np.float32)
        dense_scores(self.normalized, np.ascontiguousarray(v / np.float32(norm)), scores)
        scores[self._zero_rows] = -np.inf
        return top_n_scores(scores, n, exclude=exclude, allow=allow, copy=False)

    def similar(
        self,
        row: int,
        n: int,
        *,
        exclude_self: bool = True,
        exclude: npt.ArrayLike | None = None,
        allow: Allow = None,
    ) -> tuple[I64, F32]:
        """The ``n`` rows most similar to row ``row`` (itself left out unless asked)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} out of range [0, {len(self)})")
        ex: npt.NDArray[np.int64] = np.asarray(
            [] if exclude is None else exclude, dtype=np.int64
        ).reshape(-1)
        if exclude_self:
            ex = np.append(ex, np.int64(row))
        return self.similar_to_vector(self.normalized[row], n, exclude=ex, allow=allow)

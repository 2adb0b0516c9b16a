"""Vectors for anonymous users from a handful of interactions, computed and not stored.

* Implicit (:func:`fold_in_user`): the exact ALS user solve of ``implicit`` /
  Hu-Koren-Volinsky with ``c = alpha * r``:
  ``x = (G + sum_j (c_j - 1) y_j y_j^T)^-1 sum_{c_j > 0} c_j y_j``, ``G = Y^T Y + reg I``
  (:func:`gram`, computed once per model). A negative weight counts as
  confidence ``|c|`` with preference 0. Duplicated items are summed first.
* Explicit (:func:`fold_in_user_explicit`): the ALS-WR user half-step, a ridge solve of
  ``[x, b]`` against ``[y_j, 1]`` with targets ``r_j - mu - b_j`` and penalty
  ``n (reg |x|^2 + reg_bias b^2)``. Duplicated items keep the last rating.

Then recommend with ``serving.top_n`` (excluding the given items).

Example
-------
>>> import numpy as np
>>> item_f = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
>>> from online_als.kernels.linalg import gram
>>> x = fold_in_user(item_f, gram(item_f, 0.1), [3, 7], [1.0, 2.0], alpha=10.0)
>>> x.shape, x.dtype
((4,), dtype('float32'))
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = ["fold_in_user", "fold_in_user_explicit", "user_system"]


def _sum_duplicates(rows: npt.ArrayLike, values: npt.ArrayLike) -> tuple[I64, F64]:
    r = np.asarray(rows, dtype=np.int64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if r.shape != v.shape:
        raise ValueError("item_rows and values differ in length")
    uniq, inv = np.unique(r, return_inverse=True)
    summed = np.bincount(inv, weights=v, minlength=uniq.size)
    keep = summed != 0.0
    return uniq[keep], summed[keep]


def user_system(
    item_f: F32, gram_reg: F64, item_rows: npt.ArrayLike, values: npt.ArrayLike, alpha: float
) -> tuple[F64, F64, I64, F64]:
    """The implicit user normal equations ``(A, b)`` plus the merged rows and confidences.

    Confidences are signed (``alpha * r``); a negative one adds ``|c| - 1`` to ``A`` and
    nothing to ``b``.
    """
    rows, r = _sum_duplicates(item_rows, values)
    c = alpha * r
    y = item_f[rows].astype(np.float64)
    a = gram_reg + (y.T * (np.abs(c) - 1.0)) @ y
    b = y.T @ np.where(c > 0, c, 0.0)
    return a, b, rows, c


def fold_in_user(
    item_f: F32,
    gram_reg: F64,
    item_rows: npt.ArrayLike,
    confidences: npt.ArrayLike,
    *,
    alpha: float = 1.0,
) -> F32:
    """Exact implicit-ALS user vector for the given item rows and weights (float32 (k,))."""
    a, b, rows, _ = user_system(item_f, gram_reg, item_rows, confidences, alpha)
    if rows.size == 0:
        return np.zeros(item_f.shape[1], dtype=np.float32)
    return np.linalg.solve(a, b).astype(np.float32)


def fold_in_user_explicit(
    item_f: F32,
    item_b: F32,
    global_mean: float,
    item_rows: npt.ArrayLike,
    ratings: npt.ArrayLike,
    *,
    reg: float,
    reg_bias: float | None = None,
) -> tuple[F32, float]:
    """ALS-WR user vector and bias for the given ratings (zeros for no ratings)."""
    r = np.asarray(item_rows, dtype=np.int64).reshape(-1)
    v = np.asarray(ratings, dtype=np.float64).reshape(-1)
    if r.shape != v.shape:
        raise ValueError("item_rows and ratings differ in length")
    k = item_f.shape[1]
    # keep the last rating of each item: first occurrence in the reversed arrays
    uniq, first = np.unique(r[::-1], return_index=True)
    last_v = v[::-1][first]
    n = uniq.size
    if n == 0:
        return np.zeros(k, dtype=np.float32), 0.0
    w = np.ones((n, k + 1))
    w[:, :k] = item_f[uniq]
    t = last_v - global_mean - item_b[uniq].astype(np.float64)
    rb = reg if reg_bias is None else reg_bias
    a = w.T @ w + n * np.diag(np.r_[np.full(k, reg), rb])
    z = np.linalg.solve(a, w.T @ t)
    return z[:k].astype(np.float32), float(z[k])

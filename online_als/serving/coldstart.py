"""Fallbacks for users and items the model does not know.

* Recommendations for an unknown user: :func:`popular_items` (by number of ratings/events).
* Explicit predictions (:func:`predict_explicit`), pair by pair:
  user and item known -> ``mu + b_u + b_i + x_u . y_i``;
  user unknown, item known -> the item's mean rating (``item_mean``; damped towards ``mu``
  if :func:`item_stats` was given ``damping``), or ``mu + b_i`` without ``item_mean``;
  item unknown, user known -> ``mu + b_u``; both unknown -> ``mu``.
  A row is unknown when it is -1 (what ``IdMap.rows_for(ids, add=False)`` returns).

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> st = item_stats(sp.csr_matrix(np.array([[5, 0], [3, 4]], dtype=np.float32)))
>>> st.count.tolist(), st.mean.tolist(), st.global_mean
([2, 1], [4.0, 4.0], 4.0)
>>> popular_items(st.count, 1)[0].tolist()
[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from online_als.serving.topn import Allow, top_n_scores

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

__all__ = ["ItemStats", "item_stats", "popular_items", "predict_explicit"]


@dataclass(frozen=True)
class ItemStats:
    """Per-item event counts and mean values (NaN where an item has no data)."""

    count: I64
    mean: F32
    global_mean: float


def item_stats(matrix: sp.spmatrix | sp.sparray, *, damping: float = 0.0) -> ItemStats:
    """Counts and means per column of a users x items matrix (stored entries only).

    ``damping`` > 0 shrinks each mean towards the global one as if ``damping`` ratings of
    value ``mu`` were added: ``(sum_i + damping * mu) / (n_i + damping)``.
    """
    csr = sp.csr_matrix(matrix)
    n_items = csr.shape[1]
    count = np.bincount(csr.indices, minlength=n_items).astype(np.int64)
    total = np.bincount(csr.indices, weights=csr.data.astype(np.float64), minlength=n_items)
    mu = float(total.sum() / count.sum()) if count.sum() else 0.0
    denom = count + damping
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(denom > 0, (total + damping * mu) / denom, np.nan)
    return ItemStats(count=count, mean=mean.astype(np.float32), global_mean=mu)


def popular_items(
    counts: npt.ArrayLike,
    n: int,
    *,
    exclude: npt.ArrayLike | None = None,
    allow: Allow = None,
) -> tuple[I64, F32]:
    """The ``n`` items with the largest counts (ties: lower row first) and their counts."""
    return top_n_scores(np.asarray(counts, dtype=np.float32), n, exclude=exclude, allow=allow)


def predict_explicit(
    user_rows: npt.ArrayLike,
    item_rows: npt.ArrayLike,
    user_f: F32,
    user_b: F32,
    item_f: F32,
    item_b: F32,
    global_mean: float,
    item_mean: F32 | None = None,
) -> F32:
    """Predicted ratings for row pairs, -1 meaning unknown (see the module docstring)."""
    u = np.asarray(user_rows, dtype=np.int64).reshape(-1)
    i = np.asarray(item_rows, dtype=np.int64).reshape(-1)
    if u.shape != i.shape:
        raise ValueError("user_rows and item_rows differ in length")
    ku = (u >= 0) & (u < user_f.shape[0])
    ki = (i >= 0) & (i < item_f.shape[0])
    out = np.full(u.shape, global_mean, dtype=np.float64)
    both = ku & ki
    ub, ib = u[both], i[both]
    out[both] += (
        user_b[ub] + item_b[ib] + np.einsum("ij,ij->i", user_f[ub], item_f[ib], dtype=np.float64)
    )
    only_u = ku & ~ki
    out[only_u] += user_b[u[only_u]]
    only_i = ~ku & ki
    ii = i[only_i]
    fallback = global_mean + item_b[ii].astype(np.float64)
    if item_mean is not None:
        m = item_mean[ii].astype(np.float64)
        fallback = np.where(np.isfinite(m), m, fallback)
    out[only_i] = fallback
    return out.astype(np.float32)

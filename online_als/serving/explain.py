"""Which history items contribute most to a recommendation ("because you liked ...").

Two modes:

* ``gram_reg`` given (implicit models): ``implicit``'s ``explain``. The exact user solve is
  ``x = W sum_j c_j y_j`` with ``W = (G + sum_j (c_j - 1) y_j y_j^T)^-1``, so the score
  ``y_t . x`` splits exactly into ``contribution_j = c_j * y_t^T W y_j`` over the history
  items with positive weight (negative-weight items contribute nothing). ``score`` is that
  sum, i.e. the fold-in score of the history given.
* otherwise (any model): ``contribution_j = v_j * cos(y_t, y_j)``, the history value times
  the item-item cosine with the target; ``score`` is ``user_vec . y_t``.

``history_values`` default to 1. The target is not dropped from the history.

Example
-------
>>> import numpy as np
>>> item_f = np.array([[1, 0], [0, 1], [1, 0.1]], dtype=np.float32)
>>> because(np.array([1, 0], np.float32), [0, 1], item_f, 2, 1).rows.tolist()
[0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg

from online_als.serving.foldin import user_system

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = ["Explanation", "because"]


@dataclass(frozen=True)
class Explanation:
    """The score being explained and the top history rows with their contributions."""

    score: float
    rows: I64
    contributions: F32


def because(
    user_vec: npt.ArrayLike,
    history_item_rows: npt.ArrayLike,
    item_f: F32,
    target_row: int,
    n: int,
    *,
    history_values: npt.ArrayLike | None = None,
    gram_reg: F64 | None = None,
    alpha: float = 1.0,
) -> Explanation:
    """The ``n`` history items contributing most to ``target_row`` (see module docstring)."""
    hist = np.asarray(history_item_rows, dtype=np.int64).reshape(-1)
    vals = (
        np.ones(hist.size)
        if history_values is None
        else np.asarray(history_values, dtype=np.float64).reshape(-1)
    )
    if vals.shape != hist.shape:
        raise ValueError("history_values and history_item_rows differ in length")
    target = item_f[target_row].astype(np.float64)
    if gram_reg is not None:
        a, _, rows, c = user_system(item_f, gram_reg, hist, vals, alpha)
        weighted = scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), target)
        contrib = np.where(c > 0, c, 0.0) * (item_f[rows].astype(np.float64) @ weighted)
        score = float(contrib.sum())
    else:
        rows = hist
        y = item_f[rows].astype(np.float64)
        norms = np.linalg.norm(y, axis=1) * np.linalg.norm(target)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(norms > 0, (y @ target) / norms, 0.0)
        contrib = vals * cos
        score = float(np.asarray(user_vec, dtype=np.float64) @ target)
    order = np.lexsort((rows, -contrib))[: max(n, 0)]
    return Explanation(score, rows[order], contrib[order].astype(np.float32))

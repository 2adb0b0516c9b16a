"""Single-threaded numba kernels behind single-user top-N (each with a NumPy twin).

A multi-threaded BLAS ``sgemv`` over a ~27k x 64 matrix spends more time waking its
threads than computing; these run in the caller's thread and read ``item_f`` once.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

__all__ = ["dense_scores", "dense_scores_reference", "top_k_rows", "top_k_rows_reference"]


@njit(cache=True, fastmath=True, nogil=True)
def dense_scores(item_f: F32, x: F32, out: F32) -> None:  # pragma: no cover - jitted
    """``out[i] = item_f[i] . x`` (float32 accumulation, order unspecified)."""
    n, k = item_f.shape
    for i in range(n):
        s = np.float32(0.0)
        for f in range(k):
            s += item_f[i, f] * x[f]
        out[i] = s


def dense_scores_reference(item_f: F32, x: F32, out: F32) -> None:
    """NumPy twin of :func:`dense_scores`."""
    out[:] = item_f @ x


@njit(cache=True, nogil=True)
def top_k_rows(scores: F32, m: int) -> I64:  # pragma: no cover - jitted
    """Rows of the ``m`` largest scores above -inf, best first, ties by lower row.

    One pass with a sorted buffer of ``m``; meant for small ``m`` (a few hundred at most).
    NaN scores are skipped.
    """
    buf_s = np.empty(m, dtype=np.float32)
    buf_r = np.empty(m, dtype=np.int64)
    filled = 0
    for i in range(scores.shape[0]):
        s = scores[i]
        if not s > -np.inf:
            continue
        if filled == m:
            if not s > buf_s[m - 1]:
                continue
            pos = m - 1
        else:
            pos = filled
            filled += 1
        while pos > 0 and s > buf_s[pos - 1]:
            buf_s[pos] = buf_s[pos - 1]
            buf_r[pos] = buf_r[pos - 1]
            pos -= 1
        buf_s[pos] = s
        buf_r[pos] = i
    return buf_r[:filled].copy()


def top_k_rows_reference(scores: F32, m: int) -> I64:
    """NumPy twin of :func:`top_k_rows`."""
    rows = np.flatnonzero(scores > -np.inf)
    order = np.lexsort((rows, -scores[rows]))
    return rows[order[:m]].astype(np.int64)

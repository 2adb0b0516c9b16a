"""The one small dense solver the kernels share: Cholesky solve of a k x k SPD system.

Used per user/item inside the numba loops of the ALS-WR retrain
(:mod:`online_als.retrain.als_wr`) and the implicit re-solve
(:mod:`online_als.kernels.implicit_resolve`); their NumPy twins use ``np.linalg``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from online_als.kernels.guard import in_bound


@njit(cache=True, nogil=True, inline="always")
def cholesky_solve(a: np.ndarray, b: np.ndarray, n: int) -> bool:  # pragma: no cover - jitted
    """Solve ``a x = b`` in place for SPD ``a`` (``a`` <- L in its lower triangle, ``b`` <- x),
    using the first ``n`` rows/columns; False (a, b partly overwritten) if a pivot is not
    positive and finite, i.e. ``a`` is not numerically positive definite."""
    for j in range(n):
        s = a[j, j]
        for m in range(j):
            s -= a[j, m] * a[j, m]
        if not (s > 0.0 and in_bound(s)):
            return False
        d = np.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, n):
            t = a[i, j]
            for m in range(j):
                t -= a[i, m] * a[j, m]
            a[i, j] = t / d
    for i in range(n):  # forward: L z = b
        t = b[i]
        for m in range(i):
            t -= a[i, m] * b[m]
        b[i] = t / a[i, i]
    for i in range(n - 1, -1, -1):  # backward: L^T x = z
        t = b[i]
        for m in range(i + 1, n):
            t -= a[m, i] * b[m]
        b[i] = t / a[i, i]
    return True

"""The dense linear algebra the kernels share: the one Gram matrix and the one Cholesky solve.

:func:`gram` is ``F^T F + reg I`` for the implicit fold-in's inverses, the implicit re-solve and
the serving fold-in of a new user; :func:`cholesky_solve` solves a k x k SPD system per
user/item inside the numba loops of the ALS-WR retrain
(:mod:`online_als.retrain.als_wr`) and the implicit re-solve
(:mod:`online_als.kernels.implicit_resolve`); their NumPy twins use ``np.linalg``.

numba's on-disk cache of a caller does not notice edits here: after changing this file,
delete the callers' ``__pycache__/*.nbi`` (a fresh install has none).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def cholesky_solve(a: np.ndarray, b: np.ndarray, n: int) -> bool:  # pragma: no cover - jitted
    """Solve ``a x = b`` in place for SPD ``a`` (``a`` <- L in its lower triangle, ``b`` <- x),
    using the first ``n`` rows/columns; False (a, b partly overwritten) if a pivot is not
    positive and finite, i.e. ``a`` is not numerically positive definite. (How large a
    solution may be is the caller's guard: a strongly regularised system has huge pivots.)"""
    for j in range(n):
        s = a[j, j]
        for m in range(j):
            s -= a[j, m] * a[j, m]
        if not (s > 0.0 and s < np.inf):  # NaN fails both
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


_GRAM_CHUNK = 65536  # rows per float64 block in gram(): bounds the temporary to chunk * k * 8 B


def gram(factors: np.ndarray, reg: float) -> np.ndarray:
    """``F^T F + reg I`` in float64, accumulated in row blocks so memory stays bounded."""
    f = np.asarray(factors)
    if f.ndim != 2:
        raise ValueError(f"factors must be 2-D (n, k), got shape {f.shape}")
    k = f.shape[1]
    g = np.zeros((k, k), np.float64)
    for start in range(0, f.shape[0], _GRAM_CHUNK):
        block = f[start : start + _GRAM_CHUNK].astype(np.float64)
        if not np.isfinite(block).all():
            raise ValueError(
                "factors contain NaN/Inf: reload the last good snapshot or retrain "
                "(the kernels' guard should have prevented this)"
            )
        g += block.T @ block
    g += reg * np.eye(k)
    return g

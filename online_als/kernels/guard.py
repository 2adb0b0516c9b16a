"""NaN/Inf guard shared by the kernels and their NumPy twins.

An event is refused (``applied_out[j] = 0``, arrays untouched) when an input value is
non-finite or when any value it would write is non-finite or larger than ``GUARD_BOUND`` in
absolute value. The bound is far above any sane factor or bias (they live near 1) and far
below float32 overflow, so a diverging learning rate is stopped before it poisons the model.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Largest absolute value a kernel may write into a factor or bias.
GUARD_BOUND = 1.0e6

#: Smallest Sherman-Morrison denominator ``1 + (c - 1) q`` accepted by the fold-in: below it
#: the rank-one-updated Gram matrix is not (numerically) positive definite.
DENOM_MIN = 1.0e-6


@njit(cache=True, nogil=True)
def in_bound(v: float) -> bool:
    """True when ``v`` is finite and ``|v| <= GUARD_BOUND`` (NaN compares false)."""
    return abs(v) <= GUARD_BOUND


@njit(cache=True, nogil=True)
def rows_in_range(rows: np.ndarray, n: int) -> bool:
    """True when every row index is in ``[0, n)``.

    Kernels call it before applying anything: numba does not bounds-check indexing, so a bad
    row would otherwise corrupt memory silently.
    """
    for j in range(rows.shape[0]):
        r = rows[j]
        if r < 0 or r >= n:
            return False
    return True


def rows_in_range_reference(rows: np.ndarray, n: int) -> bool:
    """NumPy twin of :func:`rows_in_range`."""
    return not rows.size or bool(rows.min() >= 0 and rows.max() < n)

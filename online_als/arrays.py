"""Small NumPy helpers shared by the maths and the adapters (no I/O)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def concat_ranges(starts: npt.ArrayLike, lengths: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Concatenated ``range(s, s + n)`` for each (s, n), without a Python loop.

    >>> concat_ranges([5, 0, 9], [2, 0, 3]).tolist()
    [5, 6, 9, 10, 11]
    """
    s = np.asarray(starts, dtype=np.int64)
    n = np.asarray(lengths, dtype=np.int64)
    total = int(n.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(s - np.cumsum(n) + n, n) + np.arange(total)

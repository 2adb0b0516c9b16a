"""Exact per-user ALS re-solve for implicit feedback (``implicit``'s ``recalculate_user``).

For every user u (row of a CSR matrix of events)::

    x_u = (G + sum_e (c_e - 1) y_e y_e^T)^-1  sum_e c_e p_e y_e,      G = Y^T Y + reg I

solved by a Cholesky factorisation per user: O(n_u k^2 + k^3). With p = 1 for positive and
p = 0 for negative events this is exactly ``implicit``'s least-squares step (which takes the
signed ``alpha * r`` and flips negatives to c = |alpha r|, p = 0). Duplicate (u, i) entries each
add their own term; sum them first (``csr.sum_duplicates()``) to match ``implicit``. Entries
with a non-finite or negative confidence, or a non-finite preference, are skipped. A user whose
system is not positive definite, or whose solution leaves the guard bound, gets a zero row and
``ok_out[u] = 0``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from online_als.kernels.guard import GUARD_BOUND, in_bound
from online_als.kernels.linalg import cholesky_solve


@njit(cache=True, nogil=True, parallel=True)
def _resolve_kernel(item_f, gram_reg, indptr, indices, confidence, preference, out, ok_out):
    n_users = indptr.shape[0] - 1
    k = item_f.shape[1]
    for u in prange(n_users):
        a = gram_reg.copy()
        b = np.zeros(k, np.float64)
        for e in range(indptr[u], indptr[u + 1]):
            c = np.float64(confidence[e])
            p = np.float64(preference[e])
            if not (in_bound(c) and c >= 0.0 and in_bound(p)):
                continue
            y = item_f[indices[e]]
            w = c - 1.0
            cp = c * p
            for r in range(k):  # lower triangle only: the Cholesky reads nothing else
                wr = w * np.float64(y[r])
                row = a[r]
                for m in range(r + 1):
                    row[m] += wr * np.float64(y[m])
                b[r] += cp * np.float64(y[r])
        ok = cholesky_solve(a, b, k)
        for r in range(k):
            ok = ok and in_bound(b[r])
        ok_out[u] = 1 if ok else 0
        for r in range(k):
            out[u, r] = b[r] if ok else 0.0


def _validate(item_f, gram_reg, indptr, indices, confidence, preference) -> int:
    k = item_f.shape[1]
    if gram_reg.shape != (k, k):
        raise ValueError(f"gram_reg must be (k, k) = ({k}, {k}), got {gram_reg.shape}")
    if indptr.ndim != 1 or len(indptr) < 1 or indptr[0] != 0:
        raise ValueError("indptr must be 1-D and start at 0 (CSR row pointer)")
    nnz = int(indptr[-1])
    if np.any(np.diff(indptr) < 0) or not (
        len(indices) == len(confidence) == len(preference) == nnz
    ):
        raise ValueError("indptr must be non-decreasing and end at len(indices) == len(confidence)")
    if nnz and (indices.min() < 0 or indices.max() >= item_f.shape[0]):
        raise IndexError("resolve_users: an item index is out of range")
    return len(indptr) - 1


def resolve_users(item_f, gram_reg, indptr, indices, confidence, preference, ok_out=None):
    """Exact ALS solve of every user in the CSR ``(indptr, indices, confidence, preference)``.

    ``gram_reg`` is ``Y^T Y + reg I`` (float64 (k, k), :func:`gram`). Returns float32
    ``(n_users, k)``; users run in parallel (numba ``prange``). ``ok_out`` (uint8 (n_users,)),
    when given, gets 0 for users whose system failed (their row is zero).
    """
    n_users = _validate(item_f, gram_reg, indptr, indices, confidence, preference)
    out = np.zeros((n_users, item_f.shape[1]), np.float32)
    ok = np.empty(n_users, np.uint8) if ok_out is None else ok_out
    _resolve_kernel(
        item_f, np.ascontiguousarray(gram_reg, np.float64), np.asarray(indptr, np.int64),
        np.asarray(indices, np.int64), confidence, preference, out, ok,
    )  # fmt: skip
    return out


def resolve_users_reference(item_f, gram_reg, indptr, indices, confidence, preference, ok_out=None):
    """Plain NumPy twin of :func:`resolve_users` (``np.linalg.cholesky`` + ``solve``)."""
    n_users = _validate(item_f, gram_reg, indptr, indices, confidence, preference)
    k = item_f.shape[1]
    out = np.zeros((n_users, k), np.float32)
    for u in range(n_users):
        sl = slice(indptr[u], indptr[u + 1])
        c = np.asarray(confidence[sl], np.float64)
        p = np.asarray(preference[sl], np.float64)
        keep = (np.abs(c) <= GUARD_BOUND) & (c >= 0) & (np.abs(p) <= GUARD_BOUND)
        y = np.asarray(item_f[indices[sl][keep]], np.float64)
        a = gram_reg + (y.T * (c[keep] - 1.0)) @ y
        b = y.T @ (c[keep] * p[keep])
        try:
            np.linalg.cholesky(a)
            x = np.linalg.solve(a, b)
            ok = bool(np.all(np.abs(x) <= GUARD_BOUND))
        except np.linalg.LinAlgError:
            ok = False
        if ok_out is not None:
            ok_out[u] = ok
        if ok:
            out[u] = x
    return out

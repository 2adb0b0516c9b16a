"""Per-event fold-in for implicit feedback: one Newton step in ALS geometry.

Objective (Hu, Koren & Volinsky 2008, with ``implicit``'s convention c = alpha * r): for user u

    L_u(x) = sum_i c_ui (p_ui - x . y_i)^2 + reg |x|^2

where an unobserved item has c = 1, p = 0, a positive event c = alpha r, p = 1, and a negative
one (dislike) c = alpha |r|, p = 0. Its minimiser is the ALS solve

    x_u = A_u^-1 b_u,   A_u = G + sum_obs (c - 1) y y^T,   b_u = sum_obs c p y,   G = Y^T Y + reg I.

A new event (u, i, c, p) adds (c - 1) y y^T to A_u and c p y to b_u. If x_u minimised the old
objective (A_old x_u = b_old), the new minimiser is exactly x_u + (A_old + (c-1) y y^T)^-1
(c p - (c - 1) s) y with s = x_u . y. We replace A_old by G (the Hessian without the user's own
history) and apply Sherman-Morrison with q = y^T G^-1 y::

    x_u' = x_u + (c p - (c - 1) s) / (1 + (c - 1) q) * G^-1 y

Symmetrically y_i' = y_i + (c p - (c - 1) s) / (1 + (c - 1) q_x) * gx_inv x_u (old x_u), when
``update_items``. The user step is exact (equals ``resolve_users`` for that user) when x_u = 0
before its first event (the ALS optimum of an empty history) and every earlier event of the user
had c = 1, with Y and G unchanged in between (``update_items=False``). Otherwise it is one Newton
step with the Hessian approximated by G + (c - 1) y y^T: the user's earlier events keep no
curvature of their own, which over-steps for heavy users until the next ``resolve_users``/retrain.
A repeated (u, i) adds another rank-one term, whereas ``implicit`` would sum r in the matrix.
Cost O(k^2) per event (two k x k mat-vecs when items are updated).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from numba import njit

from online_als.kernels.explicit_sgd import _dot64
from online_als.kernels.guard import (
    DENOM_MIN,
    GUARD_BOUND,
    PREFETCH_AHEAD,
    in_bound,
    prefetch_row,
    rows_in_range,
    rows_in_range_reference,
)
from online_als.kernels.linalg import gram


def gram_inverse(factors: np.ndarray, reg: float) -> np.ndarray:
    """``(F^T F + reg I)^-1`` in float64 (k, k), via Cholesky; symmetric by construction."""
    g = gram(factors, reg)
    try:
        chol = np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"F^T F + {reg} I is not positive definite: use reg > 0 (got {reg})"
        ) from None
    linv = scipy.linalg.solve_triangular(chol, np.eye(g.shape[0]), lower=True)
    inv = linv.T @ linv
    return np.ascontiguousarray((inv + inv.T) * 0.5)


def gram_inverse_reference(factors: np.ndarray, reg: float) -> np.ndarray:
    """NumPy twin of :func:`gram_inverse` (direct ``np.linalg.inv``)."""
    f = np.asarray(factors, np.float64)
    return np.linalg.inv(f.T @ f + reg * np.eye(f.shape[1]))


@njit(cache=True, nogil=True)
def _symv(g: np.ndarray, v: np.ndarray, out: np.ndarray) -> float:
    """out = g @ v for symmetric g (row j of g is column j: contiguous axpy); return v . out."""
    k = v.shape[0]
    for a in range(k):
        out[a] = 0.0
    for b in range(k):
        vb = np.float64(v[b])
        row = g[b]
        for a in range(k):
            out[a] += row[a] * vb
    q = 0.0
    for a in range(k):
        q += np.float64(v[a]) * out[a]
    return q


@njit(cache=True, nogil=True)
def foldin_update_batch(
    user_f, item_f, u_rows, i_rows, confidence, preference,
    gy_inv, gx_inv, update_items, pred_out, applied_out,
):  # fmt: skip
    """Fold events in one by one (see the module docstring); return the number applied.

    ``pred_out[j]`` = x_u . y_i before event j. Refused (``applied_out[j] = 0``, nothing
    written): non-finite or negative confidence, non-finite preference, a Sherman-Morrison
    denominator below ``DENOM_MIN`` (stale or non-PD Gram), or a new value beyond the guard.
    """
    n = u_rows.shape[0]
    if i_rows.shape[0] != n or confidence.shape[0] != n or preference.shape[0] != n:
        raise ValueError("u_rows, i_rows, confidence, preference: lengths differ")
    if pred_out.shape[0] != n or applied_out.shape[0] != n:
        raise ValueError("pred_out or applied_out: wrong length")
    k = user_f.shape[1]
    if item_f.shape[1] != k or gy_inv.shape[0] != k or gy_inv.shape[1] != k:
        raise ValueError("factor ranks or gy_inv shape differ")
    if update_items and (gx_inv.shape[0] != k or gx_inv.shape[1] != k):
        raise ValueError("gx_inv shape differs from (k, k)")
    if not rows_in_range(u_rows, user_f.shape[0]) or not rows_in_range(i_rows, item_f.shape[0]):
        raise IndexError("foldin_update_batch: a user or item row is out of range")
    zu = np.empty(k, np.float64)  # gy_inv @ y_i
    zi = np.empty(k, np.float64)  # gx_inv @ x_u
    xn = np.empty(k, np.float64)
    yn = np.empty(k, np.float64)
    applied = 0
    for j in range(n):
        if j + PREFETCH_AHEAD < n:  # random rows of big tables: hide the cache misses
            prefetch_row(user_f, u_rows[j + PREFETCH_AHEAD])
            prefetch_row(item_f, i_rows[j + PREFETCH_AHEAD])
        x = user_f[u_rows[j]]
        y = item_f[i_rows[j]]
        s = _dot64(x, y)
        pred_out[j] = s
        applied_out[j] = 0
        c = np.float64(confidence[j])
        p = np.float64(preference[j])
        if not (in_bound(c) and c >= 0.0 and in_bound(p) and in_bound(s)):
            continue
        resid = c * p - (c - 1.0) * s
        den = 1.0 + (c - 1.0) * _symv(gy_inv, y, zu)
        if not den >= DENOM_MIN:
            continue
        step = resid / den
        ok = True
        for f in range(k):
            a = np.float64(x[f]) + step * zu[f]
            xn[f] = a
            ok &= abs(a) <= GUARD_BOUND
        if update_items:
            den_i = 1.0 + (c - 1.0) * _symv(gx_inv, x, zi)
            if not den_i >= DENOM_MIN:
                continue
            step_i = resid / den_i
            for f in range(k):
                b = np.float64(y[f]) + step_i * zi[f]
                yn[f] = b
                ok &= abs(b) <= GUARD_BOUND
        if not ok:
            continue
        for f in range(k):
            x[f] = xn[f]
        if update_items:
            for f in range(k):
                y[f] = yn[f]
        applied_out[j] = 1
        applied += 1
    return applied


def foldin_update_batch_reference(
    user_f, item_f, u_rows, i_rows, confidence, preference,
    gy_inv, gx_inv, update_items, pred_out, applied_out,
):  # fmt: skip
    """Plain NumPy twin of :func:`foldin_update_batch` (same signature and semantics)."""
    n = len(u_rows)
    if not (len(i_rows) == len(confidence) == len(preference) == n):
        raise ValueError("u_rows, i_rows, confidence, preference: lengths differ")
    if len(pred_out) != n or len(applied_out) != n:
        raise ValueError("pred_out or applied_out: wrong length")
    k = user_f.shape[1]
    if item_f.shape[1] != k or gy_inv.shape != (k, k):
        raise ValueError("factor ranks or gy_inv shape differ")
    if update_items and gx_inv.shape != (k, k):
        raise ValueError("gx_inv shape differs from (k, k)")
    ok_rows = rows_in_range_reference(u_rows, user_f.shape[0])
    if not ok_rows or not rows_in_range_reference(i_rows, item_f.shape[0]):
        raise IndexError("foldin_update_batch: a user or item row is out of range")
    applied = 0
    for j in range(n):
        u, i = u_rows[j], i_rows[j]
        x = user_f[u].astype(np.float64)
        y = item_f[i].astype(np.float64)
        s = float(x @ y)
        pred_out[j] = s
        applied_out[j] = 0
        c, p = np.float64(confidence[j]), np.float64(preference[j])
        if not (
            abs(c) <= GUARD_BOUND and c >= 0 and abs(p) <= GUARD_BOUND and abs(s) <= GUARD_BOUND
        ):
            continue
        resid = c * p - (c - 1.0) * s
        zu = gy_inv @ y
        den = 1.0 + (c - 1.0) * float(y @ zu)
        if not den >= DENOM_MIN:
            continue
        xn = x + (resid / den) * zu
        ok = bool(np.all(np.abs(xn) <= GUARD_BOUND))
        if update_items:
            zi = gx_inv @ x
            den_i = 1.0 + (c - 1.0) * float(x @ zi)
            if not den_i >= DENOM_MIN:
                continue
            yn = y + (resid / den_i) * zi
            ok = ok and bool(np.all(np.abs(yn) <= GUARD_BOUND))
        if not ok:
            continue
        user_f[u] = xn
        if update_items:
            item_f[i] = yn
        applied_out[j] = 1
        applied += 1
    return applied

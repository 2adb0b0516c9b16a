"""Biased matrix-factorisation SGD for explicit ratings (Koren 2009; River ``BiasedMF``).

Per event ``(u, i, r)``, all right-hand sides from the values *before* the event::

    pred = mu + b_u + b_i + x_u . y_i
    e    = clip(r - pred, -clip, clip)
    b_u += lr (e - reg_bias b_u)          b_i += lr (e - reg_bias b_i)
    x_u += lr (e y_i - reg x_u)           y_i += lr (e x_u - reg y_i)

This is one stochastic-gradient step on ``(r - pred)^2 / 2 + reg/2 (|x_u|^2 + |y_i|^2) +
reg_bias/2 (b_u^2 + b_i^2)``. Arithmetic is float64, stored back as float32, so the numba
kernel and its NumPy twin agree to float32 rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from online_als.kernels.guard import (
    GUARD_BOUND,
    PREFETCH_AHEAD,
    in_bound,
    prefetch_row,
    rows_in_range,
    rows_in_range_reference,
)


@njit(cache=True, nogil=True)
def _dot64(x: np.ndarray, y: np.ndarray) -> float:
    # Four partial sums break the add-latency chain (no fastmath, so LLVM keeps our order).
    k = x.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    f = 0
    while f + 4 <= k:
        s0 += np.float64(x[f]) * np.float64(y[f])
        s1 += np.float64(x[f + 1]) * np.float64(y[f + 1])
        s2 += np.float64(x[f + 2]) * np.float64(y[f + 2])
        s3 += np.float64(x[f + 3]) * np.float64(y[f + 3])
        f += 4
    while f < k:
        s0 += np.float64(x[f]) * np.float64(y[f])
        f += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True)
def sgd_update_batch(
    user_f, user_b, item_f, item_b, u_rows, i_rows, ratings,
    global_mean, lr, reg, reg_bias, clip, pred_out, applied_out,
):  # fmt: skip
    """Apply one SGD step per event, in order; return the number of events applied.

    ``pred_out[j]`` gets the prediction before event j; ``applied_out[j]`` 1, or 0 when the
    guard refused it (non-finite rating, or a new value non-finite or beyond ``GUARD_BOUND``).
    Raises ``IndexError`` before touching anything if a row is out of range.
    """
    n = u_rows.shape[0]
    if i_rows.shape[0] != n or ratings.shape[0] != n or pred_out.shape[0] != n:
        raise ValueError("u_rows, i_rows, ratings, pred_out, applied_out: lengths differ")
    if applied_out.shape[0] != n or user_f.shape[1] != item_f.shape[1]:
        raise ValueError("applied_out length or factor ranks differ")
    if not rows_in_range(u_rows, user_f.shape[0]) or not rows_in_range(i_rows, item_f.shape[0]):
        raise IndexError("sgd_update_batch: a user or item row is out of range")
    k = user_f.shape[1]
    xn = np.empty(k, np.float64)
    yn = np.empty(k, np.float64)
    applied = 0
    for j in range(n):
        if j + PREFETCH_AHEAD < n:  # random rows of big tables: hide the cache misses
            ahead_u = u_rows[j + PREFETCH_AHEAD]
            ahead_i = i_rows[j + PREFETCH_AHEAD]
            prefetch_row(user_f, ahead_u)
            prefetch_row(item_f, ahead_i)
            prefetch_row(user_b, ahead_u)
            prefetch_row(item_b, ahead_i)
        u = u_rows[j]
        i = i_rows[j]
        x = user_f[u]
        y = item_f[i]
        bu = np.float64(user_b[u])
        bi = np.float64(item_b[i])
        pred = global_mean + bu + bi + _dot64(x, y)
        pred_out[j] = pred
        applied_out[j] = 0
        r = np.float64(ratings[j])
        if not in_bound(r) or not in_bound(pred):
            continue
        e = min(max(r - pred, -clip), clip)
        bu_new = bu + lr * (e - reg_bias * bu)
        bi_new = bi + lr * (e - reg_bias * bi)
        ok = in_bound(bu_new) and in_bound(bi_new)
        # Branch-free check (& not `and`) so LLVM can vectorise this loop.
        for f in range(k):
            xf = np.float64(x[f])
            yf = np.float64(y[f])
            a = xf + lr * (e * yf - reg * xf)
            b = yf + lr * (e * xf - reg * yf)
            xn[f] = a
            yn[f] = b
            ok &= (abs(a) <= GUARD_BOUND) & (abs(b) <= GUARD_BOUND)
        if not ok:
            continue
        user_b[u] = bu_new
        item_b[i] = bi_new
        for f in range(k):
            x[f] = xn[f]
            y[f] = yn[f]
        applied_out[j] = 1
        applied += 1
    return applied


def sgd_update_batch_reference(
    user_f, user_b, item_f, item_b, u_rows, i_rows, ratings,
    global_mean, lr, reg, reg_bias, clip, pred_out, applied_out,
):  # fmt: skip
    """Plain NumPy twin of :func:`sgd_update_batch` (same signature and semantics)."""
    n = len(u_rows)
    if not (len(i_rows) == len(ratings) == len(pred_out) == len(applied_out) == n):
        raise ValueError("u_rows, i_rows, ratings, pred_out, applied_out: lengths differ")
    if user_f.shape[1] != item_f.shape[1]:
        raise ValueError("applied_out length or factor ranks differ")
    ok_rows = rows_in_range_reference(u_rows, user_f.shape[0])
    if not ok_rows or not rows_in_range_reference(i_rows, item_f.shape[0]):
        raise IndexError("sgd_update_batch: a user or item row is out of range")
    applied = 0
    for j in range(n):
        u, i = u_rows[j], i_rows[j]
        x = user_f[u].astype(np.float64)
        y = item_f[i].astype(np.float64)
        bu, bi = np.float64(user_b[u]), np.float64(item_b[i])
        pred = global_mean + bu + bi + float(x @ y)
        pred_out[j] = pred
        applied_out[j] = 0
        r = np.float64(ratings[j])
        if not (abs(r) <= GUARD_BOUND and abs(pred) <= GUARD_BOUND):
            continue
        e = min(max(r - pred, -clip), clip)
        bu_new = bu + lr * (e - reg_bias * bu)
        bi_new = bi + lr * (e - reg_bias * bi)
        xn = x + lr * (e * y - reg * x)
        yn = y + lr * (e * x - reg * y)
        values = np.concatenate(([bu_new, bi_new], xn, yn))
        if not np.all(np.abs(values) <= GUARD_BOUND):
            continue
        user_b[u], item_b[i] = bu_new, bi_new
        user_f[u], item_f[i] = xn, yn
        applied_out[j] = 1
        applied += 1
    return applied

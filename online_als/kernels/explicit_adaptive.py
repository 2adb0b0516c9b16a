"""Adaptive biased MF for explicit ratings: AdaGrad steps, a session user bias, and an optional
SVD++-style implicit factor. One call per micro-batch, events in order, like
:func:`online_als.kernels.explicit_sgd.sgd_update_batch`.

Every piece of state is a fixed-size float32 row per entity, so a worker can keep it next to
the factors (e.g. a third Redis hash field) and apply it exactly once:

- ``user_f[u]`` (k): the *effective* user vector ``p_u = x_u + s_u / sqrt(n_u)`` (what serving
  dots with the item vectors); ``user_b[u]``: the long-term user bias.
- ``user_aux[u]`` (:func:`user_aux_width`): ``[0:k]`` AdaGrad sums of squared gradients of
  ``x_u``, ``[k]`` the same for ``b_u``, ``[k+1]`` the session id, ``[k+2]`` the session
  bias; with the implicit factor also ``[k+3:2k+3]`` ``s_u`` (the sum of ``z_j`` over the
  items the user rated) and ``[2k+3]`` ``n_u`` (their count).
- ``item_f[i]``, ``item_b[i]``: factors and bias; ``item_aux[i]`` (:func:`item_aux_width`):
  ``[0:k]`` AdaGrad sums of ``y_i``, ``[k]`` of ``b_i``; with the implicit factor
  ``[k+1:2k+1]`` the implicit item factor ``z_i``.

Per event ``(u, i, r, t)``, every right-hand side from the values before the event::

    d = floor(t / session_seconds)  (0 when session_seconds == 0)
    c_u = 0 if d != session id of u else session bias of u        (then session id := d)
    implicit: x_u = p_u - s_u/sqrt(n_u); n_u += 1; s_u += z_i; p = x_u + s_u/sqrt(n_u)
    pred = mu + b_u + b_i + c_u + p . y_i
    e = clip(r - pred, -clip, clip)
    b  += lr_bias g / sqrt(G_b + g^2)  with g = e - reg_bias b     (b_u and b_i; G_b += g^2)
    x_u += lr g / sqrt(G + g^2)        with g = e y_i - reg x_u    (per coordinate; G += g^2)
    y_i += lr g / sqrt(G + g^2)        with g = e p - reg y_i
    c_u += session_lr (e - session_reg c_u)
    implicit: dz = implicit_lr (e y_i / sqrt(n_u) - implicit_reg z_i); z_i += dz; s_u += dz
    p_u = x_u + s_u / sqrt(n_u)

The item being rated is part of the user's implicit set *before* its prediction (which items a
user rates is known when the event arrives, its value is not). The set is a running sum, not a
history: a re-rating adds the item again, and ``z_j`` of earlier items is updated only through
``s_u``. Arithmetic is float64, stored back as float32; the NaN/Inf guard is that of
``docs/kernels.md`` (an event is applied entirely or not at all).

Hyper-parameters travel in one float64 array (:func:`pack_params`, indices ``HP_*``).
"""

from __future__ import annotations

import math

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

HP_LR, HP_LR_BIAS, HP_REG, HP_REG_BIAS, HP_CLIP = 0, 1, 2, 3, 4
HP_SESSION_LR, HP_SESSION_REG, HP_SESSION_SECONDS = 5, 6, 7
HP_IMPLICIT, HP_IMPLICIT_LR, HP_IMPLICIT_REG = 8, 9, 10
N_HP = 11
#: Session id of a user that has none yet.
NO_SESSION = -1.0


def user_aux_width(k: int, implicit: bool) -> int:
    """Floats of per-user state besides ``f`` and ``b``."""
    return 2 * k + 4 if implicit else k + 3


def item_aux_width(k: int, implicit: bool) -> int:
    """Floats of per-item state besides ``f`` and ``b``."""
    return 2 * k + 1 if implicit else k + 1


def pack_params(
    lr: float, lr_bias: float, reg: float, reg_bias: float, clip: float, session_lr: float,
    session_reg: float, session_seconds: float, implicit: bool, implicit_lr: float,
    implicit_reg: float,
) -> np.ndarray:  # fmt: skip
    """The kernel's float64 hyper-parameter array."""
    hp = np.zeros(N_HP, np.float64)
    hp[[HP_LR, HP_LR_BIAS, HP_REG, HP_REG_BIAS, HP_CLIP]] = lr, lr_bias, reg, reg_bias, clip
    hp[[HP_SESSION_LR, HP_SESSION_REG, HP_SESSION_SECONDS]] = (
        session_lr, session_reg, session_seconds)  # fmt: skip
    hp[[HP_IMPLICIT, HP_IMPLICIT_LR, HP_IMPLICIT_REG]] = float(implicit), implicit_lr, implicit_reg
    return hp


def init_user_aux(n: int, k: int, implicit: bool, acc_init: float) -> np.ndarray:
    """Aux rows of ``n`` new users: AdaGrad sums at ``acc_init``, no session, empty set."""
    aux = np.zeros((n, user_aux_width(k, implicit)), np.float32)
    aux[:, : k + 1] = acc_init
    aux[:, k + 1] = NO_SESSION
    return aux


def init_item_aux(z: np.ndarray, implicit: bool, acc_init: float) -> np.ndarray:
    """Aux rows of new items; ``z`` (n, k) are their initial implicit factors (deterministic
    per id, see :func:`online_als.init.init_vectors`; ignored unless ``implicit``)."""
    n, k = z.shape
    aux = np.zeros((n, item_aux_width(k, implicit)), np.float32)
    aux[:, : k + 1] = acc_init
    if implicit:
        aux[:, k + 1 :] = z
    return aux


@njit(cache=True, nogil=True)
def _session_of(t: int, seconds: float) -> float:
    if seconds <= 0.0:
        return 0.0
    return np.float64(np.float32(math.floor(t / seconds)))


@njit(cache=True, nogil=True)
def adaptive_update_batch(
    user_f, user_b, user_aux, item_f, item_b, item_aux, u_rows, i_rows, ratings, times,
    global_mean, hp, pred_out, applied_out,
):  # fmt: skip
    """Apply one adaptive step per event, in order; return the number applied.

    ``times`` are int64 unix seconds (any monotone clock; zeros when unknown). ``pred_out[j]``
    gets the prediction before event j, ``applied_out[j]`` 1 or 0 (guard refusal).
    """
    n = u_rows.shape[0]
    if i_rows.shape[0] != n or ratings.shape[0] != n or pred_out.shape[0] != n:
        raise ValueError("u_rows, i_rows, ratings, pred_out: lengths differ")
    if applied_out.shape[0] != n or times.shape[0] != n:
        raise ValueError("applied_out or times: lengths differ")
    k = user_f.shape[1]
    imp = hp[HP_IMPLICIT] != 0.0
    if item_f.shape[1] != k or hp.shape[0] != N_HP:
        raise ValueError("factor ranks differ, or hp is not pack_params' array")
    uw = 2 * k + 4 if imp else k + 3
    iw = 2 * k + 1 if imp else k + 1
    if user_aux.shape[1] != uw or item_aux.shape[1] != iw:
        raise ValueError("aux widths do not match k and the implicit flag")
    if user_aux.shape[0] != user_f.shape[0] or item_aux.shape[0] != item_f.shape[0]:
        raise ValueError("aux and factor tables have different row counts")
    if not rows_in_range(u_rows, user_f.shape[0]) or not rows_in_range(i_rows, item_f.shape[0]):
        raise IndexError("adaptive_update_batch: a user or item row is out of range")
    lr, lr_b, reg, reg_b, clip = hp[HP_LR], hp[HP_LR_BIAS], hp[HP_REG], hp[HP_REG_BIAS], hp[HP_CLIP]
    s_lr, s_reg, s_sec = hp[HP_SESSION_LR], hp[HP_SESSION_REG], hp[HP_SESSION_SECONDS]
    z_lr, z_reg = hp[HP_IMPLICIT_LR], hp[HP_IMPLICIT_REG]
    x = np.empty(k, np.float64)
    p = np.empty(k, np.float64)
    s = np.empty(k, np.float64)
    xn = np.empty(k, np.float64)
    yn = np.empty(k, np.float64)
    gx = np.empty(k, np.float64)
    gy = np.empty(k, np.float64)
    zn = np.empty(k, np.float64)
    applied = 0
    for j in range(n):
        if j + PREFETCH_AHEAD < n:
            ahead_u = u_rows[j + PREFETCH_AHEAD]
            ahead_i = i_rows[j + PREFETCH_AHEAD]
            prefetch_row(user_f, ahead_u)
            prefetch_row(item_f, ahead_i)
            prefetch_row(user_aux, ahead_u)
            prefetch_row(item_aux, ahead_i)
        u = u_rows[j]
        i = i_rows[j]
        pu = user_f[u]
        y = item_f[i]
        ua = user_aux[u]
        ia = item_aux[i]
        bu = np.float64(user_b[u])
        bi = np.float64(item_b[i])
        sid = _session_of(times[j], s_sec)
        cu = np.float64(ua[k + 2]) if np.float64(ua[k + 1]) == sid else 0.0
        sc = 0.0
        if imp:
            n0 = np.float64(ua[2 * k + 3])
            sc0 = 1.0 / math.sqrt(n0) if n0 > 0.0 else 0.0
            sc = 1.0 / math.sqrt(n0 + 1.0)
            for f in range(k):
                sf = np.float64(ua[k + 3 + f])
                x[f] = np.float64(pu[f]) - sc0 * sf
                s[f] = sf + np.float64(ia[k + 1 + f])
                p[f] = x[f] + sc * s[f]
        else:
            for f in range(k):
                x[f] = np.float64(pu[f])
                p[f] = x[f]
        dot = 0.0
        for f in range(k):
            dot += p[f] * np.float64(y[f])
        pred = global_mean + bu + bi + cu + dot
        pred_out[j] = pred
        applied_out[j] = 0
        r = np.float64(ratings[j])
        if not in_bound(r) or not in_bound(pred):
            continue
        e = min(max(r - pred, -clip), clip)
        g = e - reg_b * bu
        gbu = np.float64(ua[k]) + g * g
        bu_new = bu + lr_b * g / math.sqrt(gbu)
        g = e - reg_b * bi
        gbi = np.float64(ia[k]) + g * g
        bi_new = bi + lr_b * g / math.sqrt(gbi)
        cu_new = cu + s_lr * (e - s_reg * cu)
        ok = in_bound(bu_new) and in_bound(bi_new) and in_bound(cu_new)
        for f in range(k):
            yf = np.float64(y[f])
            a = e * yf - reg * x[f]
            b = e * p[f] - reg * yf
            gx[f] = np.float64(ua[f]) + a * a
            gy[f] = np.float64(ia[f]) + b * b
            xn[f] = x[f] + lr * a / math.sqrt(gx[f])
            yn[f] = yf + lr * b / math.sqrt(gy[f])
            if imp:
                dz = z_lr * (e * sc * yf - z_reg * np.float64(ia[k + 1 + f]))
                zn[f] = np.float64(ia[k + 1 + f]) + dz
                s[f] += dz
                xn[f] += sc * s[f]  # xn now holds the new effective vector p_u
                ok &= (abs(zn[f]) <= GUARD_BOUND) & (abs(s[f]) <= GUARD_BOUND)
            ok &= (abs(xn[f]) <= GUARD_BOUND) & (abs(yn[f]) <= GUARD_BOUND)
            ok &= (gx[f] <= 1e30) & (gy[f] <= 1e30)
        if not ok or not (gbu <= 1e30 and gbi <= 1e30):
            continue
        user_b[u] = bu_new
        item_b[i] = bi_new
        ua[k] = gbu
        ia[k] = gbi
        ua[k + 1] = sid
        ua[k + 2] = cu_new
        for f in range(k):
            pu[f] = xn[f]
            y[f] = yn[f]
            ua[f] = gx[f]
            ia[f] = gy[f]
        if imp:
            ua[2 * k + 3] = ua[2 * k + 3] + 1.0
            for f in range(k):
                ua[k + 3 + f] = s[f]
                ia[k + 1 + f] = zn[f]
        applied_out[j] = 1
        applied += 1
    return applied


def adaptive_update_batch_reference(
    user_f, user_b, user_aux, item_f, item_b, item_aux, u_rows, i_rows, ratings, times,
    global_mean, hp, pred_out, applied_out,
):  # fmt: skip
    """Plain NumPy twin of :func:`adaptive_update_batch` (same signature and semantics)."""
    n = len(u_rows)
    if not (len(i_rows) == len(ratings) == len(pred_out) == n):
        raise ValueError("u_rows, i_rows, ratings, pred_out: lengths differ")
    if len(applied_out) != n or len(times) != n:
        raise ValueError("applied_out or times: lengths differ")
    k = user_f.shape[1]
    imp = bool(hp[HP_IMPLICIT] != 0.0)
    if item_f.shape[1] != k or hp.shape[0] != N_HP:
        raise ValueError("factor ranks differ, or hp is not pack_params' array")
    if user_aux.shape[1] != user_aux_width(k, imp) or item_aux.shape[1] != item_aux_width(k, imp):
        raise ValueError("aux widths do not match k and the implicit flag")
    if user_aux.shape[0] != user_f.shape[0] or item_aux.shape[0] != item_f.shape[0]:
        raise ValueError("aux and factor tables have different row counts")
    ok_rows = rows_in_range_reference(u_rows, user_f.shape[0])
    if not ok_rows or not rows_in_range_reference(i_rows, item_f.shape[0]):
        raise IndexError("adaptive_update_batch: a user or item row is out of range")
    lr, lr_b, reg, reg_b, clip = (float(hp[h]) for h in (HP_LR, HP_LR_BIAS, HP_REG,
                                                           HP_REG_BIAS, HP_CLIP))  # fmt: skip
    s_lr, s_reg, s_sec = float(hp[HP_SESSION_LR]), float(hp[HP_SESSION_REG]), float(
        hp[HP_SESSION_SECONDS])
    z_lr, z_reg = float(hp[HP_IMPLICIT_LR]), float(hp[HP_IMPLICIT_REG])
    applied = 0
    for j in range(n):
        u, i = u_rows[j], i_rows[j]
        pu = user_f[u].astype(np.float64)
        y = item_f[i].astype(np.float64)
        ua = user_aux[u].astype(np.float64)
        ia = item_aux[i].astype(np.float64)
        bu, bi = float(user_b[u]), float(item_b[i])
        sid = 0.0 if s_sec <= 0 else float(np.float32(math.floor(int(times[j]) / s_sec)))
        cu = ua[k + 2] if ua[k + 1] == sid else 0.0
        sc = 0.0
        if imp:
            n0 = ua[2 * k + 3]
            sc0 = 1.0 / math.sqrt(n0) if n0 > 0 else 0.0
            sc = 1.0 / math.sqrt(n0 + 1.0)
            s = ua[k + 3 : 2 * k + 3]
            z = ia[k + 1 :]
            x = pu - sc0 * s
            s = s + z
            p = x + sc * s
        else:
            x = p = pu
        pred = global_mean + bu + bi + cu + float(np.sum(p * y))
        pred_out[j] = pred
        applied_out[j] = 0
        r = float(ratings[j])
        if not (abs(r) <= GUARD_BOUND and abs(pred) <= GUARD_BOUND):
            continue
        e = min(max(r - pred, -clip), clip)
        g = e - reg_b * bu
        gbu = ua[k] + g * g
        bu_new = bu + lr_b * g / math.sqrt(gbu)
        g = e - reg_b * bi
        gbi = ia[k] + g * g
        bi_new = bi + lr_b * g / math.sqrt(gbi)
        cu_new = cu + s_lr * (e - s_reg * cu)
        a = e * y - reg * x
        b = e * p - reg * y
        gx = ua[:k] + a * a
        gy = ia[:k] + b * b
        xn = x + lr * a / np.sqrt(gx)
        yn = y + lr * b / np.sqrt(gy)
        values = [np.array([bu_new, bi_new, cu_new]), yn]
        if imp:
            dz = z_lr * (e * sc * y - z_reg * z)
            zn = z + dz
            s = s + dz
            xn = xn + sc * s
            values += [zn, s]
        values.append(xn)
        if not np.all(np.abs(np.concatenate(values)) <= GUARD_BOUND):
            continue
        if not (np.all(gx <= 1e30) and np.all(gy <= 1e30) and gbu <= 1e30 and gbi <= 1e30):
            continue
        user_b[u], item_b[i] = bu_new, bi_new
        user_f[u], item_f[i] = xn, yn
        user_aux[u, :k], item_aux[i, :k] = gx, gy
        user_aux[u, k], item_aux[i, k] = gbu, gbi
        user_aux[u, k + 1], user_aux[u, k + 2] = sid, cu_new
        if imp:
            user_aux[u, k + 3 : 2 * k + 3] = s
            user_aux[u, 2 * k + 3] = ua[2 * k + 3] + 1.0
            item_aux[i, k + 1 :] = zn
        applied_out[j] = 1
        applied += 1
    return applied

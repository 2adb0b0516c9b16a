"""Exact single-user top-N that scores only a few candidates in float32.

The float32 pass over the whole item matrix (~27k x 64, 6.8 MB: L3-bandwidth bound) was most
of a ``recommend`` call. :class:`QuantizedItems` keeps an int8 copy of the items (1.7 MB,
feature-major blocks so the dot products vectorise across rows), scores every row
approximately with it, and bounds each approximate score's distance from the float32 score
that :func:`~online_als.serving._kernels.dense_scores` would return. Only rows whose upper bound
reaches the n-th best lower bound can be in the top n; those few rows are then scored by
``dense_scores`` itself (same kernel, same summation order, so bit-identical scores) and ranked
with the same tie-break. Rankings and scores are therefore exactly those of the full pass.

Bound for row i (``x`` the float32 user vector, ``u = 2**-24``, ``y_i ~ s_i * q_i``):

* quantisation: ``|y_i.x - s_i q_i.x| <= ||y_i - s_i q_i|| ||x||`` (Cauchy-Schwarz);
* float32 rounding of the int8 pass (any summation order): ``<= k u ||q_i|| ||x|| s_i``;
* float32 rounding of the exact score ``(y_i.x + b_i) + c`` in any summation order:
  ``<= (k + 2) u (||y_i|| ||x|| + |b_i| + |c|)``.

Each term is taken twice over (slack for the float64 arithmetic of the bound itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from online_als.serving._kernels import dense_scores, top_k_rows

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "QuantizedItems",
    "candidate_rows",
    "candidate_rows_reference",
    "prefilter_top",
    "prefilter_top_reference",
]

BLOCK = 128  # rows per feature-major block: measured fastest of 32..256 on the 2-core box
_U = 2.0 ** -24
_MAX_SHARE = 8  # more candidates than n_items / this: the full pass is cheaper
_MAX_N = 256  # larger n: many candidates, the full pass
_HUGE = 1e30  # beyond this, float32 scores may overflow: use the full pass
_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ALLOW = np.empty(0, dtype=np.bool_)  # "no allow mask" for the kernel (typed, unlike None)


# reassociation lets the int8 dot products vectorise; no "nnan"/"ninf": -inf marks blocked rows
_FAST = {"reassoc", "contract", "arcp", "nsz"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def candidate_rows(q: I8, x: F32, scale: F32, slack: F32, bias: F32, c: float, xnorm: float,
                   e0: float, blocked: BoolArray, m: int) -> I64:  # pragma: no cover - jitted
    """Rows (ascending) that may be among the ``m`` best: upper bound >= the cut-off.

    Row ``i = blk * B + j`` scores ``approx = scale_i * (q[blk, :, j] . x) + bias_i + c`` within
    ``slack_i * xnorm + e0``. The cut-off is the ``m``-th largest per-block maximum of the
    lower bounds: ``m`` distinct rows reach it, so it never exceeds the ``m``-th best score.
    ``blocked`` rows (excluded, not allowed, padding) never count.
    """
    nb, k, b = q.shape
    acc = np.zeros(nb * b, dtype=np.float32)
    block_hi = np.empty(nb, dtype=np.float32)
    top = np.full(m, -np.inf, dtype=np.float32)  # the m largest block maxima, descending
    c32, xn32, e032 = np.float32(c), np.float32(xnorm), np.float32(e0)
    ninf = np.float32(-np.inf)
    k4 = k - k % 4
    for blk in range(nb):
        base = blk * b
        part = acc[base:base + b]
        # four features per pass over ``part``: a quarter of the loads and stores of the
        # accumulators (measured 30-40% faster); the bound holds for any summation order
        for f in range(0, k4, 4):
            x0, x1, x2, x3 = x[f], x[f + 1], x[f + 2], x[f + 3]
            r0, r1, r2, r3 = q[blk, f], q[blk, f + 1], q[blk, f + 2], q[blk, f + 3]
            for j in range(b):
                part[j] += (np.float32(r0[j]) * x0 + np.float32(r1[j]) * x1) + \
                    (np.float32(r2[j]) * x2 + np.float32(r3[j]) * x3)
        for f in range(k4, k):
            xf = x[f]
            row = q[blk, f]
            for j in range(b):
                part[j] += np.float32(row[j]) * xf
        best_lo, best_hi = ninf, ninf
        for j in range(b):
            i = base + j
            a = scale[i] * part[j] + bias[i] + c32
            d = slack[i] * xn32 + e032
            best_lo = max(best_lo, ninf if blocked[i] else a - d)
            best_hi = max(best_hi, ninf if blocked[i] else a + d)
        block_hi[blk] = best_hi
        if best_lo > top[m - 1]:
            pos = m - 1
            while pos > 0 and best_lo > top[pos - 1]:
                top[pos] = top[pos - 1]
                pos -= 1
            top[pos] = best_lo
    cut = top[m - 1]
    out = np.empty(nb * b, dtype=np.int64)
    count = 0
    for blk in range(nb):
        if not (block_hi[blk] >= cut and block_hi[blk] > ninf):
            continue
        for i in range(blk * b, blk * b + b):
            if blocked[i]:
                continue
            if scale[i] * acc[i] + bias[i] + c32 + (slack[i] * xn32 + e032) >= cut:
                out[count] = i
                count += 1
    return out[:count].copy()


def candidate_rows_reference(q: I8, x: F32, scale: F32, slack: F32, bias: F32, c: float,
                             xnorm: float, e0: float, blocked: BoolArray, m: int) -> I64:
    """NumPy twin of :func:`candidate_rows` (float64 arithmetic)."""
    nb, k, b = q.shape
    acc = np.einsum("bkj,k->bj", q.astype(np.float64), x.astype(np.float64)).reshape(-1)
    a = scale.astype(np.float64) * acc + bias.astype(np.float64) + c
    d = slack.astype(np.float64) * xnorm + e0
    lo = np.where(blocked, -np.inf, a - d)
    hi = np.where(blocked, -np.inf, a + d)
    best = np.sort(lo.reshape(nb, b).max(axis=1))[::-1]
    cut = best[m - 1] if m <= nb else -np.inf
    return np.flatnonzero((hi >= cut) & (hi > -np.inf)).astype(np.int64)


# No fastmath here: ``(dot + b_i) + c`` must be rounded in exactly the full pass's order
# (the bound arithmetic inside candidate_rows and the dot products inside dense_scores keep
# their own flags).
@njit(cache=True, nogil=True)
def prefilter_top(q: I8, x: F32, scale: F32, slack: F32, bias: F32, c32: np.float32, e0: float,
                  ymax: float, bmax: float, exclude: I64, allow: BoolArray, n_items: int,
                  m: int, item_f: F32, item_b: F32, has_bias: bool,
                  max_cand: int) -> tuple[I64, F32, bool]:  # pragma: no cover - jitted
    """The whole prefiltered top-``m`` in one call: blocked mask, candidates, exact rescore.

    ``exclude``: rows to drop (any out of ``[0, n_items)``, e.g. -1 for unknown ids, is
    ignored); ``allow``: a mask over the ``n_items`` rows, or empty for none. Returns rows and
    scores exactly as ``top_n`` over the full matrix, and True; or False when the bound cannot
    help (non-finite ``x``, a score range that could overflow, more than ``max_cand``
    candidates): the caller then runs the full pass.
    """
    empty_r, empty_s = np.empty(0, np.int64), np.empty(0, np.float32)
    ss = 0.0
    for f in range(x.shape[0]):
        ss += np.float64(x[f]) * np.float64(x[f])
    xnorm = np.sqrt(ss)
    c = np.float64(c32)
    if not (np.isfinite(xnorm) and np.isfinite(c)) or ymax * xnorm + bmax + abs(c) > _HUGE:
        return empty_r, empty_s, False
    blocked = np.zeros(scale.shape[0], dtype=np.bool_)
    blocked[n_items:] = True  # padding rows of the last block
    for r in exclude:
        if 0 <= r < n_items:
            blocked[r] = True
    if allow.shape[0] == n_items:
        for i in range(n_items):
            if not allow[i]:
                blocked[i] = True
    cand = candidate_rows(q, x, scale, slack, bias, c, xnorm, e0, blocked, m)
    nc = cand.shape[0]
    if nc > max_cand:
        return empty_r, empty_s, False
    rows = np.empty((nc, item_f.shape[1]), dtype=np.float32)
    for j in range(nc):
        rows[j] = item_f[cand[j]]
    scores = np.empty(nc, dtype=np.float32)
    dense_scores(rows, x, scores)  # the full pass's kernel on the same rows: same bits
    if has_bias:
        for j in range(nc):
            scores[j] = (scores[j] + item_b[cand[j]]) + c32
    keep = top_k_rows(scores, min(m, nc))
    return cand[keep], scores[keep], True


def prefilter_top_reference(q: I8, x: F32, scale: F32, slack: F32, bias: F32, c32: np.float32,
                            e0: float, ymax: float, bmax: float, exclude: I64, allow: BoolArray,
                            n_items: int, m: int, item_f: F32, item_b: F32, has_bias: bool,
                            max_cand: int) -> tuple[I64, F32, bool]:
    """NumPy twin of :func:`prefilter_top` (float64 bound, ``@`` for the rescore)."""
    xnorm = float(np.linalg.norm(x.astype(np.float64)))
    c = float(c32)
    if not (np.isfinite(xnorm) and np.isfinite(c)) or ymax * xnorm + bmax + abs(c) > _HUGE:
        return np.empty(0, np.int64), np.empty(0, np.float32), False
    blocked = np.ones(scale.shape[0], dtype=bool)
    blocked[:n_items] = False
    ex = exclude[(exclude >= 0) & (exclude < n_items)]
    blocked[ex] = True
    if allow.shape[0] == n_items:
        blocked[:n_items] |= ~allow
    cand = candidate_rows_reference(q, x, scale, slack, bias, c, xnorm, e0, blocked, m)
    if cand.size > max_cand:
        return np.empty(0, np.int64), np.empty(0, np.float32), False
    scores = (item_f[cand] @ x).astype(np.float32)
    if has_bias:
        scores = (scores + item_b[cand]) + c32
    keep = np.lexsort((cand, -scores))[:m]
    return cand[keep], scores[keep], True


class QuantizedItems:
    """The int8 twin of one item matrix (and biases) for :meth:`top_n`; read-only once built.

    ``usable`` is False (and :meth:`top_n` returns None) when the items hold non-finite
    values: the full pass then decides, as before.
    """

    def __init__(self, item_f: F32, item_b: F32 | None = None) -> None:
        self.item_f = np.ascontiguousarray(item_f, dtype=np.float32)
        n, k = self.item_f.shape
        self.n_items, self.rank = n, k
        b = np.zeros(n, np.float32) if item_b is None else np.asarray(item_b, np.float32)
        self.item_b = b
        self.has_bias = item_b is not None
        y = self.item_f.astype(np.float64)
        self.usable = bool(np.isfinite(y).all() and np.isfinite(b).all() and n > 0)
        y = np.where(np.isfinite(y), y, 0.0)  # unusable then; keep the build warning-free
        amax = np.abs(y).max(axis=1) if n else np.zeros(0)
        # the float32 scale the kernel multiplies by, so the residual below is the real one
        s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64)
        qf = np.clip(np.rint(y / s[:, None]), -127, 127) if n else np.zeros((0, k))
        resid = np.linalg.norm(y - s[:, None] * qf, axis=1)
        ynorm = np.linalg.norm(y, axis=1)
        qnorm = np.linalg.norm(qf, axis=1) * s
        # + the float32 evaluation of the bound itself in the kernel (a few roundings of terms
        # at most ||y_i|| ||x|| each), 16u per term, then 0.1% on top
        slack = (2.0 * (resid + (k + 2) * _U * (ynorm + qnorm)) + 16 * _U * (ynorm + qnorm))
        self.ymax = float(ynorm.max()) if n else 0.0
        self.bmax = float(np.abs(b).max()) if n else 0.0
        nb = -(-n // BLOCK)
        size = nb * BLOCK  # rows padded to whole blocks; padding rows are always blocked
        self.scale = np.zeros(size, np.float32)
        self.scale[:n] = s
        self.slack = np.zeros(size, np.float32)
        self.slack[:n] = slack * 1.001 + 1e-30
        self.bias = np.zeros(size, np.float32)
        self.bias[:n] = b
        blocks = np.zeros((size, k), dtype=np.int8)
        blocks[:n] = qf.astype(np.int8)
        self.q = np.ascontiguousarray(blocks.reshape(nb, BLOCK, k).transpose(0, 2, 1))

    def top_n(self, x: npt.ArrayLike, n: int, *, user_bias: float = 0.0, global_mean: float = 0.0,
              exclude: npt.ArrayLike | None = None,
              allow: BoolArray | None = None) -> tuple[I64, F32] | None:
        """Exactly ``top_n(x, item_f, n, ...)`` (same rows, scores, ties), or None when the
        bound cannot help (non-finite values, too many candidates) or the arguments are not
        what the full pass accepts: use the full pass (which also raises the errors)."""
        xv = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        c32 = np.float32(user_bias + global_mean) if self.has_bias else np.float32(0.0)
        ex: npt.NDArray[Any] = _NO_ROWS
        if exclude is not None:
            ex = np.asarray(exclude)
            if ex.dtype == np.bool_:
                if ex.shape != (self.n_items,):
                    return None
                ex = np.flatnonzero(ex)
            else:
                ex = ex.astype(np.int64).reshape(-1)
                if ex.size and (ex.min() < -self.n_items or ex.max() >= self.n_items):
                    return None  # the full pass raises IndexError
                ex = np.where(ex < 0, ex + self.n_items, ex)  # NumPy's negative indexing
        mask: npt.NDArray[Any] = _NO_ALLOW
        if allow is not None:
            mask = np.ascontiguousarray(allow, dtype=bool)
            if mask.shape != (self.n_items,):
                return None
        return self.top_rows(xv, n, c32, ex, mask)

    def top_rows(self, x: F32, n: int, c32: np.float32, exclude: I64,
                 allow: BoolArray = _NO_ALLOW) -> tuple[I64, F32] | None:
        """:meth:`top_n` without argument checks, for the serving hot path: ``x`` a contiguous
        float32 vector of ``rank`` values, ``c32`` = ``float32(user_bias + global_mean)`` (0
        without biases), ``exclude`` int64 rows (rows outside ``[0, n_items)``, such as -1 for
        an unknown id, are ignored), ``allow`` a bool mask over the items or empty."""
        if not self.usable or not 0 < n <= _MAX_N or x.shape[0] != self.rank:
            return None
        c32 = np.float32(c32)  # a float64 c would round the scores differently
        c = abs(float(c32))
        # float32 rounding of adding b_i and c to the exact dot (twice over), and of the
        # kernel's float32 bound arithmetic on them (16u)
        e0 = ((2.0 * (self.rank + 2) + 16) * _U * (self.bmax + c)) * 1.001 + 1e-30
        rows, scores, ok = prefilter_top(
            self.q, x, self.scale, self.slack, self.bias, c32, e0, self.ymax, self.bmax,
            exclude, allow, self.n_items, min(n, self.n_items), self.item_f, self.item_b,
            self.has_bias, self.n_items // _MAX_SHARE)
        return (rows, scores) if ok else None

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

import numpy as np
import numpy.typing as npt
from numba import njit

from online_als.serving._kernels import dense_scores, top_k_rows

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]

__all__ = ["QuantizedItems", "candidate_rows", "candidate_rows_reference"]

BLOCK = 128  # rows per feature-major block: measured fastest of 32..256 on the 2-core box
_U = 2.0 ** -24
_MAX_SHARE = 8  # more candidates than n_items / this: the full pass is cheaper
_MAX_N = 256  # larger n: many candidates, the full pass
_HUGE = 1e30  # beyond this, float32 scores may overflow: use the full pass


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
    for blk in range(nb):
        base = blk * b
        part = acc[base:base + b]
        for f in range(k):
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
        bound cannot help (non-finite values, too many candidates): use the full pass."""
        if not self.usable or not 0 < n <= _MAX_N:
            return None
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        xnorm = float(np.linalg.norm(x.astype(np.float64)))
        c32 = np.float32(user_bias + global_mean) if self.has_bias else np.float32(0.0)
        c = float(c32)
        if not (np.isfinite(xnorm) and np.isfinite(c)) or \
                self.ymax * xnorm + self.bmax + abs(c) > _HUGE:
            return None
        blocked = np.ones(self.scale.shape[0], dtype=bool)
        blocked[:self.n_items] = False
        if exclude is not None:
            ex = np.asarray(exclude)
            if ex.size:
                ex = np.flatnonzero(ex) if ex.dtype == np.bool_ else ex.astype(np.int64)
                blocked[ex] = True
        if allow is not None:
            blocked[:self.n_items] |= ~np.asarray(allow, dtype=bool)
        # float32 rounding of adding b_i and c to the exact dot (twice over), and of the
        # kernel's float32 bound arithmetic on them (16u)
        e0 = ((2.0 * (self.rank + 2) + 16) * _U * (self.bmax + abs(c))) * 1.001 + 1e-30
        cand = candidate_rows(self.q, x, self.scale, self.slack, self.bias, c, xnorm, e0,
                              blocked, min(n, self.n_items))
        if cand.size > self.n_items // _MAX_SHARE:
            return None
        scores = np.empty(cand.size, dtype=np.float32)
        dense_scores(self.item_f[cand], x, scores)  # the full pass's kernel: same bits
        if self.has_bias:
            scores += self.item_b[cand]
            scores += c32
        keep = top_k_rows(scores, min(n, cand.size)) if cand.size else np.empty(0, np.int64)
        return cand[keep], scores[keep]

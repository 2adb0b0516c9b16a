"""Top-N selection over item scores: exclusions, filters, biases, single user or batch.

Scores are ``item_f @ x_u`` (implicit) or ``mu + b_u + b_i + item_f @ x_u`` (explicit: pass
``item_bias``, ``user_bias``, ``global_mean``), so explicit scores are predicted ratings.

``exclude`` removes item rows (e.g. the user's seen items). ``allow`` keeps items:

* a boolean mask over all items (``True`` = may be recommended; for a batch also
  ``(batch, n_items)``), or
* a callable ``allow(candidate_rows: int64 array) -> bool array`` of the same shape, asked
  only about the best-scored candidates (4n first, then 4x more each round while fewer than
  n pass), so an expensive business rule (stock, licensing) never sees the whole catalogue.

Results are sorted by score, best first, ties by lower row (in the single-user form also
at the cut-off; the batch form only orders ties inside its selection); fewer than ``n``
come back when fewer items are eligible (the batch form pads with row -1 and score -inf).

Example
-------
>>> import numpy as np
>>> item_f = np.eye(4, 2, dtype=np.float32) + np.float32(0.1)
>>> rows, scores = top_n(np.array([1, 0], np.float32), item_f, 2, exclude=[0])
>>> rows.tolist()
[1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from online_als.serving._kernels import dense_scores, top_k_rows
from online_als.serving.prefilter import QuantizedItems

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
AllowFn = Callable[[I64], BoolArray]
Allow: TypeAlias = BoolArray | AllowFn | None
Exclude: TypeAlias = npt.ArrayLike | sp.spmatrix | sp.sparray | Sequence[npt.ArrayLike] | None

__all__ = ["Allow", "AllowFn", "top_n", "top_n_batch", "top_n_scores"]

_NEG_INF = np.float32(-np.inf)


_SMALL_K = 256


def _sorted_top(scores: F32, m: int) -> I64:
    """Rows of the ``m`` largest scores above -inf, best first, ties by lower row."""
    size = scores.shape[0]
    if m <= 0 or size == 0:
        return np.empty(0, dtype=np.int64)
    if m <= _SMALL_K:
        return top_k_rows(scores, m)  # type: ignore[no-any-return]
    if m < size:
        part = np.argpartition(scores, size - m)[size - m :]
        # every row tied with the cut-off competes, so ties resolve by row, not by chance
        cut = scores[part].min()
        part = np.flatnonzero(scores > cut if cut == _NEG_INF else scores >= cut)
    else:
        part = np.arange(size)
    part = part[np.lexsort((part, -scores[part]))][:m]
    keep = scores[part] > _NEG_INF
    return part[keep].astype(np.int64, copy=False)


def top_n_scores(
    scores: npt.ArrayLike,
    n: int,
    *,
    exclude: npt.ArrayLike | None = None,
    allow: Allow = None,
    copy: bool = True,
) -> tuple[I64, F32]:
    """Top ``n`` item rows of a precomputed score vector (see the module docstring).

    With ``copy=False`` a float32 ``scores`` array is modified in place (-inf written over
    excluded and disallowed rows).
    """
    s = np.array(scores, dtype=np.float32, copy=copy)
    if s.ndim != 1:
        raise ValueError("scores must be 1-D")
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.size:
            s[ex.astype(np.int64, copy=False) if ex.dtype != np.bool_ else ex] = _NEG_INF
    if allow is not None and not callable(allow):
        mask = np.asarray(allow, dtype=bool)
        if mask.shape != s.shape:
            raise ValueError(f"allow mask has shape {mask.shape}, expected {s.shape}")
        np.copyto(s, _NEG_INF, where=~mask)
    if n <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if allow is None or not callable(allow):
        rows = _sorted_top(s, n)
        return rows, s[rows]
    return _top_with_callable(s, n, allow)


def _top_with_callable(s: F32, n: int, allow: AllowFn) -> tuple[I64, F32]:
    size = s.shape[0]
    m = min(4 * n, size)
    checked = 0
    accepted: list[I64] = []
    n_ok = 0
    while True:
        cand = _sorted_top(s, m)
        new = cand[checked:]
        if new.size:
            ok = np.asarray(allow(new), dtype=bool)
            if ok.shape != new.shape:
                raise ValueError("allow(rows) must return one bool per row")
            accepted.append(new[ok])
            n_ok += int(ok.sum())
        checked = cand.size
        if n_ok >= n or m >= size or cand.size < m:
            break
        m = min(4 * m, size)
    rows = np.concatenate(accepted)[:n] if accepted else np.empty(0, dtype=np.int64)
    return rows, s[rows]


def top_n(
    user_vec: npt.ArrayLike,
    item_f: F32,
    n: int,
    *,
    exclude: npt.ArrayLike | None = None,
    allow: Allow = None,
    item_bias: F32 | None = None,
    user_bias: float = 0.0,
    global_mean: float = 0.0,
    index: QuantizedItems | None = None,
) -> tuple[I64, F32]:
    """Top ``n`` item rows and scores for one user vector.

    Pass ``item_bias`` (and ``user_bias``/``global_mean``) for explicit models so the
    scores are predicted ratings; implicit models leave them out. ``index``: the
    :class:`QuantizedItems` of these same ``item_f``/``item_bias``, which gives the same
    result while scoring only a few candidates exactly.
    """
    if index is not None and (allow is None or not callable(allow)):
        got = index.top_n(user_vec, n, user_bias=user_bias, global_mean=global_mean,
                          exclude=exclude, allow=allow)
        if got is not None:
            return got
    x = np.ascontiguousarray(user_vec, dtype=np.float32).reshape(-1)
    if x.shape[0] != item_f.shape[1]:
        raise ValueError(f"user_vec has {x.shape[0]} factors, item_f {item_f.shape[1]}")
    scores = np.empty(item_f.shape[0], dtype=np.float32)
    if item_f.dtype == np.float32 and item_f.flags.c_contiguous:
        dense_scores(item_f, x, scores)
    else:
        scores[:] = item_f @ x
    if item_bias is not None:
        scores += item_bias
        scores += np.float32(user_bias + global_mean)
    return top_n_scores(scores, n, exclude=exclude, allow=allow, copy=False)


def _mask_excluded(block: F32, exclude: Exclude, lo: int, hi: int) -> None:
    if exclude is None:
        return
    if isinstance(exclude, sp.spmatrix | sp.sparray):
        part = sp.csr_matrix(exclude[lo:hi])
        r = np.repeat(np.arange(hi - lo), np.diff(part.indptr))
        block[r, part.indices] = _NEG_INF
        return
    seqs = cast(Sequence[npt.ArrayLike], exclude)
    for j, rows in enumerate(seqs[lo:hi]):
        ex = np.asarray(rows, dtype=np.int64)
        if ex.size:
            block[j, ex] = _NEG_INF


def top_n_batch(
    user_vecs: F32,
    item_f: F32,
    n: int,
    *,
    exclude: Exclude = None,
    allow: Allow = None,
    item_bias: F32 | None = None,
    user_bias: npt.ArrayLike | None = None,
    global_mean: float = 0.0,
    chunk: int = 512,
) -> tuple[I64, F32]:
    """Top ``n`` for every row of ``user_vecs`` -> ``(rows (b, n), scores (b, n))``.

    ``exclude``: a ``(b, n_items)`` sparse matrix of seen items (stored entries excluded) or
    a sequence of ``b`` row arrays. ``allow``: mask ``(n_items,)`` or ``(b, n_items)``, or a
    callable (applied per user). Scores are computed ``chunk`` users at a time. Missing
    places are padded with row -1 and score -inf.
    """
    b = user_vecs.shape[0]
    n_items = item_f.shape[0]
    n_eff = max(0, min(n, n_items))
    out_rows = np.full((b, n), -1, dtype=np.int64)
    out_scores = np.full((b, n), _NEG_INF, dtype=np.float32)
    ub = None if user_bias is None else np.asarray(user_bias, dtype=np.float32).reshape(-1)
    mask = None if allow is None or callable(allow) else np.asarray(allow, dtype=bool)
    if mask is not None and mask.shape not in ((n_items,), (b, n_items)):
        raise ValueError(f"allow mask has shape {mask.shape}")
    for lo in range(0, b, chunk):
        hi = min(b, lo + chunk)
        block = user_vecs[lo:hi] @ item_f.T
        if item_bias is not None:
            block += item_bias[None, :] + np.float32(global_mean)
            if ub is not None:
                block += ub[lo:hi, None]
        _mask_excluded(block, exclude, lo, hi)
        if mask is not None:
            np.copyto(block, _NEG_INF, where=~(mask if mask.ndim == 1 else mask[lo:hi]))
        if callable(allow):
            for j in range(hi - lo):
                rows, scores = top_n_scores(block[j], n, allow=allow, copy=False)
                out_rows[lo + j, : rows.size] = rows
                out_scores[lo + j, : rows.size] = scores
            continue
        if n_eff == 0:
            continue
        part = np.argpartition(block, n_items - n_eff, axis=1)[:, n_items - n_eff :]
        part.sort(axis=1)  # so that the stable sort below puts tied rows in row order
        part_scores = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        rows = np.take_along_axis(part, order, axis=1)
        scores = np.take_along_axis(part_scores, order, axis=1)
        gone = scores == _NEG_INF
        rows[gone] = -1
        out_rows[lo:hi, :n_eff] = rows
        out_scores[lo:hi, :n_eff] = scores
    return out_rows, out_scores

r"""Rating and ranking metrics, vectorised over users.

Rating metrics take aligned arrays of true values and predictions:
:math:`\mathrm{RMSE} = \sqrt{\tfrac1n\sum (r - \hat r)^2}`, :math:`\mathrm{MAE} = \tfrac1n\sum|r - \hat r|`.

Ranking metrics take ``recommended``: item rows per user, a 2-D ``int`` array (or ragged rows),
best first, padded with ``-1``; and ``relevant``: the held-out relevant item rows of the same
users (a sequence of arrays, or a SciPy sparse matrix whose row ``u`` lists user ``u``'s
items). For a user with relevant set :math:`R` (:math:`|R| > 0`) and top-:math:`K` list with
hit indicators :math:`h_i` (:math:`i = 1..K`; a repeated item counts once):

- Precision@K :math:`= \sum_i h_i / K`
- Recall@K :math:`= \sum_i h_i / |R|`
- NDCG@K :math:`= \sum_i h_i / \log_2(i+1) \;/\; \sum_{i=1}^{\min(K,|R|)} 1/\log_2(i+1)`
  (binary gains, as in ``implicit.evaluation.ranking_metrics_at_k``)
- AP@K :math:`= \sum_i h_i\,(\sum_{j \le i} h_j)/i \;/\; \min(K, |R|)` (implicit's MAP@K)

Each metric is computed per user and averaged over the users with at least one relevant item
(users with an empty set are skipped, as implicit does). Note: implicit's ``"precision"`` is
pooled, :math:`\sum_u \mathrm{hits}_u / \sum_u \min(K, |R_u|)`; it is returned as
``precision_implicit`` by :func:`ranking_metrics_at_k` for comparison with published numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from online_als.evaluation._arrays import pad_rows

__all__ = [
    "Relevant",
    "catalog_coverage",
    "hit_matrix",
    "mae",
    "map_at_k",
    "ndcg_at_k",
    "per_user_ranking_metrics",
    "precision_at_k",
    "ranking_metrics_at_k",
    "recall_at_k",
    "rmse",
]

#: One array of relevant item rows per user, or a SciPy sparse user x item matrix.
Relevant = Sequence[npt.ArrayLike] | Any


def _finite_pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"length mismatch: {t.shape[0]} true values, {p.shape[0]} predictions")
    return t, p


def rmse(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Root mean squared error (NaN for empty input).

    >>> rmse([1, 2, 3], [1, 2, 5])
    1.1547005383792515
    """
    t, p = _finite_pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2))) if t.size else float("nan")


def mae(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> float:
    """Mean absolute error (NaN for empty input).

    >>> mae([1, 2, 3], [2, 2, 5])
    1.0
    """
    t, p = _finite_pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if t.size else float("nan")


def _relevant_lists(relevant: Relevant, n_users: int) -> list[np.ndarray]:
    if hasattr(relevant, "tocsr"):
        csr = relevant.tocsr()
        csr.eliminate_zeros()
        if csr.shape[0] != n_users:
            raise ValueError(f"relevant has {csr.shape[0]} rows, recommended {n_users}")
        return [csr.indices[csr.indptr[u] : csr.indptr[u + 1]] for u in range(n_users)]
    rel = list(relevant)
    if len(rel) != n_users:
        raise ValueError(f"relevant has {len(rel)} users, recommended {n_users}")
    return [np.asarray(r, dtype=np.int64).reshape(-1) for r in rel]


def hit_matrix(
    recommended: npt.ArrayLike | Sequence[npt.ArrayLike], relevant: Relevant, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(hits, n_relevant)``: ``hits[u, i]`` is True when the i-th item recommended to user u
    is relevant (first occurrence only); ``n_relevant[u]`` counts distinct relevant items.

    >>> hits, n_rel = hit_matrix([[3, 1, 2]], [[1, 7]], k=3)
    >>> hits.tolist(), n_rel.tolist()
    ([[False, True, False]], [2])
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    rec = pad_rows(recommended, k, -1).astype(np.int64)
    n_users = rec.shape[0]
    rel = _relevant_lists(relevant, n_users)
    lens = np.fromiter((r.shape[0] for r in rel), np.int64, count=n_users)
    rel_flat = np.concatenate(rel) if rel else np.empty(0, np.int64)
    owner = np.repeat(np.arange(n_users, dtype=np.int64), lens)
    keep = rel_flat >= 0
    rel_flat, owner = rel_flat[keep], owner[keep]
    # key = user * width + (item + 1): padding (-1) maps to a per-user key that never collides
    width = int(max(rec.max(initial=-1), rel_flat.max(initial=-1))) + 2
    rel_keys = np.unique(owner * width + rel_flat + 1)
    n_relevant = np.bincount(rel_keys // width, minlength=n_users).astype(np.int64)
    rec = np.where(rec < 0, -1, rec)
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * width + rec + 1
    hits = np.isin(rec_keys, rel_keys) & (rec >= 0)
    if hits.any():
        flat = rec_keys.reshape(-1)
        _, first = np.unique(flat, return_index=True)
        is_first = np.zeros(flat.shape[0], dtype=bool)
        is_first[first] = True
        hits &= is_first.reshape(rec.shape)
    return hits, n_relevant


def per_user_ranking_metrics(
    recommended: npt.ArrayLike | Sequence[npt.ArrayLike], relevant: Relevant, k: int = 10
) -> dict[str, np.ndarray]:
    """Per-user ``precision``, ``recall``, ``ndcg``, ``ap`` (NaN for users without relevant
    items) plus ``hits`` and ``n_relevant`` counts; definitions in the module docstring."""
    hits, n_rel = hit_matrix(recommended, relevant, k)
    h = hits.astype(np.float64)
    n_hits = h.sum(axis=1)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    ideal = np.cumsum(discount)
    valid = n_rel > 0
    denom_k = np.minimum(n_rel, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = n_hits / k
        recall = n_hits / n_rel
        ndcg = (h @ discount) / ideal[np.maximum(denom_k, 1) - 1]
        ap = (h * np.cumsum(h, axis=1) / np.arange(1, k + 1)).sum(axis=1) / denom_k
    nan = np.nan
    return {
        "precision": np.where(valid, precision, nan),
        "recall": np.where(valid, recall, nan),
        "ndcg": np.where(valid, ndcg, nan),
        "ap": np.where(valid, ap, nan),
        "hits": n_hits.astype(np.int64),
        "n_relevant": n_rel,
    }


def _mean_valid(values: np.ndarray) -> float:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def ranking_metrics_at_k(
    recommended: npt.ArrayLike | Sequence[npt.ArrayLike], relevant: Relevant, k: int = 10
) -> dict[str, float]:
    """Mean ``precision``, ``recall``, ``ndcg``, ``map`` over users with relevant items, plus
    ``precision_implicit`` (pooled) and ``n_users`` (users evaluated).

    >>> m = ranking_metrics_at_k([[1, 2], [5, 6]], [[2], [7, 8]], k=2)
    >>> round(m["precision"], 4), m["recall"], round(m["ndcg"], 4), m["map"], m["n_users"]
    (0.25, 0.5, 0.3155, 0.25, 2.0)
    """
    per = per_user_ranking_metrics(recommended, relevant, k)
    valid = per["n_relevant"] > 0
    pooled_den = np.minimum(per["n_relevant"][valid], k).sum()
    return {
        "precision": _mean_valid(per["precision"]),
        "recall": _mean_valid(per["recall"]),
        "ndcg": _mean_valid(per["ndcg"]),
        "map": _mean_valid(per["ap"]),
        "precision_implicit": float(per["hits"][valid].sum() / pooled_den)
        if pooled_den
        else float("nan"),
        "n_users": float(valid.sum()),
    }


def precision_at_k(recommended: Any, relevant: Relevant, k: int = 10) -> float:
    """Mean Precision@K (hits / K).

    >>> precision_at_k([[1, 2, 3, 4]], [[1, 3, 9]], k=4)
    0.5
    """
    return _mean_valid(per_user_ranking_metrics(recommended, relevant, k)["precision"])


def recall_at_k(recommended: Any, relevant: Relevant, k: int = 10) -> float:
    """Mean Recall@K (hits / number of relevant items).

    >>> recall_at_k([[1, 2, 3, 4]], [[1, 3, 9]], k=4)
    0.6666666666666666
    """
    return _mean_valid(per_user_ranking_metrics(recommended, relevant, k)["recall"])


def ndcg_at_k(recommended: Any, relevant: Relevant, k: int = 10) -> float:
    """Mean binary NDCG@K.

    >>> round(ndcg_at_k([[5, 1]], [[1]], k=2), 6)  # 1/log2(3)
    0.63093
    """
    return _mean_valid(per_user_ranking_metrics(recommended, relevant, k)["ndcg"])


def map_at_k(recommended: Any, relevant: Relevant, k: int = 10) -> float:
    """Mean average precision at K (normalised by ``min(K, |R|)``).

    >>> map_at_k([[1, 5, 2]], [[1, 2]], k=3)  # (1/1 + 2/3) / 2
    0.8333333333333333
    """
    return _mean_valid(per_user_ranking_metrics(recommended, relevant, k)["ap"])


def catalog_coverage(
    recommended: npt.ArrayLike | Sequence[npt.ArrayLike], n_items: int, k: int | None = None
) -> float:
    """Share of the ``n_items`` catalogue that appears in at least one top-``k`` list.

    >>> catalog_coverage([[0, 1], [1, 2], [-1, -1]], n_items=10)
    0.3
    """
    if n_items < 1:
        raise ValueError("n_items must be >= 1")
    if k is None:
        rec = pad_rows(recommended, _width(recommended), -1)
    else:
        rec = pad_rows(recommended, k, -1)
    rec = rec.astype(np.int64)
    shown = np.unique(rec[(rec >= 0) & (rec < n_items)])
    return float(shown.shape[0] / n_items)


def _width(recommended: Any) -> int:
    if isinstance(recommended, np.ndarray) and recommended.ndim == 2:
        return int(recommended.shape[1])
    return max((len(r) for r in recommended), default=0)

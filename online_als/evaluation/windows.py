"""Ranking evaluation over time windows (the protocol of the implicit-feedback benchmark).

1. Positives are the ratings with ``value >= threshold`` (default 4), sorted by time (stable).
2. The last ``holdout_fraction`` of the positives (by count) is cut into ``n_windows``
   consecutive windows of equal size (sizes differ by at most one).
3. For window ``w``, the *history* is every positive before it (including earlier windows).
   The users evaluated are those with at least one positive in the history and at least one
   window positive on an item not already in their history; their *relevant* items are those
   window items (each once).
4. A recommender sees the history (through ``before_window``), is asked for the top ``k`` of
   each evaluated user with the user's history items to exclude, and NDCG@K and Recall@K
   (:mod:`online_als.evaluation.metrics`) are averaged over the users of the window; the
   reported numbers are the unweighted means over windows.

Ties: events sharing a timestamp at a window boundary are split by their position in the
stable time order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_als.datasets import Ratings, as_str_array
from online_als.evaluation._arrays import factorize, lookup, pad_rows, split_by_group
from online_als.evaluation.metrics import per_user_ranking_metrics

__all__ = ["RecommendFn", "WindowEvaluation", "WindowSplit", "evaluate_windows", "window_protocol"]

#: ``recommend(user_ids, n, exclude) -> item ids`` (2-D or ragged, best first);
#: ``exclude[j]`` holds the history items of ``user_ids[j]``.
RecommendFn = Callable[[np.ndarray, int, Sequence[np.ndarray]], Any]


@dataclass(frozen=True, eq=False)
class WindowSplit:
    """One evaluation window.

    ``history``: positives before the window; ``new_history``: positives added since the
    previous window (all of ``history`` for the first), for online learners; ``window``: this
    window's positives; ``users``: evaluated users (str); ``relevant[j]`` / ``seen[j]``: new
    window items / history items of ``users[j]`` (str arrays).
    """

    index: int
    history: Ratings
    new_history: Ratings
    window: Ratings
    users: np.ndarray
    relevant: list[np.ndarray]
    seen: list[np.ndarray]


def _bounds(n_pos: int, n_windows: int, holdout_fraction: float) -> np.ndarray:
    if n_windows < 1:
        raise ValueError("n_windows must be >= 1")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    n_hold = int(round(n_pos * holdout_fraction))
    start = n_pos - n_hold
    return start + (n_hold * np.arange(n_windows + 1, dtype=np.int64)) // n_windows


def window_protocol(
    ratings: Ratings,
    n_windows: int = 4,
    holdout_fraction: float = 0.2,
    *,
    threshold: float = 4.0,
) -> Iterator[WindowSplit]:
    """Yield the :class:`WindowSplit` of each window (module docstring).

    >>> r = Ratings.from_columns(list("aabab"), list("xyxzw"), [5, 4, 5, 5, 2], range(5))
    >>> [(s.users.tolist(), [x.tolist() for x in s.relevant]) for s in window_protocol(r, 2, 0.5)]
    [([], []), (['a'], [['z']])]
    """
    pos = ratings.take(ratings.values >= threshold).sort_by_time()
    bounds = _bounds(len(pos), n_windows, holdout_fraction)
    user_uniques, u_codes = factorize(pos.user_ids)
    item_uniques, i_codes = factorize(pos.item_ids)
    keys = u_codes * max(item_uniques.shape[0], 1) + i_codes
    prev = 0
    for w in range(n_windows):
        lo, hi = int(bounds[w]), int(bounds[w + 1])
        hist_keys = keys[:lo]
        win_keys = keys[lo:hi]
        known_user = np.isin(u_codes[lo:hi], u_codes[:lo])
        fresh = ~np.isin(win_keys, hist_keys)
        rel_keys = np.unique(win_keys[known_user & fresh])
        n_items = max(item_uniques.shape[0], 1)
        users, rel_owner = np.unique(rel_keys // n_items, return_inverse=True)
        relevant = [
            item_uniques[g]
            for g in split_by_group(rel_owner.reshape(-1), rel_keys % n_items, users.shape[0])
        ]
        hist_unique = np.unique(hist_keys)
        hist_owner = hist_unique // n_items
        in_eval = np.isin(hist_owner, users)
        seen_owner = lookup(users, hist_owner[in_eval])
        seen = [
            item_uniques[g]
            for g in split_by_group(seen_owner, hist_unique[in_eval] % n_items, users.shape[0])
        ]
        yield WindowSplit(
            index=w,
            history=pos.slice(0, lo),
            new_history=pos.slice(prev, lo),
            window=pos.slice(lo, hi),
            users=user_uniques[users],
            relevant=relevant,
            seen=seen,
        )
        prev = lo


@dataclass(frozen=True, eq=False)
class WindowEvaluation:
    """Per-window ``ndcg``, ``recall`` and ``n_users``; means over windows."""

    k: int
    ndcg: np.ndarray
    recall: np.ndarray
    n_users: np.ndarray

    @property
    def mean_ndcg(self) -> float:
        """Unweighted mean of the window NDCG@K values (windows without users skipped)."""
        ok = ~np.isnan(self.ndcg)
        return float(self.ndcg[ok].mean()) if ok.any() else float("nan")

    @property
    def mean_recall(self) -> float:
        """Unweighted mean of the window Recall@K values."""
        ok = ~np.isnan(self.recall)
        return float(self.recall[ok].mean()) if ok.any() else float("nan")

    def summary(self) -> dict[str, Any]:
        """Means and per-window lists, JSON friendly."""
        return {
            f"ndcg@{self.k}": self.mean_ndcg,
            f"recall@{self.k}": self.mean_recall,
            "windows": [
                {"ndcg": float(n), "recall": float(r), "users": int(u)}
                for n, r, u in zip(self.ndcg, self.recall, self.n_users, strict=True)
            ],
        }


def _item_rows(recs: Any, k: int, item_uniques: np.ndarray) -> np.ndarray:
    """Item ids recommended (2-D or ragged) -> ``(n, k)`` item rows; unknown ids and padding
    become -1, which never counts as a hit."""
    if isinstance(recs, np.ndarray) and recs.ndim == 2:
        table = recs[:, :k]
    else:
        table = pad_rows([as_str_array(np.asarray(r).reshape(-1)) for r in recs], k, "")
    flat = as_str_array(table.reshape(-1))
    if flat.dtype.kind != "U":
        flat = flat.astype(np.str_)
    rows = lookup(item_uniques, flat).reshape(table.shape)
    return pad_rows(rows, k, -1)


def evaluate_windows(
    ratings: Ratings,
    recommend: RecommendFn,
    *,
    k: int = 10,
    n_windows: int = 4,
    holdout_fraction: float = 0.2,
    threshold: float = 4.0,
    before_window: Callable[[WindowSplit], None] | None = None,
    user_batch: int = 10_000,
) -> WindowEvaluation:
    """NDCG@K and Recall@K of ``recommend`` over :func:`window_protocol` windows.

    ``before_window(split)`` runs before each window is scored: refit on ``split.history`` or
    learn ``split.new_history``. ``recommend(user_ids, k, exclude)`` is called in batches of
    ``user_batch`` users and returns item ids, best first.

    >>> r = Ratings.from_columns(list("aabab"), list("xyxzw"), [5, 4, 5, 5, 2], range(5))
    >>> ev = evaluate_windows(r, lambda users, n, ex: [["z", "w"]] * len(users), k=2,
    ...                       n_windows=2, holdout_fraction=0.5)
    >>> ev.recall.tolist(), ev.mean_ndcg
    ([nan, 1.0], 1.0)
    """
    ndcg, recall, n_users = [], [], []
    item_uniques = np.unique(ratings.item_ids[ratings.values >= threshold]).astype(np.str_)
    for split in window_protocol(ratings, n_windows, holdout_fraction, threshold=threshold):
        if before_window is not None:
            before_window(split)
        n = split.users.shape[0]
        if n == 0:
            ndcg.append(np.nan)
            recall.append(np.nan)
            n_users.append(0)
            continue
        rows = []
        for start in range(0, n, user_batch):
            stop = min(start + user_batch, n)
            recs = recommend(split.users[start:stop], k, split.seen[start:stop])
            rows.append(_item_rows(recs, k, item_uniques))
        rec_rows = np.concatenate(rows)
        relevant = [lookup(item_uniques, r.astype(np.str_)) for r in split.relevant]
        per = per_user_ranking_metrics(rec_rows, relevant, k)
        ndcg.append(float(np.nanmean(per["ndcg"])))
        recall.append(float(np.nanmean(per["recall"])))
        n_users.append(n)
    return WindowEvaluation(k, np.array(ndcg), np.array(recall), np.array(n_users, np.int64))

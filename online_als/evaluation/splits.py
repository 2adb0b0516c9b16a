"""Train/test splits of a :class:`~online_als.datasets.Ratings` container.

Every split returns ``(train, test)`` with each row in exactly one side, and keeps the input
row order inside each side (so a time-sorted input stays time-sorted). Randomised splits take
a ``seed`` and are reproducible.

- :func:`random_split`: a uniform random ``test_fraction`` of rows.
- :func:`temporal_split`: the latest rows, either globally (one cut time) or per user.
- :func:`leave_k_out`: the last ``k`` ratings of every user, by time.
- :func:`kfold` / :func:`kfold_assignments`: seeded k-fold cross-validation.
- :func:`time_folds` / :func:`time_fold_assignments`: forward-chaining folds for streams (train
  on everything before a block of time, test on the block), never training on the future.
- :func:`ml100k_folds` / :func:`ml100k_allbut`: the MovieLens 100K release's own splits.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from online_als.datasets import Ratings, load_movielens_100k
from online_als.evaluation._arrays import factorize, rank_in_group

__all__ = [
    "kfold",
    "kfold_assignments",
    "leave_k_out",
    "ml100k_allbut",
    "ml100k_folds",
    "random_split",
    "split_by_mask",
    "temporal_split",
    "time_fold_assignments",
    "time_folds",
]


def split_by_mask(ratings: Ratings, test_mask: np.ndarray) -> tuple[Ratings, Ratings]:
    """``(rows where not test_mask, rows where test_mask)``."""
    mask = np.asarray(test_mask, dtype=bool)
    if mask.shape != (len(ratings),):
        raise ValueError(f"mask shape {mask.shape} != ({len(ratings)},)")
    return ratings.take(~mask), ratings.take(mask)


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {fraction}")


def random_split(
    ratings: Ratings, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Ratings, Ratings]:
    """Exactly ``round(n * test_fraction)`` uniformly chosen rows go to test.

    >>> from online_als.datasets import Ratings
    >>> r = Ratings.from_columns(range(10), range(10), range(10), range(10))
    >>> train, test = random_split(r, 0.3, seed=1)
    >>> len(train), len(test)
    (7, 3)
    """
    _check_fraction(test_fraction)
    n = len(ratings)
    n_test = int(round(n * test_fraction))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return split_by_mask(ratings, mask)


def temporal_split(
    ratings: Ratings,
    test_fraction: float = 0.2,
    *,
    per_user: bool = False,
    cutoff: float | None = None,
) -> tuple[Ratings, Ratings]:
    """Hold out the most recent ratings.

    Global (``per_user=False``): test is every row with ``timestamp >= cutoff``; when
    ``cutoff`` is None it is the timestamp of the row at position ``n - round(n *
    test_fraction)`` in time order, so ties at the cut all go to test (the test share can
    exceed ``test_fraction`` slightly).

    Per user: each user's last ``min(size - 1, round(size * test_fraction))`` ratings by time
    (ties broken by row order) go to test, so every user keeps at least one training row.

    >>> from online_als.datasets import Ratings
    >>> r = Ratings.from_columns(list("aaaabb"), list("wxyzwx"), [1] * 6, [1, 2, 3, 4, 1, 2])
    >>> [len(s) for s in temporal_split(r, 0.5)]  # cut at t=2; both rows at t=2 go to test
    [2, 4]
    >>> [len(s) for s in temporal_split(r, 0.5, per_user=True)]  # a: 2 of 4, b: 1 of 2
    [3, 3]
    """
    _check_fraction(test_fraction)
    n = len(ratings)
    ts = ratings.timestamps
    if not per_user:
        if cutoff is None:
            n_test = int(round(n * test_fraction))
            if n_test == 0:
                return split_by_mask(ratings, np.zeros(n, dtype=bool))
            cutoff = float(np.sort(ts, kind="stable")[n - n_test])
        return split_by_mask(ratings, ts >= cutoff)
    if cutoff is not None:
        raise ValueError("cutoff applies to the global split only (per_user=False)")
    _, codes = factorize(ratings.user_ids)
    rank, size = rank_in_group(codes, ts)
    n_test = np.minimum(size - 1, np.rint(size * test_fraction).astype(np.int64))
    return split_by_mask(ratings, rank >= size - n_test)


def leave_k_out(ratings: Ratings, k: int = 1, *, min_train: int = 1) -> tuple[Ratings, Ratings]:
    """Each user's last ``k`` ratings by time go to test; users with fewer than
    ``k + min_train`` ratings stay entirely in train.

    >>> from online_als.datasets import Ratings
    >>> r = Ratings.from_columns(list("aaab"), list("wxyz"), [1] * 4, [3, 1, 2, 1])
    >>> train, test = leave_k_out(r, 1)
    >>> test.item_ids.tolist(), train.item_ids.tolist()
    (['w'], ['x', 'y', 'z'])
    """
    if k < 1 or min_train < 0:
        raise ValueError("need k >= 1 and min_train >= 0")
    _, codes = factorize(ratings.user_ids)
    rank, size = rank_in_group(codes, ratings.timestamps)
    return split_by_mask(ratings, (size >= k + min_train) & (rank >= size - k))


def kfold_assignments(n: int, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (``0..n_folds-1``) for each of ``n`` rows; fold sizes differ by at most 1.

    >>> np.bincount(kfold_assignments(10, 3, seed=0)).tolist()
    [4, 3, 3]
    """
    if n_folds < 2:
        raise ValueError("n_folds must be >= 2")
    folds = np.empty(n, np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return folds


def kfold(ratings: Ratings, n_folds: int = 5, seed: int = 0) -> Iterator[tuple[Ratings, Ratings]]:
    """Yield ``(train, test)`` for each of ``n_folds`` seeded random folds; every row is in
    exactly one test set.

    >>> from online_als.datasets import Ratings
    >>> r = Ratings.from_columns(range(9), range(9), range(9), range(9))
    >>> sorted(int(v) for _, test in kfold(r, 3) for v in test.values)
    [0, 1, 2, 3, 4, 5, 6, 7, 8]
    """
    folds = kfold_assignments(len(ratings), n_folds, seed)
    for f in range(n_folds):
        yield split_by_mask(ratings, folds == f)


def time_fold_assignments(timestamps: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """Block number of each row in time order: the rows sorted by time (stable) are cut into
    ``n_folds + 1`` equal blocks; block 0 is only ever trained on, blocks ``1..n_folds`` are
    the test folds. Rows with equal timestamps may fall on both sides of a cut (stable order).

    >>> time_fold_assignments(np.array([5, 1, 4, 2, 3, 6]), 2).tolist()
    [2, 0, 1, 0, 1, 2]
    """
    if n_folds < 1:
        raise ValueError("n_folds must be >= 1")
    ts = np.asarray(timestamps)
    order = np.argsort(ts, kind="stable")
    blocks = np.empty(ts.shape[0], np.int64)
    blocks[order] = (np.arange(ts.shape[0]) * (n_folds + 1)) // max(ts.shape[0], 1)
    return blocks


def time_folds(ratings: Ratings, n_folds: int = 5) -> Iterator[tuple[Ratings, Ratings]]:
    """Forward chaining (scikit-learn's ``TimeSeriesSplit``): fold ``f`` trains on every row
    of blocks ``0..f-1`` and tests on block ``f`` (``f = 1..n_folds``); see
    :func:`time_fold_assignments`. Each side keeps the input row order.

    >>> from online_als.datasets import Ratings
    >>> r = Ratings.from_columns(range(6), range(6), range(6), [5, 1, 4, 2, 3, 6])
    >>> [(len(tr), te.timestamps.tolist()) for tr, te in time_folds(r, 2)]
    [(2, [4.0, 3.0]), (4, [5.0, 6.0])]
    """
    blocks = time_fold_assignments(ratings.timestamps, n_folds)
    for f in range(1, n_folds + 1):
        yield ratings.take(np.flatnonzero(blocks < f)), ratings.take(np.flatnonzero(blocks == f))


def _sorted_like_release(ratings: Ratings) -> Ratings:
    # the release sorts every file with `sort -t<TAB> -k 1,1n -k 2,2n`
    order = np.lexsort((ratings.item_ids.astype(np.int64), ratings.user_ids.astype(np.int64)))
    return ratings.take(order)


def ml100k_folds(
    root: str | Path | None = None, ratings: Ratings | None = None
) -> list[tuple[Ratings, Ratings]]:
    """The release's five ``(u{i}.base, u{i}.test)`` splits, rebuilt from ``u.data``.

    The release's ``mku.sh`` takes ``u{i}.test`` = rows ``20000*(i-1) .. 20000*i - 1`` of
    ``u.data`` in file order (``head | tail``) and ``u{i}.base`` = the other 80,000 rows, then
    sorts both numerically by user, then item. The same is done here, so the folds equal the
    release's files row for row. ``ratings`` defaults to :func:`load_movielens_100k`.
    """
    data = load_movielens_100k(root) if ratings is None else ratings
    if len(data) != 100_000:
        raise ValueError(f"u.data has 100000 rows; got {len(data)}")
    out = []
    for i in range(5):
        mask = np.zeros(len(data), dtype=bool)
        mask[20_000 * i : 20_000 * (i + 1)] = True
        base, test = split_by_mask(data, mask)
        out.append((_sorted_like_release(base), _sorted_like_release(test)))
    return out


def ml100k_allbut(
    which: Literal["a", "b"] = "a",
    root: str | Path | None = None,
    ratings: Ratings | None = None,
) -> tuple[Ratings, Ratings]:
    """The release's ``(ua.base, ua.test)`` or ``(ub.base, ub.test)``.

    ``allbut.pl ua 1 10`` walks ``u.data`` in file order and sends each user's 1st-10th
    ratings (counted in file order, not by time) to test; ``ub`` takes the 11th-20th. Every
    user has at least 20 ratings, so each test set holds exactly 9,430 rows.
    """
    if which not in ("a", "b"):
        raise ValueError("which must be 'a' or 'b'")
    data = load_movielens_100k(root) if ratings is None else ratings
    _, codes = factorize(data.user_ids)
    rank, _ = rank_in_group(codes, np.zeros(len(data), np.int64))  # file order within user
    lo = 0 if which == "a" else 10
    base, test = split_by_mask(data, (rank >= lo) & (rank < lo + 10))
    return _sorted_like_release(base), _sorted_like_release(test)

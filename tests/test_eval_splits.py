"""Splits are disjoint and cover; the ML-100K release splits are rebuilt exactly."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.datasets import MovieLensNotFoundError, Ratings, default_data_root
from online_als.evaluation.splits import (
    kfold,
    kfold_assignments,
    leave_k_out,
    ml100k_allbut,
    ml100k_folds,
    random_split,
    temporal_split,
)

try:
    default_data_root()
    HAVE_DATA = True
except MovieLensNotFoundError:  # pragma: no cover
    HAVE_DATA = False
needs_data = pytest.mark.usefixtures("movielens")


def _toy(n: int = 500, seed: int = 0) -> Ratings:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, n)
    return Ratings.from_columns(
        users,
        rng.integers(0, 90, n),
        np.arange(n, dtype=np.float32),  # value = row id
        rng.integers(0, 50, n),  # many timestamp ties
    )


def _ids(r: Ratings) -> np.ndarray:
    return r.values.astype(np.int64)


def _disjoint_cover(train: Ratings, test: Ratings, n: int) -> None:
    both = np.concatenate([_ids(train), _ids(test)])
    assert np.array_equal(np.sort(both), np.arange(n))
    # order inside each side is the input order
    assert np.all(np.diff(_ids(train)) > 0) and np.all(np.diff(_ids(test)) > 0)


def test_random_split() -> None:
    r = _toy()
    train, test = random_split(r, 0.2, seed=5)
    _disjoint_cover(train, test, len(r))
    assert len(test) == 100
    again = random_split(r, 0.2, seed=5)[1]
    assert np.array_equal(_ids(test), _ids(again))
    with pytest.raises(ValueError):
        random_split(r, 1.5)


def test_temporal_global() -> None:
    r = _toy()
    train, test = temporal_split(r, 0.2)
    _disjoint_cover(train, test, len(r))
    assert train.timestamps.max() < test.timestamps.min()
    assert len(test) >= 100
    train2, test2 = temporal_split(r, cutoff=45)
    assert test2.timestamps.min() >= 45 and train2.timestamps.max() < 45


def test_temporal_per_user() -> None:
    r = _toy()
    train, test = temporal_split(r, 0.3, per_user=True)
    _disjoint_cover(train, test, len(r))
    for u in np.unique(r.user_ids):
        tr = train.timestamps[train.user_ids == u]
        te = test.timestamps[test.user_ids == u]
        n = tr.size + te.size
        assert tr.size >= 1
        assert te.size == min(n - 1, int(np.rint(n * 0.3)))
        if te.size:
            assert tr.max() <= te.min()


def test_leave_k_out() -> None:
    r = _toy()
    train, test = leave_k_out(r, k=2)
    _disjoint_cover(train, test, len(r))
    counts = {u: int((r.user_ids == u).sum()) for u in np.unique(r.user_ids)}
    for u, n in counts.items():
        te = test.timestamps[test.user_ids == u]
        tr = train.timestamps[train.user_ids == u]
        assert te.size == (2 if n >= 3 else 0)
        if te.size:
            assert tr.max() <= te.min()
    few = Ratings.from_columns(["a", "a", "b"], ["x", "y", "x"], [1, 2, 3], [1, 2, 3])
    tr, te = leave_k_out(few, 1)
    assert te.item_ids.tolist() == ["y"] and tr.user_ids.tolist() == ["a", "b"]


def test_kfold_covers_each_row_once() -> None:
    r = _toy(503)
    folds = kfold_assignments(len(r), 5, seed=2)
    assert np.bincount(folds).tolist() == [101, 101, 101, 100, 100]
    tests = []
    for train, test in kfold(r, 5, seed=2):
        _disjoint_cover(train, test, len(r))
        tests.append(_ids(test))
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(len(r)))
    with pytest.raises(ValueError):
        kfold_assignments(10, 1)


def _lines(r: Ratings) -> list[str]:
    return [
        f"{u}\t{i}\t{int(v)}\t{int(t)}"
        for u, i, v, t in zip(r.user_ids, r.item_ids, r.values, r.timestamps, strict=True)
    ]


@needs_data
def test_ml100k_folds_match_release() -> None:
    folds = ml100k_folds()
    assert len(folds) == 5
    all_tests = []
    for base, test in folds:
        assert len(base) == 80_000 and len(test) == 20_000
        keys = np.char.add(np.char.add(base.user_ids, "-"), base.item_ids)
        tkeys = np.char.add(np.char.add(test.user_ids, "-"), test.item_ids)
        assert not np.isin(tkeys, keys).any()
        all_tests.append(tkeys)
    assert np.unique(np.concatenate(all_tests)).shape[0] == 100_000
    # spot checks against a public copy of the released u1.test (byte offsets in that file)
    text = "\n".join(_lines(folds[0][1])) + "\n"
    assert text.startswith("1\t6\t5\t887431973\n1\t10\t3\t875693118\n1\t12\t5\t878542960\n")
    assert text[15_981:16_000] == "13\t303\t4\t881514876\n"
    assert text[93_720:93_738] == "99\t288\t4\t885678247"


@needs_data
def test_ml100k_allbut_match_release() -> None:
    base, test = ml100k_allbut("a")
    assert len(test) == 9_430 and len(base) == 90_570
    assert _lines(test)[:4] == [
        "1\t20\t4\t887431883",
        "1\t33\t4\t878542699",
        "1\t61\t4\t878542420",
        "1\t117\t3\t874965739",
    ]
    assert _lines(test)[10:12] == ["2\t13\t4\t888551922", "2\t50\t5\t888552084"]
    base_b, test_b = ml100k_allbut("b")
    assert len(test_b) == 9_430
    assert np.bincount(np.unique(test.user_ids, return_counts=True)[1]).argmax() == 10

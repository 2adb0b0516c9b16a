"""ALS-WR on MovieLens-100K, the u1..u5 folds of the release's mku.sh: mean RMSE <= 0.915.

mku.sh cuts ``u.data`` (in file order) into five consecutive blocks of 20,000 lines; fold i
tests on block i and trains on the other four. Predictions go through the cold-start
fallbacks (a test item absent from the training part gets ``mu + b_u``) and are clipped to
the rating scale [1, 5].
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from online_als.retrain import AlsWrParams, build_matrix, retrain
from online_als.serving import item_stats, predict_explicit
from tests.conftest import unavailable

CANDIDATES = [
    Path(os.environ.get("ONLINE_ALS_DATA", "/nonexistent")) / "movielens/ml-100k/u.data.gz",
    Path(__file__).resolve().parents[2] / "shared/data/movielens/ml-100k/u.data.gz",
]
PARAMS = AlsWrParams(factors=50, reg=0.12, reg_bias=0.05, iterations=20, seed=0)


def _load() -> np.ndarray:
    for path in CANDIDATES:
        if path.exists():
            with gzip.open(path, "rt") as fh:
                return np.loadtxt(fh, dtype=np.int64, delimiter="\t")
    unavailable(f"ML-100K not found in {[str(p) for p in CANDIDATES]}")
    raise AssertionError("unreachable")


def fold_rmse(data: np.ndarray, fold: int, params: AlsWrParams = PARAMS) -> float:
    test = np.zeros(len(data), bool)
    test[fold * 20_000 : (fold + 1) * 20_000] = True
    train = data[~test]
    m = build_matrix([(train[:, 0], train[:, 1], train[:, 2].astype(np.float32))], "last")
    assert m.users is not None and m.items is not None
    res = retrain("explicit", m, params)
    pred = predict_explicit(
        m.users.rows_for(data[test, 0], add=False),
        m.items.rows_for(data[test, 1], add=False),
        res.users.vectors, res.users.biases, res.items.vectors, res.items.biases, res.global_mean,
        item_mean=item_stats(m.matrix).mean,
    )  # fmt: skip
    err = np.clip(pred, 1.0, 5.0) - data[test, 2]
    return float(np.sqrt(np.mean(err**2)))


@pytest.mark.slow
def test_ml100k_five_fold_rmse() -> None:
    data = _load()
    assert data.shape == (100_000, 4)
    scores = [fold_rmse(data, f) for f in range(5)]
    assert float(np.mean(scores)) <= 0.915, scores

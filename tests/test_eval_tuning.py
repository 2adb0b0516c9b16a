"""Grid search and cross-validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from online_als.datasets import Ratings
from online_als.evaluation.splits import random_split
from online_als.evaluation.tuning import cross_validate, expand_grid, grid_search


class ShrunkMean:
    """Predicts mean * (1 - shrink) + offset."""

    def __init__(self, train: Ratings, params: dict[str, Any]) -> None:
        self.value = float(train.values.mean()) * (1 - params["shrink"]) + params.get("offset", 0)
        self.n_train = len(train)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.value)


def _data(n: int = 300) -> Ratings:
    rng = np.random.default_rng(0)
    return Ratings.from_columns(
        rng.integers(0, 20, n), rng.integers(0, 30, n), rng.integers(1, 6, n), np.arange(n)
    )


def test_expand_grid() -> None:
    grid = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(grid) == 6 and grid[0] == {"a": 1, "b": "x"} and grid[1] == {"a": 1, "b": "y"}
    assert expand_grid([{"a": 1}, {"a": 2, "b": 3}]) == [{"a": 1}, {"a": 2, "b": 3}]
    with pytest.raises(TypeError):
        expand_grid({"a": "abc"})


def test_grid_search_picks_lowest_rmse() -> None:
    train, val = random_split(_data(), 0.25, seed=1)
    res = grid_search(ShrunkMean, {"shrink": [0.5, 0.0, 0.2], "offset": [0.0, 1.0]}, train, val)
    assert res.best_params == {"shrink": 0.0, "offset": 0.0}
    assert len(res.rows) == 6 and res.metric == "rmse" and not res.greater_is_better
    assert res.best_score == pytest.approx(res.scores.min())
    assert isinstance(res.best_model, ShrunkMean) and res.best_model.n_train == len(train)
    table = res.table().splitlines()
    assert table[0].split()[:3] == ["offset", "shrink", "rmse"] and len(table) == 7
    mae_res = grid_search(ShrunkMean, {"shrink": [0.5, 0.0]}, train, val, "mae")
    assert mae_res.metric == "mae" and mae_res.best_params == {"shrink": 0.0}


def test_callable_metric_greater_is_better_and_nan() -> None:
    train, val = random_split(_data(), 0.25, seed=1)

    def closeness(model: ShrunkMean, held_out: Ratings) -> float:
        return float("nan") if model.value > 10 else -abs(model.value - 3.0)

    res = grid_search(
        ShrunkMean,
        [{"shrink": 0.0}, {"shrink": 0.0, "offset": 100.0}, {"shrink": 0.9}],
        train,
        val,
        closeness,
        greater_is_better=True,
    )
    assert res.best_params == {"shrink": 0.0}
    assert np.isnan(res.rows[1]["score"])
    assert res.table().splitlines()[-1].split()[-3] == "nan"  # NaN ranks last


def test_cross_validate_means_over_folds_and_refits() -> None:
    data = _data()
    res = cross_validate(ShrunkMean, {"shrink": [0.3, 0.0]}, data, k_folds=4, seed=3)
    assert res.best_params == {"shrink": 0.0}
    for row in res.rows:
        assert len(row["fold_scores"]) == 4
        assert row["score"] == pytest.approx(np.mean(row["fold_scores"]))
    assert res.best_model is not None and res.best_model.n_train == len(data)
    no_refit = cross_validate(ShrunkMean, {"shrink": [0.0]}, data, refit=False)
    assert no_refit.best_model is None
    with pytest.raises(ValueError):
        cross_validate(ShrunkMean, {"shrink": [0.0]}, data, metric="rmse", greater_is_better=True)

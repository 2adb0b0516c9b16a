"""Forward-chaining time folds, ``cross_validate(split="time")`` and the evaluate defaults."""

from __future__ import annotations

import json

import numpy as np
import pytest

from online_als.datasets import Ratings
from online_als.evaluation import cross_validate, time_fold_assignments, time_folds


def _stream(n: int = 60) -> Ratings:
    rng = np.random.default_rng(0)
    ts = rng.permutation(n) * 10
    return Ratings.from_columns(rng.integers(0, 5, n), rng.integers(0, 7, n),
                                rng.integers(1, 6, n), ts)  # fmt: skip


def test_time_folds_never_train_on_the_future() -> None:
    r = _stream()
    folds = list(time_folds(r, 4))
    assert len(folds) == 4
    tested = []
    for f, (train, test) in enumerate(folds, start=1):
        assert train.timestamps.max() < test.timestamps.min()
        assert len(train) == f * 12 and len(test) == 12
        tested.append(test.timestamps)
    assert len(np.unique(np.concatenate(tested))) == 48  # the first block is never a test


def test_time_fold_assignments_are_balanced_blocks() -> None:
    blocks = time_fold_assignments(np.arange(10)[::-1], 4)
    assert np.bincount(blocks).tolist() == [2, 2, 2, 2, 2]
    assert blocks.tolist() == sorted(blocks.tolist(), reverse=True)


def test_cross_validate_time_split_sees_only_the_past() -> None:
    r = _stream()
    seen: list[tuple[int, int]] = []

    class Last:
        def __init__(self, train: Ratings) -> None:
            self.t = int(train.timestamps.max())
            seen.append((len(train), self.t))

        def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
            return np.full(len(users), 3.0)

    def check(model: Last, test: Ratings) -> float:
        assert model.t < int(test.timestamps.min())
        return 1.0

    res = cross_validate(lambda tr, p: Last(tr), {"c": [1]}, r, k_folds=3, metric=check,
                         split="time", refit=False)  # fmt: skip
    assert [n for n, _ in seen] == [15, 30, 45] and res.best_score == 1.0
    with pytest.raises(ValueError, match="split"):
        cross_validate(lambda tr, p: Last(tr), {"c": [1]}, r, metric=check, split="nope")


def test_evaluate_defaults_use_the_adaptive_learner(capsys: pytest.CaptureFixture[str]) -> None:
    from online_als import defaults
    from worker.cli.main import main
    from worker.config import ModelSettings

    m = ModelSettings()
    assert (m.rank, m.learning_rate, m.regularization, m.bias_regularization, m.init_scale) == (
        defaults.RANK, defaults.LEARNING_RATE, defaults.REGULARIZATION,
        defaults.BIAS_REGULARIZATION, defaults.INIT_SCALE)  # fmt: skip
    assert main(["evaluate", "--json", "--dataset", "ml-100k"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["learner"] == defaults.LEARNER == "adaptive"
    assert out["events"] == 100_000 and out["rmse"] <= 0.935  # issue 13's goal

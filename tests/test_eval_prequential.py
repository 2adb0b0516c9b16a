"""Prequential evaluation with trivial learners (and the real OnlineModel when present)."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.datasets import Ratings, iter_rating_chunks
from online_als.evaluation.prequential import prequential
from tests.conftest import unavailable


class ConstLearner:
    """Predicts a constant and counts what it was taught."""

    def __init__(self, value: float, refuse_every: int = 0) -> None:
        self.value = value
        self.seen = 0
        self.refuse_every = refuse_every

    def learn_batch(self, users: np.ndarray, items: np.ndarray, values: np.ndarray):
        n = len(values)
        applied = np.ones(n, np.uint8)
        if self.refuse_every:
            applied[:: self.refuse_every] = 0
        self.seen += n
        return np.full(n, self.value, np.float32), applied


class LastValueLearner:
    """Predicts the previous rating of the stream (so errors depend on order)."""

    def __init__(self) -> None:
        self.last = 3.0

    def learn_batch(self, users, items, values):
        pred = np.empty(len(values), np.float32)
        for j, v in enumerate(values):
            pred[j] = self.last
            self.last = float(v)
        return pred, np.ones(len(values), np.uint8)


def _stream(values: list[float]) -> Ratings:
    n = len(values)
    return Ratings.from_columns(["u"] * n, ["i"] * n, values, range(n))


def test_constant_learner_metrics() -> None:
    r = _stream([1, 2, 3, 4, 5, 5, 4])
    learner = ConstLearner(3.0, refuse_every=3)
    res = prequential(learner, [r.slice(0, 3), r.slice(3, 7)], batch_size=2, window=3)
    err = np.array([1, 2, 3, 4, 5, 5, 4], float) - 3
    assert learner.seen == 7
    assert res.n_seen.tolist() == [2, 4, 6, 7]
    assert res.rmse == pytest.approx(np.sqrt(np.mean(err**2)))
    assert res.mae == pytest.approx(np.mean(np.abs(err)))
    assert res.batch_mae.tolist() == pytest.approx([1.5, 0.5, 2.0, 1.0])
    # last 3 errors at each batch end
    assert res.window_mae.tolist() == pytest.approx([1.5, 2 / 3, 5 / 3, 5 / 3])
    assert res.running_mae[1] == pytest.approx(1.0)
    assert res.n_scored == 7 and res.n_not_applied == 4  # first row of each batch
    assert res.batch_seconds.shape == (4,) and res.throughput > 0
    assert res.summary()["events"] == 7


def test_clipping_and_nonfinite() -> None:
    r = _stream([5.0, 1.0, float("nan")])
    res = prequential(ConstLearner(9.0), r, batch_size=10, rating_range=(1.0, 5.0))
    assert res.n_scored == 2
    assert res.mae == pytest.approx((0 + 4) / 2)
    res2 = prequential(ConstLearner(9.0), r, batch_size=10)
    assert res2.mae == pytest.approx((4 + 8) / 2)


def test_order_and_batching_are_respected() -> None:
    r = _stream([1, 5, 1, 5, 1])
    res = prequential(LastValueLearner(), r, batch_size=1, window=2)
    assert res.n_seen.tolist() == [1, 2, 3, 4, 5]
    assert res.batch_mae.tolist() == pytest.approx([2, 4, 4, 4, 4])
    assert res.window_rmse[-1] == pytest.approx(4.0)


def test_empty_stream_and_bad_args() -> None:
    res = prequential(ConstLearner(3.0), Ratings.empty(), batch_size=4)
    assert res.n_events == 0 and np.isnan(res.rmse)
    with pytest.raises(ValueError):
        prequential(ConstLearner(3.0), Ratings.empty(), batch_size=0)


def test_streams_from_chunked_reader(tmp_path) -> None:
    p = tmp_path / "r.data"
    p.write_text("".join(f"{i % 7}\t{i % 11}\t{1 + i % 5}\t{i}\n" for i in range(1000)))
    res = prequential(ConstLearner(3.0), iter_rating_chunks(p, 128), batch_size=100, window=250)
    assert res.n_events == 1000 and res.n_seen.shape == (10,)
    assert res.rmse == pytest.approx(np.sqrt(2.0))


def test_online_model_on_movielens_prefix() -> None:
    from online_als import online
    from online_als.datasets import MovieLensNotFoundError, load_movielens_100k

    try:
        data = load_movielens_100k().sort_by_time().slice(0, 5_000)
    except MovieLensNotFoundError:  # pragma: no cover
        unavailable("MovieLens data not found")
        return
    model = online.OnlineModel.explicit(k=8, lr=0.01, global_mean=3.5, seed=0)
    res = prequential(model, data, batch_size=500, window=1000, rating_range=(1.0, 5.0))
    assert res.n_events == 5_000 and np.isfinite(res.rmse)
    assert 0.5 < res.rmse < 1.6

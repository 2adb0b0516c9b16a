"""Prequential (predict-then-learn, "progressive validation") evaluation of an online learner.

The stream is cut into batches of ``batch_size`` ratings. For each batch the learner's
``learn_batch(user_ids, item_ids, values)`` returns the prediction for every event made
*before* that event was applied (the contract of :class:`online_als.online.OnlineModel`), so
every rating is scored by a model that has not seen it. Predictions are clipped to
``rating_range`` when given (explicit ratings); events whose prediction or value is not finite
are not scored. Reported per batch end:

- ``batch_rmse`` / ``batch_mae``: over the batch,
- ``running_rmse`` / ``running_mae``: over everything scored so far (River's
  ``progressive_val_score``),
- ``window_rmse`` / ``window_mae``: over the last ``window`` scored ratings (sliding window),
- ``batch_seconds``: time spent inside ``learn_batch``; ``throughput`` = ratings / that time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from online_als.datasets import Ratings
from online_als.datasets.readers import rechunk

__all__ = ["OnlineLearner", "PrequentialResult", "prequential"]


class OnlineLearner(Protocol):
    """Anything with ``learn_batch(user_ids, item_ids, values) -> (pred_before, applied)``."""

    def learn_batch(
        self, user_ids: np.ndarray, item_ids: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, eq=False)
class PrequentialResult:
    """Per-batch curves (aligned arrays, one entry per batch) and totals."""

    n_seen: np.ndarray
    batch_rmse: np.ndarray
    batch_mae: np.ndarray
    running_rmse: np.ndarray
    running_mae: np.ndarray
    window_rmse: np.ndarray
    window_mae: np.ndarray
    batch_seconds: np.ndarray
    n_scored: int
    n_not_applied: int
    learn_seconds: float
    wall_seconds: float
    window: int

    @property
    def rmse(self) -> float:
        """Final running RMSE (NaN when nothing was scored)."""
        return float(self.running_rmse[-1]) if self.running_rmse.size else float("nan")

    @property
    def mae(self) -> float:
        """Final running MAE."""
        return float(self.running_mae[-1]) if self.running_mae.size else float("nan")

    @property
    def n_events(self) -> int:
        """Events fed to the learner."""
        return int(self.n_seen[-1]) if self.n_seen.size else 0

    @property
    def throughput(self) -> float:
        """Events per second of ``learn_batch`` time."""
        return self.n_events / self.learn_seconds if self.learn_seconds > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        """Scalar totals as a dict (for logs and JSON)."""
        return {
            "events": self.n_events,
            "scored": self.n_scored,
            "not_applied": self.n_not_applied,
            "rmse": self.rmse,
            "mae": self.mae,
            "batches": int(self.n_seen.shape[0]),
            "learn_seconds": self.learn_seconds,
            "wall_seconds": self.wall_seconds,
            "events_per_second": self.throughput,
        }


class _Window:
    """Sums of squared / absolute error over the last ``size`` scored ratings, O(1) per batch."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parts: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.sq = 0.0
        self.ab = 0.0
        self.n = 0

    def add(self, sq_err: np.ndarray, abs_err: np.ndarray) -> tuple[float, float]:
        if sq_err.size:
            self.parts.append((np.cumsum(sq_err), np.cumsum(abs_err)))
            self.sq += float(self.parts[-1][0][-1])
            self.ab += float(self.parts[-1][1][-1])
            self.n += sq_err.size
        while self.parts and self.n - self.parts[0][0].size >= self.size:
            old_sq, old_ab = self.parts.popleft()
            self.sq -= float(old_sq[-1])
            self.ab -= float(old_ab[-1])
            self.n -= old_sq.size
        if self.n == 0:
            return float("nan"), float("nan")
        excess = self.n - self.size
        sq, ab, n = self.sq, self.ab, self.n
        if excess > 0:
            old_sq, old_ab = self.parts[0]
            sq -= float(old_sq[excess - 1])
            ab -= float(old_ab[excess - 1])
            n = self.size
        return float(np.sqrt(max(sq, 0.0) / n)), max(ab, 0.0) / n


def prequential(
    learner: OnlineLearner,
    stream_chunks: Iterable[Ratings] | Ratings,
    batch_size: int = 1000,
    window: int = 10_000,
    *,
    rating_range: tuple[float, float] | None = None,
) -> PrequentialResult:
    """Feed ``stream_chunks`` to ``learner`` in batches, scoring each event before it is learnt.

    Parameters
    ----------
    learner : has ``learn_batch(user_ids, item_ids, values) -> (pred_before, applied)``; a
        learner with a true ``wants_timestamps`` attribute also gets the batch's timestamps.
    stream_chunks : a :class:`Ratings` or an iterable of them (e.g.
        :func:`~online_als.datasets.iter_rating_chunks`), in stream (time) order.
    batch_size : events per ``learn_batch`` call.
    window : number of most recent scored ratings in the sliding-window metrics.
    rating_range : ``(low, high)`` to clip predictions to (explicit ratings), or None.

    Examples
    --------
    >>> class Mean:  # predicts the running mean, then learns
    ...     def __init__(self): self.total, self.n = 0.0, 0
    ...     def learn_batch(self, users, items, values):
    ...         pred = np.empty(len(values), np.float32)
    ...         for j, v in enumerate(values):
    ...             pred[j] = self.total / self.n if self.n else 3.0
    ...             self.total, self.n = self.total + v, self.n + 1
    ...         return pred, np.ones(len(values), np.uint8)
    >>> r = Ratings.from_columns(["u"] * 4, ["i"] * 4, [3, 5, 4, 4], range(4))
    >>> res = prequential(Mean(), r, batch_size=2, window=3)
    >>> res.n_seen.tolist(), res.mae, res.window_mae.round(3).tolist()
    ([2, 4], 0.5, [1.0, 0.667])
    """
    if batch_size < 1 or window < 1:
        raise ValueError("batch_size and window must be >= 1")
    chunks = [stream_chunks] if isinstance(stream_chunks, Ratings) else stream_chunks
    win = _Window(window)
    rows: list[tuple[float, ...]] = []
    seen = scored = not_applied = 0
    total_sq = total_ab = 0.0
    learn_seconds = 0.0
    wall_start = time.perf_counter()
    stamps = bool(getattr(learner, "wants_timestamps", False))
    for batch in rechunk(chunks, batch_size):
        t0 = time.perf_counter()
        if stamps:
            learn: Any = learner.learn_batch  # takes the timestamps too (wants_timestamps)
            pred, applied = learn(batch.user_ids, batch.item_ids, batch.values, batch.timestamps)
        else:
            pred, applied = learner.learn_batch(batch.user_ids, batch.item_ids, batch.values)
        dt = time.perf_counter() - t0
        learn_seconds += dt
        pred64: np.ndarray = np.asarray(pred, dtype=np.float64).reshape(-1)
        if pred64.shape[0] != len(batch):
            raise ValueError(f"learner returned {pred64.shape[0]} predictions for {len(batch)}")
        if rating_range is not None:
            pred64 = np.clip(pred64, rating_range[0], rating_range[1])
        raw_err = batch.values.astype(np.float64) - pred64
        err: np.ndarray = raw_err[np.isfinite(raw_err)]
        sq, ab = err * err, np.abs(err)
        seen += len(batch)
        scored += err.size
        not_applied += int(len(batch) - np.count_nonzero(np.asarray(applied)))
        total_sq += float(sq.sum())
        total_ab += float(ab.sum())
        w_rmse, w_mae = win.add(sq, ab)
        nan = float("nan")
        rows.append(
            (
                float(seen),
                float(np.sqrt(sq.mean())) if err.size else nan,
                float(ab.mean()) if err.size else nan,
                float(np.sqrt(total_sq / scored)) if scored else nan,
                total_ab / scored if scored else nan,
                w_rmse,
                w_mae,
                dt,
            )
        )
    cols = np.array(rows, dtype=np.float64).reshape(-1, 8).T
    return PrequentialResult(
        n_seen=cols[0].astype(np.int64),
        batch_rmse=cols[1],
        batch_mae=cols[2],
        running_rmse=cols[3],
        running_mae=cols[4],
        window_rmse=cols[5],
        window_mae=cols[6],
        batch_seconds=cols[7],
        n_scored=scored,
        n_not_applied=not_applied,
        learn_seconds=learn_seconds,
        wall_seconds=time.perf_counter() - wall_start,
        window=window,
    )

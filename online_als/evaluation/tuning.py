"""Hyperparameter search: a train/validation grid search and k-fold cross-validation.

Modelled on Spark ML's ``TrainValidationSplit`` and ``CrossValidator``: every parameter
combination of a grid is fitted with ``fit_fn(train, params) -> model`` and scored with
``metric``; the result is a table of all combinations and the best one.

``metric`` is ``"rmse"`` or ``"mae"`` (scored with ``model.predict(user_ids, item_ids)``
against the held-out values, lower is better), or any callable ``metric(model, held_out) ->
float``; for a callable say whether larger is better (``greater_is_better``, default False).
Combinations whose score is NaN rank last.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from online_als.datasets import Ratings
from online_als.evaluation.metrics import mae, rmse
from online_als.evaluation.splits import kfold_assignments, split_by_mask, time_folds

__all__ = [
    "ParamGrid",
    "SearchResult",
    "cross_validate",
    "expand_grid",
    "grid_search",
    "prediction_metric",
]

M = TypeVar("M")
ParamGrid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
Metric = str | Callable[[Any, Ratings], float]


def expand_grid(param_grid: ParamGrid) -> list[dict[str, Any]]:
    """All combinations of a ``{name: values}`` grid (last name varies fastest), or a list of
    explicit combinations passed through.

    >>> expand_grid({"rank": [8, 16], "reg": [0.1]})
    [{'rank': 8, 'reg': 0.1}, {'rank': 16, 'reg': 0.1}]
    """
    if isinstance(param_grid, Mapping):
        names = list(param_grid)
        for name in names:
            if isinstance(param_grid[name], str) or not isinstance(param_grid[name], Sequence):
                raise TypeError(f"grid values for {name!r} must be a sequence")
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(param_grid[n] for n in names))
        ]
    return [dict(p) for p in param_grid]


def prediction_metric(
    name: str, rating_range: tuple[float, float] | None = None
) -> Callable[[Any, Ratings], float]:
    """``metric(model, held_out)`` scoring ``model.predict(user_ids, item_ids)`` by ``"rmse"``
    or ``"mae"``, with predictions optionally clipped to ``rating_range``."""
    funcs = {"rmse": rmse, "mae": mae}
    if name not in funcs:
        raise ValueError(f"unknown metric {name!r}; use 'rmse', 'mae' or a callable")
    func = funcs[name]

    def score(model: Any, held_out: Ratings) -> float:
        pred = np.asarray(model.predict(held_out.user_ids, held_out.item_ids), np.float64)
        if rating_range is not None:
            pred = np.clip(pred, *rating_range)
        return func(held_out.values, pred)

    score.__name__ = name
    return score


def _resolve(
    metric: Metric, greater_is_better: bool | None
) -> tuple[Callable[..., float], str, bool]:
    if isinstance(metric, str):
        if greater_is_better:
            raise ValueError(f"{metric} is an error metric: lower is better")
        return prediction_metric(metric), metric, False
    return metric, getattr(metric, "__name__", "metric"), bool(greater_is_better)


@dataclass(frozen=True, eq=False)
class SearchResult(Generic[M]):
    """One row per parameter combination, and the best one.

    ``rows[i]`` has ``params``, ``score`` (mean over folds), ``fold_scores`` and
    ``fit_seconds``. ``best_model`` is the model fitted with the best parameters (on the
    training set for :func:`grid_search`; on all data for :func:`cross_validate` with
    ``refit=True``), or None.
    """

    rows: list[dict[str, Any]]
    metric: str
    greater_is_better: bool
    best_index: int
    best_model: M | None = field(default=None)

    @property
    def best_params(self) -> dict[str, Any]:
        """Parameters of the best row."""
        return dict(self.rows[self.best_index]["params"])

    @property
    def best_score(self) -> float:
        """Score of the best row."""
        return float(self.rows[self.best_index]["score"])

    @property
    def scores(self) -> np.ndarray:
        """Mean score of every row, in grid order."""
        return np.array([r["score"] for r in self.rows], dtype=np.float64)

    def table(self) -> str:
        """A plain-text table, best first."""
        order = _ranking(self.scores, self.greater_is_better)
        names = sorted({k for r in self.rows for k in r["params"]})
        header = [*names, self.metric, "std", "fit_s"]
        body = []
        for i in order:
            r = self.rows[i]
            folds = np.asarray(r["fold_scores"], dtype=np.float64)
            std = float(folds.std()) if folds.size > 1 else 0.0
            body.append(
                [
                    *(repr(r["params"].get(n, "")) for n in names),
                    f"{r['score']:.5f}",
                    f"{std:.5f}",
                    f"{r['fit_seconds']:.2f}",
                ]
            )
        widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
        lines = [
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
            for row in [header, *body]
        ]
        return "\n".join(lines)


def _ranking(scores: np.ndarray, greater_is_better: bool) -> list[int]:
    key = -scores if greater_is_better else scores
    key = np.where(np.isnan(key), np.inf, key)
    return [int(i) for i in np.argsort(key, kind="stable")]


def _best(rows: list[dict[str, Any]], greater_is_better: bool) -> int:
    if not rows:
        raise ValueError("empty parameter grid")
    return _ranking(np.array([r["score"] for r in rows], dtype=np.float64), greater_is_better)[0]


def grid_search(
    fit_fn: Callable[[Ratings, dict[str, Any]], M],
    param_grid: ParamGrid,
    train: Ratings,
    validation: Ratings,
    metric: Metric = "rmse",
    *,
    greater_is_better: bool | None = None,
) -> SearchResult[M]:
    """Fit every combination on ``train``, score on ``validation`` (``TrainValidationSplit``).

    >>> class Const:
    ...     def __init__(self, c): self.c = c
    ...     def predict(self, users, items): return np.full(len(users), self.c)
    >>> r = Ratings.from_columns(["u"] * 3, ["i"] * 3, [3, 4, 5], range(3))
    >>> res = grid_search(lambda train, p: Const(p["c"]), {"c": [1.0, 4.0]}, r, r)
    >>> res.best_params, round(res.best_score, 4)
    ({'c': 4.0}, 0.8165)
    """
    score_fn, name, larger = _resolve(metric, greater_is_better)
    rows: list[dict[str, Any]] = []
    best_model: M | None = None
    best_key = math.inf
    for params in expand_grid(param_grid):
        t0 = time.perf_counter()
        model = fit_fn(train, dict(params))
        fit_seconds = time.perf_counter() - t0
        score = float(score_fn(model, validation))
        rows.append(
            {"params": params, "score": score, "fold_scores": (score,), "fit_seconds": fit_seconds}
        )
        key = math.inf if math.isnan(score) else (-score if larger else score)
        if best_model is None or key < best_key:
            best_model, best_key = model, key
    return SearchResult(rows, name, larger, _best(rows, larger), best_model)


def cross_validate(
    fit_fn: Callable[[Ratings, dict[str, Any]], M],
    param_grid: ParamGrid,
    data: Ratings,
    k_folds: int = 3,
    metric: Metric = "rmse",
    *,
    greater_is_better: bool | None = None,
    seed: int = 0,
    refit: bool = True,
    split: str = "random",
) -> SearchResult[M]:
    """Score every combination by its mean over ``k_folds`` folds (``CrossValidator``); with
    ``refit`` the best combination is fitted again on all of ``data``.

    ``split="random"``: seeded random folds. ``split="time"``: forward chaining over time
    (:func:`~online_als.evaluation.splits.time_folds`): each fold trains only on what came
    before it, the right choice for a stream.

    >>> class Mean:
    ...     def __init__(self, v, shrink): self.m = v.mean() * (1 - shrink)
    ...     def predict(self, users, items): return np.full(len(users), self.m)
    >>> r = Ratings.from_columns(list("abcdef"), list("xyzxyz"), [3, 4, 5, 3, 4, 5], range(6))
    >>> res = cross_validate(lambda t, p: Mean(t.values, p["shrink"]), {"shrink": [0.5, 0.0]}, r)
    >>> res.best_params, len(res.rows[0]["fold_scores"])
    ({'shrink': 0.0}, 3)
    """
    score_fn, name, larger = _resolve(metric, greater_is_better)
    if split == "time":
        splits = list(time_folds(data, k_folds))
    elif split == "random":
        folds = kfold_assignments(len(data), k_folds, seed)
        splits = [split_by_mask(data, folds == f) for f in range(k_folds)]
    else:
        raise ValueError(f"split must be 'random' or 'time', got {split!r}")
    rows: list[dict[str, Any]] = []
    for params in expand_grid(param_grid):
        fold_scores = []
        fit_seconds = 0.0
        for train, test in splits:
            t0 = time.perf_counter()
            model = fit_fn(train, dict(params))
            fit_seconds += time.perf_counter() - t0
            fold_scores.append(float(score_fn(model, test)))
        scores = np.array(fold_scores, dtype=np.float64)
        mean = float(scores.mean()) if not np.isnan(scores).any() else float("nan")
        rows.append(
            {
                "params": params,
                "score": mean,
                "fold_scores": tuple(fold_scores),
                "fit_seconds": fit_seconds,
            }
        )
    best = _best(rows, larger)
    best_model = fit_fn(data, dict(rows[best]["params"])) if refit else None
    return SearchResult(rows, name, larger, best, best_model)

"""The gate replays the serving version with its own adaptive-learner state and event times."""

from __future__ import annotations

import dataclasses

import numpy as np

from online_als.adaptive import AdaptiveParams, new_item_aux, new_user_aux
from online_als.evaluation.gate import score_explicit
from online_als.factors import Factors, ModelArrays
from online_als.ratings import Ratings


def _model(user_aux: np.ndarray | None = None, item_aux: np.ndarray | None = None) -> ModelArrays:
    rng = np.random.default_rng(5)
    nu, ni, k = 30, 20, 4
    users = Factors([f"u{j}" for j in range(nu)], rng.normal(0, 0.3, (nu, k)).astype(np.float32),
                    np.zeros(nu, np.float32), user_aux)
    items = Factors([f"i{j}" for j in range(ni)], rng.normal(0, 0.3, (ni, k)).astype(np.float32),
                    np.zeros(ni, np.float32), item_aux)
    return ModelArrays("explicit", users, items, 3.5)


def test_serving_state_and_times_change_the_replay_and_fresh_state_equals_none() -> None:
    rng = np.random.default_rng(6)
    n = 600
    users = np.array([f"u{j}" for j in rng.integers(0, 30, n)], dtype=object)
    items = np.array([f"i{j}" for j in rng.integers(0, 20, n)], dtype=object)
    values = rng.integers(1, 6, n).astype(np.float32)
    hold = Ratings.from_columns(users, items, values)
    params = AdaptiveParams()
    fresh = score_explicit(_model(), hold, params=params)
    k = 4
    item_aux = new_item_aux([f"i{j}" for j in range(20)], k, 0, params)
    same = score_explicit(_model(new_user_aux(30, k, params), item_aux), hold, params=params)
    assert same == fresh  # fresh rows given explicitly = no rows given
    worn = new_user_aux(30, k, params)
    worn[:, :k + 1] = 1e6  # long-running AdaGrad sums: tiny steps from here on
    seasoned = score_explicit(_model(worn, item_aux), hold, params=params)
    assert seasoned != fresh
    # the session bias restarts by the events' hour: times matter to the replay
    hourly = dataclasses.replace(params, session_seconds=3600.0)
    t_same = np.full(n, 1_700_000_000.0)
    t_hours = 1_700_000_000.0 + 3600 * np.arange(n)
    assert score_explicit(_model(), Ratings.from_columns(users, items, values, t_same),
                          params=hourly) != \
        score_explicit(_model(), Ratings.from_columns(users, items, values, t_hours),
                       params=hourly)

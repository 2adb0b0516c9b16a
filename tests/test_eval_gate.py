"""The retrain gate's pure scoring: both models on the same holdout; a worse one is rejected."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.adaptive import AdaptiveParams
from online_als.evaluation.gate import (
    compare_on_holdout,
    gate_reason,
    score_explicit,
    score_ranking,
)
from online_als.factors import Factors, ModelArrays
from online_als.online import ExplicitParams
from online_als.ratings import Ratings


def _world(seed: int = 0, nu: int = 60, ni: int = 40, k: int = 3, n: int = 800,
           mode: str = "explicit"):
    rng = np.random.default_rng(seed)
    uf = rng.normal(0, 0.8, (nu, k)).astype(np.float32)
    itf = rng.normal(0, 0.8, (ni, k)).astype(np.float32)
    users = rng.integers(0, nu, n)
    items = rng.integers(0, ni, n)
    values = np.clip(3.0 + np.einsum("ij,ij->i", uf[users], itf[items]), 0.5, 5.0)
    uids = np.array([f"u{j}" for j in range(nu)])
    iids = np.array([f"i{j}" for j in range(ni)])
    side = Factors(list(iids), itf, np.zeros(ni, np.float32))
    truth = ModelArrays(mode, Factors(list(uids), uf, np.zeros(nu, np.float32)), side, 3.0)
    noisy = ModelArrays(mode, Factors(list(uids), rng.normal(0, 0.8, (nu, k)).astype(np.float32),
                                      np.zeros(nu, np.float32)), side, 3.0)  # fmt: skip
    return truth, noisy, Ratings.from_columns(uids[users], iids[items], values)


@pytest.mark.parametrize("params", [None, ExplicitParams(lr=0.01), AdaptiveParams(lr=0.01)])
def test_explicit_worse_candidate_is_rejected(params) -> None:
    serving, worse, hold = _world()
    res = compare_on_holdout("explicit", serving, worse, hold, margin=0.02, params=params)
    assert not res.promote and "worse than the serving model" in res.reason
    assert res.candidate["rmse"] > res.serving["rmse"]
    better = compare_on_holdout("explicit", worse, serving, hold, margin=0.02, params=params)
    assert better.promote and better.reason == ""


def test_bootstrap_candidate_is_promoted_and_inputs_untouched() -> None:
    serving, worse, hold = _world(1)
    before = serving.users.vectors.copy()
    res = compare_on_holdout("explicit", None, worse, hold, params=ExplicitParams(lr=0.1))
    assert res.promote and res.serving == {} and "rmse" in res.candidate
    score_explicit(serving, hold, params=AdaptiveParams())
    np.testing.assert_array_equal(serving.users.vectors, before)


def test_replay_includes_the_online_updates() -> None:
    serving, _, hold = _world(2)
    shifted = Ratings.from_columns(hold.user_ids, hold.item_ids, hold.values + 1.0)
    static = score_explicit(serving, shifted)
    replayed = score_explicit(serving, shifted, params=ExplicitParams(lr=0.05))
    assert replayed["rmse"] < static["rmse"]  # it learns the shift while replaying


def test_implicit_worse_candidate_is_rejected() -> None:
    serving, worse, data = _world(3, n=3000, mode="implicit")
    # positives: each user's pairs with a high true affinity; seen = the first half
    pos = data.values > 3.8
    u, i = data.user_ids[pos], data.item_ids[pos]
    half = len(u) // 2
    kw = {"seen_users": u[:half], "seen_items": i[:half]}
    hold = Ratings.from_columns(u[half:], i[half:], np.ones(len(u) - half, np.float32))
    s = score_ranking(serving, hold, **kw)
    assert s["ndcg_at_10"] > 0 and s["n_users"] > 10
    res = compare_on_holdout("implicit", serving, worse, hold, margin=0.02, **kw)
    assert not res.promote and res.candidate["ndcg_at_10"] < res.serving["ndcg_at_10"]
    assert compare_on_holdout("implicit", worse, serving, hold, **kw).promote


def test_gate_reason_margin() -> None:
    assert gate_reason("explicit", {"rmse": 1.0}, {"rmse": 1.019}, 0.02) == ""
    assert "2.5% worse" in gate_reason("explicit", {"rmse": 1.0}, {"rmse": 1.025}, 0.02)
    assert gate_reason("implicit", {"ndcg_at_10": 0.1}, {"ndcg_at_10": 0.09}, 0.02) != ""
    assert gate_reason("implicit", {}, {"ndcg_at_10": 0.09}, 0.02) == ""
    assert "no rmse" in gate_reason("explicit", {"rmse": 1.0}, {}, 0.02)


def _result(model: ModelArrays):
    """(a retrain's result holding ``model``, the matrix it was fitted on: its id maps)."""
    from types import SimpleNamespace

    from online_als.idmap import IdMap
    from online_als.retrain import RetrainResult

    matrix = SimpleNamespace(users=IdMap.from_list(model.users.id_list()),
                             items=IdMap.from_list(model.items.id_list()))
    return RetrainResult(model.mode, model.users, model.items, model.global_mean), matrix


@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_retrain_gate_rejects_a_worse_candidate(mode) -> None:
    import scipy.sparse as sp

    from worker.control.retrain_gate import ServingReference, decide
    from worker.control.retrain_job import _evaluate

    rebuilt = ServingReference(1, mode=mode, arrays=object())  # the serving model was rebuilt

    serving, worse, data = _world(4, n=3000, mode=mode)
    u, i, v = data.user_ids, data.item_ids, data.values
    if mode == "implicit":
        keep = v > 3.8
        u, i, v = u[keep], i[keep], np.ones(int(keep.sum()), np.float32)
    half = len(u) // 2
    cand, matrix = _result(worse)
    rows = matrix.users.rows_for(u[:half], add=False)
    cols = matrix.items.rows_for(i[:half], add=False)
    csr = sp.csr_matrix((np.ones(half, np.float32), (rows, cols)),
                        shape=(len(worse.users), len(worse.items)))  # fmt: skip
    # (users, items, values, event times) of the held-out log, as _split_log keeps them
    holdout = [Ratings(u[half:], i[half:], v[half:],
                       1.7e9 + np.arange(len(u) - half, dtype=np.float64))]
    new = _evaluate(mode, cand, matrix, holdout, csr, serving=serving,
                    replay_params=ExplicitParams(lr=0.01) if mode == "explicit" else None)
    key = "rmse" if mode == "explicit" else "ndcg_at_10"
    assert key in new and f"serving_{key}" in new
    reason = decide(mode, new, rebuilt, 0.02).reason
    assert "worse than the serving model" in reason
    # the better candidate against the worse serving model is promoted
    better = _evaluate(mode, *_result(serving), holdout, csr, serving=worse)
    assert decide(mode, better, rebuilt, 0.02).reason == ""
    # without a serving model: the candidate scored alone
    legacy = _evaluate(mode, cand, matrix, holdout, csr)
    assert "serving_" + key not in legacy
    assert decide(mode, legacy, ServingReference(None), 0.02).reason == ""  # nothing serves
    # a serving version that cannot be rebuilt and has no stored score: refused
    lost = ServingReference(1, mode=mode, why_not="no snapshot")
    assert "cannot be rebuilt" in decide(mode, legacy, lost, 0.02).reason
    # ... but with a score stored from its own holdout: the weaker check, said so
    from online_als.evaluation.gate import Verdict

    older = ServingReference(1, mode=mode, why_not="no snapshot", stored={key: legacy[key]})
    kept = decide(mode, legacy, older, 0.0)
    assert kept.verdict is Verdict.PASSED_OLDER_HOLDOUT and "older holdout" in kept.detail
    better_stored = legacy[key] * (0.5 if mode == "explicit" else 2.0)
    beaten = ServingReference(1, mode=mode, why_not="no snapshot", stored={key: better_stored})
    assert decide(mode, legacy, beaten, 0.0).verdict is Verdict.WORSE

"""The two-stage gate: holdout first, then a shadow replay beside the serving model."""

from __future__ import annotations

from online_als.evaluation.gate import staged_reason


def test_holdout_failure_is_reported_first() -> None:
    reason = staged_reason("explicit", ({"rmse": 0.9}, {"rmse": 1.0}), ({"rmse": 1.0}, {"rmse": 0.5}), 0.02)
    assert reason.startswith("holdout: rmse 1.0000")


def test_candidate_that_loses_its_shadow_replay_is_not_switched_to() -> None:
    holdout = ({"rmse": 0.8147}, {"rmse": 0.8097})  # ml-latest-small at 50,000 events
    shadow = ({"rmse": 0.8250}, {"rmse": 0.8290})
    reason = staged_reason("explicit", holdout, shadow, 0.0)
    assert reason.startswith("shadow replay: rmse 0.8290")
    assert staged_reason("explicit", holdout, shadow, 0.01) == ""  # within a 1% margin
    assert staged_reason("explicit", holdout, None, 0.0) == ""  # no replay yet: holdout decides


def test_implicit_mode_compares_ndcg_higher_is_better() -> None:
    holdout = ({"ndcg_at_10": 0.10}, {"ndcg_at_10": 0.11})
    assert staged_reason("implicit", holdout, ({"ndcg_at_10": 0.12}, {"ndcg_at_10": 0.13}), 0.0) == ""
    worse = staged_reason("implicit", holdout, ({"ndcg_at_10": 0.12}, {"ndcg_at_10": 0.10}), 0.02)
    assert worse.startswith("shadow replay: ndcg_at_10 0.1000")

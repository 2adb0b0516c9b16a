"""`online-als evaluate`/`tune` build the adaptive learner from every model.* setting."""

from __future__ import annotations

from worker.cli.eval_cli import _online_model
from worker.config import load_config


def test_adaptive_settings_reach_the_evaluated_learner() -> None:
    settings = load_config(overrides={"model.session_learning_rate": "0",
                                      "model.acc_init": "0.5"}, environ={})
    model = _online_model(settings, "adaptive")
    assert model.params.session_lr == 0.0 and model.params.acc_init == 0.5
    assert model.params.track_mean  # a data set has no version's global mean
    tuned = _online_model(settings, "adaptive", lr=0.3)  # a tuning grid's value wins
    assert tuned.params.lr == 0.3 and tuned.params.acc_init == 0.5

"""Feedback-loop simulation runs, is seeded, and measures precision correctly."""

from __future__ import annotations

import numpy as np
import pytest

from online_als.evaluation.simulation import (
    FeedbackConfig,
    PlantedWorld,
    PopularityLearner,
    RandomLearner,
    simulate_feedback,
)

CFG = FeedbackConfig(n_users=60, n_items=120, rank=4, n_recs=5, rounds=6, seed=7)


class Oracle:
    """Knows the planted affinities: recommends each user's true top items."""

    def __init__(self, world: PlantedWorld) -> None:
        self.world = world
        self.batches = 0

    def recommend(self, user_rows: np.ndarray, n: int) -> np.ndarray:
        return np.argsort(-self.world.affinity[user_rows], axis=1)[:, :n]

    def learn_batch(self, user_rows, item_rows, values) -> None:
        self.batches += 1


def test_world_thresholds() -> None:
    world = PlantedWorld(CFG)
    assert world.liked.mean() == pytest.approx(CFG.like_fraction, abs=0.01)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(CFG.n_users), CFG.n_items)
    items = np.tile(np.arange(CFG.n_items), CFG.n_users)
    answers = world.answer(users, items, rng)
    assert set(np.unique(answers).tolist()) <= {-1, 0, 1}
    assert abs((answers == 1).mean() - CFG.like_fraction) < 0.05


def test_oracle_has_precision_one() -> None:
    world = PlantedWorld(CFG)
    oracle = Oracle(world)
    res = simulate_feedback(oracle, world=world)
    assert res.precision.tolist() == pytest.approx([1.0] * CFG.rounds)
    assert oracle.batches == CFG.rounds + 1  # warm start + one per round
    assert res.like_rate.mean() > 0.7 and res.dislike_rate.max() < 0.1


def test_random_baseline_and_seeding() -> None:
    a = simulate_feedback(RandomLearner(CFG.n_items, seed=3), CFG)
    b = simulate_feedback(RandomLearner(CFG.n_items, seed=3), CFG)
    assert np.array_equal(a.precision, b.precision)
    assert a.precision.shape == (CFG.rounds,)
    assert abs(a.precision.mean() - CFG.like_fraction) < 0.08
    assert np.all(a.n_feedback == CFG.n_users * CFG.n_recs)
    assert np.all((a.coverage > 0) & (a.coverage <= 1))


def test_popularity_learner_and_skipped_answers() -> None:
    cfg = FeedbackConfig(
        n_users=40,
        n_items=80,
        rank=4,
        n_recs=5,
        rounds=4,
        users_per_round=0.5,
        feedback_values={"like": 1.0, "neutral": None, "dislike": -1.0},
    )
    learner = PopularityLearner(cfg.n_items, centre=0.0)
    res = simulate_feedback(learner, cfg)
    assert res.precision.shape == (4,)
    assert np.all(res.n_feedback <= 20 * 5)  # 20 users per round, neutral answers not sent
    assert all(len(s) > 0 for s in learner.seen.values())

"""Feedback-loop simulation: simulated users answer a learner's recommendations.

A :class:`PlantedWorld` draws hidden user and item factors :math:`U, V \\sim N(0, 1/k)`; the
true affinity of user u for item i is :math:`s_{ui} = U_u \\cdot V_i`. Each user likes the top
``like_fraction`` of the catalogue by true affinity and dislikes the bottom
``dislike_fraction``: shown an item, the user answers from a noisy affinity
:math:`s_{ui} + \\varepsilon`, :math:`\\varepsilon \\sim N(0, (\\text{noise}\\cdot\\sigma_u)^2)`
(:math:`\\sigma_u` = spread of the user's true affinities): *like* above the user's like
threshold, *dislike* below the dislike threshold, *neutral* otherwise.

Each round, :func:`simulate_feedback` asks the learner for the top ``n_recs`` items of the
round's users, collects the answers, turns them into values with ``feedback_values`` (e.g.
5/3/1 for an explicit learner, 1/0/-1 or 1/None/None for an implicit one; ``None`` means the
answer is not sent) and passes them to ``learn_batch``. It reports per round the precision
(share of recommended items in the user's true liked set, averaged over users), the like and
dislike rates of the answers, and catalogue coverage.

The learner protocol works on integer rows ``0..n_users-1`` / ``0..n_items-1`` (ids are
``str(row)`` if a learner needs strings):
``recommend(user_rows, n) -> int array (len(user_rows), n)`` (``-1`` pads) and
``learn_batch(user_rows, item_rows, values)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from online_als.evaluation._arrays import pad_rows
from online_als.evaluation.metrics import catalog_coverage

__all__ = [
    "FeedbackConfig",
    "FeedbackLearner",
    "PlantedWorld",
    "PopularityLearner",
    "RandomLearner",
    "SimulationResult",
    "simulate_feedback",
]

LIKE, NEUTRAL, DISLIKE = 1, 0, -1


class FeedbackLearner(Protocol):
    """The two calls a simulated feedback loop needs (integer rows, see module docstring)."""

    def recommend(self, user_rows: np.ndarray, n: int) -> np.ndarray: ...

    def learn_batch(
        self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray
    ) -> Any: ...


@dataclass(frozen=True)
class FeedbackConfig:
    """Simulation settings (sizes, answer model, rounds); all defaults are small and fast."""

    n_users: int = 200
    n_items: int = 500
    rank: int = 8
    n_recs: int = 10
    rounds: int = 20
    users_per_round: float = 1.0
    like_fraction: float = 0.2
    dislike_fraction: float = 0.3
    noise: float = 0.25
    initial_per_user: int = 5
    feedback_values: Mapping[str, float | None] = field(
        default_factory=lambda: {"like": 5.0, "neutral": 3.0, "dislike": 1.0}
    )
    seed: int = 0


class PlantedWorld:
    """Hidden planted factors and the answer model of the simulated users."""

    def __init__(self, config: FeedbackConfig) -> None:
        if not 0 < config.like_fraction < 1 or not 0 <= config.dislike_fraction < 1:
            raise ValueError("like_fraction must be in (0, 1), dislike_fraction in [0, 1)")
        if config.like_fraction + config.dislike_fraction > 1:
            raise ValueError("like_fraction + dislike_fraction must be <= 1")
        rng = np.random.default_rng(config.seed)
        scale = 1.0 / np.sqrt(config.rank)
        self.config = config
        self.user_factors = rng.normal(0, scale, (config.n_users, config.rank)).astype(np.float32)
        self.item_factors = rng.normal(0, scale, (config.n_items, config.rank)).astype(np.float32)
        self.affinity = self.user_factors @ self.item_factors.T
        q_like = 1.0 - config.like_fraction
        self.like_threshold = np.quantile(self.affinity, q_like, axis=1).astype(np.float32)
        self.dislike_threshold = np.quantile(self.affinity, config.dislike_fraction, axis=1).astype(
            np.float32
        )
        self.liked = self.affinity >= self.like_threshold[:, None]
        self.spread = self.affinity.std(axis=1)

    def answer(
        self, user_rows: np.ndarray, item_rows: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Answers (+1 like, 0 neutral, -1 dislike) for aligned ``(user, item)`` rows."""
        u = np.asarray(user_rows, np.int64)
        s = self.affinity[u, np.asarray(item_rows, np.int64)]
        s = s + rng.normal(0.0, 1.0, s.shape) * self.config.noise * self.spread[u]
        out = np.full(s.shape, NEUTRAL, np.int8)
        out[s >= self.like_threshold[u]] = LIKE
        out[s <= self.dislike_threshold[u]] = DISLIKE
        return out

    def precision(self, user_rows: np.ndarray, recs: np.ndarray) -> float:
        """Mean over users of the share of their (valid) recommendations they truly like."""
        valid = recs >= 0
        liked = self.liked[np.asarray(user_rows, np.int64)[:, None], np.where(valid, recs, 0)]
        per_user = (liked & valid).sum(axis=1) / max(recs.shape[1], 1)
        return float(per_user.mean()) if per_user.size else float("nan")


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Per-round arrays (one entry per round) and the world that produced them."""

    precision: np.ndarray
    like_rate: np.ndarray
    dislike_rate: np.ndarray
    coverage: np.ndarray
    n_feedback: np.ndarray
    world: PlantedWorld


def _values_for(
    answers: np.ndarray, feedback: Mapping[str, float | None]
) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros(answers.shape, np.float32)
    keep = np.zeros(answers.shape, bool)
    for name, code in (("like", LIKE), ("neutral", NEUTRAL), ("dislike", DISLIKE)):
        v = feedback.get(name)
        if v is not None:
            sel = answers == code
            values[sel] = v
            keep |= sel
    return values, keep


def simulate_feedback(
    learner: FeedbackLearner,
    config: FeedbackConfig | None = None,
    *,
    world: PlantedWorld | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` recommend -> answer -> learn rounds (module docstring).

    Before round 1 every user answers ``initial_per_user`` random items (a warm start).

    >>> cfg = FeedbackConfig(n_users=30, n_items=60, rounds=3)
    >>> res = simulate_feedback(RandomLearner(60, seed=1), cfg)
    >>> res.precision.shape, bool(0.0 <= res.precision.min() <= res.precision.max() <= 1.0)
    ((3,), True)
    """
    cfg = config or (world.config if world is not None else FeedbackConfig())
    world = world or PlantedWorld(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    if cfg.initial_per_user > 0:
        users = np.repeat(np.arange(cfg.n_users, dtype=np.int64), cfg.initial_per_user)
        items = np.concatenate(
            [
                rng.choice(cfg.n_items, size=min(cfg.initial_per_user, cfg.n_items), replace=False)
                for _ in range(cfg.n_users)
            ]
        ).astype(np.int64)
        users = users[: items.shape[0]]
        values, keep = _values_for(world.answer(users, items, rng), cfg.feedback_values)
        if keep.any():
            learner.learn_batch(users[keep], items[keep], values[keep])
    per_round = max(1, int(round(cfg.users_per_round * cfg.n_users)))
    stats: list[tuple[float, float, float, float, int]] = []
    for _ in range(cfg.rounds):
        users = np.sort(rng.choice(cfg.n_users, size=per_round, replace=False)).astype(np.int64)
        recs = pad_rows(learner.recommend(users, cfg.n_recs), cfg.n_recs, -1).astype(np.int64)
        valid = (recs >= 0) & (recs < cfg.n_items)
        recs = np.where(valid, recs, -1)
        u_flat = np.broadcast_to(users[:, None], recs.shape)[valid]
        i_flat = recs[valid]
        answers = world.answer(u_flat, i_flat, rng)
        values, keep = _values_for(answers, cfg.feedback_values)
        if keep.any():
            learner.learn_batch(u_flat[keep], i_flat[keep], values[keep])
        n = max(answers.shape[0], 1)
        stats.append(
            (
                world.precision(users, recs),
                float((answers == LIKE).sum() / n),
                float((answers == DISLIKE).sum() / n),
                catalog_coverage(recs, cfg.n_items),
                int(keep.sum()),
            )
        )
    cols = np.array(stats, dtype=np.float64).reshape(-1, 5).T
    return SimulationResult(cols[0], cols[1], cols[2], cols[3], cols[4].astype(np.int64), world)


class RandomLearner:
    """Baseline: recommends ``n`` distinct random items, learns nothing."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        self.n_items = n_items
        self.rng = np.random.default_rng(seed)

    def recommend(self, user_rows: np.ndarray, n: int) -> np.ndarray:
        """Random distinct items per user."""
        n = min(n, self.n_items)
        keys = self.rng.random((len(user_rows), self.n_items))
        return np.argsort(keys, axis=1)[:, :n].astype(np.int64)

    def learn_batch(self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray) -> None:
        """Ignores feedback."""


class PopularityLearner:
    """Baseline: recommends the items with the highest summed feedback ``values - centre``,
    excluding items the user already answered."""

    def __init__(self, n_items: int, centre: float = 3.0) -> None:
        self.n_items = n_items
        self.centre = centre
        self.score = np.zeros(n_items, np.float64)
        self.seen: dict[int, set[int]] = {}

    def recommend(self, user_rows: np.ndarray, n: int) -> np.ndarray:
        """Top items by score, skipping each user's answered items."""
        order = np.argsort(-self.score, kind="stable")
        out = np.full((len(user_rows), n), -1, np.int64)
        for r, u in enumerate(np.asarray(user_rows).tolist()):
            seen = self.seen.get(u, set())
            picks = [i for i in order[: n + len(seen)].tolist() if i not in seen][:n]
            out[r, : len(picks)] = picks
        return out

    def learn_batch(self, user_rows: np.ndarray, item_rows: np.ndarray, values: np.ndarray) -> None:
        """Adds ``values - centre`` to the items' scores and remembers what users saw."""
        np.add.at(
            self.score,
            np.asarray(item_rows, np.int64),
            np.asarray(values, np.float64) - self.centre,
        )
        for u, i in zip(
            np.asarray(user_rows).tolist(), np.asarray(item_rows).tolist(), strict=True
        ):
            self.seen.setdefault(u, set()).add(i)

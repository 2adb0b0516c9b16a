"""Synthetic rating streams with planted structure, vectorised and chunked.

What is planted (all from ``seed``):

- latent factors ``U (n_users, k)``, ``V (n_items, k)`` and biases; explicit ratings are
  ``clip(rint(mu + b_u + b_i + u.v + noise), 1, 5)``; implicit events are ``like`` / ``view`` /
  ``dislike`` by the quantile of the affinity ``b_i + u.v + noise``;
- Zipf-Mandelbrot popularity ``(rank + shift) ** -alpha`` for users and for items, the rank
  being a random permutation so popularity is unrelated to arrival order;
- arrival over time: id ``j`` (string ``str(j + 1)``) *debuts* at a fixed event position,
  increasing with ``j``; its first event is forced there, and before it the id is never drawn.
  The first ``initial_fraction`` of the ids debut in the first events, the rest evenly until
  ``debut_span`` of the stream, so every id appears when the stream is long enough;
- optional drift: item factors rotate in the planes (0,1), (2,3), ... by an angle growing
  linearly from 0 to ``drift`` radians over the stream.

Events are generated in fixed internal blocks, each with its own RNG stream, so the output
does not depend on ``chunk_rows``; memory is O(n_users + n_items + chunk_rows).
Repeated (user, item) pairs can occur (re-ratings), unlike in MovieLens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from online_als.datasets import Ratings, rechunk
from online_als.model import MODES, Mode

__all__ = ["ML20M", "Planted", "SyntheticConfig", "generate", "iter_blocks", "plant"]


#: MovieLens 20M: 20,000,263 ratings by 138,493 users of 26,744 movies.
ML20M: Final = {"n_events": 20_000_263, "n_users": 138_493, "n_items": 26_744}

BLOCK_ROWS: Final = 1 << 16  # internal generation unit; fixes the RNG streams
IMPLICIT_EVENTS: Final = np.array(["dislike", "view", "like"])


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator; the defaults have the ML-20M shape."""

    n_events: int = ML20M["n_events"]
    n_users: int = ML20M["n_users"]
    n_items: int = ML20M["n_items"]
    k: int = 16
    seed: int = 0
    mode: Mode = "explicit"
    drift: float = 0.0  # total item-factor rotation over the stream, radians
    user_alpha: float = 0.6  # ML users are less skewed than items
    item_alpha: float = 0.9
    zipf_shift: float = 10.0  # flattens the head: the top item gets ~1% of events, not ~10%
    initial_fraction: float = 0.1
    debut_span: float = 0.9
    global_mean: float = 3.5
    user_bias_std: float = 0.35
    item_bias_std: float = 0.45
    signal_std: float = 0.8  # std of u.v
    noise_std: float = 0.5
    like_fraction: float = 0.2
    dislike_fraction: float = 0.1
    start_ts: int = 946_684_800  # 2000-01-01
    span_s: float = 15 * 365.25 * 86400

    def __post_init__(self) -> None:
        if min(self.n_events, self.n_users, self.n_items, self.k) < 1:
            raise ValueError("n_events, n_users, n_items and k must be >= 1")
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'explicit' or 'implicit', got {self.mode!r}")
        if not 0 < self.initial_fraction <= 1 or not 0 < self.debut_span <= 1:
            raise ValueError("initial_fraction and debut_span must be in (0, 1]")
        if self.like_fraction + self.dislike_fraction >= 1:
            raise ValueError("like_fraction + dislike_fraction must be < 1")
        if self.span_s <= 0:
            raise ValueError("span_s must be > 0")


@dataclass(frozen=True, eq=False)
class Planted:
    """The ground truth behind a stream (useful to score a model against it)."""

    config: SyntheticConfig
    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    user_bias: npt.NDArray[np.float32]
    item_bias: npt.NDArray[np.float32]
    user_popularity: npt.NDArray[np.float64]  # normalised weights, sum 1
    item_popularity: npt.NDArray[np.float64]
    user_debut: npt.NDArray[np.int64]  # event position of each id's first event
    item_debut: npt.NDArray[np.int64]
    user_ids: npt.NDArray[np.str_]
    item_ids: npt.NDArray[np.str_]


def _zipf_weights(rng: np.random.Generator, n: int, alpha: float, shift: float) -> np.ndarray:
    rank = rng.permutation(n).astype(np.float64) + 1.0
    w = (rank + shift) ** -alpha
    return w / w.sum()


def _debuts(n_ids: int, n_events: int, initial_fraction: float, span: float) -> np.ndarray:
    """Non-decreasing debut positions: the initial ids one per event, the rest evenly spread."""
    n0 = min(max(1, round(initial_fraction * n_ids)), n_ids)
    head = np.arange(n0, dtype=np.int64)
    end = max(n0 + 1, int(span * n_events))
    tail = np.linspace(n0, end, n_ids - n0, endpoint=False).astype(np.int64)
    return np.concatenate([head, tail])


def plant(config: SyntheticConfig) -> Planted:
    """Draw the ground truth of ``config`` (deterministic in ``config.seed``)."""
    c = config
    rng = np.random.default_rng([c.seed, 0])
    # u.v has variance k * s^4 when both entries have std s.
    s = (c.signal_std**2 / c.k) ** 0.25
    return Planted(
        config=c,
        user_factors=rng.normal(0.0, s, (c.n_users, c.k)).astype(np.float32),
        item_factors=rng.normal(0.0, s, (c.n_items, c.k)).astype(np.float32),
        user_bias=rng.normal(0.0, c.user_bias_std, c.n_users).astype(np.float32),
        item_bias=rng.normal(0.0, c.item_bias_std, c.n_items).astype(np.float32),
        user_popularity=_zipf_weights(rng, c.n_users, c.user_alpha, c.zipf_shift),
        item_popularity=_zipf_weights(rng, c.n_items, c.item_alpha, c.zipf_shift),
        user_debut=_debuts(c.n_users, c.n_events, c.initial_fraction, c.debut_span),
        item_debut=_debuts(c.n_items, c.n_events, c.initial_fraction, c.debut_span),
        user_ids=_decimal_ids(c.n_users),
        item_ids=_decimal_ids(c.n_items),
    )


def _decimal_ids(n: int) -> npt.NDArray[np.str_]:
    """``"1" .. str(n)`` as the narrowest ``U`` dtype (``astype(str)`` gives U21 for int64)."""
    return np.arange(1, n + 1).astype(f"U{len(str(n))}")


class _Sampler:
    """Draws ids by popularity among those whose debut has passed, forcing each debut.

    Inverse-CDF sampling with a guide table: ``guide[j]`` is the first id whose cumulative
    weight exceeds ``j / m``, so a draw starts at most a step or two short of its answer.
    That is ~6x faster than ``searchsorted`` on unsorted keys, which dominated the run time.
    """

    def __init__(self, popularity: np.ndarray, debut: np.ndarray) -> None:
        self.cum = np.cumsum(popularity)
        self.debut = debut
        self.m = 4 * self.cum.shape[0]
        guide = np.searchsorted(self.cum, np.arange(self.m) / self.m, side="right")
        self.guide = np.minimum(guide, self.cum.shape[0] - 1)

    def draw(self, rng: np.random.Generator, pos: np.ndarray) -> np.ndarray:
        active = np.searchsorted(self.debut, pos, side="right")  # >= 1: debut[0] == 0
        target = rng.random(pos.shape[0]) * self.cum[active - 1]
        idx = self.guide[(target * self.m).astype(np.int64)]
        last = self.cum.shape[0] - 1
        while True:  # walk forward to the first id with cum > target
            short = (self.cum[idx] <= target) & (idx < last)
            if not short.any():
                break
            idx[short] += 1
        np.minimum(idx, active - 1, out=idx)  # float rounding at the upper edge
        lo, hi = np.searchsorted(self.debut, (pos[0], pos[-1] + 1))
        idx[self.debut[lo:hi] - pos[0]] = np.arange(lo, hi)
        return idx


def _rotate(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate each row of ``v`` by its own angle in the planes (0,1), (2,3), ..."""
    out = v.copy()
    cos = np.cos(angle).astype(np.float32)[:, None]
    sin = np.sin(angle).astype(np.float32)[:, None]
    even, odd = v[:, 0:-1:2], v[:, 1::2]
    out[:, 0:-1:2] = even * cos - odd * sin
    out[:, 1::2] = even * sin + odd * cos
    return out


def iter_blocks(planted: Planted) -> Iterator[Ratings]:
    """The stream in fixed blocks of :data:`BLOCK_ROWS` rows (the last one shorter)."""
    c = planted.config
    users = _Sampler(planted.user_popularity, planted.user_debut)
    items = _Sampler(planted.item_popularity, planted.item_debut)
    mean_gap = c.span_s / c.n_events
    clock = 0.0
    affinity_std = math.sqrt(c.item_bias_std**2 + c.signal_std**2 + c.noise_std**2)
    z_dislike = NormalDist().inv_cdf(c.dislike_fraction) * affinity_std
    z_like = NormalDist().inv_cdf(1.0 - c.like_fraction) * affinity_std
    for block, start in enumerate(range(0, c.n_events, BLOCK_ROWS)):
        rng = np.random.default_rng([c.seed, 1, block])
        pos = np.arange(start, min(start + BLOCK_ROWS, c.n_events), dtype=np.int64)
        u = users.draw(rng, pos)
        i = items.draw(rng, pos)
        vf = planted.item_factors[i]
        if c.drift:
            vf = _rotate(vf, c.drift * pos / c.n_events)
        dot = np.einsum("ij,ij->i", planted.user_factors[u], vf)
        score = planted.item_bias[i] + dot + rng.normal(0.0, c.noise_std, pos.shape[0])
        gaps = rng.exponential(mean_gap, pos.shape[0]).cumsum() + clock
        clock = float(gaps[-1])
        stamps = c.start_ts + np.floor(gaps).astype(np.int64)
        if c.mode == "explicit":
            raw = c.global_mean + planted.user_bias[u] + score
            values = np.clip(np.rint(raw), 1, 5).astype(np.float32)
            events = None
        else:
            code = (score > z_dislike).astype(np.int8) + (score > z_like)
            values = np.full(pos.shape[0], np.nan, np.float32)
            events = IMPLICIT_EVENTS[code]
        yield Ratings(planted.user_ids[u], planted.item_ids[i], values, stamps, events)


def generate(
    n_events: int = ML20M["n_events"],
    n_users: int = ML20M["n_users"],
    n_items: int = ML20M["n_items"],
    k: int = 16,
    seed: int = 0,
    mode: Mode = "explicit",
    drift: float = 0.0,
    chunk_rows: int = 1_000_000,
    **options: Any,
) -> Iterator[Ratings]:
    """Yield the stream as :class:`Ratings` chunks of ``chunk_rows`` rows (ML-20M by default).

    ``options`` are further :class:`SyntheticConfig` fields (e.g. ``item_alpha=1.1``).

    >>> chunks = list(generate(1000, 50, 20, k=4, seed=1, chunk_rows=400))
    >>> [len(c) for c in chunks], str(chunks[0].user_ids[0])
    ([400, 400, 200], '1')
    """
    config = SyntheticConfig(
        n_events=n_events, n_users=n_users, n_items=n_items, k=k, seed=seed, mode=mode,
        drift=drift, **options,
    )
    yield from rechunk(iter_blocks(plant(config)), chunk_rows)


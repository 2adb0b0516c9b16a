"""In-memory online learner: a ModelState plus kernel parameters.

It is the reference a worker's Redis state is compared to: the same events in the same batches,
with grams refreshed at the same points, give the same numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from online_als import defaults as D
from online_als.events import confidence_preference_from_weights
from online_als.idmap import as_id_list
from online_als.kernels.explicit_sgd import sgd_update_batch
from online_als.kernels.implicit_foldin import foldin_update_batch, gram_inverse
from online_als.model import ModelFormatError, ModelState


def _check(name: str, value: float, *, positive: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(
            f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}"
        )
    return v


@dataclass(frozen=True)
class ExplicitParams:
    """Biased-MF SGD: step ``lr``, L2 ``reg`` on factors, ``reg_bias`` on biases, error clip."""

    lr: float = D.LEARNING_RATE
    reg: float = D.REGULARIZATION
    reg_bias: float = D.BIAS_REGULARIZATION
    clip: float = D.GRADIENT_CLIP
    track_mean: bool = True  # update global_mean after each batch with the applied ratings

    def __post_init__(self) -> None:
        # Store plain floats/bools: numba compiles one specialisation per argument type.
        object.__setattr__(self, "lr", _check("lr", self.lr))
        object.__setattr__(self, "reg", _check("reg", self.reg))
        object.__setattr__(self, "reg_bias", _check("reg_bias", self.reg_bias))
        object.__setattr__(self, "clip", _check("clip", self.clip, positive=True))
        object.__setattr__(self, "track_mean", bool(self.track_mean))


@dataclass(frozen=True)
class OnlineImplicitParams:
    """Fold-in on the HKV objective: ``reg`` (in G = Y^T Y + reg I), ``alpha`` (c = alpha r)."""

    reg: float = 0.1
    alpha: float = 1.0
    update_items: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "reg", _check("reg", self.reg, positive=True))
        object.__setattr__(self, "alpha", _check("alpha", self.alpha, positive=True))
        object.__setattr__(self, "update_items", bool(self.update_items))


class OnlineModel:
    """Online matrix factorisation: explicit biased-MF SGD or implicit ALS fold-in.

    Explicit ratings, prequential (``pred`` is the prediction before each event is learnt):

    >>> m = OnlineModel.explicit(k=8, lr=0.05, seed=1)
    >>> pred, applied = m.learn_batch(["ann", "bob", "ann"], ["film1", "film1", "film2"],
    ...                               [4.0, 5.0, 3.0])
    >>> applied.tolist()
    [1, 1, 1]
    >>> m.learn_one("cid", "film2", 2.0)
    >>> m.predict(["ann"], ["film1"]).shape
    (1,)

    Implicit weights (negative = dislike); new user and new item in one event are both learnt:

    >>> im = OnlineModel.implicit(k=8, reg=0.1, alpha=2.0)
    >>> _, applied = im.learn_batch(["u1", "u2"], ["i1", "i1"], [1.0, -4.0])
    >>> applied.tolist(), im.state.n_users, im.state.n_items
    ([1, 1], 2, 1)
    """

    def __init__(self, state: ModelState, params: ExplicitParams | OnlineImplicitParams) -> None:
        want = "explicit" if isinstance(params, ExplicitParams) else "implicit"
        if state.mode != want:
            raise ValueError(f"state is {state.mode!r} but params are for {want!r}")
        self.state = state
        self.params = params
        self.gy_inv = np.zeros((state.k, state.k))
        self.gx_inv = np.zeros((state.k, state.k))
        self.refresh_grams()

    @classmethod
    def explicit(
        cls, k: int = D.RANK, *, lr: float = D.LEARNING_RATE, reg: float = D.REGULARIZATION,
        reg_bias: float = D.BIAS_REGULARIZATION, clip: float = D.GRADIENT_CLIP,
        global_mean: float = 0.0, track_mean: bool = True, seed: int = 0,
        init_scale: float = D.INIT_SCALE,
    ) -> OnlineModel:  # fmt: skip
        """Biased-MF SGD model; new users and items start at N(0, init_scale), bias 0."""
        params = ExplicitParams(lr, reg, reg_bias, clip, track_mean)
        state = ModelState(
            "explicit", k, seed=seed, user_init_scale=init_scale, item_init_scale=init_scale,
            global_mean=global_mean, hyper=asdict(params),
        )  # fmt: skip
        return cls(state, params)

    @classmethod
    def implicit(
        cls, k: int = 32, *, reg: float = 0.1, alpha: float = 1.0, update_items: bool = True,
        seed: int = 0, user_init_scale: float = 0.0, item_init_scale: float = 0.01,
    ) -> OnlineModel:  # fmt: skip
        """Implicit fold-in model. New users start at 0 (their first fold-in is then the exact
        ALS solve); new items at N(0, item_init_scale), which must be > 0 for a new user and a
        new item in the same event to learn anything."""
        params = OnlineImplicitParams(reg, alpha, update_items)
        state = ModelState(
            "implicit", k, seed=seed, user_init_scale=user_init_scale,
            item_init_scale=item_init_scale, hyper=asdict(params),
        )  # fmt: skip
        return cls(state, params)

    @property
    def mode(self) -> str:
        return self.state.mode

    def refresh_grams(self) -> None:
        """Recompute ``gy_inv``/``gx_inv`` from the current factors (implicit mode).

        Only here and at construction/load, so any process refreshing at the same points
        reproduces the same numbers. Items added since the last refresh are not in gy_inv.
        """
        if isinstance(self.params, OnlineImplicitParams):
            self.gy_inv = gram_inverse(self.state.item_factors, self.params.reg)
            self.gx_inv = gram_inverse(self.state.user_factors, self.params.reg)

    def learn_batch(
        self, user_ids: Iterable[Any], item_ids: Iterable[Any], values: Iterable[float]
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
        """Learn events in order (ratings, or implicit weights); add new ids first.

        Returns ``(pred_before, applied)``: the prediction before each event, and 1 where it
        was applied (0 where the NaN/Inf guard refused it).
        """
        users, items = as_id_list(user_ids), as_id_list(item_ids)
        v = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float32)
        if not (len(users) == len(items) == len(v)) or v.ndim != 1:
            raise ValueError(
                f"lengths differ: {len(users)} users, {len(items)} items, {len(v)} values"
            )
        s = self.state
        u = s.ensure_users(users)
        i = s.ensure_items(items)
        pred = np.empty(len(v), np.float32)
        applied = np.empty(len(v), np.uint8)
        p = self.params
        if isinstance(p, ExplicitParams):
            sgd_update_batch(
                s.user_factors, s.user_bias, s.item_factors, s.item_bias, u, i, v,
                s.global_mean, p.lr, p.reg, p.reg_bias, p.clip, pred, applied,
            )  # fmt: skip
            if p.track_mean:
                s.observe_ratings(v, applied)
        else:
            c, pref = confidence_preference_from_weights(v, p.alpha)
            foldin_update_batch(
                s.user_factors, s.item_factors, u, i, c, pref,
                self.gy_inv, self.gx_inv, p.update_items, pred, applied,
            )  # fmt: skip
        return pred, applied

    def learn_one(self, user: Any, item: Any, value: float) -> None:
        """River-style single event (same result as a batch of one)."""
        self.learn_batch([user], [item], [value])

    def predict(self, user_ids: Iterable[Any], item_ids: Iterable[Any]) -> NDArray[np.float32]:
        """Predictions without learning. Unknown ids contribute a zero vector and zero bias
        (explicit: the global mean plus the known bias; implicit: 0)."""
        s = self.state
        u = s.users.rows_for(user_ids, add=False)
        i = s.items.rows_for(item_ids, add=False)
        if len(u) != len(i):
            raise ValueError(f"lengths differ: {len(u)} users, {len(i)} items")
        ku, ki = u >= 0, i >= 0
        x = np.zeros((len(u), s.k), np.float64)
        y = np.zeros((len(i), s.k), np.float64)
        x[ku] = s.user_factors[u[ku]]
        y[ki] = s.item_factors[i[ki]]
        dot = np.einsum("ij,ij->i", x, y)
        if s.mode == "implicit":
            return dot.astype(np.float32)
        bu = np.zeros(len(u), np.float64)
        bi = np.zeros(len(i), np.float64)
        bu[ku] = s.user_bias[u[ku]]
        bi[ki] = s.item_bias[i[ki]]
        # Same summation order as the kernel's pred, so predict() matches pred_before.
        return (s.global_mean + bu + bi + dot).astype(np.float32)

    def predict_one(self, user: Any, item: Any) -> float:
        """Single prediction (River's ``predict_one``)."""
        return float(self.predict([user], [item])[0])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Snapshot the state; the parameters travel in its ``hyper`` metadata."""
        self.state.hyper = {"mode": self.mode, **asdict(self.params)}
        self.state.save(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineModel:
        """Load a snapshot written by :meth:`save` and refresh the grams."""
        state = ModelState.load(path)
        hyper = {k: v for k, v in state.hyper.items() if k != "mode"}
        params_cls = ExplicitParams if state.mode == "explicit" else OnlineImplicitParams
        try:
            params: ExplicitParams | OnlineImplicitParams = params_cls(**hyper)
        except TypeError as exc:
            raise ModelFormatError(
                f"{path}: hyper-parameters do not match {params_cls.__name__}: {exc}"
            ) from None
        return cls(state, params)

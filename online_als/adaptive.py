"""In-memory adaptive explicit learner: :class:`ModelState` plus the per-entity aux tables.

The reference for a worker that adopts :func:`adaptive_update_batch`: the same events in the
same batches give the same numbers. Defaults come from :mod:`online_als.defaults`.

>>> m = AdaptiveModel(k=8)
>>> pred, applied = m.learn_batch(["ann", "bob", "ann"], ["f1", "f1", "f2"], [4.0, 5.0, 3.0],
...                               [0, 10, 20])
>>> applied.tolist(), m.user_aux.shape
([1, 1, 1], (2, 11))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from online_als import defaults as D
from online_als.idmap import as_id_list
from online_als.init import init_vectors
from online_als.kernels.explicit_adaptive import (
    NO_SESSION,
    adaptive_update_batch,
    init_item_aux,
    init_user_aux,
    item_aux_width,
    pack_params,
    user_aux_width,
)
from online_als.model import ModelState

#: Salt of the deterministic initial implicit item factors ``z_i``.
IMPLICIT_SALT = "item-implicit"


@dataclass(frozen=True)
class AdaptiveParams:
    """Hyper-parameters of :func:`adaptive_update_batch` and of new ids' aux state."""

    lr: float = D.LEARNING_RATE
    lr_bias: float = D.BIAS_LEARNING_RATE
    reg: float = D.REGULARIZATION
    reg_bias: float = D.BIAS_REGULARIZATION
    clip: float = D.GRADIENT_CLIP
    acc_init: float = D.ACC_INIT
    session_lr: float = D.SESSION_LEARNING_RATE
    session_reg: float = D.SESSION_REGULARIZATION
    session_seconds: float = D.SESSION_SECONDS
    implicit: bool = D.IMPLICIT
    implicit_lr: float = D.IMPLICIT_LEARNING_RATE
    implicit_reg: float = D.IMPLICIT_REGULARIZATION
    implicit_init_scale: float = D.IMPLICIT_INIT_SCALE
    track_mean: bool = True

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if isinstance(v, bool):
                continue
            v = float(v)
            positive = name in ("lr", "lr_bias", "clip", "acc_init")
            if not math.isfinite(v) or v < 0 or (positive and v == 0):
                raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}")
            object.__setattr__(self, name, v)

    def packed(self) -> np.ndarray:
        return pack_params(self.lr, self.lr_bias, self.reg, self.reg_bias, self.clip,
                           self.session_lr, self.session_reg, self.session_seconds,
                           self.implicit, self.implicit_lr, self.implicit_reg)  # fmt: skip


def event_seconds(ts: Any) -> NDArray[np.int64]:
    """The kernel's clock from event times in float unix seconds (``Ratings.timestamps`` of
    a decoded batch, of the ratings log or of a dataset): floored to int64, non-finite -> 0.
    The worker and the log replay both go through here, so they agree on every session."""
    t = np.nan_to_num(np.asarray(ts, np.float64).reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    return np.floor(t).astype(np.int64)


def new_user_aux(n: int, k: int, p: AdaptiveParams) -> NDArray[np.float32]:
    """Fresh aux rows of ``n`` users."""
    return init_user_aux(n, k, p.implicit, p.acc_init)


def new_item_aux(ids: list[Any], k: int, seed: int, p: AdaptiveParams) -> NDArray[np.float32]:
    """Fresh aux rows of the items ``ids`` (their implicit factors are deterministic per id)."""
    z = (init_vectors(ids, k, seed, p.implicit_init_scale, salt=IMPLICIT_SALT)
         if p.implicit else np.zeros((len(ids), k), np.float32))  # fmt: skip
    return init_item_aux(z, p.implicit, p.acc_init)


def fill_fresh_aux(aux: NDArray[np.float32], ids: list[Any], kind: str, k: int, seed: int,
                   p: AdaptiveParams) -> NDArray[np.intp]:
    """Give fresh state to the rows of ``aux`` that are all zeros, in place; returns them.

    An all-zero row means "never initialised" (a new id, or a version whose vectors were
    loaded without aux state, e.g. a retrain's): an initialised row always has its AdaGrad
    sums >= ``acc_init`` > 0 (:class:`AdaptiveParams` refuses 0), so the sentinel is never
    a real state. ``kind`` is ``"u"`` or ``"i"``."""
    rows = np.flatnonzero(~aux.any(axis=1)) if aux.shape[1] else np.zeros(0, np.intp)
    if len(rows):
        aux[rows] = (new_user_aux(len(rows), k, p) if kind == "u"
                     else new_item_aux([ids[j] for j in rows.tolist()], k, seed, p))  # fmt: skip
    return rows


class AdaptiveModel:
    """Online biased MF with AdaGrad steps, a session user bias and an optional implicit factor.

    ``learn_batch(users, items, ratings, timestamps=None)`` returns ``(pred_before, applied)``
    like :class:`online_als.online.OnlineModel`; without timestamps every event is in one
    session. ``predict`` is what serving computes from ``f`` and ``b``: the global mean, both
    biases and ``f_u . f_i`` (the session bias is transient and left out).
    """

    wants_timestamps = True  # prequential() passes the batch's timestamps

    def __init__(self, k: int = D.RANK, params: AdaptiveParams | None = None, *,
                 seed: int = D.SEED, init_scale: float = D.INIT_SCALE,
                 global_mean: float = D.GLOBAL_MEAN) -> None:  # fmt: skip
        self.params = params or AdaptiveParams()
        self.state = ModelState("explicit", k, seed=seed, user_init_scale=init_scale,
                                item_init_scale=init_scale, global_mean=global_mean,
                                hyper={"learner": "adaptive", **asdict(self.params)})  # fmt: skip
        p = self.params
        self._ua = init_user_aux(0, k, p.implicit, p.acc_init)
        self._ia = init_item_aux(np.zeros((0, k), np.float32), p.implicit, p.acc_init)
        self._hp = p.packed()

    @classmethod
    def from_state(cls, state: ModelState, params: AdaptiveParams | None = None,
                   user_aux: np.ndarray | None = None,
                   item_aux: np.ndarray | None = None) -> AdaptiveModel:  # fmt: skip
        """Continue from existing factors (e.g. a retrain's or a stream snapshot's). Without
        ``user_aux``/``item_aux`` (rows in the state's id order) every id gets fresh aux
        state; with them, the all-zero rows do (:func:`fill_fresh_aux`). A table of the wrong
        width (another ``implicit`` setting) counts as absent."""
        m = cls(state.k, params, seed=state.seed, init_scale=state.user_init_scale,
                global_mean=state.global_mean)  # fmt: skip
        m.state = state
        p, k = m.params, state.k
        widths = (user_aux_width(k, p.implicit), item_aux_width(k, p.implicit))
        for kind, given, n, w in (("u", user_aux, state.n_users, widths[0]),
                                  ("i", item_aux, state.n_items, widths[1])):  # fmt: skip
            aux = np.zeros((n, w), np.float32)
            if given is not None and given.shape == (n, w):
                aux[:] = given
            ids = state.items.ids if kind == "i" else []
            fill_fresh_aux(aux, ids, kind, k, state.seed, p)
            if kind == "u":
                m._ua = aux
            else:
                m._ia = aux
        return m

    def rebased(self, state: ModelState) -> AdaptiveModel:
        """A model on a retrain's factors (``state``, same k) that keeps this model's AdaGrad
        sums for the ids both know; sessions and implicit sums restart (see
        :meth:`reset_after_rebase`). The worker's rebase should do the same per entity."""
        m = AdaptiveModel.from_state(state, self.params)
        for mine, theirs, new_aux, table in (
            (self.state.users, state.users, m._ua, self.user_aux),
            (self.state.items, state.items, m._ia, self.item_aux),
        ):
            rows = mine.rows_for(theirs.ids, add=False)
            known = rows >= 0
            new_aux[: len(rows)][known] = table[rows[known]]
        m.reset_after_rebase()
        m.state.n_ratings = self.state.n_ratings
        return m

    @property
    def user_aux(self) -> NDArray[np.float32]:
        return self._ua[: self.state.n_users]

    @property
    def item_aux(self) -> NDArray[np.float32]:
        return self._ia[: self.state.n_items]

    def _grow(self, aux: np.ndarray, need: int, new: np.ndarray) -> np.ndarray:
        old = need - new.shape[0]
        if need > aux.shape[0]:
            grown = np.zeros((max(need, 2 * aux.shape[0], 64), aux.shape[1]), np.float32)
            grown[:old] = aux[:old]
            aux = grown
        aux[old:need] = new
        return aux

    def ensure(self, users: list[Any], items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the ids, adding new ones (vectors, zero biases, fresh aux state)."""
        s, p = self.state, self.params
        nu0, ni0 = s.n_users, s.n_items
        u = s.ensure_users(users)
        i = s.ensure_items(items)
        if s.n_users > nu0:
            self._ua = self._grow(self._ua, s.n_users, new_user_aux(s.n_users - nu0, s.k, p))
        if s.n_items > ni0:
            self._ia = self._grow(self._ia, s.n_items,
                                  new_item_aux(list(s.items.ids[ni0:]), s.k, s.seed, p))
        return u, i

    def learn_batch(
        self, user_ids: Iterable[Any], item_ids: Iterable[Any], values: Iterable[float],
        timestamps: Iterable[float] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:  # fmt: skip
        users, items = as_id_list(user_ids), as_id_list(item_ids)
        v = np.asarray(values if isinstance(values, np.ndarray) else list(values), np.float32)
        if not (len(users) == len(items) == len(v)) or v.ndim != 1:
            raise ValueError(
                f"lengths differ: {len(users)} users, {len(items)} items, {len(v)} values"
            )
        t = (np.zeros(len(v), np.int64) if timestamps is None
             else event_seconds(list(timestamps) if not isinstance(timestamps, np.ndarray)
                                else timestamps))  # fmt: skip
        if len(t) != len(v):
            raise ValueError(f"{len(t)} timestamps for {len(v)} values")
        u, i = self.ensure(users, items)
        s = self.state
        pred = np.empty(len(v), np.float32)
        applied = np.empty(len(v), np.uint8)
        adaptive_update_batch(
            s.user_factors, s.user_bias, self.user_aux, s.item_factors, s.item_bias,
            self.item_aux, u, i, v, t, s.global_mean, self._hp, pred, applied,
        )  # fmt: skip
        if self.params.track_mean:
            s.observe_ratings(v, applied)
        return pred, applied

    def predict(self, user_ids: Iterable[Any], item_ids: Iterable[Any]) -> NDArray[np.float32]:
        """``mu + b_u + b_i + f_u . f_i``; unknown ids contribute 0."""
        s = self.state
        u = s.users.rows_for(user_ids, add=False)
        i = s.items.rows_for(item_ids, add=False)
        ku, ki = u >= 0, i >= 0
        x = np.zeros((len(u), s.k))
        y = np.zeros((len(i), s.k))
        x[ku], y[ki] = s.user_factors[u[ku]], s.item_factors[i[ki]]
        bu, bi = np.zeros(len(u)), np.zeros(len(i))
        bu[ku], bi[ki] = s.user_bias[u[ku]], s.item_bias[i[ki]]
        return (s.global_mean + bu + bi + np.einsum("ij,ij->i", x, y)).astype(np.float32)

    def reset_after_rebase(self) -> None:
        """What a retrain rebase does to the aux state: the AdaGrad sums stay (how much each
        entity has been learnt), sessions and the implicit sums restart (their meaning is tied
        to the replaced factors)."""
        k = self.state.k
        self._ua[:, k + 1] = NO_SESSION
        self._ua[:, k + 2] = 0.0
        if self.params.implicit:
            self._ua[:, k + 3 :] = 0.0

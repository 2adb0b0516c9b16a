"""Full and partial retrains: explicit ALS-WR (numba) or implicit ALS (``implicit``).

:func:`retrain` takes a :class:`~online_als.retrain.matrix.RatingMatrix` (built from chunks
by :func:`~online_als.retrain.matrix.build_matrix`), hyper-parameters (:class:`AlsWrParams`
for ``"explicit"``, :class:`ImplicitParams` for ``"implicit"``) and optionally a warm start
(a :class:`WarmStart` or a :class:`~online_als.model.ModelState`). A partial retrain is a
warm start plus a few iterations.

Warm-start rows are matched to the matrix **by id** when both sides have id maps (so a
model whose maps differ from the matrix's is fine), else by row. Ids the warm start does
not know get :func:`online_als.init.init_vectors` (the same vectors ``ModelState`` would
give them) and zero biases.

Example
-------
>>> m = build_matrix([(["a", "a", "b"], ["x", "y", "x"], [5.0, 3.0, 4.0])], "last")
>>> r = retrain("explicit", m, AlsWrParams(factors=2, iterations=3))
>>> r.users.vectors.shape, r.users.ids, sorted(r.seconds)
((2, 2), ['a', 'b'], ['build_matrix', 'check', 'fit', 'warm_start'])
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from online_als.factors import Factors, ModelArrays
from online_als.idmap import IdMap
from online_als.init import ITEM_SALT, USER_SALT, init_vectors
from online_als.model import MODES, Mode, ModelState
from online_als.retrain.als_wr import AlsWrFactors, AlsWrParams, fit_als_wr
from online_als.retrain.implicit_fit import ImplicitParams, fit_implicit
from online_als.retrain.matrix import MatrixBuilder, RatingMatrix, build_matrix

F32 = npt.NDArray[np.float32]

__all__ = [
    "AlsWrFactors",
    "AlsWrParams",
    "ImplicitParams",
    "MatrixBuilder",
    "RatingMatrix",
    "RetrainResult",
    "WarmStart",
    "build_matrix",
    "fit_als_wr",
    "fit_implicit",
    "retrain",
]


@dataclass(frozen=True)
class WarmStart:
    """Factors to start from; biases are used in explicit mode only.

    ``users.ids``/``items.ids`` name the rows; when None, row j of the arrays is row j of the
    matrix (there may be fewer rows than the matrix has: the rest are new). ``seed`` feeds
    :func:`~online_als.init.init_vectors` for new ids.
    """

    users: Factors
    items: Factors
    seed: int = 0

    @classmethod
    def from_state(cls, state: ModelState) -> WarmStart:
        """Warm start from a live model (arrays are copied by :func:`retrain`, not here)."""
        return cls(
            Factors(state.users.ids, state.user_factors, state.user_bias),
            Factors(state.items.ids, state.item_factors, state.item_bias), state.seed,
        )  # fmt: skip


@dataclass
class RetrainResult:
    """The fitted ``users``/``items`` (float32; biases 0 and ``global_mean`` 0.0 in implicit
    mode), named by the matrix's ids (``ids`` None for row-only matrices), wall seconds per
    phase, the number of stored ratings and the hyper-parameters used (JSON-able)."""

    mode: Mode
    users: Factors
    items: Factors
    global_mean: float
    seconds: dict[str, float] = field(default_factory=dict)
    n_ratings: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> ModelArrays:
        """The result as a model version's arrays (needs ids)."""
        return ModelArrays(self.mode, self.users, self.items, self.global_mean)

    def to_state(self, *, seed: int = 0, hyper: dict[str, Any] | None = None) -> ModelState:
        """A :class:`ModelState` holding this result (needs the id maps).

        ``hyper`` defaults to the retrain parameters; ``n_ratings`` is carried over so the
        state's running global mean goes on from the retrained one.
        """
        if self.users.ids is None or self.items.ids is None:
            raise ValueError("to_state needs id maps; build the matrix from ids")
        k = self.users.rank
        state = ModelState(
            self.mode,
            k,
            seed=seed,
            global_mean=self.global_mean,
            hyper=dict(self.params) if hyper is None else hyper,
        )
        state.n_ratings = self.n_ratings
        state.ensure_users(self.users.ids)
        state.ensure_items(self.items.ids)
        state.user_factors[:] = self.users.vectors
        state.item_factors[:] = self.items.vectors
        state.user_bias[:] = self.users.biases
        state.item_bias[:] = self.items.biases
        return state


def _align(n: int, k: int, warm: Factors, dst: IdMap | None, seed: int, scale: float,
           salt: str) -> tuple[F32, F32]:
    """Warm-start arrays reordered to the matrix rows; unknown rows get init_vectors."""
    factors, bias = warm.vectors, warm.biases
    if factors.shape[1] != k:
        raise ValueError(f"warm-start factors have shape {factors.shape}, need (n, {k})")
    out_f = np.empty((n, k), np.float32)
    out_b = np.zeros(n, np.float32)
    known = np.zeros(n, bool)
    if warm.ids is not None and dst is not None:
        rows = dst.rows_for(warm.ids, add=False)  # matrix row of each warm row, or -1
        ok = rows >= 0
        out_f[rows[ok]] = factors[ok]
        out_b[rows[ok]] = bias[ok]
        known[rows[ok]] = True
    else:
        if factors.shape[0] > n:
            raise ValueError(f"warm start has {factors.shape[0]} rows, the matrix {n}")
        m = factors.shape[0]
        out_f[:m], out_b[:m], known[:m] = factors, bias, True
    new = np.flatnonzero(~known)
    if new.size:
        ids = [dst.ids[j] for j in new] if dst is not None else [str(j) for j in new]
        out_f[new] = init_vectors(ids, k, seed, scale, salt=salt)
    return out_f, out_b


def retrain(
    mode: Mode,
    matrix: RatingMatrix,
    params: AlsWrParams | ImplicitParams,
    warm_start: WarmStart | ModelState | None = None,
) -> RetrainResult:
    """Fit ``matrix`` from scratch or from ``warm_start``; see the module docstring.

    Phases timed in ``seconds``: ``build_matrix`` (from the matrix), ``warm_start``
    (alignment), ``fit``, ``check`` (finite + shape checks). Raises ``FloatingPointError`` if
    the result is not finite (nothing should then be published).
    """
    if mode == "explicit" and not isinstance(params, AlsWrParams):
        raise TypeError("explicit mode takes AlsWrParams")
    if mode == "implicit" and not isinstance(params, ImplicitParams):
        raise TypeError("implicit mode takes ImplicitParams")
    if mode not in MODES:
        raise ValueError(f"mode must be 'explicit' or 'implicit', got {mode!r}")
    seconds = {"build_matrix": matrix.seconds}
    n_users, n_items = matrix.shape
    k = params.factors

    t0 = time.perf_counter()
    ws = WarmStart.from_state(warm_start) if isinstance(warm_start, ModelState) else warm_start
    warm: dict[str, F32] = {}
    if ws is not None:
        scale = params.init_scale
        warm["user_factors"], warm["user_bias"] = _align(
            n_users, k, ws.users, matrix.users, ws.seed, scale, USER_SALT,
        )  # fmt: skip
        warm["item_factors"], warm["item_bias"] = _align(
            n_items, k, ws.items, matrix.items, ws.seed, scale, ITEM_SALT,
        )  # fmt: skip
    seconds["warm_start"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if isinstance(params, AlsWrParams):
        fit = fit_als_wr(
            matrix.matrix,
            params,
            user_factors=warm.get("user_factors"),
            item_factors=warm.get("item_factors"),
            user_bias=warm.get("user_bias"),
            item_bias=warm.get("item_bias"),
        )
        uf, itf, ub, ib = fit.users.vectors, fit.items.vectors, fit.users.biases, fit.items.biases
        mu = fit.global_mean
    else:
        uf, itf = fit_implicit(
            matrix.matrix, params,
            user_factors=warm.get("user_factors"), item_factors=warm.get("item_factors"),
        )  # fmt: skip
        ub, ib, mu = np.zeros(n_users, np.float32), np.zeros(n_items, np.float32), 0.0
    seconds["fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for name, arr, shape in (
        ("user_factors", uf, (n_users, k)), ("item_factors", itf, (n_items, k)),
        ("user_bias", ub, (n_users,)), ("item_bias", ib, (n_items,)),
    ):  # fmt: skip
        if arr.shape != shape or arr.dtype != np.float32:
            raise AssertionError(f"{name}: {arr.dtype}{arr.shape}, expected float32{shape}")
        if not np.isfinite(arr).all():
            raise FloatingPointError(f"retrain produced non-finite {name}; raise reg")
    seconds["check"] = time.perf_counter() - t0
    return RetrainResult(
        mode, Factors(_ids(matrix.users), np.ascontiguousarray(uf), ub),
        Factors(_ids(matrix.items), np.ascontiguousarray(itf), ib), float(mu), seconds,
        int(matrix.matrix.nnz), {"mode": mode, **dataclasses.asdict(params)},
    )  # fmt: skip


def _ids(ids: IdMap | None) -> list[str] | None:
    return None if ids is None else ids.ids

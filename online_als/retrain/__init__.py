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
>>> r.user_factors.shape, r.users.ids, sorted(r.seconds)
((2, 2), ['a', 'b'], ['build_matrix', 'check', 'fit', 'warm_start'])
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

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
    """Factors to start from. Biases are used in explicit mode only.

    ``users``/``items`` name the rows of the arrays; without them row j of the arrays is row
    j of the matrix (the arrays may have fewer rows than the matrix: the rest are new).
    ``seed`` feeds :func:`~online_als.init.init_vectors` for new ids.
    """

    user_factors: F32
    item_factors: F32
    user_bias: F32 | None = None
    item_bias: F32 | None = None
    users: IdMap | None = None
    items: IdMap | None = None
    seed: int = 0

    @classmethod
    def from_state(cls, state: ModelState) -> WarmStart:
        """Warm start from a live model (arrays are copied by :func:`retrain`, not here)."""
        return cls(
            state.user_factors, state.item_factors, state.user_bias, state.item_bias,
            state.users, state.items, state.seed,
        )  # fmt: skip


@dataclass
class RetrainResult:
    """Float32 factors/biases (biases 0 and ``global_mean`` 0.0 in implicit mode), the id
    maps of the matrix (``None`` for row-only matrices), wall seconds per phase, the number
    of stored ratings and the hyper-parameters used (JSON-able)."""

    mode: Mode
    user_factors: F32
    item_factors: F32
    user_bias: F32
    item_bias: F32
    global_mean: float
    users: IdMap | None
    items: IdMap | None
    seconds: dict[str, float] = field(default_factory=dict)
    n_ratings: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def to_state(self, *, seed: int = 0, hyper: dict[str, Any] | None = None) -> ModelState:
        """A :class:`ModelState` holding this result (needs the id maps).

        ``hyper`` defaults to the retrain parameters; ``n_ratings`` is carried over so the
        state's running global mean goes on from the retrained one.
        """
        if self.users is None or self.items is None:
            raise ValueError("to_state needs id maps; build the matrix from ids")
        k = self.user_factors.shape[1]
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
        state.user_factors[:] = self.user_factors
        state.item_factors[:] = self.item_factors
        state.user_bias[:] = self.user_bias
        state.item_bias[:] = self.item_bias
        return state


def _align(
    n: int,
    k: int,
    factors: F32,
    bias: F32 | None,
    src: IdMap | None,
    dst: IdMap | None,
    seed: int,
    scale: float,
    salt: str,
) -> tuple[F32, F32]:
    """Warm-start arrays reordered to the matrix rows; unknown rows get init_vectors."""
    factors = np.asarray(factors, dtype=np.float32)
    if factors.ndim != 2 or factors.shape[1] != k:
        raise ValueError(f"warm-start factors have shape {factors.shape}, need (n, {k})")
    b = np.zeros(factors.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    out_f = np.empty((n, k), np.float32)
    out_b = np.zeros(n, np.float32)
    if src is not None and dst is not None:
        rows = src.rows_for(dst.ids, add=False)
    else:
        if factors.shape[0] > n:
            raise ValueError(f"warm start has {factors.shape[0]} rows, the matrix {n}")
        rows = np.full(n, -1, np.int64)
        rows[: factors.shape[0]] = np.arange(factors.shape[0])
    known = rows >= 0
    out_f[known] = factors[rows[known]]
    out_b[known] = b[rows[known]]
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
            n_users, k, ws.user_factors, ws.user_bias, ws.users, matrix.users,
            ws.seed, scale, USER_SALT,
        )  # fmt: skip
        warm["item_factors"], warm["item_bias"] = _align(
            n_items, k, ws.item_factors, ws.item_bias, ws.items, matrix.items,
            ws.seed, scale, ITEM_SALT,
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
        uf, itf, ub, ib, mu = (
            fit.user_factors,
            fit.item_factors,
            fit.user_bias,
            fit.item_bias,
            fit.global_mean,
        )
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
        mode, np.ascontiguousarray(uf), np.ascontiguousarray(itf), ub, ib, float(mu),
        matrix.users, matrix.items, seconds, int(matrix.matrix.nnz),
        {"mode": mode, **dataclasses.asdict(params)},
    )  # fmt: skip

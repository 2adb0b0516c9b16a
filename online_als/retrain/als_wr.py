"""ALS-WR for explicit ratings, with user/item biases and a global mean (numba).

Model: ``r_hat(u, i) = mu + b_u + b_i + x_u . y_i``. Objective (Zhou et al. 2008,
"weighted-lambda regularisation", as in Spark MLlib's ALS)::

    sum_{(u,i) observed} (r_ui - mu - b_u - b_i - x_u . y_i)^2
        + sum_u n_u (reg |x_u|^2 + reg_bias b_u^2)
        + sum_i n_i (reg |y_i|^2 + reg_bias b_i^2)

with ``n_u`` / ``n_i`` the number of ratings of user u / item i and ``mu`` fixed (the mean
rating unless given). One half-step solves, for every user independently, the ``(k+1)``
ridge system of the augmented unknown ``z_u = [x_u, b_u]`` against features
``w_i = [y_i, 1]`` and targets ``r_ui - mu - b_i``; the item half-step is symmetric. Each
half-step minimises the objective exactly in its block, so the objective never increases.

Storage is float32, the normal equations are accumulated and solved (Cholesky) in float64.
Rows with no ratings keep their current vector and bias. ``als_wr_half_step`` runs in
parallel over rows (``prange``); ``als_wr_half_step_reference`` is its plain NumPy twin.

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> r = sp.csr_matrix(np.array([[5, 3, 0], [4, 0, 1], [0, 2, 5]], dtype=np.float32))
>>> f = fit_als_wr(r, AlsWrParams(factors=2, reg=0.05, iterations=10))
>>> f.users.vectors.shape, f.items.vectors.dtype
((3, 2), dtype('float32'))
>>> bool(rmse(r, f) < 0.5)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from numba import njit, prange

from online_als.factors import Factors
from online_als.kernels.linalg import cholesky_solve

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

__all__ = [
    "AlsWrFactors",
    "AlsWrParams",
    "als_wr_half_step",
    "als_wr_half_step_reference",
    "als_wr_objective",
    "fit_als_wr",
    "predict_pairs",
    "rmse",
]


@dataclass(frozen=True)
class AlsWrParams:
    """Hyper-parameters of :func:`fit_als_wr`.

    ``reg`` and ``reg_bias`` are multiplied by each row's rating count (weighted-lambda).
    ``reg_bias=None`` means "same as ``reg``". ``biases=False`` fits plain ALS-WR on
    ``r - mu`` (biases stay 0). ``global_mean=None`` uses the mean of the training values.
    ``init_scale`` is the standard deviation of the random item/user start vectors (used only
    for factors not given as a warm start). ``num_threads=0`` uses numba's default.
    """

    factors: int = 20
    reg: float = 0.08
    reg_bias: float | None = None
    iterations: int = 15
    biases: bool = True
    global_mean: float | None = None
    init_scale: float = 0.1
    seed: int = 0
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not self.reg > 0:
            raise ValueError(
                f"reg must be > 0 (the systems are solved by Cholesky), got {self.reg}"
            )
        if self.reg_bias is not None and not self.reg_bias > 0:
            raise ValueError(f"reg_bias must be > 0, got {self.reg_bias}")

    @property
    def bias_reg(self) -> float:
        """The effective bias regularisation (``reg_bias`` or ``reg``)."""
        return self.reg if self.reg_bias is None else self.reg_bias


@dataclass
class AlsWrFactors:
    """Result of :func:`fit_als_wr`: float32 ``users``/``items`` (rows of the matrix, no ids),
    the global mean and the objective history."""

    users: Factors
    items: Factors
    global_mean: float
    objective: list[float]


# --------------------------------------------------------------------------- numba kernels


@njit(cache=True, parallel=True)
def _half_step_kernel(
    indptr: I64,
    indices: npt.NDArray[np.int32],
    values: F32,
    fixed_f: F32,
    fixed_b: F32,
    global_mean: float,
    reg: float,
    reg_bias: float,
    fit_bias: bool,
    out_f: F32,
    out_b: F32,
) -> int:  # pragma: no cover - jitted
    n_rows = indptr.shape[0] - 1
    k = fixed_f.shape[1]
    k1 = k + 1
    failed = 0
    for r in prange(n_rows):
        start = indptr[r]
        end = indptr[r + 1]
        n = end - start
        if n == 0:
            continue
        a = np.zeros((k1, k1))
        b = np.zeros(k1)
        w = np.empty(k1)
        w[k] = 1.0 if fit_bias else 0.0
        for p in range(start, end):
            j = indices[p]
            for f in range(k):
                w[f] = fixed_f[j, f]
            t = values[p] - global_mean - fixed_b[j]
            for f in range(k1):
                wf = w[f]
                b[f] += t * wf
                for g in range(f + 1):
                    a[f, g] += wf * w[g]
        for f in range(k):
            a[f, f] += reg * n
        if fit_bias:
            a[k, k] += reg_bias * n
        else:
            a[k, k] = 1.0
        if cholesky_solve(a, b, k1):
            for f in range(k):
                out_f[r, f] = b[f]
            out_b[r] = b[k]
        else:
            failed += 1
    return failed


# --------------------------------------------------------------------------- half-step API


def als_wr_half_step(
    indptr: I64,
    indices: npt.NDArray[np.int32],
    values: F32,
    fixed_f: F32,
    fixed_b: F32,
    global_mean: float,
    reg: float,
    reg_bias: float,
    fit_bias: bool,
    out_f: F32,
    out_b: F32,
) -> int:
    """Re-solve every row of a CSR block against the fixed side, in place.

    ``indptr/indices/values`` is the CSR of the side being solved (users x items for the user
    half-step, items x users for the item half-step); ``fixed_f``/``fixed_b`` are the other
    side's factors and biases; ``out_f``/``out_b`` (float32, C-contiguous) are overwritten for
    rows that have at least one rating. Returns the number of rows whose system was not
    positive definite (left unchanged; 0 unless the inputs hold NaN/Inf).
    """
    return int(
        _half_step_kernel(
            np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(indices, dtype=np.int32),
            np.ascontiguousarray(values, dtype=np.float32),
            fixed_f,
            fixed_b,
            float(global_mean),
            float(reg),
            float(reg_bias),
            bool(fit_bias),
            out_f,
            out_b,
        )
    )


def als_wr_half_step_reference(
    indptr: I64,
    indices: npt.NDArray[np.int32],
    values: F32,
    fixed_f: F32,
    fixed_b: F32,
    global_mean: float,
    reg: float,
    reg_bias: float,
    fit_bias: bool,
    out_f: F32,
    out_b: F32,
) -> int:
    """Plain NumPy twin of :func:`als_wr_half_step` (same signature and effect)."""
    k = fixed_f.shape[1]
    failed = 0
    for r in range(len(indptr) - 1):
        cols = indices[indptr[r] : indptr[r + 1]]
        n = len(cols)
        if n == 0:
            continue
        w = np.ones((n, k + 1))
        w[:, :k] = fixed_f[cols]
        if not fit_bias:
            w[:, k] = 0.0
        t = values[indptr[r] : indptr[r + 1]].astype(np.float64) - global_mean - fixed_b[cols]
        a = w.T @ w + np.diag([reg * n] * k + [reg_bias * n if fit_bias else 1.0])
        try:
            z = np.linalg.solve(a, w.T @ t)
        except np.linalg.LinAlgError:
            failed += 1
            continue
        if not np.all(np.isfinite(z)):
            failed += 1
            continue
        out_f[r] = z[:k]
        out_b[r] = z[k]
    return failed


# --------------------------------------------------------------------------- fit / metrics


@contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Temporarily set numba's thread count (``0`` = leave it as it is)."""
    if n <= 0:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _as_csr(ratings: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    csr = sp.csr_matrix(ratings)
    if csr.dtype != np.float32:
        csr = csr.astype(np.float32)
    return csr


def _factor_arg(x: npt.ArrayLike | None, shape: tuple[int, ...], name: str) -> F32 | None:
    if x is None:
        return None
    arr = np.array(x, dtype=np.float32, order="C", copy=True)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN/Inf; warm start from finite factors only")
    return arr


def predict_pairs(
    user_f: F32,
    user_b: F32,
    item_f: F32,
    item_b: F32,
    global_mean: float,
    u_rows: I64,
    i_rows: I64,
) -> F32:
    """Vectorised ``mu + b_u + b_i + x_u . y_i`` for row pairs (all rows must be valid)."""
    dots = np.einsum("ij,ij->i", user_f[u_rows], item_f[i_rows], dtype=np.float64)
    return (global_mean + user_b[u_rows] + item_b[i_rows] + dots).astype(np.float32)


def _coo_rows(csr: sp.csr_matrix) -> tuple[I64, I64]:
    rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    return rows, csr.indices.astype(np.int64)


def rmse(ratings: sp.spmatrix | sp.sparray, model: AlsWrFactors) -> float:
    """Root mean squared error of ``model`` over the stored entries of ``ratings``."""
    csr = _as_csr(ratings)
    if csr.nnz == 0:
        return float("nan")
    u, i = _coo_rows(csr)
    pred = predict_pairs(
        model.users.vectors,
        model.users.biases,
        model.items.vectors,
        model.items.biases,
        model.global_mean,
        u,
        i,
    )
    err = csr.data.astype(np.float64) - pred
    return float(np.sqrt(np.mean(err * err)))


def als_wr_objective(
    ratings: sp.spmatrix | sp.sparray,
    model: AlsWrFactors,
    reg: float,
    reg_bias: float,
) -> float:
    """The ALS-WR objective (squared error + count-weighted L2 terms) of ``model``."""
    csr = _as_csr(ratings)
    u, i = _coo_rows(csr)
    pred = predict_pairs(
        model.users.vectors,
        model.users.biases,
        model.items.vectors,
        model.items.biases,
        model.global_mean,
        u,
        i,
    )
    err = csr.data.astype(np.float64) - pred
    n_u = np.diff(csr.indptr).astype(np.float64)
    n_i = np.bincount(csr.indices, minlength=csr.shape[1]).astype(np.float64)
    xu = np.sum(model.users.vectors.astype(np.float64) ** 2, axis=1)
    yi = np.sum(model.items.vectors.astype(np.float64) ** 2, axis=1)
    penalty = reg * (n_u @ xu + n_i @ yi) + reg_bias * (
        n_u @ model.users.biases.astype(np.float64) ** 2
        + n_i @ model.items.biases.astype(np.float64) ** 2
    )
    return float(err @ err + penalty)


def fit_als_wr(
    ratings: sp.spmatrix | sp.sparray,
    params: AlsWrParams,
    *,
    user_factors: npt.ArrayLike | None = None,
    item_factors: npt.ArrayLike | None = None,
    user_bias: npt.ArrayLike | None = None,
    item_bias: npt.ArrayLike | None = None,
    track_objective: bool = False,
    callback: Callable[[int, AlsWrFactors], None] | None = None,
) -> AlsWrFactors:
    """Fit ALS-WR on a users x items CSR of explicit ratings (stored entries = observed).

    Given factors/biases are a warm start (copied, never mutated); missing ones start random
    (factors, ``N(0, init_scale)``, seeded) or at 0 (biases). Each iteration solves users then
    items; with a warm start, a few iterations make a cheap partial retrain. The user
    half-step only reads item factors and biases, so warm-start user factors matter only for
    users with no ratings (kept as given). ``track_objective`` records the objective after
    every iteration in ``objective`` (costs one pass over the data); ``callback(iteration,
    factors)`` is called after each iteration.
    """
    csr = _as_csr(ratings)
    if not np.all(np.isfinite(csr.data)):
        raise ValueError("ratings hold NaN/Inf")
    n_users, n_items = csr.shape
    k = params.factors
    rng = np.random.default_rng(params.seed)
    uf = _factor_arg(user_factors, (n_users, k), "user_factors")
    itf = _factor_arg(item_factors, (n_items, k), "item_factors")
    ub = _factor_arg(user_bias, (n_users,), "user_bias")
    ib = _factor_arg(item_bias, (n_items,), "item_bias")
    # Random starts for rows that have no ratings would survive as noise: start those at 0.
    if itf is None:
        itf = (rng.standard_normal((n_items, k)) * params.init_scale).astype(np.float32)
        itf[np.bincount(csr.indices, minlength=n_items) == 0] = 0.0
    if uf is None:
        uf = (rng.standard_normal((n_users, k)) * params.init_scale).astype(np.float32)
        uf[np.diff(csr.indptr) == 0] = 0.0
    if ub is None or not params.biases:
        ub = np.zeros(n_users, dtype=np.float32)
    if ib is None or not params.biases:
        ib = np.zeros(n_items, dtype=np.float32)
    if params.global_mean is not None:
        mu = float(params.global_mean)
    else:
        mu = float(np.mean(csr.data, dtype=np.float64)) if csr.nnz else 0.0

    model = AlsWrFactors(Factors(None, uf, ub), Factors(None, itf, ib), mu, [])
    csc = csr.T.tocsr()  # items x users
    reg, reg_b = params.reg, params.bias_reg
    with numba_threads(params.num_threads):
        for it in range(params.iterations):
            bad = als_wr_half_step(
                csr.indptr, csr.indices, csr.data, itf, ib, mu, reg, reg_b, params.biases, uf, ub
            )
            bad += als_wr_half_step(
                csc.indptr, csc.indices, csc.data, uf, ub, mu, reg, reg_b, params.biases, itf, ib
            )
            if bad:
                raise FloatingPointError(
                    f"ALS-WR iteration {it}: {bad} systems were not positive definite; "
                    "check the inputs for NaN/Inf or raise reg"
                )
            if track_objective:
                model.objective.append(als_wr_objective(csr, model, reg, reg_b))
            if callback is not None:
                callback(it, model)
    return model

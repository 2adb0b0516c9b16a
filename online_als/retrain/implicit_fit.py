"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through ``implicit`` (>= 0.7).

Input: a users x items CSR of event weights ``r_ui`` (summed per pair, see
``retrain.matrix``). Confidence follows ``implicit``: ``c_ui = alpha * r_ui`` for stored
entries and 1 for the rest; preference is 1 where ``r_ui > 0``. A negative weight means
"disliked": confidence ``|alpha * r_ui|`` with preference 0. This is the convention the
online fold-in kernels use too, so a retrained model and the online updates agree.

``alpha`` is multiplied into the matrix here and ``implicit`` is given ``alpha=1``: in
``implicit`` 0.7.3 the GPU model's ``fit`` ignores its ``alpha`` (only the CPU one applies
it), so doing it ourselves makes both backends fit the same objective.

Warm start: the given factors are copied into ``model.user_factors``/``model.item_factors``
before ``fit`` (``implicit`` only draws random factors for the ones left ``None``). With the
conjugate-gradient solver (default) both matter, as CG starts from the current vectors; with
``use_cg=False`` (exact Cholesky) only the item factors do. Deterministic for a given
``seed`` on CPU (each row is solved independently, whatever the thread count).

Example
-------
>>> import numpy as np, scipy.sparse as sp
>>> w = sp.random(30, 20, density=0.2, format="csr", random_state=0, dtype=np.float32)
>>> uf, itf = fit_implicit(w, ImplicitParams(factors=4, iterations=3, num_threads=1))
>>> uf.shape, itf.shape, uf.dtype
((30, 4), (20, 4), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

F32 = npt.NDArray[np.float32]

__all__ = ["ImplicitParams", "fit_implicit", "gpu_available"]


@dataclass(frozen=True)
class ImplicitParams:
    """Hyper-parameters of :func:`fit_implicit` (names follow ``implicit`` where they exist).

    ``use_gpu=None`` picks the GPU when ``implicit.gpu.HAS_CUDA``. ``num_threads=0`` lets
    ``implicit`` use every core. ``cg_steps`` applies to the CG solver only. ``init_scale``
    is the scale of the start vectors :func:`online_als.retrain.retrain` gives ids a warm
    start does not know (a cold fit uses ``implicit``'s own start, uniform [0, 0.01)).
    """

    factors: int = 64
    reg: float = 0.01
    alpha: float = 1.0
    iterations: int = 15
    use_cg: bool = True
    cg_steps: int = 3
    seed: int = 0
    num_threads: int = 0
    use_gpu: bool | None = None
    init_scale: float = 0.01

    def __post_init__(self) -> None:
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1, got {self.factors}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.reg < 0 or self.alpha <= 0:
            raise ValueError("reg must be >= 0 and alpha > 0")


def gpu_available() -> bool:
    """Whether ``implicit`` was built with CUDA and found a device."""
    try:
        import implicit.gpu
    except ImportError:  # pragma: no cover - implicit is a dependency
        return False
    return bool(implicit.gpu.HAS_CUDA)


def _warm(x: npt.ArrayLike | None, shape: tuple[int, int], name: str) -> F32 | None:
    if x is None:
        return None
    arr = np.array(x, dtype=np.float32, order="C", copy=True)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds NaN/Inf; warm start from finite factors only")
    return arr


def _make_model(params: ImplicitParams, use_gpu: bool) -> Any:
    if use_gpu:
        import implicit.gpu.als

        model = implicit.gpu.als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.reg,
            alpha=1.0,
            dtype=np.float32,
            iterations=params.iterations,
            random_state=params.seed,
        )
    else:
        import implicit.cpu.als

        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.reg,
            alpha=1.0,
            dtype=np.float32,
            use_native=True,
            use_cg=params.use_cg,
            iterations=params.iterations,
            num_threads=params.num_threads,
            random_state=params.seed,
        )
    model.cg_steps = params.cg_steps
    return model


def fit_implicit(
    weights: sp.spmatrix | sp.sparray,
    params: ImplicitParams,
    *,
    user_factors: npt.ArrayLike | None = None,
    item_factors: npt.ArrayLike | None = None,
    callback: Callable[[int, float, float | None], None] | None = None,
) -> tuple[F32, F32]:
    """Fit implicit ALS on a users x items CSR of weights; return float32 (users, items).

    ``user_factors``/``item_factors`` (shapes ``(n_users, factors)``/``(n_items, factors)``)
    warm-start the fit and are not mutated. ``callback(iteration, seconds, loss)`` is passed
    to ``implicit``. Raises ``implicit.utils.ModelFitError`` (or ``FloatingPointError``) when
    the factors come out non-finite.
    """
    csr = sp.csr_matrix(weights, dtype=np.float32)
    if not np.all(np.isfinite(csr.data)):
        raise ValueError("weights hold NaN/Inf")
    n_users, n_items = csr.shape
    k = params.factors
    uf = _warm(user_factors, (n_users, k), "user_factors")
    itf = _warm(item_factors, (n_items, k), "item_factors")
    if params.alpha != 1.0:
        csr = csr * np.float32(params.alpha)
    if params.iterations == 0 and (uf is None or itf is None):
        raise ValueError("iterations=0 needs both warm-start factor matrices")
    use_gpu = gpu_available() if params.use_gpu is None else params.use_gpu
    # implicit runs its own thread pool; a multi-threaded BLAS underneath only slows it down
    # (and implicit warns about it when the model is built). Import implicit first: importing
    # it loads scipy's OpenBLAS, which a limit entered before the import would not cover.
    import implicit.cpu.als  # noqa: F401

    with threadpool_limits(1, "blas"):
        model = _make_model(params, use_gpu)
        if use_gpu:
            import implicit.gpu

            if uf is not None:
                model.user_factors = implicit.gpu.Matrix(uf)
            if itf is not None:
                model.item_factors = implicit.gpu.Matrix(itf)
        else:
            model.user_factors, model.item_factors = uf, itf
        model.fit(csr, show_progress=False, callback=callback)
    if use_gpu:
        model = model.to_cpu()
    out_u = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    out_i = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    if not (np.all(np.isfinite(out_u)) and np.all(np.isfinite(out_i))):
        raise FloatingPointError(
            "implicit ALS produced NaN/Inf factors; raise reg or check weights"
        )
    return out_u, out_i

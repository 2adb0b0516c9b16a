"""Which engine fits a retrain: ``retrain.backend``.

``auto`` (default) is the mode's own in-process solver, as before: ALS-WR (numba) for
explicit, ``implicit`` for implicit (its GPU path when CUDA is visible). ``als_wr`` and
``implicit`` name those solvers explicitly and must match ``model.mode``. ``spark`` runs
``pyspark.ml.recommendation.ALS`` (:mod:`online_als.retrain.spark_als`) on
``retrain.spark_master`` with ``retrain.spark_conf`` passed through. Every other phase of the
retrain (read, gate, snapshot, load, catch-up, switch) is the same whichever engine fits.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from online_als.retrain import AlsWrParams, ImplicitParams, RetrainResult, WarmStart, retrain
from online_als.retrain.matrix import RatingMatrix
from worker.config import Settings

log = logging.getLogger("online_als.retrain")
_NATIVE = {"explicit": "als_wr", "implicit": "implicit"}


def spark_params(mode: str, params: AlsWrParams | ImplicitParams, **extra: Any) -> Any:
    """The :class:`~online_als.retrain.spark_als.SparkParams` with the same rank, λ,
    iterations, seed (and alpha / bias λ) as the in-process solver's params."""
    from online_als.retrain.spark_als import SparkParams

    if isinstance(params, AlsWrParams):
        return SparkParams(factors=params.factors, reg=params.reg, reg_bias=params.reg_bias,
                           iterations=params.iterations, seed=params.seed, **extra)
    return SparkParams(factors=params.factors, reg=params.reg, alpha=params.alpha,
                       iterations=params.iterations, seed=params.seed, implicit=True, **extra)


def spark_session(settings: Settings) -> Any:
    from online_als.retrain.spark_als import session

    r = settings.retrain
    return session(r.spark_master, {"spark.ui.showConsoleProgress": "false",
                                    **r.spark_conf_dict()})


def fit_model(settings: Settings, matrix: RatingMatrix, params: AlsWrParams | ImplicitParams,
              warm_start: WarmStart | None, spark: Any = None) -> RetrainResult:
    """Fit ``matrix`` with the configured backend (module docstring)."""
    r, mode = settings.retrain, settings.model.mode
    backend = r.backend
    if backend in ("als_wr", "implicit") and backend != _NATIVE[mode]:
        raise ValueError(f"retrain.backend={backend} cannot fit model.mode={mode}; use "
                         f"{_NATIVE[mode]}, auto or spark")
    if backend != "spark":
        return retrain(mode, matrix, params, warm_start)
    from online_als.retrain.spark_als import fit_spark

    if warm_start is not None:  # Spark's ALS takes no initial factors
        log.warning("retrain.backend=spark has no warm start: a cold fit of %d iterations",
                    r.iterations)
        params = dataclasses.replace(params, iterations=r.iterations)
    log.info("retrain fit on Spark %s", r.spark_master)
    return fit_spark(matrix, spark_params(mode, params),
                     spark if spark is not None else spark_session(settings),
                     staging_dir=r.spark_staging_dir or None)

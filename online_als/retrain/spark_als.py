"""The retrain fit on Spark MLlib: ``pyspark.ml.recommendation.ALS``.

Explicit mode fits ALS (Spark's weighted-λ: ``regParam`` times each row's rating count, the
same penalty as :mod:`online_als.retrain.als_wr`) on the ratings minus a bias baseline
``μ + b_u + b_i``. The baseline is the ALS-WR bias model, fitted here in a few closed-form
sweeps (NumPy, O(nnz) each); Spark fits the factors. The result has the same shape as
:func:`online_als.retrain.retrain`'s, biases included, so the rest of the retrain (gate,
snapshot, load, catch-up) does not know which engine fitted it. With ``biases=False`` only μ
is subtracted (plain Spark ALS, as the MLlib examples use it).

Implicit mode runs ``implicitPrefs=True`` on the summed weights: Spark's confidence is
``1 + alpha·|w|`` (``implicit``'s is ``alpha·w``) and a negative weight means preference 0,
as here.

Ids: Spark wants int ids. The matrix's rows and columns (``IdMap`` rows, one per distinct
string id) are those ids, and the factors come back keyed by them, so the mapping is a
bijection by construction and there is nothing that could collide. Rows Spark returns no
factor for (none when every id has a rating) stay zero.

Data crosses the Python/JVM boundary as Parquet (pyarrow) in ``staging_dir``: it must be
reachable by the executors when the master is not ``local``. ``pyspark`` is imported lazily;
``session(master, conf)`` builds (or reuses) the SparkSession.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from online_als.factors import Factors
from online_als.retrain import Mode, RetrainResult
from online_als.retrain.matrix import RatingMatrix

__all__ = ["SparkParams", "fit_spark", "session"]


@dataclass(frozen=True)
class SparkParams:
    """Hyper-parameters of :func:`fit_spark` (Spark ALS's names in the comments)."""

    factors: int = 20  # rank
    reg: float = 0.1  # regParam (times the row's count, as ALS-WR)
    iterations: int = 10  # maxIter
    implicit: bool = False  # implicitPrefs
    alpha: float = 1.0  # alpha (implicit)
    reg_bias: float | None = None  # explicit baseline's λ (None = reg), times the count
    biases: bool = True  # explicit: fit μ + b_u + b_i first, Spark fits the residual
    bias_sweeps: int = 10
    seed: int = 0  # seed
    num_blocks: int = 0  # numUserBlocks = numItemBlocks (0 = Spark's default, 10)
    checkpoint_interval: int = 5  # checkpointInterval: cuts the lineage (session() sets the dir)
    extra: dict[str, Any] = field(default_factory=dict)  # any other ALS param by name


def session(master: str = "local[2]", conf: dict[str, str] | None = None,
            app_name: str = "online-als-retrain") -> Any:
    """A SparkSession (``getOrCreate``: an existing one is reused with its own settings)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("retrain.backend=spark needs pyspark: pip install 'online-als[spark]'"
                          f" ({exc})") from None
    builder = SparkSession.builder.master(master).appName(app_name)
    # ALS's lineage grows with every iteration; serialising a long one overflows the default
    # thread stack ("Task serialization failed: StackOverflowError"), so give the JVM a larger
    # one and a checkpoint directory, which checkpointInterval needs to cut the lineage.
    settings = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "8",
                "spark.driver.memory": "2g", "spark.ui.showConsoleProgress": "false",
                "spark.driver.extraJavaOptions": "-Xss16m", **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, str(value))
    logging.getLogger("py4j").setLevel(logging.WARNING)  # one INFO line per gateway call
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if spark.sparkContext.getCheckpointDir() is None:
        import tempfile

        spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="online-als-spark-ckpt-"))
    return spark


def _bias_baseline(coo: sp.coo_matrix, reg: float, sweeps: int
                   ) -> tuple[float, np.ndarray, np.ndarray]:
    """μ and the ALS-WR biases of the bias-only model (alternating exact block minimisers)."""
    u, i = coo.row, coo.col
    r = coo.data.astype(np.float64)
    n_u, n_i = coo.shape
    mu = float(r.mean()) if r.size else 0.0
    cu = np.bincount(u, minlength=n_u).astype(np.float64)
    ci = np.bincount(i, minlength=n_i).astype(np.float64)
    bu, bi = np.zeros(n_u), np.zeros(n_i)
    for _ in range(max(sweeps, 1)):
        bu = np.bincount(u, r - mu - bi[i], minlength=n_u) / np.maximum(cu * (1 + reg), 1e-12)
        bi = np.bincount(i, r - mu - bu[u], minlength=n_i) / np.maximum(ci * (1 + reg), 1e-12)
    return mu, bu, bi


def _factors(df: Any, n: int, k: int, path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    df.write.mode("overwrite").parquet(str(path))
    table = pq.read_table(str(path))
    out = np.zeros((n, k), np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        flat = table.column("features").combine_chunks().flatten().to_numpy()
        out[ids] = flat.astype(np.float32).reshape(-1, k)
    return out


def fit_spark(matrix: RatingMatrix, params: SparkParams, spark: Any = None, *,
              staging_dir: str | None = None) -> RetrainResult:
    """Fit ``matrix`` with Spark ALS; see the module docstring. ``spark`` defaults to
    :func:`session` (``local[2]``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml.recommendation import ALS

    spark = spark if spark is not None else session()
    mode: Mode = "implicit" if params.implicit else "explicit"
    n_users, n_items = matrix.shape
    k = params.factors
    seconds = {"build_matrix": matrix.seconds}
    t0 = time.perf_counter()
    coo = matrix.matrix.tocoo()
    if coo.nnz == 0:
        raise ValueError("no ratings to fit")
    values = coo.data.astype(np.float64)
    mu, bu, bi = 0.0, np.zeros(n_users), np.zeros(n_items)
    if not params.implicit:
        if params.biases:
            reg_b = params.reg if params.reg_bias is None else params.reg_bias
            mu, bu, bi = _bias_baseline(coo, reg_b, params.bias_sweeps)
        else:
            mu = float(values.mean()) if values.size else 0.0
        values = values - mu - bu[coo.row] - bi[coo.col]
    stage = Path(tempfile.mkdtemp(prefix="online-als-spark-", dir=staging_dir))
    try:
        pq.write_table(pa.table({"u": coo.row.astype(np.int32), "i": coo.col.astype(np.int32),
                                 "r": values.astype(np.float32)}), str(stage / "ratings.parquet"))
        seconds["stage"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ratings = spark.read.parquet(str(stage / "ratings.parquet"))
        als = ALS(rank=k, maxIter=params.iterations, regParam=params.reg,
                  implicitPrefs=params.implicit, alpha=params.alpha, seed=params.seed,
                  userCol="u", itemCol="i", ratingCol="r", coldStartStrategy="nan",
                  checkpointInterval=params.checkpoint_interval, **params.extra)
        if params.num_blocks:
            als = als.setNumUserBlocks(params.num_blocks).setNumItemBlocks(params.num_blocks)
        model = als.fit(ratings)
        uf = _factors(model.userFactors, n_users, k, stage / "users")
        itf = _factors(model.itemFactors, n_items, k, stage / "items")
        seconds["fit"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    t0 = time.perf_counter()
    ub, ib = bu.astype(np.float32), bi.astype(np.float32)
    for name, arr in (("user_factors", uf), ("item_factors", itf), ("user_bias", ub),
                      ("item_bias", ib)):
        if not np.isfinite(arr).all():
            raise FloatingPointError(f"spark retrain produced non-finite {name}; raise reg")
    seconds["check"] = time.perf_counter() - t0
    users = None if matrix.users is None else matrix.users.ids
    items = None if matrix.items is None else matrix.items.ids
    return RetrainResult(mode, Factors(users, uf, ub), Factors(items, itf, ib), float(mu),
                         seconds, int(coo.nnz), {"mode": mode, "backend": "spark",
                                                 **dataclasses.asdict(params)})

"""``online-als tune --backend spark``: Spark's ParamGridBuilder with CrossValidator or
TrainValidationSplit over ``pyspark.ml.recommendation.ALS`` (explicit ratings, RMSE).

The ratings come from a rating file (``--dataset``) or from the Cassandra ratings log up to its
contiguous end (``--log``, what a retrain reads). Ids become the rows of ``IdMap``s (as in
:mod:`online_als.retrain.spark_als`) and are staged as Parquet for Spark. Spark's splits are
seeded random splits of the rows (Spark has no time-ordered split); ``coldStartStrategy=drop``
leaves out validation rows whose user or item the training part lacks, as the MLlib
documentation does.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from online_als.ratings import Ratings, concat

GRID_NAMES = {"k": "rank", "rank": "rank", "reg": "regParam", "iterations": "maxIter",
              "alpha": "alpha"}
DEFAULT_GRID = "k=10,50;reg=0.05,0.12"


def log_ratings(settings: Any) -> Ratings:
    """The archived log up to each partition's contiguous end."""
    from worker.stores.cassandra.store import CassandraStore

    with CassandraStore(settings.cassandra) as cass:
        cutoff = cass.contiguous_offsets(settings.kafka.topic)
        return concat(list(cass.iter_contiguous_log(settings.kafka.topic, cutoff,
                                                    chunk_rows=settings.retrain.chunk_rows)))


def tune(ratings: Ratings, grid: dict[str, list[float]], *, folds: int, iterations: int,
         seed: int, spark: Any) -> dict[str, Any]:
    """Grid search; rows of ``{"params", "rmse"}`` in grid order and the best one."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.ml.evaluation import RegressionEvaluator
    from pyspark.ml.recommendation import ALS
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit

    from online_als.retrain.matrix import build_matrix

    unknown = set(grid) - set(GRID_NAMES)
    if unknown:
        raise ValueError(f"unknown grid names {sorted(unknown)}; use {sorted(GRID_NAMES)}")
    coo = build_matrix([ratings], "last").matrix.tocoo()
    stage = Path(tempfile.mkdtemp(prefix="online-als-tune-"))
    try:
        pq.write_table(pa.table({"u": coo.row.astype(np.int32), "i": coo.col.astype(np.int32),
                                 "r": coo.data.astype(np.float32)}), str(stage / "r.parquet"))
        df = spark.read.parquet(str(stage / "r.parquet")).cache()
        als = ALS(userCol="u", itemCol="i", ratingCol="r", maxIter=iterations, seed=seed,
                  coldStartStrategy="drop")
        builder = ParamGridBuilder()
        for name, vals in grid.items():
            param = getattr(als, GRID_NAMES[name])
            cast = int if GRID_NAMES[name] in ("rank", "maxIter") else float
            builder = builder.addGrid(param, [cast(v) for v in vals])
        maps = builder.build()
        evaluator = RegressionEvaluator(metricName="rmse", labelCol="r", predictionCol="prediction")
        if folds:
            cv = CrossValidator(estimator=als, estimatorParamMaps=maps, evaluator=evaluator,
                                numFolds=folds, seed=seed).fit(df)
            scores = [float(x) for x in cv.avgMetrics]
        else:
            tvs = TrainValidationSplit(estimator=als, estimatorParamMaps=maps,
                                       evaluator=evaluator, trainRatio=0.9, seed=seed).fit(df)
            scores = [float(x) for x in tvs.validationMetrics]
        df.unpersist()
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    combos = [{name: m[getattr(als, GRID_NAMES[name])] for name in grid} for m in maps]
    rows: list[dict[str, Any]] = [{"params": p, "rmse": sc}
                                  for p, sc in zip(combos, scores, strict=True)]
    best = min(range(len(rows)), key=lambda j: (bool(np.isnan(scores[j])), scores[j]))
    return {"rows": rows, "best": rows[best], "combinations": len(rows), "ratings": int(coo.nnz),
            "validation": f"Spark CrossValidator {folds}-fold (random)" if folds
            else "Spark TrainValidationSplit 90/10 (random)"}

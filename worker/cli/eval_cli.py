"""``online-als evaluate`` and ``online-als tune``: offline accuracy without any server."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from typing import Any

import numpy as np

from worker.cli.common import EXIT_OK, UsageError, add_common, emit, settings_from


def _dataset(name: str) -> Any:
    """The named dataset or rating file; a missing or unreadable one is a usage error."""
    from online_als.datasets import load_ml_latest_small, load_movielens_100k, read_ratings

    try:
        if name == "ml-100k":
            return load_movielens_100k()
        if name == "ml-latest-small":
            return load_ml_latest_small()
        return read_ratings(name)
    except FileNotFoundError as exc:
        raise UsageError(f"dataset {name!r} not found ({exc}); pass ml-100k, ml-latest-small "
                         "or an existing rating file (CSV, TSV, MovieLens)") from None
    except UnicodeDecodeError:
        raise UsageError(f"dataset {name!r} is not a text rating file (binary?); pass a CSV, "
                         "TSV or MovieLens file") from None
    except (ValueError, IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"dataset {name!r} cannot be read: {exc}") from None


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="prequential (predict-then-learn) evaluation offline",
                       description="Stream a rating file in timestamp order through the online "
                                   "explicit model and report prequential RMSE/MAE; or, with "
                                   "--retrain, fit ALS-WR on a temporal split.")
    add_common(p)
    p.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-latest-small or a file")
    p.add_argument("--batch", type=int, default=1000, help="events per learn_batch call")
    p.add_argument("--retrain", action="store_true", help="ALS-WR on a 90/10 temporal split")
    add_learner_flag(p)
    p.set_defaults(func=_evaluate)


def add_learner_flag(p: Any) -> None:
    from online_als import defaults

    p.add_argument("--learner", choices=("adaptive", "sgd"), default=defaults.LEARNER,
                   help="adaptive: AdaGrad + session bias (online_als.adaptive); sgd: plain "
                        "biased-MF SGD, the kernel the worker runs today (default %(default)s)")


def _online_model(settings: Any, learner: str = "sgd", **params: Any) -> Any:
    """The explicit online learner from ``settings.model`` (defaults: online_als.defaults)."""
    from online_als.adaptive import AdaptiveModel
    from online_als.online import OnlineModel

    m = settings.model
    kw = {"k": m.rank, "lr": m.learning_rate, "reg": m.regularization,
          "reg_bias": m.bias_regularization, "clip": m.gradient_clip, "init_scale": m.init_scale,
          "seed": m.seed, "global_mean": m.global_mean, **params}
    if learner == "sgd":
        return OnlineModel.explicit(track_mean=True, **kw)
    k, seed, init, mean = (kw.pop(name) for name in ("k", "seed", "init_scale", "global_mean"))
    # every adaptive setting of model.* (acc_init, session_*, ...), then the grid's values; a
    # running global mean, as a prequential run over a data set has no version's mean
    base = dataclasses.replace(m.adaptive_params(), track_mean=True)
    return AdaptiveModel(int(k), dataclasses.replace(base, **kw), seed=seed, init_scale=init,
                         global_mean=mean)


def _evaluate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    data = _dataset(args.dataset).sort_by_time()
    m = settings.model
    if args.retrain:
        from online_als.retrain import AlsWrParams, retrain
        from online_als.retrain.matrix import build_matrix
        from online_als.serving.coldstart import predict_explicit

        n = int(len(data) * 0.9)
        train, test = data.slice(0, n), data.slice(n, len(data))
        matrix = build_matrix([train], "last")
        r = settings.retrain
        res = retrain("explicit", matrix, AlsWrParams(factors=m.rank, reg=r.explicit_reg,
                                                      reg_bias=r.explicit_reg_bias,
                                                      iterations=r.iterations))
        assert matrix.users is not None and matrix.items is not None
        pred = np.clip(predict_explicit(matrix.users.rows_for(test.user_ids, add=False),
                                        matrix.items.rows_for(test.item_ids, add=False),
                                        res.users.vectors, res.users.biases, res.items.vectors,
                                        res.items.biases, res.global_mean),
                       m.rating_min, m.rating_max)
        err = pred - test.values
        out = {"dataset": args.dataset, "protocol": "ALS-WR, 90/10 temporal split",
               "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}
    else:
        from online_als.evaluation import prequential

        res_p = prequential(_online_model(settings, args.learner), data.iter_batches(args.batch),
                            args.batch, settings.worker.prequential_window,
                            rating_range=(m.rating_min, m.rating_max))
        out = {"dataset": args.dataset, "protocol": "prequential, timestamp order",
               "learner": args.learner,
               "rmse": float(res_p.running_rmse[-1]), "mae": float(res_p.running_mae[-1]),
               "events": int(res_p.n_scored), "seconds": round(res_p.wall_seconds, 2)}
    emit(args, out, lambda d: "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in d.items()))
    return EXIT_OK


def add_tune_parser(sub: Any) -> None:
    p = sub.add_parser("tune", help="grid search of the online model's hyper-parameters",
                       description="Like Spark's TrainValidationSplit (default) or "
                                   "CrossValidator (--folds K): prequential RMSE of the online "
                                   "explicit model for every combination of the grid.")
    add_common(p)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--grid", default=None,
                   help="'name=v1,v2;name=...' over k, lr, reg, reg_bias, init_scale (and, for the "
                        "adaptive learner, lr_bias, acc_init, session_lr, session_reg, ...); "
                        "default k=32,64;lr=0.05,0.1;reg=0.0,0.02. With --backend spark: k, reg, "
                        "iterations, alpha (default k=10,50;reg=0.05,0.12)")
    p.add_argument("--backend", choices=("online", "spark"), default="online",
                   help="online: the online learner, prequential (default); spark: Spark ALS "
                        "through ParamGridBuilder + TrainValidationSplit (or CrossValidator "
                        "with --folds), RMSE")
    p.add_argument("--log", action="store_true",
                   help="--backend spark: tune on the Cassandra ratings log instead of --dataset")
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation instead")
    p.add_argument("--split", choices=("time", "random"), default="time",
                   help="folds of --folds: time = forward chaining, each fold trained only on "
                        "the ratings before it (default, right for streams); random = seeded "
                        "random folds (trains on the future)")
    add_learner_flag(p)
    p.set_defaults(func=_tune)


def _parse_grid(text: str) -> dict[str, list[float]]:
    grid: dict[str, list[float]] = {}
    for part in filter(None, text.split(";")):
        name, values = part.split("=", 1)
        grid[name.strip()] = [float(v) for v in values.split(",")]
    return grid


def _tune(args: argparse.Namespace) -> int:
    from online_als.evaluation import cross_validate, grid_search, temporal_split

    settings = settings_from(args)
    if args.backend == "spark":
        return _tune_spark(args, settings)
    data = _dataset(args.dataset).sort_by_time()
    grid = _parse_grid(args.grid or "k=32,64;lr=0.05,0.1;reg=0.0,0.02")
    grid_lists = {k: [int(v) if k == "k" else v for v in vs] for k, vs in grid.items()}

    def fit(train: Any, params: dict[str, Any]) -> Any:
        model = _online_model(settings, args.learner, **params)
        for batch in train.iter_batches(1000):
            if getattr(model, "wants_timestamps", False):
                model.learn_batch(batch.user_ids, batch.item_ids, batch.values, batch.timestamps)
            else:
                model.learn_batch(batch.user_ids, batch.item_ids, batch.values)
        return model

    if args.folds:
        result = cross_validate(fit, grid_lists, data, k_folds=args.folds, metric="rmse",
                                split=args.split, refit=False)
    else:
        train, valid = temporal_split(data, 0.1)
        result = grid_search(fit, grid_lists, train, valid, metric="rmse")
    rows = [{"params": r["params"], "rmse": float(r["score"])} for r in result.rows]
    best = rows[result.best_index]
    combos = len(list(itertools.product(*grid_lists.values())))
    split = f"{args.split} {args.folds}-fold" if args.folds else "last 10% by time"
    emit(args, {"best": best, "rows": rows, "combinations": combos, "validation": split,
                "learner": args.learner}, lambda d: "\n".join(
        [f"{'rmse':>8}  params"] + [f"{r['rmse']:>8.4f}  {r['params']}" for r in d["rows"]]
        + [f"best: {d['best']['params']} rmse={d['best']['rmse']:.4f} "
           f"({d['learner']}, validation: {d['validation']})"]))
    return EXIT_OK


def _tune_spark(args: argparse.Namespace, settings: Any) -> int:
    """``tune --backend spark`` (worker/control/spark_tune.py)."""
    from worker.control import spark_tune
    from worker.control.retrain_backend import spark_session

    if settings.model.mode != "explicit":
        raise UsageError("tune --backend spark scores RMSE: it needs model.mode=explicit")
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise UsageError("--backend spark needs pyspark: pip install 'online-als[spark]'") from None
    try:
        grid = _parse_grid(args.grid or spark_tune.DEFAULT_GRID)
    except ValueError:
        raise UsageError(f"--grid {args.grid!r}: expected 'name=v1,v2;name=...'") from None
    if args.log:
        data = spark_tune.log_ratings(settings)
        source = f"Cassandra log {settings.cassandra.keyspace}/{settings.kafka.topic}"
    else:
        data = _dataset(args.dataset)
        source = args.dataset
    if len(data) == 0:
        raise UsageError(f"no ratings in {source}")
    spark = spark_session(settings)
    try:
        out = spark_tune.tune(data, grid, folds=args.folds,
                              iterations=settings.retrain.iterations, seed=settings.model.seed,
                              spark=spark)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        spark.stop()
    out.update({"learner": "spark-als", "source": source})
    emit(args, out, lambda d: "\n".join(
        [f"{'rmse':>8}  params"] + [f"{r['rmse']:>8.4f}  {r['params']}" for r in d["rows"]]
        + [f"best: {d['best']['params']} rmse={d['best']['rmse']:.4f} "
           f"({d['learner']} on {d['source']}, {d['ratings']:,} ratings, validation: "
           f"{d['validation']})"]))
    return EXIT_OK

"""retrain.backend=spark: the CLI retrain on the real stack, id mapping, and ML-100K parity.

One SparkSession (``local[2]``) is shared by the tests of this module (a JVM start costs
~10 s); the CLI test starts its own, as a real ``online-als retrain`` would. Parity:

- explicit, fold u1 of mku.sh, k=50, λ=0.12 (bias λ 0.05), 20 iterations: Spark RMSE within
  2% of ALS-WR's;
- implicit, the time-window protocol of docs/evaluation.md (positives >= 4 with weight 1, the
  last 20% in 4 windows, a full refit before each), k=64, λ=0.05, alpha=10, 15 iterations:
  Spark NDCG@10 at least 95% of ``implicit``'s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from online_als.idmap import IdMap
from online_als.retrain import AlsWrParams, ImplicitParams, build_matrix, retrain
from online_als.serving import item_stats, predict_explicit, top_n_batch
from tests.conftest import Isolated, StackInfo, make_settings, require_module
from tests.streaming import produce, run_worker, store_for, synthetic_events
from worker.config import environ_for
from worker.control.retrain_backend import spark_params
from worker.stores.cassandra.store import CassandraStore

pytestmark = [pytest.mark.timeout(600)]
EXPLICIT = AlsWrParams(factors=50, reg=0.12, reg_bias=0.05, iterations=20, seed=0)
IMPLICIT = ImplicitParams(factors=64, reg=0.05, alpha=10.0, iterations=15, seed=0)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    require_module("pyspark")
    from online_als.retrain.spark_als import session

    s = session("local[2]", {"spark.sql.shuffle.partitions": "4"})
    yield s
    s.stop()


def test_string_ids_map_to_spark_ids_and_back(spark: Any) -> None:
    users = ["10", "010", "1e1", "a:b", "é", "{x}", "10 "]
    items = ["1", "01", "i 1", "ü"]
    rng = np.random.default_rng(0)
    u = [users[j % len(users)] for j in range(70)]
    i = [items[j % len(items)] for j in range(70)]
    m = build_matrix([(u, i, rng.integers(1, 6, 70).astype(np.float32))], "last")
    from online_als.retrain.spark_als import fit_spark

    res = fit_spark(m, spark_params("explicit", AlsWrParams(factors=4, iterations=3),
                                    num_blocks=2), spark)
    assert res.users.ids is not None and res.items.ids is not None
    assert res.users.ids == users and res.items.ids == items  # every id kept, none merged
    assert res.users.vectors.shape == (7, 4) and res.items.vectors.shape == (4, 4)
    assert np.all(np.abs(res.users.vectors).sum(1) > 0)  # each id got its own Spark factor
    assert len({row.tobytes() for row in res.users.vectors}) == len(users)


def _fold_u1(movielens: Any) -> tuple[Any, Any]:
    from online_als.evaluation import ml100k_folds

    return ml100k_folds(movielens)[0]


def _rmse(res: Any, m: Any, test: Any) -> float:
    pred = predict_explicit(m.users.rows_for(test.user_ids, add=False),
                            m.items.rows_for(test.item_ids, add=False),
                            res.users.vectors, res.users.biases, res.items.vectors,
                            res.items.biases, res.global_mean, item_mean=item_stats(m.matrix).mean)
    return float(np.sqrt(np.mean((np.clip(pred, 1.0, 5.0) - test.values) ** 2)))


@pytest.mark.slow
def test_explicit_rmse_within_2pct_of_als_wr_on_ml100k(spark: Any, movielens: Any) -> None:
    from online_als.retrain.spark_als import fit_spark

    train, test = _fold_u1(movielens)
    m = build_matrix([(train.user_ids, train.item_ids, train.values)], "last")
    als = _rmse(retrain("explicit", m, EXPLICIT), m, test)
    sp = _rmse(fit_spark(m, spark_params("explicit", EXPLICIT, num_blocks=2), spark), m, test)
    print(f"ML-100K u1 RMSE: ALS-WR {als:.4f}, Spark {sp:.4f} ({sp / als - 1:+.2%})")
    assert sp <= 1.02 * als, (sp, als)


class _Recommender:
    def __init__(self) -> None:
        self.res: Any = None
        self.matrix: Any = None  # the one res was fitted on: its id maps

    def __call__(self, user_ids: np.ndarray, n: int, exclude: Sequence[np.ndarray]) -> Any:
        users: IdMap = self.matrix.users
        items: IdMap = self.matrix.items
        rows = users.rows_for(user_ids, add=False)
        vecs = np.where((rows >= 0)[:, None], self.res.users.vectors[np.maximum(rows, 0)], 0)
        seen = [(r := items.rows_for(e, add=False))[r >= 0] for e in exclude]
        top, _ = top_n_batch(vecs.astype(np.float32), self.res.items.vectors, n, exclude=seen)
        ids = np.asarray(items.ids, dtype=object)
        return np.where(top >= 0, ids[np.maximum(top, 0)], "").astype(str)


@pytest.mark.slow
def test_implicit_ndcg_within_5pct_of_implicit_on_ml100k(spark: Any, movielens: Any) -> None:
    from online_als.datasets import load_movielens_100k
    from online_als.evaluation import evaluate_windows
    from online_als.retrain.spark_als import fit_spark

    data = load_movielens_100k(movielens)

    def ndcg(fit: Any) -> float:
        rec = _Recommender()

        def before(split: Any) -> None:
            h = split.history
            m = build_matrix([(h.user_ids, h.item_ids, np.ones(len(h), np.float32))], "sum")
            rec.res, rec.matrix = fit(m), m

        return evaluate_windows(data, rec, before_window=before).mean_ndcg

    base = ndcg(lambda m: retrain("implicit", m, IMPLICIT))
    sp = ndcg(lambda m: fit_spark(m, spark_params("implicit", IMPLICIT, num_blocks=2), spark))
    print(f"ML-100K window NDCG@10: implicit {base:.4f}, Spark {sp:.4f} ({sp / base - 1:+.2%})")
    assert sp >= 0.95 * base, (sp, base)


@pytest.mark.stack
@pytest.mark.parametrize("mode", ["explicit", "implicit"])
def test_cli_retrain_with_spark_backend_on_the_stack(stack: StackInfo, isolated: Isolated,
                                                     mode: str) -> None:
    require_module("pyspark")
    from worker.control.archive import Archiver

    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "model.mode": mode,
        "worker.batch_max_events": 500, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 4, "retrain.gate_margin": 10.0})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        events = synthetic_events(3000, 200, 100, seed=15, implicit=mode == "implicit")
        produce(settings, events)
        run_worker(settings, idle_exit_s=3)
        Archiver(settings).run(idle_exit_s=2)
        before = store_for(settings).current_version()
        proc = subprocess.run(
            [sys.executable, "-m", "worker.cli", "retrain", "--force", "--json",
             "--set", "retrain.backend=spark", "--set", "retrain.spark_master=local[2]"],
            env=environ_for(settings), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        assert report["outcome"] == "promoted", report
        store = store_for(settings)
        assert store.current_version() == report["version"] != before
        with CassandraStore(settings.cassandra) as cass:
            v = cass.get_version(report["version"])
            assert v.status == "promoted" and v.params["backend"] == "spark"
            assert 0 < v.counts["users"] <= len({e["user_id"] for e in events})
        cp = store.read_checkpoints(report["version"], settings.kafka.topic, [0])[0]
        assert cp.offset == len(events)  # caught up to the serving version
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


def test_backend_must_match_the_mode_and_spark_conf_is_parsed() -> None:
    from worker.config import ConfigError, load_config
    from worker.control.retrain_backend import fit_model

    s = load_config(overrides={"model.mode": "implicit", "retrain.backend": "als_wr",
                               "retrain.spark_conf": "spark.executor.memory=8g, a.b=c"},
                    environ={})
    assert s.retrain.spark_conf_dict() == {"spark.executor.memory": "8g", "a.b": "c"}
    m = build_matrix([(["a", "b"], ["x", "y"], [1.0, 1.0])], "sum")
    with pytest.raises(ValueError, match="cannot fit model.mode=implicit"):
        fit_model(s, m, ImplicitParams(factors=2, iterations=1), None)
    auto = load_config(overrides={"model.mode": "implicit"}, environ={})
    res = fit_model(auto, m, ImplicitParams(factors=2, iterations=1, use_gpu=False), None)
    assert res.users.vectors.shape == (2, 2)  # auto = the mode's own solver, as before
    with pytest.raises(ConfigError, match="retrain.spark_conf"):
        load_config(overrides={"retrain.spark_conf": "novalue"}, environ={})


def test_spark_tune_grid_on_rating_columns(spark: Any, movielens: Any) -> None:
    """`online-als tune --backend spark` scores a grid on Ratings (the log or a dataset)."""
    from online_als.datasets import load_movielens_100k
    from worker.control.spark_tune import tune

    data = load_movielens_100k(movielens).slice(0, 20_000)
    out = tune(data, {"k": [4, 8], "reg": [0.1]}, folds=0, iterations=3, seed=0, spark=spark)
    assert out["combinations"] == 2 and out["ratings"] == len(data)  # no duplicate pairs
    assert [r["params"] for r in out["rows"]] == [{"k": 4, "reg": 0.1}, {"k": 8, "reg": 0.1}]
    assert all(0.5 < r["rmse"] < 2.0 for r in out["rows"])
    assert out["best"]["rmse"] == min(r["rmse"] for r in out["rows"])

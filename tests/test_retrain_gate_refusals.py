"""The retrain gate refuses what it cannot check (issue 23, item 1), on the real stack.

Each case is a real retrain (Kafka -> worker -> Redis, archiver -> Cassandra, fit, gate) whose
gate cannot compare the candidate with the serving model, or finds it only slightly worse: the
candidate is rejected with a recorded reason and the serving version stays. ``--force-promote``
promotes it anyway and says so. The table in ``docs/retrain.md`` names these tests.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import orjson
import pytest

from online_als.evaluation.gate import Verdict
from online_als.factors import Factors
from tests.conftest import Isolated, StackInfo, persisted_settings
from tests.streaming import produce, run_worker, store_for
from tests.test_persistence import _stream_and_archive, archive
from tests.test_system_of_record import wipe
from worker.config import Settings, environ_for
from worker.control.retrain_job import RetrainReport, run_retrain
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.store import RedisStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def gate_settings(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    """Cassandra on, a small explicit model, margin 0 (the shipped margin), no warm start."""
    with persisted_settings(stack, isolated, **{
        "model.rank": 8, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 6, "retrain.gate_margin": 0.0, "retrain.holdout_fraction": 0.1,
        "retrain.holdout_min_events": 0, "retrain.warm_start": False}) as settings:
        yield settings


def _with(settings: Settings, **retrain: object) -> Settings:
    return settings.model_copy(update={"retrain": settings.retrain.model_copy(update=retrain)})


def _assert_rejected(settings: Settings, store: RedisStore, report: RetrainReport,
                     serving: int | None, verdict: Verdict, words: str) -> None:
    """Rejected with ``verdict``, the reason recorded in Cassandra, the serving version kept."""
    assert report.outcome == "rejected", report
    assert report.gate is verdict, report
    assert words in report.reason, report.reason
    assert store.current_version() == serving
    with CassandraStore(settings.cassandra) as cass:
        recorded = cass.get_version(int(report.version))  # type: ignore[arg-type]
    assert recorded is not None and recorded.status == "rejected"
    assert recorded.reason == report.reason


def test_an_empty_holdout_rejects_the_candidate(gate_settings: Settings) -> None:
    settings = _with(gate_settings, holdout_fraction=0.0, holdout_min_events=0)
    store = _stream_and_archive(settings, 3000, seed=21)
    serving = store.current_version()
    with CassandraStore(settings.cassandra) as cass:
        report = run_retrain(settings, cass, store, force=True)
    assert report.holdout_ratings == 0
    _assert_rejected(settings, store, report, serving, Verdict.NO_CANDIDATE_SCORE, "no rmse")


def test_a_serving_version_cassandra_never_knew_rejects_and_force_promote_says_so(
        gate_settings: Settings) -> None:
    """The workers ran without Cassandra (so it has no row or snapshot of the serving version
    and no stored score): the gate cannot check; ``--force-promote`` promotes and records it."""
    offline = gate_settings.model_copy(update={"cassandra": gate_settings.cassandra.model_copy(
        update={"enabled": False})})
    from producers.synthetic import generate

    chunk = next(generate(n_events=3000, n_users=200, n_items=80, k=4, seed=22, chunk_rows=3000))
    produce(gate_settings, [{"user_id": str(u), "item_id": str(i), "rating": float(v),
                             "ts": 1.7e9 + j} for j, (u, i, v) in enumerate(zip(
                                 chunk.user_ids.tolist(), chunk.item_ids.tolist(),
                                 chunk.values.tolist(), strict=True))])
    run_worker(offline, idle_exit_s=3)
    archive(gate_settings)
    store = store_for(gate_settings)
    serving = store.current_version()
    with CassandraStore(gate_settings.cassandra) as cass:
        assert cass.get_version(int(serving)) is None  # type: ignore[arg-type]
        report = run_retrain(gate_settings, cass, store, force=True)
    _assert_rejected(gate_settings, store, report, serving, Verdict.NO_SERVING_SCORE,
                     "cannot be rebuilt")
    # the operator's explicit override: promoted, and the output and Cassandra say why
    env = environ_for(gate_settings)
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force",
                           "--force-promote", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "promoted" and out["forced"] is True
    assert out["gate"] == Verdict.NO_SERVING_SCORE.value
    assert out["reason"].startswith("forced past the gate, which would have rejected it:")
    assert store.current_version() == out["version"] != serving
    with CassandraStore(gate_settings.cassandra) as cass:
        recorded = cass.get_version(out["version"])
    assert recorded is not None and recorded.status == "promoted"
    assert recorded.reason == out["reason"]
    human = subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force",
                            "--force-promote"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert human.returncode == 0, human.stderr[-2000:]
    assert "promoted" in human.stdout  # compared with the forced version: passes or not


def test_a_nan_serving_score_rejects_the_candidate(gate_settings: Settings) -> None:
    """The serving version's base snapshot in Cassandra holds NaN vectors (a diverged or
    corrupt model): its holdout score is NaN, which is no reason to promote."""
    store = _stream_and_archive(gate_settings, 3000, seed=23)
    serving = int(store.current_version())  # type: ignore[arg-type]
    with CassandraStore(gate_settings.cassandra) as cass:
        k = gate_settings.model.rank
        for kind, prefix in (("u", ""), ("i", "")):
            ids = [f"{prefix}{j}" for j in range(400)]
            cass.write_factors(serving, kind, Factors(ids, np.full((400, k), np.nan, np.float32),
                                                      np.full(400, np.nan, np.float32)))
        report = run_retrain(gate_settings, cass, store, force=True)
    _assert_rejected(gate_settings, store, report, serving, Verdict.NO_SERVING_SCORE, "nan")


def test_a_serving_model_of_another_mode_is_incomparable(gate_settings: Settings) -> None:
    store = _stream_and_archive(gate_settings, 3000, seed=24)
    serving = store.current_version()
    implicit = gate_settings.model_copy(update={"model": gate_settings.model.model_copy(
        update={"mode": "implicit"})})
    with CassandraStore(implicit.cassandra) as cass:
        report = run_retrain(implicit, cass, store, force=True)
    _assert_rejected(implicit, store, report, serving, Verdict.INCOMPARABLE, "cannot be compared")


def test_redis_without_a_serving_version_while_cassandra_records_one_rejects(
        gate_settings: Settings) -> None:
    store = _stream_and_archive(gate_settings, 3000, seed=25)
    wipe(store)  # Redis lost its state; Cassandra still records the serving version
    with CassandraStore(gate_settings.cassandra) as cass:
        report = run_retrain(gate_settings, cass, store, force=True)
    _assert_rejected(gate_settings, store, report, None, Verdict.NO_SERVING_SCORE, "restore")


def test_a_slightly_worse_candidate_is_rejected_and_a_margin_above_it_promotes(
        gate_settings: Settings) -> None:
    """The serving model is a retrain (reg 0.08); a candidate fitted on the same data with a
    slightly worse reg loses by under 5% on the same holdout: margin 0 rejects it, a margin
    above its loss promotes it (``passed``)."""
    store = _stream_and_archive(gate_settings, 6000, seed=26)
    good = _with(gate_settings, explicit_reg=0.08)
    with CassandraStore(good.cassandra) as cass:
        first = run_retrain(good, cass, store, force=True)
        assert first.outcome == "promoted", first
        serving = store.current_version()
        worse = _with(gate_settings, explicit_reg=0.2)
        report = run_retrain(worse, cass, store, force=True)
        loss = report.metrics["rmse"] / report.metrics["serving_rmse"] - 1
        assert 0 < loss < 0.05, report.metrics  # slightly worse, not reg = 1e6
        _assert_rejected(worse, store, report, serving, Verdict.WORSE, "worse than the serving")
        lenient = _with(worse, gate_margin=round(loss * 1.5, 4) + 0.001)
        again = run_retrain(lenient, cass, store, force=True)
    assert again.outcome == "promoted" and again.gate is Verdict.PASSED, again
    assert again.metrics["rmse"] == pytest.approx(report.metrics["rmse"], rel=1e-3)
    assert store.current_version() == again.version

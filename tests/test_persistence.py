"""Versions on the real stack: restore, retrain while streaming, rollback, killed retrains,
compare-and-set switches, retention, and one meaning of item `n`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from online_als.factors import Factors
from tests.conftest import Isolated, StackInfo, make_settings, persisted_settings
from tests.streaming import produce, run_worker, start_worker_thread, store_for, synthetic_events
from tests.test_system_of_record import assert_same_state, redis_state, wipe
from tests.test_worker_stream import assert_redis_equals, reference_model
from worker.config import Settings, environ_for
from worker.control import lifecycle
from worker.control.archive import Archiver
from worker.control.retrain_job import CRASH_ENV, run_retrain
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.bulk_load import delete_namespace
from worker.stores.redis.store import RedisStore, dump_vectors

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def persisted(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    with persisted_settings(stack, isolated, **{
        "model.rank": 8, "worker.batch_max_events": 500,
        "archive.snapshot_interval_s": 0, "retrain.iterations": 4, "retrain.gate_margin": 10.0,
        "retrain.lock_ttl_s": 1.5}) as settings:
        yield settings


def archive(settings: Settings, idle_exit_s: float = 2.0) -> Archiver:
    archiver = Archiver(settings)
    archiver.run(idle_exit_s=idle_exit_s)
    return archiver


def item_counts(settings: Settings, version: int) -> dict[str, int]:
    store = store_for(settings)
    ids = dump_vectors(store, version, "i", settings.model.rank).id_list()
    return {i: int(store.client.hget(store.keys.item(version, i), "n") or 0) for i in ids}


def test_restore_and_self_restore_reach_the_same_state(persisted: Settings) -> None:
    events = synthetic_events(4000, 300, 150, seed=11)
    produce(persisted, events)
    run_worker(persisted, idle_exit_s=3)
    assert archive(persisted).archived_total == len(events)
    before = redis_state(persisted)
    store = store_for(persisted)
    wipe(store)
    with CassandraStore(persisted.cassandra) as cass:
        report = lifecycle.restore(persisted, cass, store)
    assert report.log_events == len(events) and report.checkpoints == {0: len(events)}
    assert_same_state(before, redis_state(persisted))
    # a worker started on an empty Redis restores by itself, then finds nothing left to apply
    wipe(store)
    again = run_worker(persisted, idle_exit_s=2)
    assert again.applied_total == 0
    assert_same_state(before, redis_state(persisted))


def test_retrain_while_streaming_keeps_every_event_and_rollback_serves_old_vectors(
        persisted: Settings) -> None:
    first = synthetic_events(3000, 200, 100, seed=12)
    produce(persisted, first)
    run_worker(persisted, idle_exit_s=3)
    archive(persisted)
    old = redis_state(persisted)
    more = synthetic_events(1000, 250, 120, seed=13)
    store = store_for(persisted)
    _, thread = start_worker_thread(persisted, idle_exit_s=8)
    archiver = Archiver(persisted)
    athread = threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 8}, daemon=True)
    athread.start()
    with CassandraStore(persisted.cassandra) as cass:
        produce(persisted, more[:500])  # flows while the retrain reads, fits and catches up
        report = run_retrain(persisted, cass, store, force=True)
        produce(persisted, more[500:])
        thread.join(120)
        athread.join(120)
        assert report.outcome == "promoted", report.reason
        new_version = store.current_version()
        assert new_version == report.version != old["version"]
        assert sum(report.boundary.values()) <= len(first) + 500  # only archived events
        total = first + more
        cp = store.read_checkpoints(new_version, persisted.kafka.topic, [0])[0]
        assert cp.offset == len(total) and not cp.has_pending
        seen = sum(int(store.client.hlen(store.keys.seen(new_version, u)))
                   for u in {str(e["user_id"]) for e in total})
        assert seen == len({(e["user_id"], e["item_id"]) for e in total})
        users = set(dump_vectors(store, new_version, "u", persisted.model.rank).id_list())
        assert users == {str(e["user_id"]) for e in total}
        # `n` counts events per item after a retrain too (not distinct users)
        assert item_counts(persisted, new_version) == Counter(str(e["item_id"]) for e in total)
        assert cass.get_version(new_version).status == "promoted"
        old_v = int(old["version"])  # type: ignore[call-overload]
        resident = dump_vectors(store, old_v, "i", persisted.model.rank)
        result = lifecycle.rollback(persisted, cass, store, old_v, "test rollback")
        assert result["loaded_from_cassandra"] is False
        assert store.current_version() == old_v
        got = dump_vectors(store, old_v, "i", persisted.model.rank)
        assert got.ids == resident.ids
        np.testing.assert_array_equal(got.vectors, resident.vectors)
        # not resident any more: rollback rebuilds it from Cassandra, as of the whole log
        lifecycle.rollback(persisted, cass, store, int(new_version), "forward again")  # type: ignore[arg-type]
        delete_namespace(store, old_v)
        result = lifecycle.rollback(persisted, cass, store, old_v, "test rollback from cassandra")
        assert result["loaded_from_cassandra"] is True
        assert store.current_version() == old_v
        cp = store.read_checkpoints(old_v, persisted.kafka.topic, [0])[0]
        assert cp.offset == len(total)
        # the bootstrap version rebuilt from the log equals the online model fed everything
        assert_redis_equals(persisted, reference_model(persisted, total))
        assert item_counts(persisted, old_v) == Counter(str(e["item_id"]) for e in total)
        assert [s.version for s in cass.list_switches(limit=3)] == [old_v, new_version, old_v]
        assert cass.get_version(old_v).status == "promoted"
        assert cass.get_version(new_version).status == "rolled_back"


def test_killed_retrains_leave_the_current_version_serving_and_are_failed_later(
        persisted: Settings) -> None:
    events = synthetic_events(2000, 150, 80, seed=14)
    produce(persisted, events)
    run_worker(persisted, idle_exit_s=3)
    archive(persisted)
    before = redis_state(persisted)
    env = environ_for(persisted)
    for phase in ("fit", "snapshot", "load", "catchup"):
        env[CRASH_ENV] = phase
        proc = subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force"],
                              env=env, timeout=300)
        assert proc.returncode == 137
        assert_same_state(before, redis_state(persisted))
        time.sleep(1.6)  # the dead retrain's lock lease runs out
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        left = {v.version: v.status for v in cass.list_versions()}
        # each retrain failed what the killed one before it left; the last one is still there
        assert sorted(left.values()) == ["failed", "failed", "promoted", "ready"]
        resident = lifecycle.resident_versions(store)
        assert len(resident) == 2  # the last killed retrain's namespace is still there
        # the next retrain fails what they left and removes their namespaces
        with lifecycle.retrain_lock(store, 5):
            failed = lifecycle.abandon_unfinished(store, cass)
        statuses = {v.version: v.status for v in cass.list_versions()}
    assert failed and all(statuses[v] == "failed" for v in failed if v in statuses)
    assert set(statuses.values()) == {"promoted", "failed"}
    assert lifecycle.resident_versions(store) == [before["version"]]
    assert_redis_equals(persisted, reference_model(persisted, events))


def test_a_retrain_never_switches_away_from_a_rollback_made_meanwhile(persisted: Settings) -> None:
    events = synthetic_events(1500, 100, 60, seed=15)
    produce(persisted, events)
    run_worker(persisted, idle_exit_s=3)
    archive(persisted)
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        first = store.current_version()
        second = run_retrain(persisted, cass, store, force=True).version
        assert store.current_version() == second
        lifecycle.rollback(persisted, cass, store, int(first), "operator rollback")  # type: ignore[arg-type]
        # a retrain that started while `second` served now tries to promote its version
        third = store.allocate_version()
        store.write_meta(third, {"format": 1, "mode": "explicit", "rank": 8, "status": "ready"})
        from worker.stores.cassandra.store import ModelVersion

        cass.create_version(ModelVersion(version=third, mode="explicit", rank=8))
        empty = Factors([], np.zeros((0, 8)), np.zeros(0))
        cass.write_factors(third, "u", empty)
        cass.write_factors(third, "i", empty)
        cass.set_version_status(third, "ready")
        with pytest.raises(lifecycle.SwitchRefused, match="someone switched"):
            lifecycle.promote(persisted, cass, store, third, expected=second)
        assert store.current_version() == first
        assert cass.get_version(third).status == "failed"
        assert store.read_meta(third) is None


def test_retention_keeps_only_keep_last_versions_resident(persisted: Settings) -> None:
    settings = persisted.model_copy(update={"retrain": persisted.retrain.model_copy(
        update={"keep_last": 2, "keep_promoted_days": 30})})
    produce(settings, synthetic_events(1000, 80, 40, seed=16))
    run_worker(settings, idle_exit_s=3)
    archive(settings)
    store = store_for(settings)
    with CassandraStore(settings.cassandra) as cass:
        versions = [store.current_version()]
        for _ in range(3):
            versions.append(run_retrain(settings, cass, store, force=True).version)
        result = lifecycle.apply_retention(settings, cass, store)
        assert lifecycle.resident_versions(store) == versions[-2:]
        assert result["evicted_from_redis"] == versions[:2]
        # promoted versions younger than keep_promoted_days stay in Cassandra
        assert [v.version for v in cass.list_versions()] == versions
        # and an evicted one comes back from Cassandra on rollback
        back = lifecycle.rollback(settings, cass, store, int(versions[1]), "test")  # type: ignore[arg-type]
        assert back["loaded_from_cassandra"] is True


def test_catch_up_never_applies_past_the_serving_version(persisted: Settings) -> None:
    events = synthetic_events(2500, 150, 80, seed=17)
    produce(persisted, events[:2000])
    run_worker(persisted, idle_exit_s=3)
    archive(persisted)
    produce(persisted, events[2000:])  # in Kafka, not yet applied by any worker
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        report = run_retrain(persisted, cass, store, force=True)
    assert report.outcome == "promoted"
    version = int(report.version)  # type: ignore[arg-type]
    cp = store.read_checkpoints(version, persisted.kafka.topic, [0])[0]
    assert cp.offset == 2000 and not cp.has_pending  # the serving version's position, no more
    run_worker(persisted, idle_exit_s=3)
    assert store.read_checkpoints(version, persisted.kafka.topic, [0])[0].offset == 2500
    assert item_counts(persisted, version) == Counter(str(e["item_id"]) for e in events)


def _stream_and_archive(settings: Settings, n: int, seed: int) -> RedisStore:
    """``n`` synthetic ratings through Kafka, a worker and the archiver; the worker's store."""
    from producers.synthetic import generate

    chunk = next(generate(n_events=n, n_users=300, n_items=100, k=4, seed=seed, chunk_rows=n))
    events = [{"user_id": str(u), "item_id": str(i), "rating": float(v), "ts": 1.7e9 + j}
              for j, (u, i, v) in enumerate(zip(chunk.user_ids.tolist(), chunk.item_ids.tolist(),
                                                chunk.values.tolist(), strict=True))]
    produce(settings, events)
    run_worker(settings, idle_exit_s=3)
    archive(settings)
    return store_for(settings)


def test_the_gate_rejects_a_candidate_worse_than_the_serving_model_on_the_same_holdout(
        stack: StackInfo, isolated: Isolated) -> None:

    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 2, "retrain.gate_margin": 0.0, "retrain.holdout_fraction": 0.1,
        "retrain.explicit_reg": 1e6, "retrain.explicit_reg_bias": 1e6})  # a useless candidate
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        store = _stream_and_archive(settings, 8000, seed=3)
        serving = store.current_version()
        with CassandraStore(settings.cassandra) as cass:
            report = run_retrain(settings, cass, store, force=True)
            assert report.outcome == "rejected", report
            assert report.metrics["rmse"] > report.metrics["serving_rmse"]
            assert "rmse" in report.reason and store.current_version() == serving
            assert cass.get_version(int(report.version)).status == "rejected"  # type: ignore[arg-type]
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


def test_the_shipped_gate_rule_rejects_a_worse_candidate_and_records_why(
        stack: StackInfo, isolated: Isolated) -> None:
    """No gate setting given: the shipped rule (holdout of at least ``holdout_min_events``,
    never more than half the log; margin 0) keeps the serving version and says why."""
    from worker.config import RetrainSettings

    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 2, "retrain.explicit_reg": 1e3,
        "retrain.explicit_reg_bias": 1e3})  # a useless candidate: about the global mean
    shipped = RetrainSettings()
    r = settings.retrain
    assert (r.holdout_fraction, r.holdout_min_events, r.gate_margin) == (
        shipped.holdout_fraction, shipped.holdout_min_events, shipped.gate_margin)
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        n = 8000
        store = _stream_and_archive(settings, n, seed=5)
        serving = store.current_version()
        with CassandraStore(settings.cassandra) as cass:
            report = run_retrain(settings, cass, store, force=True)
            # 2% of 8,000 is 160; the minimum (5,000) is capped at half the log
            assert report.holdout_ratings == min(r.holdout_min_events, n // 2)
            assert report.boundary == {0: n - report.holdout_ratings}
            assert report.outcome == "rejected", report
            assert report.metrics["rmse"] > report.metrics["serving_rmse"]
            assert report.reason.startswith("rmse ") and "same holdout" in report.reason
            assert store.current_version() == serving
            recorded = cass.get_version(int(report.version))  # type: ignore[arg-type]
            assert recorded is not None and recorded.status == "rejected"
            assert recorded.reason == report.reason
            assert recorded.metrics["serving_rmse"] == pytest.approx(report.metrics["serving_rmse"])
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()

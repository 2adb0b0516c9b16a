"""Cassandra persistence on the real stack: restore, retrain while streaming, crash, rollback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import (
    produce,
    run_worker,
    start_worker_thread,
    store_for,
    synthetic_events,
)
from tests.test_worker_stream import assert_redis_equals, reference_model
from worker.bulk_load import delete_namespace
from worker.cassandra_store import CassandraStore
from worker.config import Settings, environ_for
from worker.ops_cli import rollback
from worker.redis_store import RedisStore, dump_vectors
from worker.restore import restore
from worker.retrain_job import CRASH_ENV, run_retrain

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def persisted(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "worker.batch_max_events": 500,
        "worker.persist_interval_s": 0.5, "retrain.iterations": 5, "retrain.gate_margin": 10.0})
    yield settings
    with CassandraStore(settings.cassandra) as cass:
        cass.drop_keyspace()


def wipe(store: RedisStore) -> None:
    """Lose this test's Redis state (like FLUSHALL, without touching other tests' keys)."""
    keys = list(store.client.scan_iter(match=f"{store.keys.prefix}:*", count=10000))
    if keys:
        store.client.unlink(*keys)


def snapshot(settings: Settings) -> dict[str, object]:
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    users = dump_vectors(store, version, "u", settings.model.rank)
    items = dump_vectors(store, version, "i", settings.model.rank)
    cps = store.read_checkpoints(version, settings.kafka.topic, [0])
    return {"version": version, "users": users, "items": items, "offset": cps[0].offset}


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a["version"] == b["version"] and a["offset"] == b["offset"]
    for kind in ("users", "items"):
        ids_a, f_a, b_a = a[kind]  # type: ignore[misc]
        ids_b, f_b, b_b = b[kind]  # type: ignore[misc]
        assert ids_a == ids_b
        np.testing.assert_array_equal(f_a, f_b)
        np.testing.assert_array_equal(b_a, b_b)


def test_flushall_then_restore_reaches_the_same_factors_and_offsets(persisted: Settings) -> None:
    events = synthetic_events(4000, 300, 150, seed=11)
    produce(persisted, events)
    worker = run_worker(persisted, idle_exit_s=3)
    assert worker.write_behind is not None and worker.write_behind.persisted_events == len(events)
    before = snapshot(persisted)
    store = store_for(persisted)
    wipe(store)
    with CassandraStore(persisted.cassandra) as cass:
        report = restore(persisted, cass, store)
    assert report.log_events == len(events)
    assert_same(before, snapshot(persisted))
    # a worker started on an empty Redis restores by itself, then finds nothing left to apply
    wipe(store)
    again = run_worker(persisted, idle_exit_s=2)
    assert again.applied_total == 0
    assert_same(before, snapshot(persisted))


def test_retrain_while_streaming_keeps_every_event_and_rollback_serves_old_vectors(
        persisted: Settings) -> None:
    first = synthetic_events(3000, 200, 100, seed=12)
    produce(persisted, first)
    run_worker(persisted, idle_exit_s=3)
    old = snapshot(persisted)
    more = synthetic_events(1000, 250, 120, seed=13)
    store = store_for(persisted)
    worker, thread = start_worker_thread(persisted, idle_exit_s=8)
    with CassandraStore(persisted.cassandra) as cass:
        produce(persisted, more[:500])  # flows while the retrain reads, fits and catches up
        report = run_retrain(persisted, cass, store, force=True)
        produce(persisted, more[500:])
        thread.join(120)
        assert report.outcome == "promoted", report.reason
        new_version = store.current_version()
        assert new_version == report.version != old["version"]
        total = len(first) + len(more)
        cp = store.read_checkpoints(new_version, persisted.kafka.topic, [0])[0]
        assert cp.offset == total and not cp.has_pending
        seen = sum(int(store.client.hlen(store.keys.seen(new_version, u)))
                   for u in {str(e["user_id"]) for e in first + more})
        assert seen == len({(e["user_id"], e["item_id"]) for e in first + more})
        users = set(dump_vectors(store, new_version, "u", persisted.model.rank)[0])
        assert users == {str(e["user_id"]) for e in first + more}
        assert cass.get_version(new_version).status == "promoted"
        old_v = int(old["version"])  # type: ignore[call-overload]
        resident = dump_vectors(store, old_v, "i", persisted.model.rank)
        result = rollback(persisted, cass, store, old_v, "test rollback")
        assert result["loaded_from_cassandra"] is False
        assert store.current_version() == old_v
        ids, f, _ = dump_vectors(store, old_v, "i", persisted.model.rank)
        assert ids == resident[0]
        np.testing.assert_array_equal(f, resident[1])
        # not resident any more: rollback loads the persisted snapshot from Cassandra
        rollback(persisted, cass, store, int(new_version), "forward again")  # type: ignore[arg-type]
        delete_namespace(store, old_v)
        result = rollback(persisted, cass, store, old_v, "test rollback from cassandra")
        assert result["loaded_from_cassandra"] is True
        assert store.current_version() == old_v
        ids, f, _ = dump_vectors(store, old_v, "i", persisted.model.rank)
        assert ids == resident[0]
        np.testing.assert_array_equal(f, resident[1])
        assert [s.version for s in cass.list_switches(limit=3)] == [old_v, new_version, old_v]
        assert cass.get_version(old_v).status == "promoted"
        assert cass.get_version(new_version).status == "rolled_back"


def test_retrain_killed_midway_leaves_the_current_version_serving(persisted: Settings) -> None:
    events = synthetic_events(2000, 150, 80, seed=14)
    produce(persisted, events)
    run_worker(persisted, idle_exit_s=3)
    before = snapshot(persisted)
    env = environ_for(persisted)
    for phase in ("fit", "snapshot", "load"):
        env[CRASH_ENV] = phase
        proc = subprocess.run([sys.executable, "-m", "worker.cli", "retrain", "--force"],
                              env=env, timeout=300)
        assert proc.returncode == 137
        assert_same(before, snapshot(persisted))
    with CassandraStore(persisted.cassandra) as cass:
        statuses = {v.version: v.status for v in cass.list_versions()}
    assert all(s != "promoted" for v, s in statuses.items() if v != before["version"])
    # the serving model is untouched: it still equals the in-memory model fed the same events
    assert_redis_equals(persisted, reference_model(persisted, events))

"""Leases and version counters when a process dies or Redis goes back in time, and what
``restore`` says when Cassandra holds nothing to restore (issue 21). Real servers only."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Isolated, StackInfo, persisted_settings
from tests.streaming import produce, run_worker, store_for, synthetic_events
from worker.config import Settings, environ_for
from worker.control import lifecycle
from worker.control.archive import Archiver
from worker.control.leases import holder as holder_of
from worker.control.retrain_job import run_retrain
from worker.stores.cassandra.store import CassandraStore, ModelVersion

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def persisted(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    with persisted_settings(stack, isolated, migrate=False, **{
        "model.rank": 8, "worker.batch_max_events": 400,
        "archive.batch_max_events": 700, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 3, "retrain.gate_margin": 10.0}) as settings:
        yield settings


_HOLD = """
import sys, time
from worker.config import load_config
from worker.control.lifecycle import retrain_lock
from worker.stores.redis.store import RedisStore
store = RedisStore.from_settings(load_config().redis)
with retrain_lock(store, 30):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_retrains_lease_says_who_holds_it_and_when_it_expires(
        persisted: Settings) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD], env=environ_for(persisted),
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    store = store_for(persisted)
    with pytest.raises(lifecycle.LeaseHeld) as refused, lifecycle.retrain_lock(store, 30):
        pass
    message = str(refused.value)
    assert f"pid {holder.pid} on host {socket.gethostname()}" in message, message
    m = re.search(r"expires in (\d+\.\d) s", message)
    assert m is not None and 0 < float(m.group(1)) <= 30, message
    assert "lapses by itself" in message
    # it does lapse: once the key's TTL runs out the next retrain gets the lease
    store.client.pexpire(store.keys.retrain_lock(), 50)
    time.sleep(0.3)
    with lifecycle.retrain_lock(store, 30):
        assert holder_of(store, store.keys.retrain_lock()) is not None


def test_version_allocation_never_reuses_a_number_cassandra_knows(persisted: Settings) -> None:
    store = store_for(persisted)
    counter = store.keys.version_counter()
    assert store.allocate_version() == 1
    assert store.allocate_version(floor=7) == 8  # raised to the floor, then incremented
    store.client.set(counter, 3)  # Redis went back in time (old RDB, promoted replica)
    assert store.allocate_version(floor=8) == 9
    assert store.allocate_version(floor=2) == 10  # a floor below the counter changes nothing
    with CassandraStore(persisted.cassandra) as cass:
        cass.migrate()
        cass.create_version(ModelVersion(version=12, mode="explicit", rank=8))
        store.client.set(counter, 1)
        assert lifecycle.allocate_version(store, cass) == 13


def test_a_retrain_after_the_counter_went_back_promotes_a_new_number(
        persisted: Settings) -> None:
    produce(persisted, synthetic_events(1500, 120, 60, seed=51))
    run_worker(persisted, idle_exit_s=3)
    Archiver(persisted).run(idle_exit_s=2)
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        first = run_retrain(persisted, cass, store, force=True)
        assert first.outcome == "promoted", first
        # Redis restarted from an RDB taken before that retrain: its counter is behind
        store.client.set(store.keys.version_counter(), 1)
        second = run_retrain(persisted, cass, store, force=True)
        assert second.outcome == "promoted", second
        assert second.version > first.version
        assert store.current_version() == second.version


def test_restore_explains_an_empty_keyspace_and_what_to_do(persisted: Settings) -> None:
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "restore", "--log-level",
                           "WARNING"], env=environ_for(persisted), capture_output=True,
                          text=True, timeout=120)
    out = proc.stdout
    assert proc.returncode == 3, proc.stdout + proc.stderr
    ks, topic = persisted.cassandra.keyspace, persisted.kafka.topic
    assert "Cassandra holds no promoted model version to restore" in out
    assert f"keyspace {ks}: exists (it did not exist: this command just created it)" in out, out
    assert "model_versions: none" in out
    assert "switch log: empty" in out
    assert f"ratings log of topic {topic!r}: no rows" in out
    assert f"archive checkpoints of {topic!r}: none" in out
    assert "What to do: Cassandra is empty" in out and f"cassandra.keyspace ({ks!r})" in out


def test_restore_explains_a_log_without_a_serving_version(persisted: Settings) -> None:
    produce(persisted, synthetic_events(300, 30, 20, seed=52))
    Archiver(persisted).run(idle_exit_s=2)  # a log, and no worker ever bootstrapped a version
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        cass.create_version(ModelVersion(version=4, status="building", mode="explicit", rank=8))
        with pytest.raises(LookupError) as nothing:
            lifecycle.restore(persisted, cass, store)
    message = str(nothing.value)
    topic = persisted.kafka.topic
    assert "model_versions: 1 (1 building): 4 building" in message, message
    assert f"ratings log of topic {topic!r}: rows in 1 partition(s), next offset [0] 300" in message
    assert f"archive checkpoints of {topic!r}: complete for [0] 0..299" in message
    assert "`online-als retrain --force`" in message

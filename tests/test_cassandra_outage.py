"""Cassandra stopped during a stream, the archiver SIGTERMed in the outage: nothing is lost.

Redis keeps updating (workers never write Cassandra); the archiver retries with capped
backoff, exits on SIGTERM without moving its checkpoint, and the next archiver re-reads the
backlog from Kafka, so the log ends complete and contiguous.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, start_worker_thread, store_for, synthetic_events, wait_for
from tests.test_system_of_record import assert_log_complete, assert_materialised_equals_redis
from worker.config import environ_for
from worker.stores.cassandra.store import CassandraStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

OUTAGE_S = 8


def test_sigterm_of_the_archiver_during_a_cassandra_outage_loses_nothing(
        stack: StackInfo, isolated: Isolated) -> None:
    from worker.devstack import Stack, StackConfig

    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "worker.batch_max_events": 300,
        "archive.batch_max_events": 500, "archive.snapshot_interval_s": 0,
        "worker.reconnect_backoff_max_s": 2})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    before = synthetic_events(2000, 200, 100, seed=31)
    during = synthetic_events(3000, 300, 150, seed=32)
    events = before + during
    produce(settings, before)
    worker, thread = start_worker_thread(settings, idle_exit_s=120)
    env = environ_for(settings)
    cmd = [sys.executable, "-m", "worker.cli", "archive", "--no-metrics-server",
           "--log-level", "WARNING", "--idle-exit", "3"]
    archiver = subprocess.Popen(cmd, env=env)
    store = store_for(settings)

    def applied() -> int:
        v = store.current_version()
        return 0 if v is None else store.read_checkpoints(v, settings.kafka.topic, [0])[0].offset or 0

    assert wait_for(lambda: applied() >= len(before), timeout_s=60)
    local = Stack(StackConfig.from_env())
    local.down(["cassandra"])
    try:
        produce(settings, during)
        assert wait_for(lambda: applied() >= len(events), timeout_s=60)  # Redis keeps going
        time.sleep(OUTAGE_S)
        archiver.send_signal(signal.SIGTERM)
        assert archiver.wait(timeout=60) == 0
    finally:
        local.up(["cassandra"])
    assert subprocess.run(cmd, env=env, timeout=180).returncode == 0
    worker.stop()
    thread.join(60)
    with CassandraStore(settings.cassandra) as cass:
        assert_log_complete(settings, cass, events)
        assert_materialised_equals_redis(settings, cass)
        cass.drop_keyspace()

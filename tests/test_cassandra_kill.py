"""Cassandra killed with -9 keeps the system of record; the archiver never writes a log that
starts late; ``restore`` says what it found when there is nothing to restore (issue 21).

Real servers only: the kill is a SIGKILL of the Cassandra pid the devstack recorded, and the
restart is the devstack's own ``up``; Kafka's log is made to start late with
``AdminClient.delete_records``, as retention would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from tests.conftest import Isolated, StackInfo, persisted_settings
from tests.streaming import produce, start_worker_thread, store_for, synthetic_events, wait_for
from tests.test_system_of_record import (
    applied_offset,
    assert_log_complete,
    assert_same_state,
    redis_state,
    wipe,
)
from worker.config import Settings, environ_for
from worker.control import lifecycle
from worker.control.archive import Archiver
from worker.stores.cassandra.store import ArchiveRange, CassandraStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def persisted(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    with persisted_settings(stack, isolated, **{
        "model.rank": 8, "worker.batch_max_events": 300,
        "archive.batch_max_events": 500, "archive.snapshot_interval_s": 0.5,
        "worker.reconnect_backoff_max_s": 2}) as settings:
        yield settings


def _cassandra_up(local: object) -> None:
    """The devstack's own start; the tests after this one need Cassandra."""
    local.up(["cassandra"])  # type: ignore[attr-defined]


def _cassandra_runs_the_deploy_options() -> None:
    """Restart Cassandra when it runs with other -D options than deploy/local/cassandra's
    (started by an older checkout): the kill below must test the options of this one."""
    from worker.devstack import Stack, StackConfig, proc

    local = Stack(StackConfig.from_env())
    server = local.server("cassandra")
    pid = server.recorded_pid()
    assert pid is not None, "the devstack has no live Cassandra pid"
    # the -D options from the deploy file, not the paths worker/devstack/cassandra.py adds
    paths = ("-Dcassandra.config=", "-Dcassandra.storagedir=", "-Dcassandra.logdir=")
    running = {a for a in proc.cmdline(pid).split()
               if a.startswith("-Dcassandra.") and not a.startswith(paths)}
    wanted = {a for a in server.jvm_options()  # type: ignore[attr-defined]
              if a.startswith("-Dcassandra.")}
    if running != wanted:
        local.down(["cassandra"])
        local.up(["cassandra"])


def _kill9_cassandra() -> tuple[object, int]:
    """SIGKILL the Cassandra pid the devstack recorded (no drain, no flush) and wait for it."""
    from worker.devstack import Stack, StackConfig

    local = Stack(StackConfig.from_env())
    pid = local.server("cassandra").recorded_pid()
    assert pid is not None, "the devstack has no live Cassandra pid"
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not local.server("cassandra").status().pid_alive, timeout_s=30)
    return local, pid


def test_cassandra_killed_with_9_while_archiving_keeps_everything_and_restore_is_exact(
        persisted: Settings) -> None:
    before = synthetic_events(3000, 300, 120, seed=41)
    during = synthetic_events(3000, 300, 150, seed=42)
    events = before + during
    topic = persisted.kafka.topic
    _cassandra_runs_the_deploy_options()
    produce(persisted, before)
    worker, thread = start_worker_thread(persisted, idle_exit_s=120)
    env = environ_for(persisted)
    archiver = subprocess.Popen([sys.executable, "-m", "worker.cli", "archive",
                                 "--no-metrics-server", "--log-level", "WARNING",
                                 "--idle-exit", "5"], env=env)
    store = store_for(persisted)
    with CassandraStore(persisted.cassandra) as cass:
        def archived() -> int:
            r = cass.archive_ranges(topic).get(0)
            return r.next if r else 0

        assert wait_for(lambda: archived() >= len(before) and applied_offset(
            persisted, store) >= len(before), timeout_s=90)
        version = store.current_version()
        assert version is not None
        assert wait_for(lambda: bool(cass.archive.snapshots(version)), timeout_s=60)
        versions = {v.version: v.status for v in cass.list_versions()}
        snap = cass.archive.snapshots(version)[0]
        switches = len(cass.list_switches())
    local, pid = _kill9_cassandra()
    try:
        produce(persisted, during)  # the archiver meets a dead Cassandra mid-stream
        assert wait_for(lambda: applied_offset(persisted, store) >= len(events), timeout_s=60)
        time.sleep(3)
        assert archiver.poll() is None, "the archiver must wait for Cassandra, not exit"
    finally:
        _cassandra_up(local)
    assert archiver.wait(timeout=180) == 0  # it continued by itself and drained the backlog
    worker.stop()
    thread.join(60)
    with CassandraStore(persisted.cassandra) as cass:
        # everything Cassandra acknowledged before the kill is still there
        after = {v.version: v.status for v in cass.list_versions()}
        assert after == versions, f"versions before the kill {versions}, after {after}"
        assert max(s.seq for s in cass.archive.snapshots(version)) >= snap.seq
        assert len(cass.list_switches()) == switches
        # the log is complete and contiguous: each produced event once, in order
        assert_log_complete(persisted, cass, events)
        state = redis_state(persisted)
        assert sum(state["n"]) == len(events)  # type: ignore[arg-type]
        wipe(store)
        with lifecycle.load_lock(store) as held:
            assert held
            lifecycle.restore(persisted, cass, store)
        assert_same_state(state, redis_state(persisted))
    assert pid != local.server("cassandra").recorded_pid()  # type: ignore[attr-defined]


def _delete_records(settings: Settings, before_offset: int) -> None:
    """Move the partition's low watermark like retention does."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    futures = admin.delete_records([TopicPartition(settings.kafka.topic, 0, before_offset)],
                                   request_timeout=30)
    for f in futures.values():
        assert f.result(timeout=30).low_watermark == before_offset


def _archive(settings: Settings) -> Archiver:
    archiver = Archiver(settings)
    archiver.run(idle_exit_s=2)
    return archiver


def _gaps(archiver: Archiver) -> float:
    value = archiver.metrics.registry.get_sample_value(
        "online_als_archive_log_gaps_total", {"partition": "0"})
    return value or 0.0


def test_the_archiver_refuses_a_log_that_would_start_late(
        persisted: Settings, caplog: pytest.LogCaptureFixture) -> None:
    topic = persisted.kafka.topic
    produce(persisted, synthetic_events(100, 20, 10, seed=43))
    _delete_records(persisted, 40)  # Kafka's log of partition 0 now starts at 40
    caplog.set_level(logging.ERROR, logger="online_als.archive")
    refused = Archiver(persisted)
    runner = threading.Thread(target=refused.run, daemon=True)
    runner.start()
    try:  # the gauge holds while the partition stays assigned and refused
        assert wait_for(lambda: refused.metrics.registry.get_sample_value(
            "online_als_archive_refused_partitions") == 1, timeout_s=60)
    finally:
        refused.stop()
        runner.join(30)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"{topic}[0]" in m and "starts at offset 40" in m and "allow_late_start" in m
               for m in errors), errors
    assert _gaps(refused) == 1 and refused.archived_total == 0
    with CassandraStore(persisted.cassandra) as cass:
        assert cass.archive_ranges(topic) == {}  # nothing written: no silent late start
        assert cass.log_high_offsets(topic) == {}
    # allowed by the setting: the log starts at Kafka's first offset, said at ERROR too
    allowed = persisted.model_copy(update={"archive": persisted.archive.model_copy(
        update={"allow_late_start": True})})
    caplog.clear()
    late = _archive(allowed)
    assert _gaps(late) == 1 and late.archived_total == 60
    assert any("archiving from 40" in r.getMessage() for r in caplog.records)
    with CassandraStore(persisted.cassandra) as cass:
        assert cass.archive_ranges(topic) == {0: ArchiveRange(40, 100)}
    # a checkpoint below Kafka's first offset is a hole: refused even when late starts are allowed
    produce(persisted, synthetic_events(50, 20, 10, seed=44))
    _delete_records(persisted, 120)
    caplog.clear()
    hole = _archive(allowed)
    assert _gaps(hole) == 1 and hole.archived_total == 0
    assert any(f"{topic}[0]" in r.getMessage() and "checkpoint is 100" in r.getMessage()
               and "starts at 120" in r.getMessage() for r in caplog.records), caplog.text
    with CassandraStore(persisted.cassandra) as cass:
        assert cass.archive_ranges(topic) == {0: ArchiveRange(40, 100)}

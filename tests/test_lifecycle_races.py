"""One lock discipline for the version lifecycle (issue 23, item 2), with real processes.

Rollback, restore, promotion, retention and the cleanup of abandoned versions change which
namespaces exist and which one serves only under the lifecycle lock (``load_lock``), and
retention never touches a version a retrain is building (``building``/``ready``). Each test
runs the rival operations as real ``online-als`` processes against the real stack, holding a
window open with the pause hooks of :mod:`worker.control.hooks`, several rounds each, and
checks what an operator relies on after every round: the serving namespace is whole, Redis
and the Cassandra switch log agree, nothing half-built or failed stays resident.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, run_worker, store_for, synthetic_events, wait_for
from tests.test_persistence import archive
from worker.config import Settings, environ_for
from worker.control import lifecycle
from worker.control.hooks import PAUSE_ENV
from worker.control.retrain_job import run_retrain
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.store import RedisStore, dump_vectors

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]
EVENTS = synthetic_events(3000, 200, 120, seed=31)
ITEMS = len({e["item_id"] for e in EVENTS})


@pytest.fixture
def three_versions(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    """A log in Cassandra and three promoted versions (bootstrap + two retrains)."""
    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "archive.snapshot_interval_s": 0,
        "retrain.iterations": 2, "retrain.gate_margin": 10.0, "retrain.lock_ttl_s": 3,
        "retrain.keep_last": 1, "retrain.keep_promoted_days": 30})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        produce(settings, EVENTS)
        run_worker(settings, idle_exit_s=3)
        archive(settings)
        store = store_for(settings)
        with CassandraStore(settings.cassandra) as cass:
            for _ in range(2):
                assert run_retrain(settings, cass, store, force=True).outcome == "promoted"
            lifecycle.apply_retention(settings, cass, store)  # only the serving one resident
        yield settings
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


def _cli(settings: Settings, *args: str, pause: str = "") -> subprocess.Popen[str]:
    env = environ_for(settings)
    if pause:
        env[PAUSE_ENV] = pause
    return subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def _not_resident(store: RedisStore, cass: CassandraStore) -> int:
    resident = set(lifecycle.resident_versions(store))
    return max(v.version for v in cass.list_versions()
               if v.status in ("promoted", "rolled_back") and v.version not in resident)


def assert_consistent(settings: Settings, store: RedisStore, cass: CassandraStore) -> int:
    """The serving namespace is whole, the switch logs agree, no leftovers; the version."""
    current = store.current_version()
    assert current is not None
    meta = store.read_meta(current)
    assert meta is not None and meta.status in ("ready", "serving", "online"), meta
    items = dump_vectors(store, current, "i", settings.model.rank)
    assert len(items.ids) == ITEMS  # every item of the log: nothing deleted under it
    assert cass.list_switches(limit=1)[0].version == current  # Cassandra agrees with Redis
    statuses = {v.version: v.status for v in cass.list_versions()}
    assert not {s for s in statuses.values()} & {"building", "ready"}, statuses
    for version in lifecycle.resident_versions(store):  # nothing failed or unknown resident
        assert statuses.get(version) in ("promoted", "rolled_back"), (version, statuses)
    return current


def test_a_prune_during_a_rollback_never_deletes_what_it_loads(three_versions: Settings) -> None:
    settings = three_versions
    store = store_for(settings)
    with CassandraStore(settings.cassandra) as cass:
        for _round in range(3):
            target = _not_resident(store, cass)
            proc = _cli(settings, "rollback", "--to", str(target), pause="rollback.loaded=2")
            # the moment the rollback has begun to write the namespace, prune (keep_last = 1)
            key = store.keys.meta(target)
            assert wait_for(lambda k=key: store.client.exists(k), 60, 0.002)
            pruned = lifecycle.apply_retention(settings, cass, store)
            code, out = _finish(proc)
            assert code == 0, out[-2000:]
            assert target not in pruned["evicted_from_redis"] + pruned["deleted"]
            assert assert_consistent(settings, store, cass) == target
            lifecycle.apply_retention(settings, cass, store)  # the one before: evicted now
            assert lifecycle.resident_versions(store) == [target]


def test_a_retrain_and_a_rollback_started_together(three_versions: Settings) -> None:
    """Round 1: the retrain waits just before its switch while the rollback switches (its
    compare-and-set must refuse); round 2: the rollback holds the lock, loaded, when the
    retrain comes to switch (it waits for the lock, then refuses); round 3: no pauses, either
    may win, the state is consistent. (A retrain started while a rollback holds the lock
    waits for it before it reads what serves: then it legitimately switches after it.)"""
    settings = three_versions
    store = store_for(settings)
    pauses = [("promote.before_lock=3", ""), ("promote.before_lock=2", "rollback.loaded=4"),
              ("", "")]
    with CassandraStore(settings.cassandra) as cass:
        for retrain_pause, rollback_pause in pauses:
            before = store.current_version()
            target = _not_resident(store, cass)
            retrain = _cli(settings, "retrain", "--force", "--json", pause=retrain_pause)
            if retrain_pause:  # the retrain is about to switch: now the rollback
                assert wait_for(lambda: any(v.status == "ready" for v in cass.list_versions()),
                                120, 0.05)
            rollback = _cli(settings, "rollback", "--to", str(target), pause=rollback_pause)
            (rb_code, rb_out), (rt_code, rt_out) = _finish(rollback), _finish(retrain)
            assert rb_code == 0, rb_out[-2000:]
            current = assert_consistent(settings, store, cass)
            if retrain_pause or rollback_pause:  # the rollback switched while the retrain ran
                assert current == target, (rt_out[-1500:], rb_out[-1500:])
                assert rt_code != 0 and "someone switched" in rt_out, rt_out[-2000:]
            else:
                assert current in (target,) or current > max(target, before or 0), rt_out
            lifecycle.apply_retention(settings, cass, store)
            assert lifecycle.resident_versions(store) == [current]
            time.sleep(0.2)

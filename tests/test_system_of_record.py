"""The Cassandra system of record on the real stack: a complete log, exact restore, Redis loss.

Invariants checked (issue 10): log rows == accepted events, contiguous per partition;
persisted (materialised) factors equal Redis at the same offsets; restore == an uninterrupted
run, bit for bit with one partition; sum of item `n` == applied; no NaN.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from online_als.factors import Factors
from tests.conftest import Isolated, StackInfo, make_settings, persisted_settings
from tests.streaming import produce, store_for, synthetic_events, wait_for
from tests.test_worker_stream import assert_redis_equals, reference_model
from worker.config import Settings, environ_for
from worker.control.archive import Archiver
from worker.control.materialize import materialize
from worker.runtime.applier import BatchApplier
from worker.runtime.loop import Worker
from worker.stores.cassandra.store import CassandraStore
from worker.stores.redis.keys import FIELD_AUX
from worker.stores.redis.store import RedisStore, dump_vectors

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


@pytest.fixture
def persisted(stack: StackInfo, isolated: Isolated) -> Iterator[Settings]:
    with persisted_settings(stack, isolated, **{
        "model.rank": 8, "worker.batch_max_events": 400,
        "archive.batch_max_events": 700, "archive.snapshot_interval_s": 0.5,
        "retrain.iterations": 4, "retrain.gate_margin": 10.0}) as settings:
        yield settings


def wipe(store: RedisStore) -> None:
    """Lose this test's Redis state (like FLUSHALL, without touching other tests' keys)."""
    keys = list(store.client.scan_iter(match=f"{store.keys.prefix}:*", count=10000))
    if keys:
        store.client.unlink(*keys)


def applied_offset(settings: Settings, store: RedisStore) -> int:
    version = store.current_version()
    if version is None:
        return 0
    return store.read_checkpoints(version, settings.kafka.topic, [0])[0].offset or 0


def assert_log_complete(settings: Settings, cass: CassandraStore, events: list[dict[str, object]]) -> None:
    ranges = cass.archive_ranges(settings.kafka.topic)
    assert {p: (r.start, r.next) for p, r in ranges.items()} == {0: (0, len(events))}
    chunks = list(cass.iter_contiguous_log(settings.kafka.topic, {0: len(events)}))
    offsets = np.concatenate([c.offsets for c in chunks])
    users = np.concatenate([c.user_ids for c in chunks])
    np.testing.assert_array_equal(offsets, np.arange(len(events)))  # each once, in order
    assert users.tolist() == [str(e["user_id"]) for e in events]


def redis_state(settings: Settings) -> dict[str, object]:
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    users = dump_vectors(store, version, "u", settings.model.rank)
    items = dump_vectors(store, version, "i", settings.model.rank)
    counts = [int(store.client.hget(store.keys.item(version, i), "n") or 0)
              for i in items.id_list()]
    return {"version": version, "users": users, "items": items, "n": counts,
            "offset": applied_offset(settings, store),
            "aux": redis_aux(settings, store, version, users.id_list(), items.id_list())}


def redis_aux(settings: Settings, store: RedisStore, version: int, users: list[str],
              items: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The adaptive learner's `a` rows of ``users`` and ``items`` (None for SGD)."""
    widths = BatchApplier(store, settings.model, settings.kafka.topic).aux_widths(
        settings.model.rank)
    if widths is None:
        return None
    return tuple(store.read_vectors(store.vector_keys(version, kind, ids), settings.model.rank,
                                    extra={FIELD_AUX: w}).extra[FIELD_AUX]
                 for kind, ids, w in (("u", users, widths[0]), ("i", items, widths[1])))  # type: ignore[return-value]


def assert_same_state(a: dict[str, object], b: dict[str, object]) -> None:
    assert a["version"] == b["version"] and a["offset"] == b["offset"]
    assert a["n"] == b["n"]
    if a["aux"] is not None or b["aux"] is not None:  # adaptive learner: `a` too, bit for bit
        for x, y in zip(a["aux"], b["aux"], strict=True):  # type: ignore[call-overload]
            np.testing.assert_array_equal(x, y)
    for kind in ("users", "items"):
        side_a, side_b = a[kind], b[kind]
        assert isinstance(side_a, Factors) and isinstance(side_b, Factors)
        assert side_a.ids == side_b.ids
        np.testing.assert_array_equal(side_a.vectors, side_b.vectors)
        np.testing.assert_array_equal(side_a.biases, side_b.biases)


def assert_materialised_equals_redis(settings: Settings, cass: CassandraStore) -> None:
    state = redis_state(settings)
    mat = materialize(cass, settings, int(state["version"]))  # type: ignore[call-overload]
    assert mat.offsets == {0: state["offset"]}
    s = mat.model.state
    for kind, idmap, f, b in (("users", s.users, s.user_factors, s.user_bias),
                              ("items", s.items, s.item_factors, s.item_bias)):
        side = state[kind]
        assert isinstance(side, Factors)
        assert sorted(idmap.ids) == side.ids
        rows = idmap.rows_for(side.id_list(), add=False)
        np.testing.assert_array_equal(f[rows], side.vectors)
        np.testing.assert_array_equal(b[rows], side.biases)
    arrays, aux_redis = mat.arrays(), state["aux"]
    assert (arrays.users.aux is None) == (aux_redis is None)
    assert (arrays.items.aux is None) == (aux_redis is None)
    # the arrays are the model's, in its id order
    assert arrays.users.ids == s.users.ids and arrays.items.ids == s.items.ids
    if aux_redis is not None:
        for idmap, table, got, kind in ((s.users, arrays.users.aux, aux_redis[0], "users"),  # type: ignore[index]
                                        (s.items, arrays.items.aux, aux_redis[1], "items")):  # type: ignore[index]
            rows = idmap.rows_for(state[kind].id_list(), add=False)  # type: ignore[attr-defined]
            np.testing.assert_array_equal(table[rows], got)  # type: ignore[index]


def test_kill9_of_worker_and_archiver_loses_nothing_and_restore_is_exact(
        persisted: Settings) -> None:
    events = synthetic_events(12_000, 700, 300, seed=21)
    produce(persisted, events)
    env = environ_for(persisted)
    base = [sys.executable, "-m", "worker.cli"]
    quiet = ["--log-level", "WARNING"]
    worker_cmd = base + ["worker", "--no-metrics-server", *quiet, "--idle-exit", "3"]
    archive_cmd = base + ["archive", "--no-metrics-server", *quiet, "--idle-exit", "3"]
    store = store_for(persisted)
    rng = np.random.default_rng(5)
    with CassandraStore(persisted.cassandra) as cass:
        def archived() -> int:
            r = cass.archive_ranges(persisted.kafka.topic).get(0)
            return r.next if r else 0

        kills = 0
        for target in sorted(rng.integers(1_500, 10_000, size=3).tolist()):
            w = subprocess.Popen(worker_cmd, env=env)
            a = subprocess.Popen(archive_cmd, env=env)
            ok = wait_for(lambda t=target: applied_offset(persisted, store) >= t
                          and archived() >= t // 2, timeout_s=90, interval_s=0.01)
            time.sleep(float(rng.uniform(0, 0.05)))  # anywhere inside a batch or block write
            w.kill()
            a.kill()
            w.wait()
            a.wait()
            kills += int(ok)
        assert kills >= 2, "the processes never got far enough to be killed mid-stream"
        a = subprocess.Popen(archive_cmd, env=env)
        assert subprocess.run(worker_cmd, env=env, timeout=180).returncode == 0
        assert a.wait(timeout=180) == 0
        assert applied_offset(persisted, store) == len(events)
        assert_log_complete(persisted, cass, events)
        reference = reference_model(persisted, events)
        assert_redis_equals(persisted, reference)
        before = redis_state(persisted)
        assert sum(before["n"]) == len(events)  # type: ignore[arg-type]
        assert_materialised_equals_redis(persisted, cass)
        # a stream snapshot was stored and a restore from it is exact
        assert cass.archive.snapshots(int(before["version"]))  # type: ignore[call-overload]
        wipe(store)
        subprocess.run(base + ["restore", *quiet], env=env, check=True, timeout=120)
        assert_same_state(before, redis_state(persisted))


def test_redis_wiped_while_the_worker_runs_is_detected_and_restored(persisted: Settings) -> None:
    events = synthetic_events(6_000, 500, 250, seed=22)
    store = store_for(persisted)
    worker = Worker(persisted)
    archiver = Archiver(persisted)
    threads = [threading.Thread(target=worker.run, kwargs={"idle_exit_s": 6}, daemon=True),
               threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 6}, daemon=True)]
    for t in threads:
        t.start()
    produce(persisted, events[:3000])
    assert wait_for(lambda: applied_offset(persisted, store) >= 3000 and
                    archiver.archived_total >= 3000, timeout_s=90)
    wipe(store)  # the worker keeps running: it must notice before its next write
    produce(persisted, events[3000:])
    for t in threads:
        t.join(180)
    assert worker.losses >= 1
    assert applied_offset(persisted, store) == len(events)
    assert_redis_equals(persisted, reference_model(persisted, events))
    state = redis_state(persisted)
    assert sum(state["n"]) == len(events)  # type: ignore[arg-type]
    with CassandraStore(persisted.cassandra) as cass:
        assert_log_complete(persisted, cass, events)
        assert_materialised_equals_redis(persisted, cass)


@pytest.mark.parametrize("learner", ["sgd", "adaptive"])
def test_restore_with_several_partitions_keeps_counts_exact(
        stack: StackInfo, isolated: Isolated, learner: str) -> None:
    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "worker.batch_max_events": 300,
        "kafka.partitions": 3, "archive.snapshot_interval_s": 0, "model.learner": learner})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    try:
        events = synthetic_events(6_000, 400, 200, seed=23)
        worker = Worker(settings)
        archiver = Archiver(settings)
        threads = [threading.Thread(target=worker.run, kwargs={"idle_exit_s": 4}, daemon=True),
                   threading.Thread(target=archiver.run, kwargs={"idle_exit_s": 4}, daemon=True)]
        for t in threads:
            t.start()
        for s in range(0, len(events), 500):  # live traffic: batches mix the partitions
            produce(settings, events[s:s + 500], partitions=3)
            time.sleep(0.1)
        for t in threads:
            t.join(180)
        assert worker.applied_total == archiver.archived_total == len(events)
        store = store_for(settings)
        version = store.current_version()
        assert version is not None
        before = redis_state(settings)
        seen_before = {u: store.client.hgetall(store.keys.seen(version, u))
                       for u in before["users"].id_list()}  # type: ignore[attr-defined]
        wipe(store)
        with CassandraStore(settings.cassandra) as cass:
            report = lifecycle_restore(settings, cass, store)
        assert sum(report.checkpoints.values()) == len(events)
        after = redis_state(settings)
        assert after["n"] == before["n"] and sum(after["n"]) == len(events)  # type: ignore[arg-type]
        seen_after = {u: store.client.hgetall(store.keys.seen(version, u))
                      for u in after["users"].id_list()}  # type: ignore[attr-defined]
        assert seen_after == seen_before
        for kind in ("users", "items"):
            side_a, side_b = before[kind], after[kind]
            assert isinstance(side_a, Factors) and isinstance(side_b, Factors)
            f_a, b_a, f_b, b_b = side_a.vectors, side_a.biases, side_b.vectors, side_b.biases
            assert side_a.ids == side_b.ids
            assert np.isfinite(f_b).all()
            worst = max(float(np.abs(f_a - f_b).max()), float(np.abs(b_a - b_b).max()))
            mean = float(np.abs(f_a - f_b).mean())
            print(f"{kind} ({learner}): restore vs Redis with 3 partitions: max abs diff "
                  f"{worst:.5f}, mean abs diff {mean:.5f}")
            assert worst <= MAX_ABS_TOLERANCE and mean <= MEAN_ABS_TOLERANCE[learner]
    finally:
        with CassandraStore(settings.cassandra) as cass:
            cass.drop_keyspace()


# docs/exactly-once.md states these figures (several partitions: Hogwild interleaving differs).
# The adaptive learner's per-coordinate steps make its vectors ~2x larger on these random
# ratings, and their order-dependence larger still (measured mean 0.052 users, 0.074 items).
MAX_ABS_TOLERANCE = 1.0
MEAN_ABS_TOLERANCE = {"sgd": 0.03, "adaptive": 0.12}


def lifecycle_restore(settings: Settings, cass: CassandraStore, store: RedisStore):  # type: ignore[no-untyped-def]
    from worker.control.lifecycle import restore

    return restore(settings, cass, store)

"""Cassandra stopped for 60 s during a stream: Redis keeps updating, nothing is lost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, start_worker_thread, store_for, synthetic_events, wait_for
from worker.cassandra_store import CassandraStore
from worker.redis_store import dump_vectors

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(600)]

OUTAGE_S = 60


def test_stream_through_a_cassandra_outage_persists_everything(
        stack: StackInfo, isolated: Isolated) -> None:
    from worker.stack import Stack, StackConfig

    settings = make_settings(stack, isolated, **{
        "cassandra.enabled": True, "model.rank": 8, "worker.batch_max_events": 300,
        "worker.persist_interval_s": 1.0, "worker.reconnect_backoff_max_s": 5})
    with CassandraStore(settings.cassandra) as cass:
        cass.migrate()
    before = synthetic_events(2000, 200, 100, seed=31)
    during = synthetic_events(3000, 300, 150, seed=32)
    produce(settings, before)
    worker, thread = start_worker_thread(settings, idle_exit_s=OUTAGE_S + 120)
    store = store_for(settings)

    def applied() -> int:
        v = store.current_version()
        return 0 if v is None else store.read_checkpoints(v, settings.kafka.topic, [0])[0].offset or 0

    assert wait_for(lambda: applied() >= len(before), timeout_s=60)
    local = Stack(StackConfig.from_env())
    local.down(["cassandra"])
    try:
        produce(settings, during)
        assert wait_for(lambda: applied() >= len(before) + len(during), timeout_s=OUTAGE_S)
        time.sleep(max(0.0, OUTAGE_S - 10))
        assert worker.write_behind is not None and worker.write_behind.backlog() > 0
    finally:
        local.up(["cassandra"])
    total = len(before) + len(during)
    assert wait_for(lambda: worker.write_behind is not None and worker.write_behind.backlog() == 0
                    and worker.write_behind.persisted_events == total, timeout_s=180)
    worker.stop()
    thread.join(120)
    version = store.current_version()
    assert version is not None
    with CassandraStore(settings.cassandra) as cass:
        logged = sum(len(chunk[0]) for chunk in cass.iter_log(settings.kafka.topic))
        assert logged == total
        assert cass.load_persist_checkpoint(version, settings.kafka.topic) == {0: total}
        for kind in ("u", "i"):
            ids_c, f_c, b_c = cass.read_factors(version, kind)
            ids_r, f_r, b_r = dump_vectors(store, version, kind, settings.model.rank)
            order = np.argsort(ids_c)
            assert [ids_c[j] for j in order] == ids_r
            np.testing.assert_array_equal(f_c[order], f_r)
            np.testing.assert_array_equal(b_c[order], b_r)
        cass.drop_keyspace()

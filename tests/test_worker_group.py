"""Several workers in one consumer group: every event applied exactly once, shared items too."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, start_worker_thread, store_for, synthetic_events, wait_for
from worker.stores.redis.store import dump_vectors

pytestmark = pytest.mark.stack


def test_two_workers_share_items_without_losing_or_doubling_updates(
        stack: StackInfo, isolated: Isolated) -> None:
    settings = make_settings(stack, isolated, **{"kafka.partitions": 4, "model.rank": 8,
                                                  "worker.batch_max_events": 200})
    events = synthetic_events(8000, 400, 60, seed=21)  # few items: heavily shared
    produce(settings, events[:1], partitions=4)  # the topic, before the group forms
    workers = [start_worker_thread(settings.model_copy(update={
        "worker": settings.worker.model_copy(update={"name": f"w{j}"})}), idle_exit_s=6)
        for j in range(2)]
    # both members hold partitions before the stream starts, so both apply events
    assert wait_for(lambda: all(w.commit.positions for w, _ in workers), timeout_s=60)
    produce(settings, events[1:], partitions=4)
    for _, thread in workers:
        thread.join(180)
    assert sum(w.applied_total for w, _ in workers) == len(events)
    assert all(w.applied_total > 0 for w, _ in workers), "one worker applied everything"
    store = store_for(settings)
    version = store.current_version()
    assert version is not None
    cps = store.read_checkpoints(version, settings.kafka.topic, [0, 1, 2, 3])
    assert all(not cp.has_pending for cp in cps.values())
    # the offsets sum to the event count: each partition's checkpoint is its end
    assert sum(cp.offset or 0 for cp in cps.values()) == len(events)
    items = dump_vectors(store, version, "i", settings.model.rank)
    ids, factors = items.id_list(), items.vectors
    counts = [int(store.client.hget(store.keys.item(version, i), "n") or 0) for i in ids]
    # every event incremented its item's count exactly once, whichever worker applied it
    assert sum(counts) == len(events)
    assert dict(zip(ids, counts, strict=True)) == Counter(str(e["item_id"]) for e in events)
    assert set(ids) == {str(e["item_id"]) for e in events}
    assert np.isfinite(factors).all()

"""ScriptBatch on the real Redis: order, background replies, and a flushed script cache."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, start_worker_thread, store_for, synthetic_events, wait_for

pytestmark = pytest.mark.stack


def test_replies_come_back_in_call_order_now_and_in_the_background(
        stack: StackInfo, isolated: Isolated) -> None:
    store = store_for(make_settings(stack, isolated))
    echo = store.client.register_script("return ARGV[1] .. KEYS[1]")
    store.client.script_load(echo.script)  # else the first send is refused and sent again
    key = f"{isolated.tag}:set"
    batch = store.batch()
    batch.script(echo, ["k1"], ["a"])
    batch.sadd(key, "x", "y")
    batch.script(echo, ["k2"], [b"b"])
    assert batch.execute() == [b"ak1", 2, b"bk2"]
    later = store.batch()
    later.script(echo, ["k3"], [7])
    later.start()
    assert later.result() == [b"7k3"]
    store.client.delete(key)


def test_a_flushed_script_cache_is_reloaded_and_the_batch_sent_again(
        stack: StackInfo, isolated: Isolated) -> None:
    store = store_for(make_settings(stack, isolated))
    key = f"{isolated.tag}:set"
    count = store.client.register_script("return redis.call('SADD', KEYS[1], ARGV[1])")
    store.client.script_flush()
    batch = store.batch()
    batch.script(count, [key], ["m"])
    batch.script(count, [key], ["m"])
    assert batch.execute() == [1, 0]  # idempotent calls: sending twice changes nothing
    assert store.client.smembers(key) == {b"m"}
    store.client.delete(key)


def test_a_worker_applies_every_event_once_while_redis_forgets_its_scripts(
        stack: StackInfo, isolated: Isolated) -> None:
    settings = make_settings(stack, isolated, **{"worker.batch_max_events": 200})
    events = synthetic_events(4000, 300, 200, seed=3)
    produce(settings, events)
    store = store_for(settings)
    worker, thread = start_worker_thread(settings, idle_exit_s=4.0)
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(0.2):
            store.client.script_flush()

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    try:
        assert wait_for(lambda: worker.applied_total >= 4000, timeout_s=240)
    finally:
        stop.set()
        flusher.join()
    thread.join(60)
    assert worker.applied_total == 4000 and worker.dead_lettered_total == 0
    version = store.current_version()
    assert version is not None
    cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
    assert cp.offset == 4000 and not cp.has_pending
    n = sum(int(v) for k in store.client.scan_iter(f"{settings.redis.key_prefix}:v{version}:i:*")
            for v in [store.client.hget(k, "n") or 0])
    assert n == 4000  # every event counted on its item exactly once

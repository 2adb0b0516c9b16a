"""kill -9 at any moment, restart: same final factors, every event applied exactly once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import (
    produce,
    store_for,
    synthetic_events,
    wait_for,
)
from tests.test_worker_stream import assert_redis_equals, reference_model
from worker.config import environ_for
from worker.faults import FAULT_ENV
from worker.stores.redis.store import Checkpoint

pytestmark = [pytest.mark.stack, pytest.mark.slow]



@pytest.mark.parametrize("learner", ["adaptive", "sgd"])
def test_sigkill_at_each_commit_step_reaches_the_uninterrupted_state(
        stack: StackInfo, isolated: Isolated, learner: str) -> None:
    """kill -9 (the fault hook of worker/faults.py) right after an intent, right after a
    batch's writes, and right after a commit; each restart recovers what the kill left, and
    the end state is the uninterrupted run's, bit for bit (f, b and the learner's a)."""
    settings = make_settings(stack, isolated, **{"model.rank": 16, "worker.batch_max_events": 300,
                                                  "model.learner": learner})
    events = synthetic_events(12_000, 800, 400, seed=7)
    produce(settings, events)
    env = environ_for(settings)
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server", "--log-level",
           "WARNING", "--idle-exit", "4"]
    store = store_for(settings)

    def checkpoint() -> Checkpoint:
        version = store.current_version()
        assert version is not None
        return store.read_checkpoints(version, settings.kafka.topic, [0])[0]

    left: Checkpoint | None = None
    for point in ("after_intent@4", "after_writes@6", "after_commit@5"):
        run = subprocess.run(cmd, env={**env, FAULT_ENV: point}, timeout=300)
        assert run.returncode == -9, f"{point}: the fault hook did not fire"
        cp = checkpoint()
        if left is not None and left.has_pending:  # this run recovered the last one's batch
            assert left.pending_end is not None and (cp.offset or 0) > left.pending_end
        # a kill before the commit leaves the batch pending, with its before-state beside it
        assert cp.has_pending == (not point.startswith("after_commit")), point
        if cp.has_pending:
            version = store.current_version()
            assert store.client.exists(store.keys.pending_before(
                version, settings.kafka.topic, 0, cp.pending_batch))  # type: ignore[arg-type]
        left = cp
    final = subprocess.run(cmd, env=env, timeout=300)
    assert final.returncode == 0
    assert checkpoint().offset == len(events) and not checkpoint().has_pending
    assert_redis_equals(settings, reference_model(settings, events))
    # finished batches leave no before-state behind (a clean exit deletes the last one)
    version = store.current_version()
    left = list(store.client.scan_iter(match=store.keys.pending_before(
        version, settings.kafka.topic, 0, "*")))  # type: ignore[arg-type]
    assert left == [], left


def test_sigterm_finishes_the_batch_checkpoints_and_exits_cleanly(
        stack: StackInfo, isolated: Isolated) -> None:
    import signal

    settings = make_settings(stack, isolated, **{"model.rank": 8, "worker.batch_max_events": 200})
    events = synthetic_events(6000, 300, 100, seed=8)
    produce(settings, events)
    env = environ_for(settings)
    cmd = [sys.executable, "-m", "worker.cli", "worker", "--no-metrics-server", "--log-level",
           "WARNING", "--idle-exit", "4"]
    store = store_for(settings)

    def checkpoint() -> tuple[int, bool]:
        version = store.current_version()
        if version is None:
            return 0, False
        cp = store.read_checkpoints(version, settings.kafka.topic, [0])[0]
        return cp.offset or 0, cp.has_pending

    proc = subprocess.Popen(cmd, env=env)
    assert wait_for(lambda: checkpoint()[0] >= 1000, timeout_s=120, interval_s=0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    offset, pending = checkpoint()
    assert not pending and 1000 <= offset <= len(events)
    assert subprocess.run(cmd, env=env, timeout=300).returncode == 0
    assert checkpoint() == (len(events), False)
    assert_redis_equals(settings, reference_model(settings, events))


def test_redis_retries_are_bounded_by_the_budget(stack: StackInfo, isolated: Isolated) -> None:
    """docs/exactly-once.md: a worker waiting for Redis gives up after redis_retry_budget_s,
    inside max.poll.interval.ms, instead of lingering as a zombie owner."""
    import socket

    from worker.runtime.loop import Worker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])
    settings = make_settings(stack, isolated, **{
        "redis.port": closed, "redis.socket_timeout_s": 0.5,
        "worker.redis_retry_budget_s": 1.0, "worker.reconnect_backoff_max_s": 0.2})
    worker = Worker(settings)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="unavailable for 1s"):
        worker._with_redis_retry(worker.store.client.ping)
    assert time.monotonic() - t0 < 10

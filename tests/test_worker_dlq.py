"""Bad input never crashes the worker and never vanishes: DLQ with reasons, counted."""

from __future__ import annotations

import math
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Consumer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, synthetic_events
from worker.events import REASONS, decode_batch
from worker.metrics import ALL_METRIC_NAMES, WorkerMetrics, start_http_server
from worker.runtime.applier import decode_config
from worker.runtime.loop import Worker
from worker.stores.redis.store import RedisStore

pytestmark = pytest.mark.stack

ids = st.one_of(st.text(min_size=1, max_size=8), st.integers(0, 10**6))
i64 = st.integers(-(2**63), 2**63 - 1)
bad_values = st.one_of(st.none(), st.booleans(), st.lists(i64, max_size=2),
                       st.dictionaries(st.text(max_size=3), i64, max_size=2))


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 8))
    user, item = draw(ids), draw(ids)
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=40)).replace(b"{", b"(")  # undecodable
    if kind == 1:
        return orjson.dumps(draw(st.one_of(i64, st.lists(i64, max_size=3))))
    if kind == 2:
        return orjson.dumps({"user_id": user, "rating": 3.0})  # missing item
    if kind == 3:
        return orjson.dumps({"user_id": draw(bad_values.filter(lambda v: v is not None)),
                             "item_id": item, "rating": 3.0})
    if kind == 4:
        return b'{"user_id": "u", "item_id": "i", "rating": %s}' % draw(
            st.sampled_from([b"NaN", b"Infinity", b"1e400", b"-1e400"]))
    if kind == 5:
        return orjson.dumps({"user_id": user, "item_id": item,
                             "rating": draw(st.sampled_from([0.0, -3.0, 5.5, 1e9]))})
    if kind == 6:
        return orjson.dumps({"user_id": "x" * draw(st.integers(257, 600)), "item_id": item,
                             "rating": 3.0})
    if kind == 7:
        return orjson.dumps({"user_id": "", "item_id": item, "rating": 3.0})
    return orjson.dumps({"user_id": user, "item_id": item, "event": "view"})  # wrong mode


def hypothesis_corpus(n: int) -> list[bytes]:
    """At least ``n`` malformed messages drawn by hypothesis (one per generated example)."""
    out: list[bytes] = []

    @hsettings(max_examples=2 * n, deadline=None, derandomize=True, database=None,
               suppress_health_check=list(HealthCheck))
    @given(malformed())
    def collect(message: bytes) -> None:
        out.append(message)

    collect()
    assert len(out) >= n
    return out


def test_malformed_corpus_lands_in_the_dlq_with_reasons(stack: StackInfo,
                                                        isolated: Isolated) -> None:
    corpus = hypothesis_corpus(1000)
    settings = make_settings(stack, isolated, **{"model.rank": 8, "worker.batch_max_events": 400})
    good = synthetic_events(500, 50, 40, seed=2)
    stream: list[dict[str, object] | bytes] = []
    for j, bad in enumerate(corpus):
        stream.append(bad)
        if j % 2 == 0 and j // 2 < len(good):
            stream.append(good[j // 2])
    produce(settings, stream)
    expected = decode_batch(list(corpus), [0.0] * len(corpus), decode_config(settings))
    assert len(expected) == 0 and len(expected.rejects) == len(corpus)

    metrics = WorkerMetrics()
    server = start_http_server("127.0.0.1", 0, metrics.registry)
    worker = Worker(settings, metrics, server)
    worker.run(idle_exit_s=10)
    assert worker.applied_total == len(good), (worker.applied_total, worker.dead_lettered_total, len(corpus))
    assert worker.dead_lettered_total == len(corpus)

    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": isolated.group + "r",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.kafka.dead_letter_topic])
    dlq: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + 60
    while len(dlq) < len(corpus) and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error() is None:
                dlq.append((msg.value(), dict(msg.headers() or [])))
    consumer.close()
    assert len(dlq) == len(corpus), (len(dlq), len(corpus))
    assert sorted(v for v, _ in dlq) == sorted(corpus)
    want = sorted(r[1] for r in expected.rejects)
    assert sorted(h["dlq.reason"].decode() for _, h in dlq) == want
    assert all({"dlq.topic", "dlq.partition", "dlq.offset"} <= h.keys() for _, h in dlq)

    body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    server.close()
    for name in ALL_METRIC_NAMES:
        assert name in body, f"metric {name} not exported"
    counted = {r: 0.0 for r in REASONS}
    for line in body.splitlines():
        if line.startswith("online_als_events_dead_lettered_total{"):
            reason = line.split('reason="')[1].split('"')[0]
            counted[reason] = float(line.rsplit(" ", 1)[1])
    assert sum(counted.values()) == len(corpus)
    for reason in set(want):
        assert counted[reason] == want.count(reason)
    applied = [ln for ln in body.splitlines() if ln.startswith("online_als_events_applied_total ")]
    assert float(applied[0].split()[1]) == len(good)
    rmse = [ln for ln in body.splitlines() if ln.startswith("online_als_prequential_rmse ")]
    assert math.isfinite(float(rmse[0].split()[1]))


def test_a_message_that_fails_unexpectedly_is_dead_lettered_as_internal(
        stack: StackInfo, isolated: Isolated, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the kernel step raises for one item id; the worker finds that message,
    dead-letters it with reason `internal` and applies everything else (no crash loop)."""
    from worker.runtime.applier import BatchApplier

    settings = make_settings(stack, isolated, **{"model.rank": 8, "worker.batch_max_events": 50})
    events = synthetic_events(200, 30, 20, seed=5)
    events[77] = {**events[77], "item_id": "poison"}
    produce(settings, events)
    real = BatchApplier.prepare

    def prepare(self: BatchApplier, state, batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        if "poison" in set(batch.item_ids.tolist()):
            raise ValueError("injected fault")
        return real(self, state, batch, *args, **kwargs)

    monkeypatch.setattr(BatchApplier, "prepare", prepare)
    metrics = WorkerMetrics()
    worker = Worker(settings, metrics)
    worker.run(idle_exit_s=3)
    assert worker.applied_total == 199 and worker.dead_lettered_total == 1
    assert metrics.events_dead_lettered.labels("internal")._value.get() == 1
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                         "group.id": isolated.group + "-dlq", "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.kafka.dead_letter_topic])
    deadline, got = time.monotonic() + 30, []
    while not got and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and msg.error() is None:
            got.append(msg)
    consumer.close()
    headers = dict(got[0].headers() or [])
    assert headers.get("dlq.reason") == b"internal" and orjson.loads(got[0].value())["item_id"] == "poison"
    store = RedisStore.from_settings(settings.redis)
    version = store.current_version()
    assert store.read_checkpoints(version, settings.kafka.topic, [0])[0].offset == 200

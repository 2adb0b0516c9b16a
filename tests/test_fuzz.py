"""No input stops a partition: fuzzed messages against a real worker, single Redis and Cluster.

Also the regression tests of the two crash loops of issue 14: a malformed message just over
1 MB (the DLQ producer refused it: MSG_SIZE_TOO_LARGE) and ids holding braces on a Redis
Cluster (a user's vector and its seen-hash fell into different slots).
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer

from tests.conftest import Isolated, StackInfo, make_settings
from tests.test_redis_cluster import redis_cluster  # noqa: F401  (module-scoped fixture)
from worker.config import Settings
from worker.events import DLQ_MAX_VALUE_BYTES, DLQ_REASONS, MAGIC, VERSION, encode_binary
from worker.metrics import WorkerMetrics, start_http_server
from worker.runtime.loop import Worker
from worker.stores import kafka as kafka_io
from worker.stores.redis.keys import RedisKeys
from worker.stores.redis.store import RedisStore, dump_vectors

pytestmark = pytest.mark.stack

TOPIC_MAX = 1_040_000  # a value this long fits the default topic limit (1,048,588 per batch)
WEIRD_IDS = ["}x", "{", "}", "{}", "a{b}c", "x}{y", "%7B", "%", "a:b", "::", "u\x00", "\x00",
             "é", "用户", "🙂{", "a b", "\\", '"', "{{{}}}", "7", "-1", "%25"]


def _producer(settings: Settings) -> Producer:
    return Producer(kafka_io.producer_config(
        settings.kafka, **{"message.max.bytes": 1_048_576, "compression.type": "none",
                           "linger.ms": 20}))


def _produce_raw(settings: Settings, values: list[tuple[bytes | None, bytes | None]]) -> None:
    kafka_io.ensure_topics(settings.kafka, {settings.kafka.topic: 1,
                                            settings.kafka.dead_letter_topic: 1})
    producer = _producer(settings)
    for key, value in values:
        while True:
            try:
                producer.produce(settings.kafka.topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


def _read_dlq(settings: Settings, n: int, timeout_s: float = 60) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = Consumer({**kafka_io.client_config(settings.kafka),
                         "group.id": settings.kafka.group_id + "-dlq-reader",
                         "auto.offset.reset": "earliest", "fetch.message.max.bytes": 2_000_000})
    consumer.subscribe([settings.kafka.dead_letter_topic])
    out: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.5):
            if msg.error() is None:
                out.append((msg.value() or b"", dict(msg.headers() or [])))
    consumer.close()
    return out


def _dead_lettered_by_reason(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    counted: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("online_als_events_dead_lettered_total{"):
            counted[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return counted


# -- regression: a message just over 1 MB used to crash the worker in _produce_dlq ----------
def test_oversize_malformed_message_is_dead_lettered_truncated(
        stack: StackInfo, isolated: Isolated) -> None:
    settings = make_settings(stack, isolated, **{"model.rank": 4})
    big = b"not json " + b"q" * 1_040_000
    good = orjson.dumps({"user_id": "u1", "item_id": "i1", "rating": 4.0})
    _produce_raw(settings, [(None, big), (b"u1", good)])
    worker = Worker(settings)
    worker.run(idle_exit_s=3)
    assert (worker.dead_lettered_total, worker.applied_total) == (1, 1)
    [(value, headers)] = _read_dlq(settings, 1)
    assert value == big[:DLQ_MAX_VALUE_BYTES]
    assert headers["dlq.reason"] == b"undecodable"
    assert headers["dlq.truncated"] == b"1"
    assert int(headers["dlq.original_length"]) == len(big)
    store = RedisStore.from_settings(settings.redis)
    version = store.current_version()
    assert version is not None
    assert store.read_checkpoints(version, settings.kafka.topic, [0])[0].offset == 2


# -- regression: ids with braces split a user's keys across cluster slots ---------------------
def test_brace_ids_stay_in_one_slot_on_a_redis_cluster(
        stack: StackInfo, isolated: Isolated, redis_cluster: int) -> None:  # noqa: F811
    from redis.crc import key_slot

    keys = RedisKeys("p")
    for uid in WEIRD_IDS:
        assert key_slot(keys.user(1, uid).encode()) == key_slot(keys.seen(1, uid).encode()), uid
    assert len({keys.user(1, u) for u in WEIRD_IDS}) == len(WEIRD_IDS)  # still one-to-one
    settings = make_settings(stack, isolated, **{"redis.cluster": True, "redis.port": redis_cluster,
                                                  "model.rank": 4})
    events = [{"user_id": u, "item_id": WEIRD_IDS[-1 - j], "rating": 3.0}
              for j, u in enumerate(WEIRD_IDS)]
    _produce_raw(settings, [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in events])
    worker = Worker(settings)
    worker.run(idle_exit_s=3)
    assert worker.applied_total == len(events)
    store = RedisStore.from_settings(settings.redis)
    version = store.current_version()
    assert version is not None
    users = dump_vectors(store, version, "u", 4)
    assert users.ids == sorted(WEIRD_IDS) and np.isfinite(users.vectors).all()


# -- the fuzz test ----------------------------------------------------------------------------
def fuzz_corpus(n: int, seed: int) -> Iterator[tuple[bytes | None, bytes | None]]:
    """``n`` (key, value) pairs: good events with odd ids, and every kind of garbage."""
    rng = random.Random(seed)
    big_left = 3  # values near the topic maximum are slow to move; a few are enough

    def some_id() -> object:
        r = rng.random()
        if r < 0.5:
            return rng.choice(WEIRD_IDS) + str(rng.randrange(50))
        if r < 0.7:
            return rng.randrange(-(2**63), 2**63)
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF),
                                       0, ord("{"), ord("}"), ord(":")])) for _ in range(rng.randrange(1, 12)))

    extreme = [0.5, 5.0, 1e-300, -0.0, 4.999999999, 1e308, -1e308, 2**63, -(2**63), 1e-45,
               float("nan"), float("inf"), 3]
    for _ in range(n):
        kind = rng.randrange(12)
        key: bytes | None = None if rng.random() < 0.3 else str(rng.random()).encode()
        if kind <= 3:  # good (or out-of-range) explicit event with odd ids
            ev: dict[str, object] = {"user_id": some_id(), "item_id": some_id(),
                                     "rating": rng.choice([1, 2, 3, 4, 5, 2.5, rng.choice(extreme)])}
            if rng.random() < 0.5:
                ev["ts"] = rng.choice([1_700_000_000, 1_700_000_000_123, -1, 2**62, 0.5])
            try:
                yield key, orjson.dumps(ev)
            except orjson.JSONEncodeError:  # ints beyond 64 bits
                yield key, str(ev).encode()
        elif kind == 4:
            yield key, rng.randbytes(rng.randrange(0, 300))
        elif kind == 5:
            size = TOPIC_MAX if big_left and rng.random() < 0.01 else rng.randrange(1, 20_000)
            if size == TOPIC_MAX:
                big_left -= 1
            yield key, rng.choice([b"{", b"[", b"\"", b"\x00"]) + b"x" * (size - 1)
        elif kind == 6:  # numbers JSON cannot hold or that overflow float32
            num = rng.choice([b"NaN", b"1e400", b"-1e400", b"1e39", b"-0", b"1" * 400, b"0x10"])
            yield key, b'{"user_id": "u", "item_id": "i", "rating": ' + num + b"}"
        elif kind == 7:  # wrong types
            bad = rng.choice([None, True, [1], {"a": 1}, "4", 1.5])
            field = rng.choice(["user_id", "item_id", "rating", "ts", "event_id"])
            ev = {"user_id": "u", "item_id": "i", "rating": 3.0, field: bad}
            yield key, orjson.dumps(ev)
        elif kind == 8:  # the binary header with garbage after it
            yield key, MAGIC + bytes([rng.choice([VERSION, 0, 2, 255])]) + rng.randbytes(rng.randrange(0, 64))
        elif kind == 9:  # a valid binary event, then a random byte flipped
            raw = bytearray(encode_binary(str(some_id()), str(some_id()), rating=3.0, ts=1.7e9))
            if rng.random() < 0.7:
                raw[rng.randrange(2, len(raw))] = rng.randrange(256)
            yield key, bytes(raw)
        elif kind == 10:  # not an object / tombstones / empty
            yield key, rng.choice([None, b"", b"[]", b"3", b'"u"', b"null", b"{}", b"\xef\xbb\xbf{}"])
        else:  # ids: too long, empty, floats, integers beyond 64 bits
            uid = rng.choice([b'""', b'"' + b"x" * 257 + b'"', ("\"" + "é" * 129 + "\"").encode(),
                              b"1.5", str(2**64).encode(), str(-(2**63) - 1).encode(), b'"ok"'])
            yield key, b'{"user_id": ' + uid + b', "item_id": "i", "rating": 3}'


def _run_fuzz(settings: Settings, n: int) -> None:
    corpus = list(fuzz_corpus(n, seed=14))
    _produce_raw(settings, corpus)
    metrics = WorkerMetrics()
    server = start_http_server("127.0.0.1", 0, metrics.registry)
    worker = Worker(settings, metrics, server)
    try:
        worker.run(idle_exit_s=4)
        refused = metrics.nan_guard_refusals._value.get()  # type: ignore[attr-defined]
        assert worker.applied_total + refused + worker.dead_lettered_total == n, (
            worker.applied_total, refused, worker.dead_lettered_total)
        assert worker.applied_total > n // 10
        counted = _dead_lettered_by_reason(server.port)
        assert set(counted) == set(DLQ_REASONS)
        assert sum(counted.values()) == worker.dead_lettered_total
        for reason in ("undecodable", "not_an_object", "missing_field", "wrong_type",
                       "out_of_range", "id_too_long", "empty_id"):
            assert counted[reason] > 0, reason
    finally:
        server.close()
    store = RedisStore.from_settings(settings.redis)
    version = store.current_version()
    assert version is not None
    assert store.read_checkpoints(version, settings.kafka.topic, [0])[0].offset == n
    for kind in ("u", "i"):
        got = dump_vectors(store, version, kind, settings.model.rank)
        assert np.isfinite(got.vectors).all() and np.isfinite(got.biases).all(), kind


def test_fuzz_single_redis(stack: StackInfo, isolated: Isolated) -> None:
    _run_fuzz(make_settings(stack, isolated, **{"model.rank": 8,
                                                 "worker.batch_max_events": 2000}), 10_000)


def test_fuzz_redis_cluster(stack: StackInfo, isolated: Isolated,
                            redis_cluster: int) -> None:  # noqa: F811
    _run_fuzz(make_settings(stack, isolated, **{"model.rank": 8, "redis.cluster": True,
                                                 "redis.port": redis_cluster,
                                                 "worker.batch_max_events": 2000}), 10_000)

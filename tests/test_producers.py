"""RatingProducer, pacing and sources without a broker (a fake client stands in for Kafka)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_als.datasets import Ratings, concat, rechunk, sort_by_time
from producers.producer import RatingProducer, TokenBucket, replay
from producers.sources import file_chunks, implicit_from_ratings, limit_rows, time_ordered
from tests.conftest import require_module
from worker.cli.common import EXIT_USAGE
from worker.cli.main import main
from worker.cli.produce import add_produce_parser
from worker.config import KafkaSettings
from worker.events import DecodeConfig, decode_batch

KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic="t")


class FakeClient:
    """Records produce() calls; raises BufferError while ``full`` > 0 (a full local queue)."""

    def __init__(self, full: int = 0) -> None:
        self.messages: list[tuple[str, bytes, bytes, int | None]] = []
        self.full = full
        self.polls = 0
        self.on_delivery: Any = None

    def produce(self, topic: str, value: bytes, key: bytes, timestamp: int | None = None) -> None:
        if self.full > 0:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.messages.append((topic, value, key, timestamp))

    def poll(self, timeout: float = 0) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def ratings(n: int = 6) -> Ratings:
    return Ratings.from_columns(
        [f"u{j % 3}" for j in range(n)], [f"i{j}" for j in range(n)],
        [1 + j % 5 for j in range(n)], [1_000_000 + j for j in range(n)])


def make(fmt: str = "json", mode: str = "explicit", full: int = 0,
         **kw: Any) -> tuple[RatingProducer, FakeClient]:
    client = FakeClient(full)
    return RatingProducer(KAFKA, fmt=fmt, mode=mode, client=client, **kw), client  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_send_batch_keys_by_user_keeps_order_and_decodes(fmt: str) -> None:
    producer, client = make(fmt)
    r = ratings(10)
    assert producer.send_batch(r) == 10
    assert [m[2] for m in client.messages] == [u.encode() for u in r.user_ids]
    decoded = decode_batch([m[1] for m in client.messages], None, DecodeConfig())
    assert not decoded.rejects
    assert decoded.ratings.user_ids.tolist() == r.user_ids.tolist()
    assert decoded.ratings.item_ids.tolist() == r.item_ids.tolist()
    np.testing.assert_array_equal(decoded.ratings.values, r.values)
    np.testing.assert_array_equal(decoded.ratings.timestamps, r.timestamps)
    assert producer.stats.sent == 10 and producer.stats.bytes > 0


def test_send_batch_accepts_arrays_and_rounds_float32_noise() -> None:
    producer, client = make()
    producer.send_batch((["a"], ["b"], np.array([3.7], np.float32), [0]))
    assert client.messages[0][1] == b'{"user_id":"a","item_id":"b","rating":3.7}'  # ts 0: absent


def test_full_queue_waits_and_never_drops() -> None:
    producer, client = make(full=25)
    producer.send_batch(ratings(50))
    assert len(client.messages) == 50
    assert producer.stats.queue_full_waits == 25
    assert client.polls >= 25


def test_invalid_rows_are_skipped_and_counted() -> None:
    producer, client = make()
    r = Ratings.from_columns(["a", "b", "c"], ["x", "y", "z"], [4.0, np.nan, 2.0], [1, 2, 3])
    assert producer.send_batch(r) == 2
    assert producer.stats.skipped == 1
    assert producer.stats.skip_reasons == {"rating missing or not finite": 1}
    assert [m[2] for m in client.messages] == [b"a", b"c"]


@pytest.mark.parametrize("fmt", ["json", "binary"])
def test_implicit_events_weights_and_mapping(fmt: str) -> None:
    cfg = DecodeConfig(mode="implicit")
    producer, client = make(fmt, "implicit")
    producer.send_batch(implicit_from_ratings(ratings(5)))  # ratings 1..5
    producer.send_batch(Ratings.from_columns(["u"], ["i"], [2.5], [7]))  # raw weight
    decoded = decode_batch([m[1] for m in client.messages], None, cfg)
    assert not decoded.rejects
    assert decoded.ratings.events.tolist() == ["dislike", "dislike", "view", "like", "like", ""]
    assert decoded.ratings.values.tolist() == [-4, -4, 1, 4, 4, 2.5]


def test_implicit_weight_override_only_when_asked() -> None:
    r = Ratings.from_columns(["u", "u"], ["i", "j"], [9.0, np.nan], [1, 2], ["like", "view"])
    for send_weights, expected in ((False, [4.0, 1.0]), (True, [9.0, 1.0])):
        producer, client = make("json", "implicit", send_weights=send_weights)
        producer.send_batch(r)
        got = decode_batch([m[1] for m in client.messages], None, DecodeConfig(mode="implicit"))
        assert got.ratings.values.tolist() == expected


def test_event_ids_and_event_kafka_timestamps() -> None:
    producer, client = make(event_id_prefix="run1-", kafka_timestamps="event")
    producer.send_batch(ratings(3))
    decoded = decode_batch([m[1] for m in client.messages], None, DecodeConfig())
    assert decoded.event_ids == ["run1-1", "run1-2", "run1-3"]
    assert [m[3] for m in client.messages] == [1_000_000_000, 1_000_001_000, 1_000_002_000]


def test_idempotence_cannot_be_turned_off_and_binary_has_no_event_id() -> None:
    with pytest.raises(ValueError, match="idempotence"):
        make(config={"enable.idempotence": False})
    with pytest.raises(ValueError, match="event_id"):
        make("binary", event_id_prefix="x")
    producer, _ = make(linger_ms=7, queue_max_messages=10, config={"acks": "all"})
    assert producer.config["enable.idempotence"] is True
    assert producer.config["linger.ms"] == 7
    assert producer.config["queue.buffering.max.messages"] == 10


def test_delivery_failures_are_counted_with_reasons() -> None:
    """Real librdkafka, no broker: every message times out and is reported as failed."""
    producer = RatingProducer(KAFKA, config={"message.timeout.ms": 300, "log_level": 0,
                                             "socket.connection.setup.timeout.ms": 1000})
    producer.send_batch(ratings(5))
    producer.flush(10)
    s = producer.stats
    assert (s.sent, s.delivered, s.failed, s.in_flight) == (5, 0, 5, 0)
    assert sum(s.failure_reasons.values()) == 5
    assert any("TIMED_OUT" in reason for reason in s.failure_reasons)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_paces_long_run_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(1000, burst=100, clock=clock)
    for _ in range(100):
        bucket.acquire(50, wait=clock.sleep)
    # 5,000 events at 1,000/s, minus the initial 100-event burst.
    assert clock.now == pytest.approx(4.9, abs=1e-6)
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_replay_paces_and_reports_progress() -> None:
    producer, client = make()
    seen: list[int] = []
    stats = replay(producer, rechunk([ratings(600)], 250), rate=1e9, on_progress=seen.append)
    assert stats.sent == 600 and sum(seen) == 600 and max(seen) <= 1e7
    assert len(client.messages) == 600


# --------------------------------------------------------------------------- sources


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=0, max_size=300), st.integers(1, 50),
       st.integers(1, 40), st.integers(1, 30))
def test_external_merge_equals_global_stable_sort(
        stamps: list[int], chunk: int, memory: int, block: int) -> None:
    n = len(stamps)
    r = Ratings.from_columns([f"u{j}" for j in range(n)], [str(j) for j in range(n)],
                             np.arange(n), stamps)
    got = concat(list(time_ordered(rechunk([r], chunk), memory, block)))
    want = sort_by_time(r)
    assert got.item_ids.tolist() == want.item_ids.tolist()
    assert got.timestamps.tolist() == want.timestamps.tolist()


def test_external_merge_keeps_events_column(tmp_path: Path) -> None:
    r = implicit_from_ratings(ratings(40)).take(np.arange(39, -1, -1))
    got = concat(list(time_ordered(rechunk([r], 7), 10, 3, spill_dir=tmp_path)))
    want = sort_by_time(r)
    assert got.events is not None and want.events is not None
    assert got.events.tolist() == want.events.tolist()
    assert list(tmp_path.iterdir()) == []  # spilled runs are cleaned up


def test_limit_rows() -> None:
    chunks = list(rechunk([ratings(10)], 4))
    assert [len(c) for c in limit_rows(chunks, 6)] == [4, 2]
    assert [len(c) for c in limit_rows(chunks, None)] == [4, 4, 2]
    assert list(limit_rows(chunks, 0)) == []


@pytest.mark.parametrize("name,text", [
    ("r.dat.gz", "1::10::4::300\n2::11::5::100\n1::12::3::200\n"),
    ("r.csv", "userId,movieId,rating,timestamp\n1,10,4,300\n2,11,5,100\n1,12,3,200\n"),
])
def test_file_chunks_time_order(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    for memory_rows in (1, 100):  # external merge and in memory
        got = concat(list(file_chunks(path, chunk_rows=2, memory_rows=memory_rows)))
        assert got.timestamps.tolist() == [100, 200, 300]
        assert got.item_ids.tolist() == ["11", "12", "10"]
    assert concat(list(file_chunks(path, order="file"))).item_ids.tolist() == ["10", "11", "12"]


def test_parquet_source(tmp_path: Path) -> None:
    pa = require_module("pyarrow")
    pq = require_module("pyarrow.parquet")
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": ["a", "b"], "rating": [4.0, 2.0],
                             "ts": [20, 10]}), path)
    got = concat(list(file_chunks(path)))
    assert got.user_ids.tolist() == ["2", "1"]


def test_cli_rejects_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["produce"]) == EXIT_USAGE
    assert "exactly one source" in capsys.readouterr().err
    assert main(["produce", "/nonexistent/ratings.csv"]) == EXIT_USAGE
    assert main(["produce", "--postgres", "dbname=x"]) == EXIT_USAGE
    assert main(["produce", "--synthetic", "-X", "novalue"]) == EXIT_USAGE
    assert callable(add_produce_parser)


def test_external_merge_orders_fractional_timestamps() -> None:
    """Rating columns carry float seconds: the spilled k-way merge must not truncate them."""
    rng = np.random.default_rng(3)
    ts = 10.5 + rng.random(40) * 0.4  # all within one whole second
    chunks = [Ratings.from_columns([f"u{j}" for j in range(s, s + 8)], ["i"] * 8, np.ones(8),
                                   ts[s:s + 8]) for s in range(0, 40, 8)]
    got = concat(list(time_ordered(chunks, memory_rows=4, block_rows=2)))
    np.testing.assert_array_equal(got.timestamps, np.sort(ts, kind="stable"))

"""CassandraStore against the real local Cassandra: one keyspace per test, dropped after."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from online_als.factors import Factors
from online_als.ratings import Ratings
from tests.conftest import Isolated, StackInfo, make_settings
from worker.config import CassandraSettings
from worker.stores.cassandra import codec
from worker.stores.cassandra.schema import LOG_BUCKET_SPAN
from worker.stores.cassandra.store import (
    CassandraStore,
    CassandraUnavailable,
    FactorsNotFound,
    ModelVersion,
    VersionConflict,
    VersionNotFound,
)

TOPIC = "ratings"


@pytest.fixture
def store(stack: StackInfo, isolated: Isolated) -> Iterator[CassandraStore]:
    st = CassandraStore(make_settings(stack, isolated).cassandra)
    st.migrate()
    try:
        yield st
    finally:
        st.drop_keyspace()
        st.close()


def _batch(partition: int, first: int, n: int, step: int = 1, seed: int = 0
           ) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``n`` accepted events at offsets first, first+step, ... (gaps = rejected events)."""
    rng = np.random.default_rng(seed + 1000 * partition + first)
    offs = first + step * np.arange(n, dtype=np.int64)
    users = [f"u{partition}-{int(j)}-é" for j in rng.integers(0, 50, n)]
    items = [f"i{int(j)}" for j in rng.integers(0, 30, n)]
    return users, items, rng.random(n).astype(np.float32), 1.7e9 + offs * 0.5, offs


def _events(users: list[str], items: list[str], values: Any, ts: Any, offsets: Any) -> Ratings:
    """Accepted events of one partition as the log takes them (checked columns)."""
    return Ratings(np.array(users, dtype=object), np.array(items, dtype=object), values, ts,
                   None, None, offsets)


def _read_all(store: CassandraStore, cutoffs: dict[int, int] | None = None,
              chunk_rows: int = 1_000_000) -> tuple[list[str], list[str], np.ndarray, np.ndarray,
                                                    np.ndarray, np.ndarray]:
    chunks = list(store.iter_log(TOPIC, cutoffs, chunk_rows))
    assert all(0 < len(c.offsets) <= chunk_rows for c in chunks)
    for c in chunks:
        assert c.user_ids.dtype == object and c.values.dtype == np.float32
        assert c.timestamps.dtype == np.float64 and c.offsets.dtype == np.int64
    if not chunks:
        empty = np.array([])
        return [], [], empty, empty, empty, empty
    return (
        [x for c in chunks for x in c.user_ids], [x for c in chunks for x in c.item_ids],
        np.concatenate([c.values for c in chunks]), np.concatenate([c.timestamps for c in chunks]),
        np.concatenate([c.partitions for c in chunks]), np.concatenate([c.offsets for c in chunks]),
    )


# -- pure codec (no server) ---------------------------------------------------------------
@pytest.mark.parametrize("ids", [[], [""], ["a", "", "b"], ["ü", "日本", "x" * 300],
                                 ["has\0nul", "b"], ["\0"]])
def test_ids_pack_roundtrip(ids: list[str]) -> None:
    assert codec.unpack_ids(codec.pack_ids(ids), len(ids)) == ids


def test_unpack_rejects_wrong_count() -> None:
    with pytest.raises(codec.BlockFormatError):
        codec.unpack_ids(codec.pack_ids(["a", "b"]), 3)
    with pytest.raises(codec.BlockFormatError):
        codec.unpack_array(b"\0" * 7, codec.F32, 2)


def test_unreachable_cassandra_fails_fast() -> None:
    """No server: a clear CassandraUnavailable, never a hang or a skip (also under CI=true)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    settings = CassandraSettings.model_validate({"hosts": "127.0.0.1", "port": port})
    start = time.monotonic()
    with pytest.raises(CassandraUnavailable, match="did not answer"):
        CassandraStore(settings)
    assert time.monotonic() - start < 30


# -- schema -------------------------------------------------------------------------------
@pytest.mark.stack
def test_migrate_twice_is_harmless(store: CassandraStore) -> None:
    store.append_log_blocks(TOPIC, 0, 0, 0, _events(["u"], ["i"], [1.0], [1.0], [0]))
    assert store.migrate() == []
    assert store.migrate() == []
    assert store.schema_versions() == [1, 2, 3]
    assert store.log_high_offsets(TOPIC) == {0: 1}


# -- ratings log --------------------------------------------------------------------------
@pytest.mark.stack
def test_log_roundtrip_in_bounded_chunks(store: CassandraStore) -> None:
    expect: dict[int, list[tuple[str, str, float, float, int]]] = {0: [], 1: []}
    for p in (1, 0):  # written out of partition order; read back in order
        first = 0
        for n, step in ((500, 1), (1200, 3), (0, 1), (700, 2)):
            u, i, v, t, o = _batch(p, first, n, step)
            last = first + max(n * step, 5) - 1  # a batch's tail can be rejected events
            blocks = store.append_log_blocks(TOPIC, p, first, last, _events(u, i, v, t, o),
                                             max_block_rows=256)
            assert blocks == max(1, -(-n // 256))
            expect[p] += list(zip(u, i, v.tolist(), t.tolist(), o.tolist(), strict=True))
            first = last + 1
        assert store.log_high_offsets(TOPIC)[p] == first
    users, items, values, ts, parts, offs = _read_all(store, chunk_rows=777)
    rows = expect[0] + expect[1]
    assert users == [r[0] for r in rows] and items == [r[1] for r in rows]
    assert np.array_equal(values, np.array([r[2] for r in rows], dtype=np.float32))
    assert np.array_equal(ts, [r[3] for r in rows])
    assert np.array_equal(offs, [r[4] for r in rows])
    assert np.array_equal(parts, [0] * len(expect[0]) + [1] * len(expect[1]))


@pytest.mark.stack
def test_log_cutoffs_trim_blocks_and_select_partitions(store: CassandraStore) -> None:
    for p in (0, 1, 2):
        u, i, v, t, o = _batch(p, 0, 1000)
        store.append_log_blocks(TOPIC, p, 0, 999, _events(u, i, v, t, o), max_block_rows=300)
    # a batch in the next bucket: a cutoff below that bucket skips it without reading it
    u, i, v, t, o = _batch(0, LOG_BUCKET_SPAN + 10, 50)
    store.append_log_blocks(TOPIC, 0, LOG_BUCKET_SPAN + 10, LOG_BUCKET_SPAN + 100,
                            _events(u, i, v, t, o))
    assert store.log_high_offsets(TOPIC) == {0: LOG_BUCKET_SPAN + 101, 1: 1000, 2: 1000}

    _u, _i, _v, _t, parts, offs = _read_all(store, {0: 450, 1: 0, 2: 1000}, chunk_rows=100)
    assert np.array_equal(offs[parts == 0], np.arange(450))  # cut inside the 2nd block
    assert not (parts == 1).any()
    assert np.array_equal(offs[parts == 2], np.arange(1000))
    _u, _i, _v, _t, parts, offs = _read_all(store, {1: 10_000})  # unlisted partitions: none
    assert set(parts.tolist()) == {1} and len(offs) == 1000
    _u, _i, _v, _t, parts, offs = _read_all(store, None)
    assert (parts == 0).sum() == 1050 and offs[parts == 0][-1] == LOG_BUCKET_SPAN + 59


@pytest.mark.stack
def test_duplicate_and_overlapping_appends_are_idempotent(store: CassandraStore) -> None:
    u, i, v, t, o = _batch(0, 0, 1000)
    for _ in range(2):  # a crash-and-retry rewrites the same batch
        store.append_log_blocks(TOPIC, 0, 0, 999, _events(u, i, v, t, o), max_block_rows=400)
    # a retry with other batch boundaries: [500, 999] again as one block, then new data
    store.append_log_blocks(TOPIC, 0, 500, 999, _events(u[500:], i[500:], v[500:], t[500:], o[500:]))
    u2, i2, v2, t2, o2 = _batch(0, 1000, 100, seed=5)
    store.append_log_blocks(TOPIC, 0, 1000, 1099, _events(u2, i2, v2, t2, o2))
    users, items, values, _ts, _p, offs = _read_all(store, chunk_rows=333)
    assert np.array_equal(offs, np.arange(1100))
    assert users == u + u2 and items == i + i2
    assert np.array_equal(values, np.concatenate([v, v2]))


@pytest.mark.stack
def test_append_validates_input(store: CassandraStore) -> None:
    with pytest.raises(ValueError, match="increasing"):
        store.append_log_blocks(TOPIC, 0, 0, 9,
                                _events(["a", "b"], ["x", "y"], [1, 1], [0, 0], [3, 2]))
    with pytest.raises(ValueError, match="differ in length"):
        store.append_log_blocks(TOPIC, 0, 0, 9, _events(["a"], ["x", "y"], [1, 1], [0, 0],
                                                        [1, 2]))
    with pytest.raises(ValueError, match="lie in"):
        store.append_log_blocks(TOPIC, 0, 5, 9, _events(["a"], ["x"], [1], [0], [2]))


# -- factors ------------------------------------------------------------------------------
@pytest.mark.stack
def test_factors_roundtrip_and_smaller_rewrite(store: CassandraStore) -> None:
    rng = np.random.default_rng(3)
    ids = [f"user{j}" for j in range(2500)] + ["nul\0id", "ü"]
    f = rng.standard_normal((len(ids), 16), dtype=np.float32)
    b = rng.standard_normal(len(ids), dtype=np.float32)
    assert store.write_factors(7, "u", Factors(ids, f, b), rows_per_block=1000) == 3
    got = store.read_factors(7, "u")
    assert got.ids == ids and np.array_equal(got.vectors, f) and np.array_equal(got.biases, b)
    assert got.aux is None
    with pytest.raises(FactorsNotFound):
        store.read_factors(7, "i")

    store.write_factors(7, "u", Factors(ids[:10], f[:10], np.zeros(10)),
                        rows_per_block=4)  # smaller rewrite
    got = store.read_factors(7, "u")
    assert got.ids == ids[:10] and np.array_equal(got.vectors, f[:10]) and not got.biases.any()
    store.delete_version(7)
    with pytest.raises(FactorsNotFound):
        store.read_factors(7, "u")
    left = store.db.read_many("SELECT block FROM {ks}.factor_blocks WHERE version = ? AND"
                              " kind = ? AND block = ?", [(7, "u", j) for j in range(3)])
    assert left == [[], [], []]  # the larger first write's blocks are gone too (reserved count)


@pytest.mark.stack
def test_many_mib_blocks_in_flight(store: CassandraStore) -> None:
    """Regression: 32 x 1 MiB writes fill the socket buffer; the driver then refuses requests
    (ConnectionBusy -> NoHostAvailable with one node) and the store must resend them."""
    n, k = 40 * 4096, 64
    f = np.random.default_rng(1).standard_normal((n, k), dtype=np.float32)
    ids = [str(j) for j in range(n)]
    assert store.write_factors(1, "i", Factors(ids, f, np.zeros(n))) == 40
    got = store.read_factors(1, "i")
    assert got.ids == ids and np.array_equal(got.vectors, f)


# -- versions, checkpoints, switches -------------------------------------------------------
@pytest.mark.stack
def test_version_lifecycle(store: CassandraStore) -> None:
    meta = ModelVersion(version=3, mode="implicit", rank=8, topic=TOPIC, params={"alpha": 2.0},
                        cutoff={0: 120, 1: 7}, counts={"ratings": 127}, notes="nightly")
    store.create_version(meta)
    with pytest.raises(VersionConflict):
        store.create_version(meta)
    got = store.get_version(3)
    assert got is not None and got.status == "building" and got.cutoff == {0: 120, 1: 7}
    assert got.params == {"alpha": 2.0} and abs(got.created_at - meta.created_at) < 0.01

    with pytest.raises(VersionConflict, match="write_factors"):
        store.set_version_status(3, "ready")  # no factor blocks yet
    store.write_factors(3, "u", Factors(["a"], np.ones((1, 8)), np.zeros(1)))
    with pytest.raises(VersionConflict, match="write_factors"):
        store.set_version_status(3, "ready")  # items still missing
    store.write_factors(3, "i", Factors(["x"], np.ones((1, 8)), np.zeros(1)))
    store.set_version_status(3, "ready", "trained", expected_status="building")
    with pytest.raises(VersionConflict, match="expected"):
        store.set_version_status(3, "promoted", expected_status="building")
    with pytest.raises(VersionConflict, match="not allowed"):
        store.set_version_status(3, "building")
    store.set_version_status(3, "promoted", "gate passed", expected_status="ready")
    store.set_version_status(3, "promoted", "retry")  # same status again: harmless
    with pytest.raises(VersionNotFound):
        store.set_version_status(99, "failed")
    with pytest.raises(ValueError):
        store.set_version_status(3, "bogus")

    store.create_version(ModelVersion(version=4))
    store.set_version_status(4, "failed", "oom")
    assert [m.version for m in store.list_versions()] == [3, 4]
    latest = store.latest_version(("promoted",))
    assert latest is not None and latest.version == 3 and latest.reason == "retry"
    assert store.latest_version("ready") is None

    store.record_switch(3, "promotion", actor="retrain")
    store.record_switch(4, "manual")
    switches = store.list_switches()
    assert [(s.version, s.reason) for s in switches] == [(4, "manual"), (3, "promotion")]
    assert abs(switches[0].at - time.time()) < 60

    store.delete_version(3)
    assert store.get_version(3) is None
    assert [m.version for m in store.list_versions()] == [4]


@pytest.mark.stack
def test_every_call_reports_its_latency(stack: StackInfo, isolated: Isolated) -> None:
    seen: list[tuple[str, float]] = []
    st = CassandraStore(make_settings(stack, isolated).cassandra,
                        observe=lambda op, s: seen.append((op, s)))
    try:
        st.migrate()
        st.append_log_blocks(TOPIC, 0, 0, 0, _events(["u"], ["i"], [1.0], [1.0], [0]))
        assert len(list(st.iter_log(TOPIC))) == 1
        st.get_version(1)
    finally:
        st.drop_keyspace()
        st.close()
    ops = [op for op, _ in seen]
    assert ops[0] == "migrate" and "append_log" in ops and "read_log_page" in ops
    assert "iter_log" in ops and ops[-1] == "get_version"
    assert all(s >= 0 for _, s in seen)


# -- archive checkpoints, holes, stream snapshots -------------------------------------------
@pytest.mark.stack
def test_archive_checkpoint_moves_only_forward_by_compare_and_set(store: CassandraStore) -> None:
    from worker.stores.cassandra.store import ArchiveConflict

    store.archive.advance(TOPIC, 0, None, 5, 10)
    with pytest.raises(ArchiveConflict):
        store.archive.advance(TOPIC, 0, None, 0, 3)  # a second "first" writer loses
    store.archive.advance(TOPIC, 0, 10, 5, 20)
    with pytest.raises(ArchiveConflict):
        store.archive.advance(TOPIC, 0, 10, 5, 15)  # a stale owner cannot move it back
    assert {p: (r.start, r.next) for p, r in store.archive_ranges(TOPIC).items()} == {0: (5, 20)}


@pytest.mark.stack
def test_a_hole_in_the_log_is_an_error_naming_partition_and_offsets(store: CassandraStore) -> None:
    from worker.stores.cassandra.store import LogHoleError

    for first, last in ((0, 99), (100, 199), (300, 399)):  # 200..299 never written
        u, i, v, t, o = _batch(1, first, last - first + 1)
        store.append_log_blocks(TOPIC, 1, first, last, _events(u, i, v, t, o))
    store.archive.advance(TOPIC, 1, None, 0, 200)
    assert sum(len(c.offsets) for c in store.iter_contiguous_log(TOPIC, {1: 200})) == 200
    with pytest.raises(LogHoleError, match=r"\[1\].*200\.\.399"):
        list(store.iter_contiguous_log(TOPIC, {1: 400}))  # past the archive's contiguous end
    with pytest.raises(LogHoleError, match=r"\[1\].*200\.\.299"):
        list(store.iter_log(TOPIC, {1: 400}, starts={1: 0}))
    # a range read starting mid-log sees only its part, and blocks overlapping the start count
    got = np.concatenate([c.offsets for c in store.iter_log(TOPIC, {1: 200}, starts={1: 150})])
    np.testing.assert_array_equal(got, np.arange(150, 200))


@pytest.mark.stack
def test_stream_snapshots_commit_last_and_keep_two(store: CassandraStore) -> None:
    rng = np.random.default_rng(4)
    for seq in (1, 2, 3):
        uf = rng.standard_normal((5000, 4), dtype=np.float32)
        snap = store.archive.write_snapshot(
            9, {0: 100 * seq}, Factors([f"u{j}" for j in range(5000)], uf, np.zeros(5000)),
            Factors(["x"], uf[:1], np.ones(1, np.float32)))
        assert snap.seq == seq
    snaps = store.archive.snapshots(9)
    assert [s.seq for s in snaps] == [3, 2] and snaps[0].offsets == {0: 300}
    got = store.archive.read_snapshot(snaps[0], "u")
    assert len(got) == 5000 and got.ids is not None and len(got.ids) == 5000
    assert np.array_equal(got.vectors, uf) and got.aux is None
    # blocks written without their commit row (a crash mid-write) are never read
    store.db.execute("INSERT INTO {ks}.stream_snapshot_blocks (version, seq, kind, block, n,"
                     " rank, ids, factors, biases) VALUES (?,?,?,?,?,?,?,?,?)",
                     (9, 4, "u", 0, 0, 4, b"", b"", b""))
    assert store.archive.snapshots(9)[0].seq == 3
    store.delete_version(9)
    assert store.archive.snapshots(9) == []

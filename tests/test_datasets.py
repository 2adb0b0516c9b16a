"""Readers and the Ratings container, on the real MovieLens files and small temp files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from online_als.datasets import (
    DATA_ENV,
    MovieLensNotFoundError,
    Ratings,
    concat,
    default_data_root,
    detect_format,
    iter_rating_chunks,
    load_ml_latest_small,
    load_movielens_100k,
    load_movielens_items,
    read_ratings,
    rechunk,
    sort_by_time,
)
from online_als.ratings import object_ids
from tests.conftest import require_module

DATA: Path | None
try:
    DATA = default_data_root()
except MovieLensNotFoundError:  # pragma: no cover - data is vendored in the shared tree
    DATA = None
needs_data = pytest.mark.usefixtures("movielens")


@pytest.fixture(scope="module")
def ml100k() -> Ratings:
    return load_movielens_100k()


def _same(a: Ratings, b: Ratings) -> bool:
    return (
        len(a) == len(b)
        and bool(np.array_equal(a.user_ids.astype(str), b.user_ids.astype(str)))
        and bool(np.array_equal(a.item_ids.astype(str), b.item_ids.astype(str)))
        and bool(np.array_equal(a.values, b.values, equal_nan=True))
        and bool(np.array_equal(a.timestamps, b.timestamps))
    )


# ----------------------------------------------------------------------------- container


def test_ratings_coerces_dtypes_and_validates_lengths() -> None:
    r = Ratings.from_columns([1, 2], ["a", "b"], [4, 5])
    assert r.user_ids.tolist() == ["1", "2"]
    assert r.values.dtype == np.float32 and r.timestamps.dtype == np.float64
    assert r.timestamps.tolist() == [0, 0]
    with pytest.raises(ValueError, match="differ in length"):
        Ratings.from_columns([1, 2], ["a"], [4, 5])


def test_take_slice_concat_sort() -> None:
    r = Ratings.from_columns(list("abcd"), list("wxyz"), [1, 2, 3, 4], [40, 10, 30, 10])
    assert sort_by_time(r).user_ids.tolist() == ["b", "d", "c", "a"]  # stable on ties
    assert r.take(np.array([True, False, True, False])).item_ids.tolist() == ["w", "y"]
    assert _same(concat([r.slice(0, 1), r.slice(1, 4)]), r)
    assert [len(b) for b in r.iter_batches(3)] == [3, 1]
    assert len(concat([Ratings.empty(), Ratings.empty()])) == 0


def test_kafka_columns_travel_with_the_rows() -> None:
    """Decoded batches and log chunks carry partitions and offsets in the same type."""
    r = Ratings(np.array(["u1", "u2", "u3"], dtype=object), ["a", "b", "c"], [1, 2, 3],
                [1.5, np.nan, 3.0], None, [1, 0, 1], [7, 9, 3])
    assert r.partitions is not None and r.partitions.dtype == np.int32
    assert r.offsets is not None and r.offsets.dtype == np.int64
    s = r.sort_by_offset()
    assert s.user_ids.tolist() == ["u2", "u3", "u1"]
    assert s.offsets.tolist() == [9, 3, 7] and s.partitions.tolist() == [0, 1, 1]  # type: ignore[union-attr]
    assert np.isnan(s.timestamps[0])  # unknown event time survives
    joined = concat([r.take([0]), r.slice(1, 3)])
    assert joined.offsets.tolist() == [7, 9, 3]  # type: ignore[union-attr]
    assert concat([r, Ratings.from_columns(["x"], ["y"], [1.0])]).offsets is None
    with pytest.raises(ValueError, match="differ in length"):
        Ratings(["u"], ["a"], [1.0], [0.0], None, None, [1, 2])
    with pytest.raises(ValueError, match="partitions and offsets"):
        Ratings.from_columns(["u"], ["a"], [1.0]).sort_by_offset()
    assert object_ids(["a", "bb"]).dtype == object


def test_rechunk_exact_sizes() -> None:
    r = Ratings.from_columns(range(7), range(7), range(7), range(7))
    chunks = list(rechunk([r.slice(0, 2), r.slice(2, 7)], 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert _same(concat(chunks), r)


# ----------------------------------------------------------------------------- MovieLens


@needs_data
def test_ml100k_facts(ml100k: Ratings) -> None:
    assert len(ml100k) == 100_000
    assert ml100k.n_users == 943 and ml100k.n_items == 1682
    first = (ml100k.user_ids[0], ml100k.item_ids[0], ml100k.values[0], ml100k.timestamps[0])
    assert first == ("196", "242", 3.0, 881250949)
    counts = np.bincount(ml100k.values.astype(np.int64), minlength=6)[1:]
    assert counts.tolist() == [6110, 11370, 27145, 34174, 21201]
    assert ml100k.timestamps.min() == 874724710 and ml100k.timestamps.max() == 893286638


@needs_data
def test_ml_latest_small_facts() -> None:
    r = load_ml_latest_small()
    assert len(r) == 100_836 and r.n_users == 610 and r.n_items == 9724
    assert float(r.values.min()) == 0.5 and float(r.values.max()) == 5.0
    assert int(r.timestamps.min()) == 828124615 and int(r.timestamps.max()) == 1537799250


@needs_data
def test_item_titles() -> None:
    items = load_movielens_items()
    assert len(items) == 1682 and items.title("1") == "Toy Story (1995)"
    assert "Animation" in items.genres[0]
    assert any("é" in t for t in items.titles)  # latin-1 decoded, not mojibake
    small = load_movielens_items(dataset="ml-latest-small")
    assert len(small) == 9742 and small.as_dict()["2"] == "Jumanji (1995)"


@needs_data
@pytest.mark.parametrize("chunk_rows", [1, 7_777, 100_000, 250_000])
def test_chunked_equals_one_shot(ml100k: Ratings, chunk_rows: int) -> None:
    assert DATA is not None
    path = DATA / "ml-100k" / "u.data.gz"
    if chunk_rows == 1:  # row-at-a-time on a prefix only, to stay fast
        chunks = []
        for c in iter_rating_chunks(path, 1, block_bytes=4096):
            chunks.append(c)
            if len(chunks) == 500:
                break
        assert all(len(c) == 1 for c in chunks)
        assert _same(concat(chunks), ml100k.slice(0, 500))
        return
    chunks = list(iter_rating_chunks(path, chunk_rows, block_bytes=65_536))
    assert all(len(c) == chunk_rows for c in chunks[:-1])
    assert _same(concat(chunks), ml100k)


@needs_data
def test_plain_gzip_and_dat_formats_agree(tmp_path: Path, ml100k: Ratings) -> None:
    head = ml100k.slice(0, 3000)
    lines = [
        f"{u}\t{i}\t{int(v)}\t{t}\n"
        for u, i, v, t in zip(
            head.user_ids, head.item_ids, head.values, head.timestamps, strict=True
        )
    ]
    plain = tmp_path / "u.data"
    plain.write_text("".join(lines))
    gz = tmp_path / "u.data.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    dat = tmp_path / "ratings.dat"
    dat.write_text("".join(ln.replace("\t", "::") for ln in lines))
    crlf = tmp_path / "no_suffix"
    crlf.write_bytes("".join(lines).replace("\n", "\r\n").encode())
    for p in (plain, gz, dat, crlf):
        assert _same(read_ratings(p), head), p
        assert _same(concat(list(iter_rating_chunks(p, 999, block_bytes=4096))), head), p
    assert detect_format(crlf) == "data"


def test_csv_event_format_and_quotes(tmp_path: Path) -> None:
    p = tmp_path / "events.csv"
    p.write_text(
        "user_id,item_id,rating,timestamp,event\n"
        "u1,i1,4.5,100,rate\n"
        "u2,i2,,200,view\n"
        '"u,3",i3,1,300,"buy"\n'
        "u4,i4,2.0,400,rate"  # no final newline
    )
    r = read_ratings(p)
    assert r.user_ids.tolist() == ["u1", "u2", "u,3", "u4"]
    assert r.events is not None and r.events.tolist() == ["rate", "view", "buy", "rate"]
    assert np.isnan(r.values[1]) and r.values[0] == np.float32(4.5)
    assert r.timestamps.tolist() == [100, 200, 300, 400]


def test_csv_header_errors_and_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_ratings(p)
    q = tmp_path / "short.data"
    q.write_text("1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(ValueError, match="expected 4 fields"):
        read_ratings(q)
    with pytest.raises(FileNotFoundError):
        list(iter_rating_chunks(tmp_path / "missing.csv"))


@needs_data
def test_csv_chunks_match_latest_small() -> None:
    assert DATA is not None
    path = DATA / "ml-latest-small" / "ratings.csv.gz"
    whole = load_ml_latest_small()
    chunks = list(iter_rating_chunks(path, 30_000, block_bytes=100_000))
    assert [len(c) for c in chunks] == [30_000, 30_000, 30_000, 10_836]
    assert _same(concat(chunks), whole)


def test_parquet_roundtrip(tmp_path: Path) -> None:
    pa = require_module("pyarrow")
    pq = require_module("pyarrow.parquet")
    n = 2_500
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, n)
    items = rng.integers(0, 80, n)
    values = rng.integers(1, 6, n).astype(np.float32)
    stamps = np.arange(n, dtype=np.int64) + 1_000_000
    table = pa.table({"userId": users, "movieId": items, "rating": values, "timestamp": stamps})
    path = tmp_path / "r.parquet"
    pq.write_table(table, path, row_group_size=700)
    chunks = list(iter_rating_chunks(path, 1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    expected = Ratings.from_columns(users, items, values, stamps)
    assert _same(concat(chunks), expected)
    # string ids, arrow timestamps and a null rating
    t2 = pa.table(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "rating": pa.array([1.0, None]),
            "timestamp": pa.array([1_000, 2_000], pa.timestamp("ms")),
        }
    )
    pq.write_table(t2, tmp_path / "s.parquet")
    r = read_ratings(tmp_path / "s.parquet")
    assert r.user_ids.tolist() == ["a", "b"] and r.timestamps.tolist() == [1, 2]
    assert np.isnan(r.values[1])


def test_missing_data_root_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MovieLensNotFoundError, match=DATA_ENV):
        default_data_root(tmp_path / "nowhere")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    (tmp_path / "ml-100k").mkdir()
    assert default_data_root() == tmp_path.resolve()
    with pytest.raises(MovieLensNotFoundError, match="u.data"):
        load_movielens_100k()


@needs_data
def test_fast_and_general_parsers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from online_als.datasets import readers

    assert DATA is not None
    paths = [DATA / "ml-100k" / "u.data.gz", DATA / "ml-latest-small" / "ratings.csv.gz"]
    fast = [read_ratings(p) for p in paths]
    monkeypatch.setattr(readers, "_parse_fast", lambda *args: None)
    general = [read_ratings(p) for p in paths]
    for a, b in zip(fast, general, strict=True):
        assert _same(a, b)


def test_long_ids_are_not_truncated(tmp_path: Path) -> None:
    long_id = "user-" + "x" * 60
    p = tmp_path / "long.csv"
    p.write_text(f"user_id,item_id,rating,timestamp\n{long_id},i1,1,5\nu2,i2,2,6\n")
    assert read_ratings(p).user_ids.tolist() == [long_id, "u2"]

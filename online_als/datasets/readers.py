"""Chunked readers for rating files (MovieLens text formats, CSV, Parquet).

Supported formats (``fmt``), each gzip-compressed or plain (detected from the magic bytes):

- ``"data"``: MovieLens 100K ``u.data``: ``user TAB item TAB rating TAB timestamp``, no header.
- ``"dat"``: MovieLens 1M/10M ``ratings.dat``: ``user::item::rating::timestamp``, no header.
- ``"csv"``: comma separated with a header naming the columns, e.g. MovieLens
  ``userId,movieId,rating,timestamp`` or ``user_id,item_id,rating,timestamp,event``
  (see :data:`COLUMN_ALIASES`). An empty rating becomes ``NaN``; a missing timestamp column
  gives 0. Quoted fields (RFC 4180) are handled.
- ``"parquet"``: read with ``pyarrow.parquet.ParquetFile.iter_batches`` (optional extra
  ``online-als[parquet]``), same column names as CSV.

``fmt="auto"`` picks the format from the file name (``.data``, ``.dat``, ``.csv``, ``.parquet``,
``.pq``, each optionally followed by ``.gz``) and otherwise sniffs the content.

Memory is bounded: text files are read in blocks of at most ``block_bytes`` bytes and every
yielded chunk holds exactly ``chunk_rows`` rows (the last one may be shorter).
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Literal

import numpy as np

from online_als.ratings import Ratings, as_str_array, concat

__all__ = [
    "COLUMN_ALIASES",
    "Format",
    "detect_format",
    "iter_rating_chunks",
    "read_ratings",
    "rechunk",
]

Format = Literal["auto", "data", "dat", "csv", "parquet"]

#: Accepted header names (lower-cased) for each logical column of CSV and Parquet files.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user_id", "user"),
    "item": ("movieid", "item_id", "itemid", "movie_id", "item"),
    "rating": ("rating", "value", "score"),
    "timestamp": ("timestamp", "ts", "time"),
    "event": ("event", "event_type", "type"),
}

_SUFFIXES: dict[str, str] = {
    ".data": "data",
    ".dat": "dat",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_DEFAULT_BLOCK = 8 << 20
_FIXED_COLUMNS = {"user": 0, "item": 1, "rating": 2, "timestamp": 3, "n": 4}


def detect_format(path: str | Path) -> str:
    """Guess the format of ``path`` from its name, else from its first line.

    >>> detect_format("ml-100k/u.data.gz"), detect_format("ratings.csv")
    ('data', 'csv')
    """
    p = Path(path)
    name = p.name.lower()
    for gz in (".gz", ".gzip"):
        if name.endswith(gz):
            name = name[: -len(gz)]
    suffix = Path(name).suffix
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic == _PARQUET_MAGIC:
        return "parquet"
    with _open_binary(p) as fh:
        first = fh.readline().decode("utf-8", errors="replace")
    if "::" in first:
        return "dat"
    if "\t" in first:
        return "data"
    if "," in first:
        return "csv"
    raise ValueError(f"cannot detect the rating format of {p}; pass fmt=")


def _open_binary(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == _GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


def iter_rating_chunks(
    path: str | Path,
    chunk_rows: int = 1_000_000,
    fmt: Format = "auto",
    *,
    encoding: str = "utf-8",
    block_bytes: int = _DEFAULT_BLOCK,
) -> Iterator[Ratings]:
    """Yield :class:`Ratings` chunks of exactly ``chunk_rows`` rows (last one shorter).

    Parameters
    ----------
    path : file to read (gzip or plain text, or Parquet).
    chunk_rows : rows per yielded chunk.
    fmt : ``"auto"``, ``"data"``, ``"dat"``, ``"csv"`` or ``"parquet"`` (module docstring).
    encoding : text encoding of ids (MovieLens rating files are ASCII).
    block_bytes : bytes read from a text file at a time (bounds memory with ``chunk_rows``).

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "r.data")
    >>> _ = open(p, "w").write("1\\t10\\t4\\t100\\n2\\t10\\t3\\t50\\n1\\t20\\t5\\t70\\n")
    >>> [len(c) for c in iter_rating_chunks(p, chunk_rows=2)]
    [2, 1]
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"rating file not found: {p}")
    kind = detect_format(p) if fmt == "auto" else fmt
    if kind == "parquet":
        blocks = _iter_parquet(p, chunk_rows)
    elif kind in ("data", "dat", "csv"):
        blocks = _iter_text(p, kind, encoding, max(block_bytes, 1 << 12))
    else:
        raise ValueError(f"unknown rating format {fmt!r}")
    yield from rechunk(blocks, chunk_rows)


def read_ratings(path: str | Path, fmt: Format = "auto", *, encoding: str = "utf-8") -> Ratings:
    """Read a whole rating file into one :class:`Ratings` (file order kept)."""
    return concat(list(iter_rating_chunks(path, 1 << 62, fmt, encoding=encoding)))


def rechunk(parts: Iterable[Ratings], chunk_rows: int) -> Iterator[Ratings]:
    """Regroup a stream of containers into chunks of exactly ``chunk_rows`` rows.

    >>> r = Ratings.from_columns(list("abcde"), list("vwxyz"), range(5), range(5))
    >>> [len(c) for c in rechunk([r, r], 4)]
    [4, 4, 2]
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    pending: list[Ratings] = []
    n_pending = 0
    for part in parts:
        start = 0
        while start < len(part):
            take = min(chunk_rows - n_pending, len(part) - start)
            pending.append(part.slice(start, start + take))
            n_pending += take
            start += take
            if n_pending == chunk_rows:
                yield concat(pending)
                pending, n_pending = [], 0
    if n_pending:
        yield concat(pending)


# --------------------------------------------------------------------------- text formats


def _iter_text(path: Path, kind: str, encoding: str, block_bytes: int) -> Iterator[Ratings]:
    with _open_binary(path) as fh:
        columns: dict[str, int] | None = None
        if kind == "csv":
            header = fh.readline().decode(encoding).lstrip("\ufeff")
            columns = _header_columns(next(csv.reader([header]), []), path)
        tail = b""
        line_no = 2 if kind == "csv" else 1
        while True:
            block = fh.read(block_bytes)
            if not block:
                break
            block = tail + block
            cut = block.rfind(b"\n")
            if cut < 0:
                tail = block
                continue
            tail = block[cut + 1 :]
            text = block[: cut + 1].decode(encoding)
            parsed = _parse_text(text, kind, columns, path, line_no)
            line_no += text.count("\n")
            if len(parsed):
                yield parsed
        if tail.strip():
            yield _parse_text(tail.decode(encoding), kind, columns, path, line_no)


def _header_columns(names: list[str], path: Path) -> dict[str, int]:
    lowered = [n.strip().lower() for n in names]
    found: dict[str, int] = {}
    for key, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                found[key] = lowered.index(alias)
                break
    missing = [k for k in ("user", "item", "rating") if k not in found]
    if missing:
        raise ValueError(
            f"{path}: header {names!r} lacks column(s) {missing}; accepted names: "
            + ", ".join(f"{k}={list(COLUMN_ALIASES[k])}" for k in missing)
        )
    found["n"] = len(names)
    return found


def _split_lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "" in lines:
        lines = [ln for ln in lines if ln]
    return lines


_ID_WIDTH = 32


def _parse_fast(text: str, kind: str, cols: dict[str, int]) -> Ratings | None:
    """Parse a block with NumPy's C text reader; None when anything is irregular (empty
    fields, long ids, bad rows), so the general path, which reports errors, takes over."""
    keys = [k for k in ("user", "item", "rating", "timestamp", "event") if k in cols]
    kinds = {"user": f"U{_ID_WIDTH}", "item": f"U{_ID_WIDTH}", "rating": "f4",
             "timestamp": "i8", "event": f"U{_ID_WIDTH}"}  # fmt: skip
    dtype = np.dtype([(k, kinds[k]) for k in keys])
    if kind == "dat":
        text = text.replace("::", "\t")
    delimiter = "," if kind == "csv" else "\t"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            table = np.loadtxt(
                io.StringIO(text), dtype=dtype, delimiter=delimiter, comments=None,
                quotechar='"' if kind == "csv" else None, usecols=[cols[k] for k in keys],
                ndmin=1, encoding=None,
            )  # fmt: skip
        except (ValueError, TypeError, Warning):
            return None
    columns: dict[str, np.ndarray] = {}
    for key in ("user", "item", "event"):
        if key in cols:
            ids = table[key]
            width = int(np.strings.str_len(ids).max(initial=0))
            if width >= _ID_WIDTH:
                return None  # may have been truncated
            columns[key] = ids.astype(f"U{max(width, 1)}")
    return Ratings(
        columns["user"],
        columns["item"],
        np.ascontiguousarray(table["rating"]),
        np.ascontiguousarray(table["timestamp"])
        if "timestamp" in cols
        else np.zeros(table.shape[0], np.int64),
        columns.get("event"),
    )


def _parse_text(
    text: str, kind: str, columns: dict[str, int] | None, path: Path, line_no: int
) -> Ratings:
    if kind == "csv":
        assert columns is not None
        fast = _parse_fast(text, kind, columns)
    else:
        fast = _parse_fast(text, kind, _FIXED_COLUMNS)
    if fast is not None:
        return fast
    lines = _split_lines(text)
    if not lines:
        return Ratings.empty()
    if kind == "csv":
        assert columns is not None
        ncols = columns["n"]
        cols = columns
        sep = ","
    else:
        ncols = 4
        cols = _FIXED_COLUMNS
        sep = "::" if kind == "dat" else "\t"
    if kind == "csv" and '"' in text:
        rows = list(csv.reader(lines))
        if any(len(r) != ncols for r in rows):
            _raise_bad_line(rows, ncols, path, line_no)
        fields = [f for r in rows for f in r]
    else:
        fields = sep.join(lines).split(sep)
        if len(fields) != ncols * len(lines):
            _raise_bad_line([ln.split(sep) for ln in lines], ncols, path, line_no)
    n = len(lines)

    def column(key: str) -> list[str]:
        return fields[cols[key] :: ncols]

    stamps = (
        _parse_numbers(column("timestamp"), np.int64, path)
        if "timestamp" in cols
        else np.zeros(n, np.int64)
    )
    return Ratings(
        np.array(column("user")),
        np.array(column("item")),
        _parse_numbers(column("rating"), np.float32, path),
        stamps,
        np.array(column("event")) if "event" in cols else None,
    )


def _raise_bad_line(rows: list[list[str]], ncols: int, path: Path, line_no: int) -> None:
    for offset, row in enumerate(rows):
        if len(row) != ncols:
            raise ValueError(
                f"{path}: about line {line_no + offset}: expected {ncols} fields, "
                f"got {len(row)}: {row!r}"
            )
    raise ValueError(f"{path}: malformed block starting near line {line_no}")


def _parse_numbers(values: list[str], dtype: type[np.generic], path: Path) -> np.ndarray:
    """Parse decimal strings fast (``np.fromstring``), strictly on any irregularity."""
    is_int = np.issubdtype(dtype, np.integer)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            out = np.fromstring(" ".join(values), dtype=np.int64 if is_int else np.float64, sep=" ")
        except (DeprecationWarning, ValueError):
            out = np.empty(0)
    if out.shape[0] == len(values):
        return out.astype(dtype, copy=False)
    try:
        if is_int:
            return np.array(
                [int(float(v)) if "." in v or "e" in v else int(v) for v in values], dtype=dtype
            )
        return np.array([float(v) if v.strip() else np.nan for v in values], dtype=dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: cannot parse a number: {exc}") from None


# --------------------------------------------------------------------------- parquet


def _iter_parquet(path: Path, chunk_rows: int) -> Iterator[Ratings]:
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading Parquet needs pyarrow: pip install 'online-als[parquet]'"
        ) from exc
    pf = pq.ParquetFile(path)
    names = list(pf.schema_arrow.names)
    cols = _header_columns(names, path)
    wanted = [names[cols[k]] for k in ("user", "item", "rating", "timestamp", "event") if k in cols]

    def ids(arr: pa.Array) -> np.ndarray:
        if pa.types.is_integer(arr.type):
            return as_str_array(arr.to_numpy(zero_copy_only=False))
        return np.asarray(arr.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=np.str_)

    def stamps(arr: pa.Array) -> np.ndarray:
        if pa.types.is_timestamp(arr.type):
            per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[arr.type.unit]
            raw = pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)
            return np.floor_divide(raw, per_second).astype(np.int64)
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)

    for batch in pf.iter_batches(batch_size=chunk_rows, columns=wanted):
        by_name = {name: batch.column(name) for name in wanted}

        def col(key: str, by_name: dict[str, pa.Array] = by_name) -> pa.Array:
            return by_name[names[cols[key]]]

        values = col("rating")
        if values.null_count:
            values = pc.fill_null(pc.cast(values, pa.float64()), float("nan"))
        yield Ratings(
            ids(col("user")),
            ids(col("item")),
            np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32),
            stamps(col("timestamp")) if "timestamp" in cols else np.zeros(len(batch), np.int64),
            ids(col("event")) if "event" in cols else None,
        )

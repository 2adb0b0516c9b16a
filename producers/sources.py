"""Where events come from: rating files in timestamp order, plus stream transforms.

Time order for files (``time_ordered``): chunks are buffered up to ``memory_rows`` rows; a file
that fits is sorted in memory (MovieLens 100K/1M/20M all fit with the default). A larger
file is cut into sorted runs of ``memory_rows`` rows spilled to ``.npy`` files and streamed
back through a k-way merge, so the output is the *global* stable order (equal timestamps keep
file order) with memory bounded by about ``memory_rows + k * chunk_rows`` rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from online_als.datasets import Ratings, concat, iter_rating_chunks, rechunk, sort_by_time
from online_als.datasets.readers import Format

__all__ = ["file_chunks", "implicit_from_ratings", "limit_rows", "time_ordered"]

_COLUMNS = ("user_ids", "item_ids", "values", "timestamps", "events")


def file_chunks(
    path: str | Path,
    *,
    chunk_rows: int = 100_000,
    fmt: Format = "auto",
    order: str = "time",
    memory_rows: int = 5_000_000,
    spill_dir: str | Path | None = None,
) -> Iterator[Ratings]:
    """Chunks of a rating file, in timestamp order (``order="time"``) or file order."""
    chunks = iter_rating_chunks(path, chunk_rows, fmt)
    if order == "file":
        return chunks
    if order != "time":
        raise ValueError(f"order must be 'time' or 'file', got {order!r}")
    return rechunk(time_ordered(chunks, memory_rows, chunk_rows, spill_dir), chunk_rows)


def time_ordered(
    chunks: Iterable[Ratings],
    memory_rows: int = 5_000_000,
    block_rows: int = 100_000,
    spill_dir: str | Path | None = None,
) -> Iterator[Ratings]:
    """The rows of ``chunks`` stably sorted by timestamp, in bounded memory (module doc)."""
    if memory_rows < 1 or block_rows < 1:
        raise ValueError("memory_rows and block_rows must be >= 1")
    buffer: list[Ratings] = []
    buffered = 0
    with tempfile.TemporaryDirectory(prefix="oals-sort-", dir=spill_dir) as tmp:
        runs: list[dict[str, np.ndarray]] = []
        for chunk in chunks:
            buffer.append(chunk)
            buffered += len(chunk)
            if buffered >= memory_rows:
                runs.append(_spill(sort_by_time(concat(buffer)), Path(tmp), len(runs)))
                buffer, buffered = [], 0
        if not runs:  # it fitted: the common case
            if buffered:
                yield sort_by_time(concat(buffer))
            return
        if buffered:
            runs.append(_spill(sort_by_time(concat(buffer)), Path(tmp), len(runs)))
        del buffer
        yield from _merge(runs, block_rows)


def _spill(run: Ratings, tmp: Path, n: int) -> dict[str, np.ndarray]:
    """Write one sorted run as .npy columns and map it back read-only (no pickle)."""
    out: dict[str, np.ndarray] = {}
    for name in _COLUMNS:
        col = getattr(run, name)
        if col is None:
            continue
        if col.dtype == object:
            col = col.astype(np.str_)  # object arrays would need pickle
        path = tmp / f"run{n}_{name}.npy"
        np.save(path, col)
        out[name] = np.load(path, mmap_mode="r")
    return out


def _merge(runs: list[dict[str, np.ndarray]], block_rows: int) -> Iterator[Ratings]:
    """Stable k-way merge of sorted runs, one block per run in memory at a time.

    Rows are ordered by the key (ts, run, position). Each round finds the smallest key that
    ends a loaded block of a run with rows left, (T, r); every unemitted row of such a run
    has a key >= (T, r), so all loaded rows with key <= (T, r) can go out now: ts <= T from
    runs before r, all of run r's block, ts < T from runs after r. Run r's block empties,
    so each round makes progress.
    """
    with_events = all("events" in run for run in runs)
    pos = [0] * len(runs)
    sizes = [run["timestamps"].shape[0] for run in runs]
    while True:
        blocks: list[tuple[int, np.ndarray]] = []
        bound: tuple[float, int] | None = None
        for r, run in enumerate(runs):
            if pos[r] >= sizes[r]:
                continue
            ts = np.asarray(run["timestamps"][pos[r] : pos[r] + block_rows])
            blocks.append((r, ts))
            if pos[r] + ts.shape[0] < sizes[r]:
                key = (float(ts[-1]), r)  # float: a fractional time must not stall the merge
                bound = key if bound is None else min(bound, key)
        if not blocks:
            return
        parts: list[Ratings] = []
        for r, ts in blocks:
            if bound is None:
                take = ts.shape[0]
            else:
                # Ties at T: runs up to r go first (file order), later runs wait.
                if r <= bound[1]:
                    take = int(np.searchsorted(ts, bound[0], side="right"))
                else:
                    take = int(np.searchsorted(ts, bound[0], side="left"))
            if take:
                parts.append(_rows(runs[r], pos[r], pos[r] + take, with_events))
                pos[r] += take
        yield sort_by_time(concat(parts))


def _rows(run: dict[str, np.ndarray], start: int, stop: int, with_events: bool) -> Ratings:
    return Ratings(
        np.asarray(run["user_ids"][start:stop]),
        np.asarray(run["item_ids"][start:stop]),
        np.asarray(run["values"][start:stop]),
        np.asarray(run["timestamps"][start:stop]),
        np.asarray(run["events"][start:stop]) if with_events else None,
    )


def implicit_from_ratings(
    ratings: Ratings, like_min: float = 4.0, dislike_max: float = 2.0
) -> Ratings:
    """Explicit ratings as implicit events: ``>= like_min`` like, ``<= dislike_max`` dislike,
    anything else (including a missing rating) view. Values become NaN (no weight override).

    >>> r = Ratings.from_columns(["1"] * 3, ["a", "b", "c"], [5, 3, 1], [1, 2, 3])
    >>> implicit_from_ratings(r).events.tolist()
    ['like', 'view', 'dislike']
    """
    if dislike_max >= like_min:
        raise ValueError("dislike_max must be < like_min")
    v = ratings.values
    events = np.where(v >= like_min, "like", np.where(v <= dislike_max, "dislike", "view"))
    return Ratings(
        ratings.user_ids,
        ratings.item_ids,
        np.full(len(ratings), np.nan, np.float32),
        ratings.timestamps,
        events,
    )


def limit_rows(chunks: Iterable[Ratings], limit: int | None) -> Iterator[Ratings]:
    """At most ``limit`` rows in total (all when ``None``); stops reading once reached."""
    if limit is None:
        yield from chunks
        return
    left = limit
    for chunk in chunks:
        if left <= 0:
            return
        if len(chunk) > left:
            chunk = chunk.slice(0, left)
        left -= len(chunk)
        yield chunk

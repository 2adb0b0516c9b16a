"""The ratings log: accepted events stored as packed column blocks, read back in chunks.

A block holds consecutive accepted events of one Kafka partition (a worker micro-batch, split
at ``max_block_rows``). Its key is (topic, partition, bucket, first_offset) with
``bucket = first_offset // LOG_BUCKET_SPAN``, so rewriting a batch after a crash overwrites the
same rows. Should a rewrite use different batch boundaries, blocks may overlap; the reader
drops every offset at or below the highest one already yielded for that partition, which
keeps the output exactly-once per offset.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from cassandra.cluster import ResponseFuture

from online_als.ratings import Ratings, object_ids
from worker.stores.cassandra import codec
from worker.stores.cassandra.schema import LOG_BUCKET_SPAN
from worker.stores.cassandra.session import Db

MAX_BLOCK_ROWS = 8192
#: The archiver never writes a block spanning more offsets than this (it splits larger ranges),
#: so a reader starting at offset s finds every block covering s among those starting at or
#: after s - MAX_BLOCK_SPAN.
MAX_BLOCK_SPAN = 1 << 16  # ~0.3 MiB per block with short ids: far below the 16 MiB mutation limit
FETCH_BLOCKS = 64  # blocks per page: a range of RANGE_SPAN offsets is usually one page
RANGE_SPAN = 1 << 16  # offsets per read query (~2-5 MiB of blocks when offsets are dense)
READ_AHEAD = 4  # range queries in flight while decoding
_NO_CUTOFF = (1 << 63) - 1

_INSERT = (
    "INSERT INTO {ks}.ratings_log (topic, kafka_partition, bucket, first_offset, last_offset, n,"
    " user_ids, item_ids, vals, ts, offsets, written_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_BUCKET = "INSERT INTO {ks}.log_buckets (topic, kafka_partition, bucket) VALUES (?,?,?)"
_BUCKETS = "SELECT kafka_partition, bucket FROM {ks}.log_buckets WHERE topic = ?"
_READ = (
    "SELECT first_offset, last_offset, n, user_ids, item_ids, vals, ts, offsets"
    " FROM {ks}.ratings_log"
    " WHERE topic = ? AND kafka_partition = ? AND bucket = ? AND first_offset >= ?"
    " AND first_offset < ?"
)
# Overlapping rewrites can leave the largest last_offset a few blocks before the end.
_TAIL = (
    "SELECT last_offset FROM {ks}.ratings_log WHERE topic = ? AND kafka_partition = ?"
    " AND bucket = ? ORDER BY first_offset DESC LIMIT 8"
)


class LogHoleError(RuntimeError):
    """The log misses offsets it was asked for; never skipped silently."""

    def __init__(self, topic: str, partition: int, first: int, last: int) -> None:
        super().__init__(
            f"the ratings log of {topic}[{partition}] has no blocks for offsets {first}..{last}; "
            "run `online-als archive` until it has caught up (Kafka must still hold them)")
        self.topic, self.partition, self.first, self.last = topic, partition, first, last


class _Range(NamedTuple):
    partition: int
    cutoff: int
    params: tuple[str, int, int, int, int]


class _Block:
    """One decoded block; ``start`` marks rows already handed out."""

    __slots__ = ("users", "items", "numeric", "start")

    def __init__(self, users: list[str], items: list[str], numeric: list[np.ndarray]) -> None:
        self.users, self.items, self.numeric, self.start = users, items, numeric, 0


class _Columns:
    """Decoded blocks waiting to be cut into chunks (memory: one chunk plus one page)."""

    def __init__(self) -> None:
        self.blocks: deque[_Block] = deque()
        self.rows = 0

    def add(self, users: list[str], items: list[str], numeric: list[np.ndarray]) -> None:
        self.blocks.append(_Block(users, items, numeric))
        self.rows += len(users)

    def take(self, n: int) -> Ratings:
        """Remove and return the first ``n`` rows (no re-copy of what stays behind)."""
        users: list[str] = []
        items: list[str] = []
        numeric: list[list[np.ndarray]] = [[], [], [], []]
        need = n
        while need:
            blk = self.blocks[0]
            s = blk.start
            e = min(len(blk.users), s + need)
            users.extend(blk.users[s:e])
            items.extend(blk.items[s:e])
            for j in range(4):
                numeric[j].append(blk.numeric[j][s:e])
            need -= e - s
            if e == len(blk.users):
                self.blocks.popleft()
            else:
                blk.start = e
        self.rows -= n
        cols = [np.concatenate(c) for c in numeric]
        values, ts, partitions, offsets = cols
        return Ratings.trusted(object_ids(users), object_ids(items), values, ts, None, partitions,
                               offsets)


def _validate(first: int, last: int, n: int, offsets: np.ndarray) -> None:
    if first > last:
        raise ValueError(f"first_offset {first} > last_offset {last}")
    if n and (offsets[0] < first or offsets[-1] > last):
        raise ValueError(f"offsets must lie in [{first}, {last}]")
    if n > 1 and not bool(np.all(np.diff(offsets) > 0)):
        raise ValueError("offsets must be strictly increasing (Kafka order within a partition)")


class RatingsLog:
    """Append and read the ratings log of one keyspace."""

    def __init__(self, db: Db) -> None:
        self.db = db
        # Index rows this process has written: a bucket holds ~200 batches, so skip the rest.
        self._indexed: set[tuple[str, int, int]] = set()

    def append_blocks(
        self, topic: str, partition: int, first_offset: int, last_offset: int, events: Ratings,
        max_block_rows: int = MAX_BLOCK_ROWS,
    ) -> int:
        """Store one micro-batch covering Kafka offsets [first_offset, last_offset].

        ``events`` are the accepted events of the partition, with their ``offsets`` (rejected
        ones are absent). An empty batch is stored too, so :meth:`high_offsets` moves past
        offsets that were all rejected. Returns the number of blocks written. Idempotent for
        the same arguments.
        """
        if events.offsets is None:
            raise ValueError("the log needs each event's Kafka offset (Ratings.offsets)")
        offs = np.asarray(events.offsets, dtype=np.int64)
        vals = np.asarray(events.values, dtype=np.float32)
        tss = np.asarray(events.timestamps, dtype=np.float64)
        user_ids, item_ids = events.user_ids.tolist(), events.item_ids.tolist()
        n = len(offs)
        if not len(user_ids) == len(item_ids) == len(vals) == len(tss) == n:  # trusted batches too
            raise ValueError("user_ids, item_ids, values, timestamps and offsets differ in length")
        _validate(first_offset, last_offset, n, offs)
        starts = list(range(0, n, max_block_rows)) or [0]
        now = int(time.time() * 1000)
        rows: list[tuple[Any, ...]] = []
        for j, s in enumerate(starts):
            e = min(s + max_block_rows, n)
            first = first_offset if j == 0 else int(offs[s])
            last = last_offset if j == len(starts) - 1 else int(offs[e - 1])
            rows.append((
                topic, partition, first // LOG_BUCKET_SPAN, first, last, e - s,
                codec.pack_ids(user_ids[s:e]), codec.pack_ids(item_ids[s:e]),
                codec.pack_array(vals[s:e], codec.F32), codec.pack_array(tss[s:e], codec.F64),
                codec.pack_array(offs[s:e], codec.I64), now,
            ))
        # The index first: an index entry without blocks is harmless, blocks without one are lost.
        keys = {(topic, partition, r[2]) for r in rows} - self._indexed
        if keys:
            self.db.write_many(_INSERT_BUCKET, sorted(keys))
        self.db.write_many(_INSERT, rows)
        self._indexed |= keys
        return len(rows)

    def buckets(self, topic: str) -> dict[int, list[int]]:
        """partition -> sorted buckets that hold blocks."""
        out: dict[int, list[int]] = {}
        for partition, bucket in self.db.execute(_BUCKETS, (topic,)):
            out.setdefault(partition, []).append(bucket)
        return {p: sorted(b) for p, b in sorted(out.items())}

    def high_offsets(self, topic: str) -> dict[int, int]:
        """partition -> next offset after the last stored block (its last_offset + 1)."""
        out: dict[int, int] = {}
        for partition, buckets in self.buckets(topic).items():
            for bucket in reversed(buckets):
                rows = self.db.execute(_TAIL, (topic, partition, bucket))
                if rows:
                    out[partition] = max(r[0] for r in rows) + 1
                    break
        return out

    def iter_chunks(
        self, topic: str, cutoffs: dict[int, int] | None = None, chunk_rows: int = 1_000_000,
        starts: dict[int, int] | None = None,
    ) -> Iterator[Ratings]:
        """Every stored rating of ``topic`` in partition then offset order, in chunks (with
        their partitions and offsets).

        With ``cutoffs``, only the listed partitions are read and only offsets below
        ``cutoffs[p]``; a partition absent from ``cutoffs`` is not part of that data set.
        With ``starts`` too, only offsets from ``starts[p]`` on are read, and the blocks must
        cover ``[starts[p], cutoffs[p])`` without a gap, or :class:`LogHoleError` is raised.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        if starts is not None and cutoffs is None:
            raise ValueError("starts needs cutoffs")
        pending = _Columns()
        current, high = -1, -1  # high: last offset yielded in `current` (dedupes overlaps)
        covered = -1  # with starts: every offset <= covered is accounted for
        buckets = self.buckets(topic)
        ranges = self._ranges(buckets, topic, cutoffs, starts)
        for partition, cutoff, rows in itertools.chain(self._fetch(ranges), [(-2, 0, [])]):
            if partition != current:
                if starts is not None and current >= 0 and covered + 1 < cutoffs[current]:  # type: ignore[index]
                    raise LogHoleError(topic, current, covered + 1, cutoffs[current] - 1)  # type: ignore[index]
                if partition == -2:
                    break
                current, high = partition, -1
                if starts is not None:
                    high = covered = starts.get(partition, 0) - 1
            for row in rows:
                if starts is not None:
                    first, last = int(row[0]), int(row[1])
                    if first > covered + 1 and covered + 1 < cutoff:
                        raise LogHoleError(topic, partition, covered + 1, min(first, cutoff) - 1)
                    covered = max(covered, last)
                high = self._decode(row, partition, cutoff, high, pending)
                while pending.rows >= chunk_rows:
                    yield pending.take(chunk_rows)
        if starts is not None:
            for p in sorted(set(cutoffs) - set(buckets)):  # type: ignore[arg-type]
                if starts.get(p, 0) < cutoffs[p]:  # type: ignore[index]
                    raise LogHoleError(topic, p, starts.get(p, 0), cutoffs[p] - 1)  # type: ignore[index]
        if pending.rows:
            yield pending.take(pending.rows)

    @staticmethod
    def _ranges(all_buckets: dict[int, list[int]], topic: str, cutoffs: dict[int, int] | None,
                starts: dict[int, int] | None = None) -> Iterator[_Range]:
        """Offset ranges to query, in read order; independent, so several can be in flight."""
        for partition, buckets in all_buckets.items():
            if cutoffs is not None and partition not in cutoffs:
                continue
            cutoff = _NO_CUTOFF if cutoffs is None else int(cutoffs[partition])
            # a block may start before `start` and still cover it: look one block span back
            start = 0 if starts is None else max(0, starts.get(partition, 0) - MAX_BLOCK_SPAN)
            for bucket in buckets:
                lo = max(bucket * LOG_BUCKET_SPAN, start)  # blocks of the bucket start in [.., +SPAN)
                if lo >= (bucket + 1) * LOG_BUCKET_SPAN:
                    continue
                hi = min((bucket + 1) * LOG_BUCKET_SPAN, cutoff)
                for a in range(lo, hi, RANGE_SPAN):
                    yield _Range(partition, cutoff, (topic, partition, bucket, a,
                                                     min(a + RANGE_SPAN, hi)))

    def _fetch(self, ranges: Iterator[_Range]) -> Iterator[tuple[int, int, list[Any]]]:
        """(partition, cutoff, rows) per range in order, READ_AHEAD range queries in flight.

        The server reads the next ranges while this thread decodes, and a multi-node cluster
        serves them in parallel.
        """
        stmt = self.db.prepare(_READ)
        inflight: deque[tuple[_Range, Any, ResponseFuture, float]] = deque()
        for rng in itertools.chain(ranges, [None]):
            if rng is not None:
                bound = stmt.bind(rng.params)
                bound.fetch_size = FETCH_BLOCKS
                inflight.append((rng, bound, self.db.submit(bound), time.perf_counter()))
                if len(inflight) < READ_AHEAD:
                    continue
            while inflight and (rng is None or len(inflight) >= READ_AHEAD):
                done, bound, future, start = inflight.popleft()
                result = self.db.wait(future, bound)
                self._observe("read_log_page", start)
                rows = list(result.current_rows)
                while result.has_more_pages:  # a range of many tiny blocks: rest in order
                    state = result.paging_state
                    result = self.db.wait(self.db.submit(bound, None, state), bound, None, state)
                    rows.extend(result.current_rows)
                yield done.partition, done.cutoff, rows

    def _observe(self, op: str, start: float) -> None:
        if self.db.observe is not None:
            self.db.observe(op, time.perf_counter() - start)

    @staticmethod
    def _decode(row: tuple[Any, ...], partition: int, cutoff: int, high: int,
                pending: _Columns) -> int:
        first, _last, n, ublob, iblob, vblob, tblob, oblob = row
        if n == 0:
            return high
        offs = codec.unpack_array(oblob, codec.I64, n)
        lo = int(np.searchsorted(offs, high, side="right"))  # drop already-yielded offsets
        hi = int(np.searchsorted(offs, cutoff, side="left"))  # trim at the cutoff
        if lo >= hi:
            return high
        users = codec.unpack_ids(ublob, n)
        items = codec.unpack_ids(iblob, n)
        if lo or hi < n:
            users, items = users[lo:hi], items[lo:hi]
        numeric = [
            codec.unpack_array(vblob, codec.F32, n)[lo:hi],
            codec.unpack_array(tblob, codec.F64, n)[lo:hi],
            np.full(hi - lo, partition, dtype=np.int32),
            offs[lo:hi],
        ]
        pending.add(users, items, numeric)
        return int(offs[hi - 1])

"""The archiver's checkpoints and the stream snapshots materialised from the log.

``archive_checkpoints``: per (topic, partition), the log is complete for the offsets
``[start_offset, next_offset)``. The archiver moves ``next_offset`` with a lightweight
transaction on the value it read, only after the blocks below it are durable, so the offset can
never move backwards, and two archivers that both think they own a partition cannot interleave.

``stream_snapshots``: full copies of one version's vectors at a set of log offsets (see
:mod:`worker.control.materialize`). The blocks are written first and the commit row last, so a crash
mid-write leaves the previous snapshot as the newest committed one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from online_als.factors import Factors
from worker.stores.cassandra.session import Db
from worker.stores.cassandra.snapshots import (
    aux_blobs,
    unpack_aux,
    unpack_vector_blocks,
    vector_blocks,
)

ROWS_PER_BLOCK = 4096
KEEP_SNAPSHOTS = 2  # per version: the newest committed one and its predecessor

_READ_CKPTS = (
    "SELECT kafka_partition, start_offset, next_offset FROM {ks}.archive_checkpoints"
    " WHERE topic = ?"
)
_CREATE_CKPT = (
    "INSERT INTO {ks}.archive_checkpoints (topic, kafka_partition, start_offset, next_offset,"
    " updated_at) VALUES (?,?,?,?,?) IF NOT EXISTS"
)
_ADVANCE_CKPT = (
    "UPDATE {ks}.archive_checkpoints SET next_offset = ?, updated_at = ?"
    " WHERE topic = ? AND kafka_partition = ? IF next_offset = ?"
)
_INSERT_SNAP_BLOCK = (
    "INSERT INTO {ks}.stream_snapshot_blocks (version, seq, kind, block, n, rank, ids, factors,"
    " biases, aux) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_READ_SNAP_BLOCK = (
    "SELECT n, rank, ids, factors, biases, aux FROM {ks}.stream_snapshot_blocks"
    " WHERE version = ? AND seq = ? AND kind = ? AND block = ?"
)
_DELETE_SNAP_BLOCK = (
    "DELETE FROM {ks}.stream_snapshot_blocks WHERE version = ? AND seq = ? AND kind = ? AND block = ?"
)
_COMMIT_SNAP = (
    "INSERT INTO {ks}.stream_snapshots (version, seq, offsets, users, items, rank, blocks_u,"
    " blocks_i, written_at, aux_u, aux_i) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)
_LIST_SNAPS = (
    "SELECT seq, offsets, users, items, rank, blocks_u, blocks_i, written_at, aux_u, aux_i"
    " FROM {ks}.stream_snapshots WHERE version = ?"
)
_DELETE_SNAP = "DELETE FROM {ks}.stream_snapshots WHERE version = ? AND seq = ?"


class ArchiveConflict(RuntimeError):
    """Another archiver moved the checkpoint of this partition (it owns it now)."""


@dataclass(frozen=True)
class ArchiveRange:
    """The log of one partition is complete for offsets in ``[start, next)``."""

    start: int
    next: int


@dataclass(frozen=True)
class StreamSnapshot:
    version: int
    seq: int
    offsets: dict[int, int]  # next log offset per partition that the vectors reflect
    users: int
    items: int
    rank: int
    blocks_u: int
    blocks_i: int
    written_at: float
    aux_u: int = 0  # floats of adaptive-learner state per user (0: none stored)
    aux_i: int = 0


class ArchiveState:
    """Archive checkpoints and stream snapshots of one keyspace."""

    def __init__(self, db: Db) -> None:
        self.db = db

    # -- archive checkpoints -------------------------------------------------------------
    def ranges(self, topic: str) -> dict[int, ArchiveRange]:
        return {p: ArchiveRange(int(s), int(n))
                for p, s, n in self.db.execute(_READ_CKPTS, (topic,))}

    def advance(self, topic: str, partition: int, expected: int | None, start: int,
                next_offset: int) -> None:
        """Move the partition's ``next_offset`` from ``expected`` (None: first write)."""
        now = int(time.time() * 1000)
        if expected is None:
            row = self.db.execute(_CREATE_CKPT, (topic, partition, start, next_offset, now))[0]
        else:
            row = self.db.execute(_ADVANCE_CKPT, (next_offset, now, topic, partition, expected))[0]
        if not row[0]:
            raise ArchiveConflict(
                f"archive checkpoint of {topic}[{partition}] is not {expected} any more "
                "(another archiver owns the partition now)")

    # -- stream snapshots ----------------------------------------------------------------
    def write_snapshot(self, version: int, offsets: dict[int, int], users: Factors,
                       items: Factors) -> StreamSnapshot:
        """Write every block, then the commit row; returns the committed snapshot. Each side's
        ``aux`` (the adaptive learner's state per entity) is stored when present."""
        previous = self.snapshots(version)
        seq = (previous[0].seq + 1) if previous else 1
        if users.rank != items.rank:
            raise ValueError(f"user rank {users.rank} != item rank {items.rank}")
        rank = users.rank
        counts, widths = {}, {}
        for kind, side in (("u", users), ("i", items)):
            aux = side.aux
            params = vector_blocks((version, seq, kind), side, ROWS_PER_BLOCK)
            blobs = aux_blobs(aux, len(side), ROWS_PER_BLOCK)
            self.db.write_many(_INSERT_SNAP_BLOCK,
                               [(*row, a) for row, a in zip(params, blobs, strict=True)])
            counts[kind] = len(params)
            widths[kind] = int(aux.shape[1]) if aux is not None else 0
        now = time.time()
        self.db.execute(_COMMIT_SNAP, (
            version, seq, {int(p): int(o) for p, o in offsets.items()}, len(users),
            len(items), rank, counts["u"], counts["i"], int(now * 1000), widths["u"],
            widths["i"]))
        for old in previous[KEEP_SNAPSHOTS - 1:]:
            self._delete_snapshot(old)
        return StreamSnapshot(version, seq, dict(offsets), len(users), len(items), rank,
                              counts["u"], counts["i"], now, widths["u"], widths["i"])

    def snapshots(self, version: int) -> list[StreamSnapshot]:
        """Committed snapshots of ``version``, newest first."""
        out = []
        rows = self.db.execute(_LIST_SNAPS, (version,))
        for seq, offsets, users, items, rank, bu, bi, at, au, ai in rows:
            written = at.timestamp() if at is not None else 0.0
            out.append(StreamSnapshot(version, int(seq), dict(offsets or {}), int(users),
                                      int(items), int(rank), int(bu), int(bi), written,
                                      int(au or 0), int(ai or 0)))
        return sorted(out, key=lambda s: -s.seq)

    def read_snapshot(self, snap: StreamSnapshot, kind: str) -> Factors:
        """The factors of one kind, with their aux state (None when the snapshot holds none,
        e.g. one written by the SGD learner or before migration 3)."""
        blocks = snap.blocks_u if kind == "u" else snap.blocks_i
        n = snap.users if kind == "u" else snap.items
        results = self.db.read_many(_READ_SNAP_BLOCK,
                                    [(snap.version, snap.seq, kind, j) for j in range(blocks)])
        what = f"stream snapshot {snap.seq} of version {snap.version} {kind!r}"
        factors = unpack_vector_blocks([[r[:5] for r in rows] for rows in results], n,
                                       snap.rank, what)
        width = snap.aux_u if kind == "u" else snap.aux_i
        if not width:
            return factors
        return factors.with_aux(unpack_aux([rows[0][5] for rows in results],
                                           [rows[0][0] for rows in results], width, what))

    def delete_version(self, version: int) -> None:
        for snap in self.snapshots(version):
            self._delete_snapshot(snap)

    def _delete_snapshot(self, snap: StreamSnapshot) -> None:
        # The commit row first: a half-deleted snapshot is never read as complete.
        self.db.execute(_DELETE_SNAP, (snap.version, snap.seq))
        self.db.write_many(_DELETE_SNAP_BLOCK, [
            (snap.version, snap.seq, kind, j)
            for kind, blocks in (("u", snap.blocks_u), ("i", snap.blocks_i))
            for j in range(blocks)])

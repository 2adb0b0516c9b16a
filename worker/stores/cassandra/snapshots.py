"""Factor snapshots per model version: packed base blocks (a retrain's fit, a bootstrap).

Base: ``write_factors`` writes an incomplete manifest row, then ``rows_per_block`` vectors
per row (one Cassandra partition each, ~1 MiB at k=64), then marks the manifest complete. The manifest's ``complete`` flag is the commit point:
readers ignore incomplete snapshots, so a crashed write is never read as a model.

The vectors a version reached while streaming are not stored here: they are materialised from
the ratings log and kept as stream snapshots (:mod:`worker.stores.cassandra.archive_state`,
:mod:`worker.control.materialize`). The ``factor_deltas`` table of migration 1 is no longer written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from online_als.factors import Factors
from worker.stores.cassandra import codec
from worker.stores.cassandra.schema import DELTA_BUCKETS
from worker.stores.cassandra.session import Db

ROWS_PER_BLOCK = 4096  # 1 MiB of float32 at k=64; partitions stay small, reads stay parallel
KINDS = ("u", "i")

_INSERT_BLOCK = (
    "INSERT INTO {ks}.factor_blocks (version, kind, block, n, rank, ids, factors, biases)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
_READ_BLOCK = (
    "SELECT n, rank, ids, factors, biases FROM {ks}.factor_blocks"
    " WHERE version = ? AND kind = ? AND block = ?"
)
_DELETE_BLOCK = "DELETE FROM {ks}.factor_blocks WHERE version = ? AND kind = ? AND block = ?"
_INSERT_MANIFEST = (
    "INSERT INTO {ks}.factor_manifests (version, kind, blocks, reserved, complete, n, rank,"
    " rows_per_block, written_at) VALUES (?,?,?,?,false,?,?,?,?)"
)
_COMPLETE_MANIFEST = (
    "UPDATE {ks}.factor_manifests SET complete = true, written_at = ? WHERE version = ? AND kind = ?"
)
_READ_MANIFESTS = (
    "SELECT kind, blocks, n, rank, reserved, complete FROM {ks}.factor_manifests WHERE version = ?"
)
_DELETE_MANIFESTS = "DELETE FROM {ks}.factor_manifests WHERE version = ?"
_DELETE_DELTAS = "DELETE FROM {ks}.factor_deltas WHERE version = ? AND kind = ? AND bucket = ?"


class _Manifest(NamedTuple):
    kind: str
    blocks: int
    n: int
    rank: int
    reserved: int
    complete: bool


class FactorsNotFound(LookupError):
    """No complete snapshot of (version, kind) is stored."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'u' or 'i', got {kind!r}")


def vector_blocks(key: tuple[Any, ...], factors: Factors,
                  rows_per_block: int) -> list[tuple[Any, ...]]:
    """Rows ``(*key, block, n, rank, ids, factors, biases)`` of ``rows_per_block`` vectors each
    (the layout of ``factor_blocks`` and ``stream_snapshot_blocks``)."""
    ids = factors.id_list()
    f = np.ascontiguousarray(factors.vectors)
    b = np.ascontiguousarray(factors.biases)
    n, rank = f.shape
    return [(*key, block, min(s + rows_per_block, n) - s, rank,
             codec.pack_ids(list(ids[s:s + rows_per_block])),
             f[s:s + rows_per_block].tobytes(), b[s:s + rows_per_block].tobytes())
            for block, s in enumerate(range(0, n, rows_per_block))]


def unpack_vector_blocks(results: Sequence[Sequence[tuple[Any, ...]]], n: int, rank: int,
                         what: str) -> Factors:
    """The factors (ids, (n, rank) vectors, biases) in the rows of each block, in block order."""
    factors = np.empty((n, rank), dtype=np.float32)
    biases = np.empty(n, dtype=np.float32)
    ids: list[str] = []
    for j, rows in enumerate(results):
        if not rows:
            raise FactorsNotFound(f"block {j} of {what} is missing")
        m, k, id_blob, f_blob, b_blob = rows[0]
        s = len(ids)
        ids.extend(codec.unpack_ids(id_blob, m))
        factors[s:s + m] = codec.unpack_array(f_blob, codec.F32, m, k)
        biases[s:s + m] = codec.unpack_array(b_blob, codec.F32, m)
    if len(ids) != n:
        raise codec.BlockFormatError(f"the blocks of {what} hold {len(ids)} vectors, not {n}")
    return Factors(ids, factors, biases)


def aux_blobs(aux: np.ndarray | None, n: int, rows_per_block: int) -> list[bytes | None]:
    """Per block of :func:`vector_blocks`, its rows of ``aux`` ((n, w) float32: the adaptive
    learner's per-entity state) as one little-endian blob; None per block without aux."""
    if aux is None:
        return [None] * (-(-n // rows_per_block))
    a = np.ascontiguousarray(aux, dtype=codec.F32)
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"aux must be ({n}, w), got {a.shape}")
    return [a[s:s + rows_per_block].tobytes() for s in range(0, n, rows_per_block)]


def unpack_aux(blobs: Sequence[bytes | None], sizes: Sequence[int], width: int | None,
               what: str) -> np.ndarray | None:
    """The (sum(sizes), width) aux table from each block's blob; None when the snapshot has
    none (``width`` None or 0). A block without its blob is a format error, never zeros."""
    if not width:
        return None
    out = np.empty((int(sum(sizes)), width), dtype=np.float32)
    s = 0
    for j, (blob, m) in enumerate(zip(blobs, sizes, strict=True)):
        if blob is None:
            raise codec.BlockFormatError(f"block {j} of {what} has no aux state")
        out[s:s + m] = codec.unpack_array(blob, codec.F32, m, width)
        s += m
    return out


class Snapshots:
    """Factor blocks, manifests and deltas of one keyspace."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def write(self, version: int, kind: str, factors: Factors,
              rows_per_block: int = ROWS_PER_BLOCK) -> int:
        """Store the base snapshot of (version, kind); returns the number of blocks."""
        _check_kind(kind)
        if rows_per_block < 1:
            raise ValueError("rows_per_block must be >= 1")
        n, rank = len(factors), factors.rank
        blocks = -(-n // rows_per_block)
        reserved = max([blocks] + [m.reserved for m in self._manifests(version) if m.kind == kind])
        # Un-commit first (complete=false): a rewrite that crashes midway must not look complete.
        now = int(time.time() * 1000)
        self.db.execute(_INSERT_MANIFEST, (version, kind, blocks, reserved, n, rank,
                                           rows_per_block, now))
        self.db.write_many(_INSERT_BLOCK, vector_blocks((version, kind), factors,
                                                        rows_per_block))
        self.db.execute(_COMPLETE_MANIFEST, (int(time.time() * 1000), version, kind))
        return blocks

    def _manifests(self, version: int) -> list[_Manifest]:
        return [_Manifest(*r) for r in self.db.execute(_READ_MANIFESTS, (version,))]

    def manifests(self, version: int) -> dict[str, tuple[int, int, int]]:
        """kind -> (blocks, n, rank) of the complete snapshots of ``version``."""
        return {m.kind: (m.blocks, m.n, m.rank) for m in self._manifests(version) if m.complete}

    def read(self, version: int, kind: str) -> Factors:
        """The factors of the base snapshot (float32 (n, k) vectors, (n,) biases)."""
        _check_kind(kind)
        manifest = self.manifests(version).get(kind)
        if manifest is None:
            raise FactorsNotFound(f"no complete {kind!r} snapshot of version {version}")
        blocks, n, rank = manifest
        results = self.db.read_many(_READ_BLOCK, [(version, kind, j) for j in range(blocks)])
        return unpack_vector_blocks(results, n, rank, f"version {version} {kind!r}")

    def delete(self, version: int) -> None:
        """Remove every block, manifest and delta of ``version``; manifests go first."""
        manifests = self._manifests(version)
        self.db.execute(_DELETE_MANIFESTS, (version,))
        self.db.write_many(_DELETE_BLOCK, [
            (version, m.kind, j) for m in manifests for j in range(m.reserved)
        ])
        self.db.write_many(_DELETE_DELTAS, [
            (version, kind, bkt) for kind in KINDS for bkt in range(DELTA_BUCKETS)
        ])

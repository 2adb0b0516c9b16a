"""Factor snapshots per model version: packed base blocks plus per-id write-behind deltas.

Base: ``write_factors`` writes an incomplete manifest row, then ``rows_per_block`` vectors
per row (one Cassandra partition each, ~1 MiB at k=64), then marks the manifest complete. The manifest's ``complete`` flag is the commit point:
readers ignore incomplete snapshots, so a crashed write is never read as a model.

Deltas: the streaming workers' write-behind upserts changed vectors into ``factor_deltas``
keyed by (version, kind, hash bucket, id); Cassandra's last-write-wins keeps the newest
vector per id and the table never grows beyond the version's id count. ``read_factors``
returns the base with the deltas applied (ids new since the snapshot appended at the end).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from worker.cassandra import codec
from worker.cassandra.schema import DELTA_BUCKETS
from worker.cassandra.session import Db

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
_UPSERT_DELTA = (
    "INSERT INTO {ks}.factor_deltas (version, kind, bucket, id, factors, bias, updated_at)"
    " VALUES (?,?,?,?,?,?,?)"
)
_READ_DELTAS = (
    "SELECT id, factors, bias FROM {ks}.factor_deltas WHERE version = ? AND kind = ? AND bucket = ?"
)
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


def delta_bucket(entity_id: str) -> int:
    """Stable across processes and languages (CRC-32 of the UTF-8 id)."""
    return zlib.crc32(entity_id.encode("utf-8")) % DELTA_BUCKETS


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'u' or 'i', got {kind!r}")


def _as_factors(ids: Sequence[str], factors: npt.ArrayLike, biases: npt.ArrayLike | None
                ) -> tuple[np.ndarray, np.ndarray]:
    f = np.ascontiguousarray(factors, dtype=codec.F32)
    if f.ndim != 2 or f.shape[0] != len(ids):
        raise ValueError(f"factors must be (len(ids)={len(ids)}, k), got {f.shape}")
    b = np.zeros(len(ids), codec.F32) if biases is None else np.ascontiguousarray(biases, codec.F32)
    if b.shape != (len(ids),):
        raise ValueError(f"biases must be ({len(ids)},), got {b.shape}")
    return f, b


class Snapshots:
    """Factor blocks, manifests and deltas of one keyspace."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def write(self, version: int, kind: str, ids: Sequence[str], factors: npt.ArrayLike,
              biases: npt.ArrayLike | None = None, rows_per_block: int = ROWS_PER_BLOCK) -> int:
        """Store the base snapshot of (version, kind); returns the number of blocks."""
        _check_kind(kind)
        if rows_per_block < 1:
            raise ValueError("rows_per_block must be >= 1")
        f, b = _as_factors(ids, factors, biases)
        n, rank = f.shape
        blocks = -(-n // rows_per_block)
        reserved = max([blocks] + [m.reserved for m in self._manifests(version) if m.kind == kind])
        # Un-commit first (complete=false): a rewrite that crashes midway must not look complete.
        now = int(time.time() * 1000)
        self.db.execute(_INSERT_MANIFEST, (version, kind, blocks, reserved, n, rank,
                                           rows_per_block, now))
        params: list[tuple[Any, ...]] = []
        for block, s in enumerate(range(0, n, rows_per_block)):
            e = min(s + rows_per_block, n)
            params.append((version, kind, block, e - s, rank, codec.pack_ids(ids[s:e]),
                           f[s:e].tobytes(), b[s:e].tobytes()))
        self.db.write_many(_INSERT_BLOCK, params)
        self.db.execute(_COMPLETE_MANIFEST, (int(time.time() * 1000), version, kind))
        return blocks

    def _manifests(self, version: int) -> list[_Manifest]:
        return [_Manifest(*r) for r in self.db.execute(_READ_MANIFESTS, (version,))]

    def manifests(self, version: int) -> dict[str, tuple[int, int, int]]:
        """kind -> (blocks, n, rank) of the complete snapshots of ``version``."""
        return {m.kind: (m.blocks, m.n, m.rank) for m in self._manifests(version) if m.complete}

    def read(self, version: int, kind: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, factors float32 (n, k), biases float32 (n,)): base blocks with deltas applied."""
        _check_kind(kind)
        manifest = self.manifests(version).get(kind)
        if manifest is None:
            raise FactorsNotFound(f"no complete {kind!r} snapshot of version {version}")
        blocks, n, rank = manifest
        factors = np.empty((n, rank), dtype=np.float32)
        biases = np.empty(n, dtype=np.float32)
        ids: list[str] = []
        results = self.db.read_many(_READ_BLOCK, [(version, kind, j) for j in range(blocks)])
        for j, rows in enumerate(results):
            if not rows:
                raise FactorsNotFound(f"block {j} of version {version} {kind!r} is missing")
            m, k, id_blob, f_blob, b_blob = rows[0]
            s = len(ids)
            ids.extend(codec.unpack_ids(id_blob, m))
            factors[s:s + m] = codec.unpack_array(f_blob, codec.F32, m, k)
            biases[s:s + m] = codec.unpack_array(b_blob, codec.F32, m)
        if len(ids) != n:
            raise codec.BlockFormatError(f"blocks hold {len(ids)} vectors, manifest says {n}")
        return self._apply_deltas(version, kind, rank, ids, factors, biases)

    def _apply_deltas(self, version: int, kind: str, rank: int, ids: list[str],
                      factors: np.ndarray, biases: np.ndarray
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
        d_ids, d_f, d_b = self.read_deltas(version, kind, rank)
        if not d_ids:
            return ids, factors, biases
        row_of = {x: r for r, x in enumerate(ids)}
        rows = np.fromiter((row_of.get(x, -1) for x in d_ids), dtype=np.int64, count=len(d_ids))
        known = rows >= 0
        factors[rows[known]] = d_f[known]
        biases[rows[known]] = d_b[known]
        new = ~known
        if new.any():
            ids = ids + [x for x, k in zip(d_ids, known.tolist(), strict=True) if not k]
            factors = np.concatenate([factors, d_f[new]])
            biases = np.concatenate([biases, d_b[new]])
        return ids, factors, biases

    def read_deltas(self, version: int, kind: str, rank: int
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every delta of (version, kind), ids sorted for a deterministic merge order."""
        results = self.db.read_many(
            _READ_DELTAS, [(version, kind, bkt) for bkt in range(DELTA_BUCKETS)])
        rows = sorted((r for rs in results for r in rs), key=lambda r: r[0])
        ids = [r[0] for r in rows]
        blob = b"".join(r[1] for r in rows)
        factors = codec.unpack_array(blob, codec.F32, len(rows), rank).copy()
        biases = np.array([r[2] for r in rows], dtype=np.float32)
        return ids, factors, biases

    def upsert(self, version: int, kind: str, ids: Sequence[str], factors: npt.ArrayLike,
               biases: npt.ArrayLike | None = None) -> None:
        """Write-behind: record the current vectors of changed ids (last write wins)."""
        _check_kind(kind)
        f, b = _as_factors(ids, factors, biases)
        now = int(time.time() * 1000)
        # Rows of one batch share a write timestamp, so a repeated id must appear once: the
        # last occurrence, as if written in order.
        last = {x: r for r, x in enumerate(ids)}
        self.db.write_grouped(_UPSERT_DELTA, key_len=3, params=[
            (version, kind, delta_bucket(x), x, f[r].tobytes(), float(b[r]), now)
            for x, r in last.items()
        ])

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

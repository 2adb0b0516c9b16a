"""Model version metadata and the switch log.

Status changes are compare-and-set (Cassandra LWT) against the status just read, so two
processes can never both move a version (e.g. both promote it or one rejects a promoted one),
and ``ready``/``promoted`` are refused until both factor snapshots are complete.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from worker.stores.cassandra.session import Db

STATUSES = ("building", "ready", "promoted", "rejected", "rolled_back", "failed")
#: Allowed moves; setting the status a version already has is always allowed (retries).
TRANSITIONS: dict[str, frozenset[str]] = {
    "building": frozenset({"ready", "failed", "rejected"}),
    "ready": frozenset({"promoted", "rejected", "failed"}),
    "promoted": frozenset({"rolled_back"}),
    "rolled_back": frozenset({"promoted"}),
    "rejected": frozenset({"promoted"}),  # an operator may overrule the quality gate
    "failed": frozenset(),
}
NEEDS_FACTORS = frozenset({"ready", "promoted"})

_COLUMNS = ("version, created_at, updated_at, status, mode, rank, topic, params, cutoff, counts,"
            " metrics, notes, reason")
_INSERT = f"INSERT INTO {{ks}}.model_versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) IF NOT EXISTS"
_GET = f"SELECT {_COLUMNS} FROM {{ks}}.model_versions WHERE version = ?"
_ALL = f"SELECT {_COLUMNS} FROM {{ks}}.model_versions"
_SET_STATUS = (
    "UPDATE {ks}.model_versions SET status = ?, reason = ?, updated_at = ? WHERE version = ?"
    " IF status = ?"
)
_DELETE = "DELETE FROM {ks}.model_versions WHERE version = ?"
_SWITCH = "INSERT INTO {ks}.switch_log (year, at, version, reason, actor) VALUES (?,?,?,?,?)"
_SWITCHES = "SELECT at, version, reason, actor FROM {ks}.switch_log WHERE year = ? LIMIT ?"


class VersionConflict(RuntimeError):
    """A status change lost a race or broke the lifecycle; the message has the stored status."""


class VersionNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ModelVersion:
    """One row of ``model_versions``; times are unix seconds."""

    version: int
    status: str = "building"
    mode: str = "explicit"
    rank: int = 0
    topic: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    cutoff: dict[int, int] = field(default_factory=dict)  # Kafka next offset per partition
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Switch:
    at: float
    version: int
    reason: str
    actor: str


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _seconds(value: dt.datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).timestamp()


def _from_row(row: tuple[Any, ...]) -> ModelVersion:
    (version, created, updated, status, mode, rank, topic, params, cutoff, counts,
     metrics, notes, reason) = row
    return ModelVersion(
        version=version, status=status or "", mode=mode or "", rank=rank or 0, topic=topic or "",
        created_at=_seconds(created) or 0.0, updated_at=_seconds(updated),
        params=json.loads(params) if params else {}, cutoff=dict(cutoff or {}),
        counts=dict(counts or {}), metrics=dict(metrics or {}), notes=notes or "",
        reason=reason or "",
    )


class Versions:
    """Version rows and switch log of one keyspace."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def create(self, meta: ModelVersion) -> None:
        """Insert a new version row; raises VersionConflict when the number is taken."""
        if meta.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {meta.status!r}")
        params = (
            meta.version, _ms(meta.created_at), _ms(meta.updated_at or meta.created_at),
            meta.status, meta.mode, meta.rank, meta.topic, json.dumps(meta.params, sort_keys=True),
            {int(p): int(o) for p, o in meta.cutoff.items()},
            {str(k): int(v) for k, v in meta.counts.items()},
            {str(k): float(v) for k, v in meta.metrics.items()}, meta.notes, meta.reason,
        )
        row = self.db.execute(_INSERT, params)[0]
        if not row[0]:
            raise VersionConflict(f"version {meta.version} already exists")

    def get(self, version: int) -> ModelVersion | None:
        rows = self.db.execute(_GET, (version,))
        return _from_row(rows[0]) if rows else None

    def list_all(self) -> list[ModelVersion]:
        """All versions, oldest first (the table is small: retention keeps a handful)."""
        return sorted((_from_row(r) for r in self.db.execute(_ALL)), key=lambda m: m.version)

    def set_status(self, version: int, status: str, reason: str, expected_status: str | None,
                   complete_kinds: set[str]) -> None:
        """Move ``version`` to ``status`` with an LWT on the status it has now.

        ``expected_status`` (if given) must be the stored one; ``complete_kinds`` are the
        factor kinds with a complete snapshot (``ready``/``promoted`` need both).
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status in NEEDS_FACTORS and not {"u", "i"} <= complete_kinds:
            raise VersionConflict(
                f"version {version} cannot become {status!r}: factor snapshots complete only "
                f"for {sorted(complete_kinds)}; write_factors for 'u' and 'i' first")
        current = self.get(version)
        if current is None:
            raise VersionNotFound(f"version {version} does not exist")
        if expected_status is not None and current.status != expected_status:
            raise VersionConflict(
                f"version {version} is {current.status!r}, expected {expected_status!r}")
        if status != current.status and status not in TRANSITIONS.get(current.status, ()):
            raise VersionConflict(f"version {version}: {current.status!r} -> {status!r} not allowed")
        row = self.db.execute(_SET_STATUS, (status, reason, _ms(time.time()), version,
                                            current.status))[0]
        if not row[0]:
            raise VersionConflict(
                f"version {version} changed concurrently to {row[1]!r} (wanted {status!r})")

    def delete(self, version: int) -> None:
        self.db.execute(_DELETE, (version,))

    # -- switch log ----------------------------------------------------------------------
    def record_switch(self, version: int, reason: str, actor: str = "") -> None:
        at = uuid.uuid1()  # timeuuid: ordered by time, unique across writers
        year = dt.datetime.now(dt.UTC).year
        self.db.execute(_SWITCH, (year, at, version, reason, actor))

    def switches(self, limit: int = 100) -> list[Switch]:
        """Newest first, from this year and the previous one."""
        out: list[Switch] = []
        year = dt.datetime.now(dt.UTC).year
        for y in (year, year - 1):
            for at, version, reason, actor in self.db.execute(_SWITCHES, (y, limit - len(out))):
                seconds = (at.time - 0x01B21DD213814000) / 1e7  # 100 ns since 1582-10-15
                out.append(Switch(seconds, version, reason or "", actor or ""))
            if len(out) >= limit:
                break
        return out

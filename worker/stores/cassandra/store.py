"""Cassandra, the system of record: ratings log, factor snapshots, versions, checkpoints.

One facade over the table modules in :mod:`worker.stores.cassandra` (schema and layout:
``docs/cassandra-schema.md``). Every public call reports its latency to ``observe(op, s)``
when given (e.g. ``Metrics.cassandra_latency.labels(op).observe``).

>>> store = CassandraStore(settings.cassandra)          # doctest: +SKIP
>>> store.migrate()                                     # doctest: +SKIP
>>> for chunk in store.iter_log("ratings", cutoffs={0: 1000}, chunk_rows=1_000_000):
...     chunk.user_ids, chunk.timestamps, chunk.offsets       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType

from online_als.factors import Factors
from online_als.ratings import Ratings
from worker.config import CassandraSettings
from worker.stores.cassandra.archive_state import (
    ArchiveConflict,
    ArchiveRange,
    ArchiveState,
    StreamSnapshot,
)
from worker.stores.cassandra.ratings_log import MAX_BLOCK_ROWS, LogHoleError, RatingsLog
from worker.stores.cassandra.schema import applied_migrations, migrate
from worker.stores.cassandra.session import (
    DEFAULT_PROTOCOL,
    CassandraUnavailable,
    Db,
    Observe,
    connect,
)
from worker.stores.cassandra.snapshots import ROWS_PER_BLOCK, FactorsNotFound, Snapshots
from worker.stores.cassandra.versions import (
    STATUSES,
    ModelVersion,
    Switch,
    VersionConflict,
    VersionNotFound,
    Versions,
)

__all__ = [
    "STATUSES", "ArchiveConflict", "ArchiveRange", "CassandraStore", "CassandraUnavailable",
    "FactorsNotFound", "LogHoleError", "ModelVersion", "StreamSnapshot", "Switch",
    "VersionConflict", "VersionNotFound",
]


class CassandraStore:
    """All Cassandra access of online-als, on one session (thread-safe like the driver's)."""

    def __init__(self, settings: CassandraSettings, observe: Observe | None = None,
                 protocol_version: int | None = DEFAULT_PROTOCOL) -> None:
        self.settings = settings
        self._cluster, session = connect(settings, protocol_version=protocol_version)
        self.db = Db(session, settings.keyspace, observe)
        self.log = RatingsLog(self.db)
        self.snapshots = Snapshots(self.db)
        self.versions = Versions(self.db)
        self.archive = ArchiveState(self.db)

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        self._cluster.shutdown()

    def __enter__(self) -> CassandraStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def protocol_version(self) -> int:
        return int(self._cluster.protocol_version)

    def migrate(self) -> list[int]:
        """Create keyspace and tables; returns the migrations applied by this call."""
        with self.db.timed("migrate"):
            return migrate(self.db, self.settings.replication)

    def schema_versions(self) -> list[int]:
        return applied_migrations(self.db)

    def drop_keyspace(self) -> None:
        """Delete everything (tests, local resets)."""
        self.db.session.execute(f"DROP KEYSPACE IF EXISTS {self.settings.keyspace}")
        self.db.forget_prepared()
        self.log = RatingsLog(self.db)  # forgets which log buckets it had indexed

    # -- ratings log ---------------------------------------------------------------------
    def append_log_blocks(
        self, topic: str, partition: int, first_offset: int, last_offset: int, events: Ratings,
        max_block_rows: int = MAX_BLOCK_ROWS,
    ) -> int:
        """Persist one micro-batch (Kafka offsets [first, last]: ``events`` with their
        offsets); idempotent; returns blocks."""
        with self.db.timed("append_log"):
            return self.log.append_blocks(topic, partition, first_offset, last_offset, events,
                                          max_block_rows)

    def iter_log(self, topic: str, cutoffs: dict[int, int] | None = None,
                 chunk_rows: int = 1_000_000, starts: dict[int, int] | None = None
                 ) -> Iterator[Ratings]:
        """:class:`~online_als.ratings.Ratings` chunks (with partitions, offsets) of <= chunk_rows,
        offsets < ``cutoffs[p]`` (only the listed partitions when cutoffs is given); with
        ``starts``, offsets >= ``starts[p]``, and a gap raises :class:`LogHoleError`."""
        with self.db.timed("iter_log"):
            yield from self.log.iter_chunks(topic, cutoffs, chunk_rows, starts)

    def iter_contiguous_log(self, topic: str, cutoffs: dict[int, int],
                            starts: dict[int, int] | None = None,
                            chunk_rows: int = 1_000_000) -> Iterator[Ratings]:
        """The log of ``[starts[p] (default: where the archive starts), cutoffs[p])``,
        checked for holes; raises :class:`LogHoleError` naming the partition and offsets."""
        ranges = self.archive_ranges(topic)
        for p, c in cutoffs.items():
            end = ranges[p].next if p in ranges else 0
            if c > end:
                raise LogHoleError(topic, p, end, c - 1)
        begin = {p: (starts or {}).get(p, ranges[p].start if p in ranges else 0) for p in cutoffs}
        yield from self.iter_log(topic, cutoffs, chunk_rows, begin)

    def log_high_offsets(self, topic: str) -> dict[int, int]:
        """partition -> next Kafka offset after the last stored block (may be past a hole;
        use :meth:`archive_ranges` for what is contiguous)."""
        with self.db.timed("log_high_offsets"):
            return self.log.high_offsets(topic)

    def archive_ranges(self, topic: str) -> dict[int, ArchiveRange]:
        """partition -> the offsets ``[start, next)`` the log holds completely."""
        with self.db.timed("archive_ranges"):
            return self.archive.ranges(topic)

    def contiguous_offsets(self, topic: str) -> dict[int, int]:
        """partition -> next offset after the contiguous archived log (a retrain's cutoff)."""
        return {p: r.next for p, r in self.archive_ranges(topic).items()}

    # -- factors -------------------------------------------------------------------------
    def write_factors(self, version: int, kind: str, factors: Factors,
                      rows_per_block: int = ROWS_PER_BLOCK) -> int:
        """Store the base snapshot of ``kind`` ('u'|'i'); complete only when it returns."""
        with self.db.timed("write_factors"):
            return self.snapshots.write(version, kind, factors, rows_per_block)

    def read_factors(self, version: int, kind: str) -> Factors:
        """The base snapshot of ``kind`` (float32 (n, k) vectors, (n,) biases)."""
        with self.db.timed("read_factors"):
            return self.snapshots.read(version, kind)


    # -- versions ------------------------------------------------------------------------
    def create_version(self, meta: ModelVersion) -> None:
        with self.db.timed("create_version"):
            self.versions.create(meta)

    def set_version_status(self, version: int, status: str, reason: str = "",
                           expected_status: str | None = None) -> None:
        """Compare-and-set the status; ``ready``/``promoted`` need complete 'u' and 'i' factors."""
        with self.db.timed("set_version_status"):
            complete = set(self.snapshots.manifests(version))
            self.versions.set_status(version, status, reason, expected_status, complete)

    def get_version(self, version: int) -> ModelVersion | None:
        with self.db.timed("get_version"):
            return self.versions.get(version)

    def list_versions(self) -> list[ModelVersion]:
        with self.db.timed("list_versions"):
            return self.versions.list_all()

    def latest_version(self, status: Iterable[str] = ("promoted",)) -> ModelVersion | None:
        """The highest-numbered version whose status is in ``status``."""
        wanted = {status} if isinstance(status, str) else set(status)
        candidates = [m for m in self.list_versions() if m.status in wanted]
        return candidates[-1] if candidates else None

    def delete_version(self, version: int) -> None:
        """Retention: drop factors, deltas, checkpoints and the row (the switch log stays).

        The caller must not delete the version Redis currently serves."""
        with self.db.timed("delete_version"):
            self.snapshots.delete(version)
            self.archive.delete_version(version)
            self.versions.delete(version)

    # -- checkpoints and switches --------------------------------------------------------
    def record_switch(self, version: int, reason: str, actor: str = "") -> None:
        with self.db.timed("record_switch"):
            self.versions.record_switch(version, reason, actor)

    def list_switches(self, limit: int = 100) -> list[Switch]:
        with self.db.timed("list_switches"):
            return self.versions.switches(limit)

"""The Cassandra schema as numbered, idempotent migrations (spec: ``docs/cassandra-schema.md``).

Each migration is a list of ``CREATE ... IF NOT EXISTS`` / ``ALTER ... ADD IF NOT EXISTS``
statements; ``migrate`` runs those not yet listed in ``schema_migrations`` and then records
them. Re-running a half-applied migration is harmless because every statement is
idempotent. Append new migrations; never edit an applied one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker.stores.cassandra.session import Db

#: Offsets per ratings-log partition-key bucket. ~30-60 B per rating -> 30-60 MiB per
#: Cassandra partition, inside the usual <100 MiB guidance. Fixed forever: it is part of the key.
LOG_BUCKET_SPAN = 1 << 20
#: Hash buckets of the factor delta table (keeps one version's deltas in many partitions).
DELTA_BUCKETS = 64


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_LOG_TABLES = (
    # One row per block of consecutive accepted events of one Kafka partition; columns are
    # packed blobs (worker.stores.cassandra.codec) so a retrain reads MiBs per row, not a row per rating.
    """CREATE TABLE IF NOT EXISTS {ks}.ratings_log (
        topic text, kafka_partition int, bucket bigint, first_offset bigint,
        last_offset bigint, n int,
        user_ids blob, item_ids blob, vals blob, ts blob, offsets blob,
        written_at timestamp,
        PRIMARY KEY ((topic, kafka_partition, bucket), first_offset)
    ) WITH CLUSTERING ORDER BY (first_offset ASC)
      AND compression = {{'class': 'LZ4Compressor', 'chunk_length_in_kb': 64}}""",
    # Which (partition, bucket) keys exist: the reader's and log_high_offsets' index.
    """CREATE TABLE IF NOT EXISTS {ks}.log_buckets (
        topic text, kafka_partition int, bucket bigint,
        PRIMARY KEY ((topic), kafka_partition, bucket))""",
)

_FACTOR_TABLES = (
    # A model snapshot: rows_per_block vectors per row, one partition per block (~1 MiB).
    """CREATE TABLE IF NOT EXISTS {ks}.factor_blocks (
        version int, kind text, block int,
        n int, rank int, ids blob, factors blob, biases blob,
        PRIMARY KEY ((version, kind, block)))""",
    # Written with complete=false before the blocks (reserved = most blocks ever written, so
    # retention finds orphans of a crashed write) and set complete=true after the last one.
    """CREATE TABLE IF NOT EXISTS {ks}.factor_manifests (
        version int, kind text, blocks int, reserved int, complete boolean,
        n bigint, rank int, rows_per_block int, written_at timestamp,
        PRIMARY KEY ((version), kind))""",
    # Write-behind of vectors changed by streaming since the snapshot; last write wins per id.
    """CREATE TABLE IF NOT EXISTS {ks}.factor_deltas (
        version int, kind text, bucket int, id text,
        factors blob, bias float, updated_at timestamp,
        PRIMARY KEY ((version, kind, bucket), id))""",
)

_META_TABLES = (
    """CREATE TABLE IF NOT EXISTS {ks}.model_versions (
        version int PRIMARY KEY,
        created_at timestamp, updated_at timestamp, status text, mode text, rank int,
        topic text, params text, cutoff map<int, bigint>, counts map<text, bigint>,
        metrics map<text, double>, notes text, reason text)""",
    """CREATE TABLE IF NOT EXISTS {ks}.persist_checkpoints (
        version int, topic text, kafka_partition int, next_offset bigint, updated_at timestamp,
        PRIMARY KEY ((version), topic, kafka_partition))""",
    # Switches are rare (a few a day): one partition per year, newest first.
    """CREATE TABLE IF NOT EXISTS {ks}.switch_log (
        year int, at timeuuid, version int, reason text, actor text,
        PRIMARY KEY ((year), at)
    ) WITH CLUSTERING ORDER BY (at DESC)""",
)

_ARCHIVE_TABLES = (
    # The archiver's contiguity record: the log holds every accepted event of the partition
    # with an offset in [start_offset, next_offset). Moved only after the blocks are durable.
    """CREATE TABLE IF NOT EXISTS {ks}.archive_checkpoints (
        topic text, kafka_partition int, start_offset bigint, next_offset bigint,
        updated_at timestamp,
        PRIMARY KEY ((topic), kafka_partition))""",
    # Snapshots of a version's streaming state, materialised from the log (worker.control.materialize):
    # the commit row is written after every block, so a crash leaves the previous snapshot.
    """CREATE TABLE IF NOT EXISTS {ks}.stream_snapshots (
        version int, seq bigint, offsets map<int, bigint>, users bigint, items bigint,
        rank int, blocks_u int, blocks_i int, written_at timestamp,
        PRIMARY KEY ((version), seq)
    ) WITH CLUSTERING ORDER BY (seq DESC)""",
    """CREATE TABLE IF NOT EXISTS {ks}.stream_snapshot_blocks (
        version int, seq bigint, kind text, block int,
        n int, rank int, ids blob, factors blob, biases blob,
        PRIMARY KEY ((version, seq, kind, block)))""",
)

_AUX_COLUMNS = (
    # The adaptive learner's per-entity state (Redis field `a`), float32 rows of aux_u / aux_i
    # floats; null in snapshots of other learners. ADD IF NOT EXISTS: safe to run again.
    "ALTER TABLE {ks}.stream_snapshot_blocks ADD IF NOT EXISTS aux blob",
    "ALTER TABLE {ks}.stream_snapshots ADD IF NOT EXISTS aux_u int",
    "ALTER TABLE {ks}.stream_snapshots ADD IF NOT EXISTS aux_i int",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "ratings log, factor snapshots and deltas, versions, checkpoints, switch log",
              _LOG_TABLES + _FACTOR_TABLES + _META_TABLES),
    Migration(2, "archive checkpoints (log contiguity), stream snapshots", _ARCHIVE_TABLES),
    Migration(3, "stream snapshots carry the adaptive learner's aux state", _AUX_COLUMNS),
)

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (
    version int PRIMARY KEY, description text, applied_at timestamp)"""


def migrate(db: Db, replication: str) -> list[int]:
    """Create the keyspace and apply pending migrations; returns the versions applied now.

    Run it from one process at a time (deploy step or CLI): concurrent DDL from several
    clients can race in Cassandra's schema propagation. A schema that is up to date is
    checked by a read only, without DDL, so a role with only SELECT and MODIFY (workers,
    archivers: ``docs/operations.md``, Roles) starts on a keyspace the admin role migrated.
    """
    session, ks = db.session, db.keyspace
    if _up_to_date(db):
        return []
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}")
    session.execute(_MIGRATIONS_TABLE.format(ks=ks))
    applied = {row[0] for row in session.execute(f"SELECT version FROM {ks}.schema_migrations")}
    done: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            session.execute(statement.format(ks=ks))
        session.execute(
            f"INSERT INTO {ks}.schema_migrations (version, description, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.description, int(time.time() * 1000)),
        )
        done.append(migration.version)
    if done:
        db.forget_prepared()
    return done


def _up_to_date(db: Db) -> bool:
    """Whether every migration is recorded in the keyspace (False when it or its
    schema_migrations table does not exist yet)."""
    from cassandra import InvalidRequest

    try:
        applied = {row[0] for row in db.session.execute(
            f"SELECT version FROM {db.keyspace}.schema_migrations")}
    except InvalidRequest:  # no such keyspace or table: the DDL below creates them
        return False
    return all(m.version in applied for m in MIGRATIONS)


def applied_migrations(db: Db) -> list[int]:
    rows = db.session.execute(f"SELECT version FROM {db.keyspace}.schema_migrations")
    return sorted(row[0] for row in rows)

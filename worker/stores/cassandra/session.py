"""Connection, prepared-statement cache and latency observation shared by the table modules."""

from __future__ import annotations

import itertools
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cassandra import AuthenticationFailed, ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    DefaultConnection,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    ResultSet,
    Session,
)
from cassandra.connection import ConnectionBusy
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import (
    BatchStatement,
    BatchType,
    PreparedStatement,
    Statement,
    tuple_factory,
)

from worker.config import CassandraSettings

Observe = Callable[[str, float], None]

REQUEST_TIMEOUT_S = 60.0  # blocks are up to a few MiB; a loaded local node can be slow
CONCURRENCY = 32  # in-flight requests of one bulk call: enough to hide round trips, bounded memory
MAX_BATCH_ROWS = 200  # rows per single-partition batch (~60 KiB at k=64)


class _BlobConnection(DefaultConnection):  # type: ignore[misc,valid-type]
    """The driver's reactor reads 4 KiB per recv by default; blocks come in MiBs."""

    in_buffer_size = 1 << 16
    out_buffer_size = 1 << 16


class CassandraUnavailable(ConnectionError):
    """No configured Cassandra host answered."""


#: CQL protocol v4: with the Python driver, v5's framing (per-segment checksums handled in
#: Python) cost 15-30% of the client CPU per blob byte read in bench_log_read.py.
DEFAULT_PROTOCOL = 4


def connect(
    settings: CassandraSettings, protocol_version: int | None = DEFAULT_PROTOCOL,
    connect_timeout_s: float = 10.0,
) -> tuple[Cluster, Session]:
    """Open a session (no keyspace bound: statements name ``keyspace.table``).

    ``protocol_version=None`` lets the driver negotiate the highest (v5 on Cassandra 4+).
    """
    auth = None
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else ""
        auth = PlainTextAuthProvider(username=settings.username, password=password)
    ssl_context = None
    if settings.tls:
        ssl_context = ssl.create_default_context(cafile=settings.tls_ca_file)
        ssl_context.check_hostname = settings.tls_check_hostname  # against each node's address
        if settings.tls_cert_file:
            ssl_context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    profile = ExecutionProfile(
        # Token-aware on top of DC-aware: a request goes straight to a replica in the local DC.
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_dc)),
        consistency_level=ConsistencyLevel.LOCAL_QUORUM,
        serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
        request_timeout=REQUEST_TIMEOUT_S,
        row_factory=tuple_factory,  # the cheapest row shape; rows are unpacked positionally
    )
    kwargs: dict[str, Any] = {}
    if protocol_version is not None:
        kwargs["protocol_version"] = protocol_version  # else the driver negotiates (v5 on 4.0+)
    cluster = Cluster(
        contact_points=list(settings.hosts),
        port=settings.port,
        auth_provider=auth,
        ssl_context=ssl_context,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connection_class=_BlobConnection,
        compression=False,  # blobs are mostly float32 (incompressible); saves CPU on both ends
        connect_timeout=connect_timeout_s,
        control_connection_timeout=connect_timeout_s,
        **kwargs,
    )
    try:
        session = cluster.connect()
    except NoHostAvailable as exc:
        cluster.shutdown()
        hosts = ",".join(settings.hosts)
        errors = list(getattr(exc, "errors", {}).values())
        if errors and all(isinstance(e, AuthenticationFailed) for e in errors):
            raise CassandraUnavailable(
                f"Cassandra at {hosts}:{settings.port} refused the credentials of user "
                f"{settings.username!r}; fix cassandra.username/cassandra.password") from exc
        if errors and any(isinstance(e, ssl.SSLError) for e in errors):
            raise CassandraUnavailable(
                f"Cassandra at {hosts}:{settings.port}: TLS handshake failed ({errors[0]}); "
                "check cassandra.tls_ca_file (the CA that signed the nodes' certificates)"
            ) from exc
        raise CassandraUnavailable(
            f"Cassandra at {hosts}:{settings.port} did not answer ({exc}); start it "
            "(`online-als stack up --only cassandra` locally) or fix cassandra.hosts/port"
        ) from exc
    return cluster, session


class Db:
    """A session plus what every table module needs: keyspace, statement cache, timing."""

    def __init__(self, session: Session, keyspace: str, observe: Observe | None = None) -> None:
        self.session = session
        self.keyspace = keyspace
        self.observe = observe
        self._prepared: dict[str, PreparedStatement] = {}

    def prepare(self, cql: str) -> PreparedStatement:
        """Prepare ``cql`` once; ``{ks}`` in it stands for the keyspace."""
        stmt = self._prepared.get(cql)
        if stmt is None:
            stmt = self.session.prepare(cql.format(ks=self.keyspace))
            self._prepared[cql] = stmt
        return stmt

    def forget_prepared(self) -> None:
        """Drop cached statements (after the schema they refer to was recreated)."""
        self._prepared.clear()

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        """Report the wall time of the block to ``observe`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.observe is not None:
                self.observe(op, time.perf_counter() - start)

    def execute(self, cql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        stmt = self.prepare(cql)
        return list(self.wait(self.submit(stmt, params), stmt, params))

    def submit(self, stmt: Statement, params: Sequence[Any] | None = None,
               paging_state: bytes | None = None) -> ResponseFuture:
        return self.session.execute_async(stmt, params, paging_state=paging_state)

    def wait(self, future: ResponseFuture, stmt: Statement, params: Sequence[Any] | None = None,
             paging_state: bytes | None = None) -> ResultSet:
        """The future's result; a request refused as ``ConnectionBusy`` is sent again.

        The driver refuses (never sends) a request while the connection's socket buffer is
        full, which happens with MiB-sized blobs in flight; with one replica that surfaces as
        NoHostAvailable. Since it was never sent, resending is safe even for LWTs.
        """
        delay, waited = 0.002, 0.0
        while True:
            try:
                return future.result()
            except NoHostAvailable as exc:
                if not _only_busy(exc) or waited > REQUEST_TIMEOUT_S:
                    raise
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.1)
            future = self.submit(stmt, params, paging_state)

    def run_many(self, cql: str, params: Sequence[Sequence[Any]]) -> list[ResultSet]:
        """Run one prepared statement per parameter tuple, CONCURRENCY in flight, in order."""
        stmt = self.prepare(cql)
        return self.run_statements([stmt.bind(p) for p in params])

    def run_statements(self, statements: Sequence[Statement]) -> list[ResultSet]:
        """Run bound or batch statements, CONCURRENCY in flight; results in order."""
        results: list[ResultSet] = []
        inflight: deque[tuple[Statement, ResponseFuture]] = deque()
        pending = iter(statements)
        for stmt in itertools.chain(pending, [None]):
            if stmt is not None:
                inflight.append((stmt, self.submit(stmt)))
            while inflight and (stmt is None or len(inflight) >= CONCURRENCY):
                done, future = inflight.popleft()
                results.append(self.wait(future, done))
        return results

    def write_many(self, cql: str, params: Iterable[Sequence[Any]]) -> None:
        """Bulk writes; raises the first error (the statements are idempotent: just rerun)."""
        self.run_many(cql, list(params))

    def write_grouped(self, cql: str, params: Iterable[Sequence[Any]], key_len: int) -> None:
        """Bulk writes of small rows as UNLOGGED batches of one Cassandra partition each.

        ``params[:key_len]`` is the partition key. A single-partition batch is one mutation
        on one replica set: ~10x the rows/s of one request per row with the Python driver,
        whose per-request cost (not the server) limits small writes.
        """
        stmt = self.prepare(cql)
        groups: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
        for p in params:
            groups.setdefault(tuple(p[:key_len]), []).append(p)
        batches: list[Statement] = []
        for rows in groups.values():
            for s in range(0, len(rows), MAX_BATCH_ROWS):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for p in rows[s:s + MAX_BATCH_ROWS]:
                    batch.add(stmt, p)
                batches.append(batch)
        self.run_statements(batches)

    def read_many(self, cql: str, params: Sequence[Sequence[Any]]) -> list[list[tuple[Any, ...]]]:
        """Rows of each query, in the order of ``params``."""
        return [list(rs) for rs in self.run_many(cql, params)]


def _only_busy(exc: NoHostAvailable) -> bool:
    errors = exc.errors or {}
    return bool(errors) and all(isinstance(e, ConnectionBusy) for e in errors.values())

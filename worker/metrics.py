"""Prometheus metric definitions for the streaming worker, plus /metrics, /healthz, /readyz.

All metrics live on the registry given to :class:`WorkerMetrics` (a fresh one by default) so
tests and multiple workers in one process never collide in the global default registry.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import time
from collections import Counter as TallyCounter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder

from worker.events import DLQ_REASONS
from worker.freshness import BulkHistogram

PREFIX: Final = "online_als_"

#: Every sample name the worker exports (histograms as _bucket/_count/_sum; the optional
#: ``_created`` samples of prometheus_client are left out). Grafana PromQL must use only these.
ALL_METRIC_NAMES: Final[tuple[str, ...]] = (
    "online_als_events_consumed_total",
    "online_als_events_applied_total",
    "online_als_events_dead_lettered_total",
    "online_als_batch_size_bucket",
    "online_als_batch_size_count",
    "online_als_batch_size_sum",
    "online_als_batch_latency_seconds_bucket",
    "online_als_batch_latency_seconds_count",
    "online_als_batch_latency_seconds_sum",
    "online_als_event_time_lag_seconds",
    "online_als_freshness_seconds_bucket",
    "online_als_freshness_seconds_count",
    "online_als_freshness_seconds_sum",
    "online_als_consumer_lag_messages",
    "online_als_redis_latency_seconds_bucket",
    "online_als_redis_latency_seconds_count",
    "online_als_redis_latency_seconds_sum",
    "online_als_cassandra_latency_seconds_bucket",
    "online_als_cassandra_latency_seconds_count",
    "online_als_cassandra_latency_seconds_sum",
    "online_als_prequential_rmse",
    "online_als_prequential_mae",
    "online_als_prequential_window_events",
    "online_als_model_version",
    "online_als_users_known",
    "online_als_items_known",
    "online_als_last_checkpoint_timestamp_seconds",
    "online_als_nan_guard_refusals_total",
    "online_als_redis_state_lost_total",
    "online_als_redis_regressions_total",
    "online_als_fenced_writes_total",
    "online_als_reconnects_total",
    "online_als_server_up",
    "online_als_worker_info",
)

#: Labelled by (topic, partition): these series appear once a partition's lag is first set.
PARTITION_METRIC_NAMES: Final[tuple[str, ...]] = ("online_als_consumer_lag_messages",)

DEFAULT_SERVERS: Final = ("kafka", "redis", "cassandra")
DEFAULT_REDIS_OPS: Final = ("read", "write", "script")
DEFAULT_CASSANDRA_OPS: Final = ("read", "write")

BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 50000)
BATCH_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: event time -> visible in Redis (the freshness SLO: docs/serving.md#freshness)
FRESHNESS_BUCKETS: Final = (
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
)  # fmt: skip
CALL_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

FloatArray = npt.ArrayLike


class SlidingErrorWindow:
    """Prequential errors (pred - actual) of the last ``capacity`` events, in a ring buffer."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._buf = np.zeros(capacity, dtype=np.float64)
        self._pos = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    def __len__(self) -> int:
        return self._count

    def update(self, pred: FloatArray, actual: FloatArray) -> int:
        """Append a batch; non-finite pairs (e.g. NaN-guard refusals) are skipped. Returns kept."""
        err = np.asarray(pred, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
        err = err.reshape(-1)
        err = err[np.isfinite(err)]
        n, cap = err.shape[0], self.capacity
        if n >= cap:
            self._buf[:] = err[n - cap :]
            self._pos, self._count = 0, cap
            return n
        first = min(n, cap - self._pos)
        self._buf[self._pos : self._pos + first] = err[:first]
        self._buf[: n - first] = err[first:]  # wrap-around part (empty when it fits)
        self._pos = (self._pos + n) % cap
        self._count = min(self._count + n, cap)
        return n

    def _errors(self) -> npt.NDArray[np.float64]:
        # Until the first wrap the filled part is exactly [0, count).
        return self._buf[: self._count]

    def rmse(self) -> float:
        """Root mean squared error over the window (NaN when empty)."""
        e = self._errors()
        return float(np.sqrt(np.mean(e * e))) if e.size else math.nan

    def mae(self) -> float:
        """Mean absolute error over the window (NaN when empty)."""
        e = self._errors()
        return float(np.mean(np.abs(e))) if e.size else math.nan


def _package_version() -> str:
    try:
        return metadata.version("online-als")
    except metadata.PackageNotFoundError:
        return "unknown"


class WorkerMetrics:
    """All worker metrics on one registry, with pre-initialised label sets."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        servers: Iterable[str] = DEFAULT_SERVERS,
        redis_ops: Iterable[str] = DEFAULT_REDIS_OPS,
        cassandra_ops: Iterable[str] = DEFAULT_CASSANDRA_OPS,
        window: int = 10_000,
        info: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        reg = self.registry
        p = PREFIX
        self.events_consumed = Counter(
            p + "events_consumed", "Kafka messages consumed (good and bad).", registry=reg
        )
        self.events_applied = Counter(
            p + "events_applied", "Events applied to the factors.", registry=reg
        )
        self.events_dead_lettered = Counter(
            p + "events_dead_lettered",
            "Messages sent to the dead-letter topic, by reject reason.",
            ["reason"],
            registry=reg,
        )
        self.batch_size = Histogram(
            p + "batch_size",
            "Messages per processed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.batch_latency = Histogram(
            p + "batch_latency_seconds",
            "Wall time to decode, apply and persist one batch.",
            buckets=BATCH_LATENCY_BUCKETS,
            registry=reg,
        )
        # Unlabelled on purpose: the worker applies one merged batch across its partitions.
        self.event_time_lag = Gauge(
            p + "event_time_lag_seconds",
            "Now minus the newest event time of the last applied batch.",
            registry=reg,
        )
        self.freshness = BulkHistogram(
            p + "freshness_seconds", "Per applied event: the time it became visible in Redis "
            "(its batch committed) minus its event time.", FRESHNESS_BUCKETS, registry=reg)
        self.consumer_lag = Gauge(
            p + "consumer_lag_messages",
            "High watermark minus committed/position offset.",
            ["topic", "partition"],
            registry=reg,
        )
        self.redis_latency = Histogram(
            p + "redis_latency_seconds",
            "Redis call latency by operation.",
            ["op"],
            buckets=CALL_LATENCY_BUCKETS,
            registry=reg,
        )
        self.cassandra_latency = Histogram(
            p + "cassandra_latency_seconds",
            "Cassandra call latency by operation.",
            ["op"],
            buckets=CALL_LATENCY_BUCKETS,
            registry=reg,
        )
        self.prequential_rmse = Gauge(
            p + "prequential_rmse",
            "RMSE over the sliding window of predictions made before learning each event.",
            registry=reg,
        )
        self.prequential_mae = Gauge(
            p + "prequential_mae",
            "MAE over the sliding window of predictions made before learning each event.",
            registry=reg,
        )
        self.prequential_window = Gauge(
            p + "prequential_window_events",
            "Events currently in the error window.",
            registry=reg,
        )
        self.model_version = Gauge(
            p + "model_version", "Version of the model state being served.", registry=reg
        )
        self.users_known = Gauge(p + "users_known", "Distinct users with factors.", registry=reg)
        self.items_known = Gauge(p + "items_known", "Distinct items with factors.", registry=reg)
        self.last_checkpoint = Gauge(
            p + "last_checkpoint_timestamp_seconds",
            "Unix time of the last completed checkpoint.",
            registry=reg,
        )
        self.nan_guard_refusals = Counter(
            p + "nan_guard_refusals", "Updates refused by the NaN/Inf guard.", registry=reg
        )
        self.fenced_writes = Counter(
            p + "fenced_writes",
            "Batches refused because another worker owns the partition now (stale owner).",
            registry=reg,
        )
        self.redis_state_lost = Counter(
            p + "redis_state_lost",
            "Times the worker found Redis without its model state and waited for a restore.",
            registry=reg,
        )
        self.redis_regressions = Counter(
            p + "redis_regressions",
            "Times Redis went back in time under this worker (its checkpoints behind the "
            "positions applied: a restart from an older RDB/AOF, a promoted replica) and the "
            "worker replayed Kafka from what Redis held.",
            registry=reg,
        )
        self.reconnects = Counter(
            p + "reconnects", "Reconnections to a backing server.", ["server"], registry=reg
        )
        self.server_up = Gauge(
            p + "server_up", "1 when the backing server is reachable.", ["server"], registry=reg
        )
        self.worker_info = Info(p + "worker", "Static worker build/config labels.", registry=reg)

        # Touch every known label value so the series exist at 0 before the first event:
        # rate() and absent-series alerts misbehave on series that appear mid-flight.
        for reason in DLQ_REASONS:
            self.events_dead_lettered.labels(reason)
        for op in redis_ops:
            self.redis_latency.labels(op)
        for op in cassandra_ops:
            self.cassandra_latency.labels(op)
        for server in servers:
            self.reconnects.labels(server)
            self.server_up.labels(server).set(0)
        self.prequential = SlidingErrorWindow(window)
        # Set by the consume loop once partitions are assigned; /readyz reports it.
        self.ready = threading.Event()
        self.prequential_rmse.set(math.nan)
        self.prequential_mae.set(math.nan)
        self.worker_info.info(dict(info) if info else {"version": _package_version()})

    def observe_batch(self, consumed: int, applied: int, seconds: float) -> None:
        """Account one processed batch."""
        self.events_consumed.inc(consumed)
        self.events_applied.inc(applied)
        self.batch_size.observe(consumed)
        self.batch_latency.observe(seconds)

    def count_rejects(self, rejects: Iterable[tuple[int, str, str]]) -> None:
        """Increment dead-letter counters from ``DecodedBatch.rejects`` (one inc per reason)."""
        for reason, n in TallyCounter(r[1] for r in rejects).items():
            self.events_dead_lettered.labels(reason).inc(n)

    def publish_prequential(self) -> None:
        """Copy the window's RMSE/MAE/size into the gauges."""
        self.prequential_rmse.set(self.prequential.rmse())
        self.prequential_mae.set(self.prequential.mae())
        self.prequential_window.set(len(self.prequential))

    def observe_prequential(self, pred: FloatArray, actual: FloatArray) -> None:
        """Feed (pred-before-update, actual) pairs and refresh the gauges."""
        self.prequential.update(pred, actual)
        self.publish_prequential()

    def set_event_time_lag(self, event_ts: FloatArray, now: float | None = None) -> None:
        """Set lag from the newest finite event time (unix seconds) of a batch."""
        ts = np.asarray(event_ts, dtype=np.float64)
        ts = ts[np.isfinite(ts)]
        if ts.size:
            now = time.time() if now is None else now
            # Producer clock skew can put events slightly in the future; lag is never negative.
            self.event_time_lag.set(max(0.0, now - float(ts.max())))

    def set_consumer_lag(self, topic: str, partition: int, lag: float) -> None:
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag series so it does not linger after a rebalance."""
        with contextlib.suppress(KeyError):  # never set / already removed
            self.consumer_lag.remove(topic, str(partition))

    def set_server_up(self, server: str, up: bool) -> None:
        self.server_up.labels(server).set(1 if up else 0)

    def serve(self, address: str, port: int) -> MetricsServer:
        """Start the HTTP endpoint for this registry, with /readyz bound to :attr:`ready`."""
        return start_http_server(address, port, self.registry, ready=self.ready)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """Background HTTP server for /metrics, /healthz and /readyz; see :func:`start_http_server`."""

    def __init__(
        self,
        address: str,
        port: int,
        registry: CollectorRegistry,
        *,
        ready: threading.Event | None = None,
    ) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        self._httpd: _Server = server_cls((address, port), _handler(self))
        self.registry = registry
        self._ready = threading.Event() if ready is None else ready
        self._alive = threading.Event()
        self._alive.set()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @ready.setter
    def ready(self, value: bool) -> None:
        if value:
            self._ready.set()
        else:
            self._ready.clear()

    @property
    def alive(self) -> bool:
        return self._alive.is_set()

    @alive.setter
    def alive(self, value: bool) -> None:
        """Clear to make /healthz fail, e.g. when the consume loop is wedged."""
        if value:
            self._alive.set()
        else:
            self._alive.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                self._reply(200, encoder(server.registry), ctype)
            elif path == "/healthz":
                ok = server.alive
                self._reply(200 if ok else 503, b"ok\n" if ok else b"not alive\n")
            elif path == "/readyz":
                ok = server.ready
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per scrape/probe would drown the worker's log

    return Handler


def start_http_server(
    address: str, port: int, registry: CollectorRegistry, *, ready: threading.Event | None = None
) -> MetricsServer:
    """Serve /metrics, /healthz, /readyz on a daemon thread. ``port=0`` picks a free port.

    ``ready`` is shared with the caller when given (e.g. ``WorkerMetrics.ready``); otherwise
    the server owns a fresh flag, initially not ready. Either way ``server.ready = ...`` sets it.
    """
    return MetricsServer(address, port, registry, ready=ready)

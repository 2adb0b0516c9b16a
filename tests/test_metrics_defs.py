"""Prometheus metric definitions, the sliding error window and the HTTP endpoints."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from worker.events import REASONS
from worker.metrics import (
    ALL_METRIC_NAMES,
    PARTITION_METRIC_NAMES,
    PREFIX,
    MetricsServer,
    SlidingErrorWindow,
    WorkerMetrics,
    start_http_server,
)


def sample_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse exposition text into {(sample name, sorted labels): value}, without _created."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def names_in(registry: CollectorRegistry) -> set[str]:
    return {
        s.name for fam in registry.collect() for s in fam.samples if not s.name.endswith("_created")
    }


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


@pytest.fixture
def metrics() -> WorkerMetrics:
    return WorkerMetrics()


@pytest.fixture
def server(metrics: WorkerMetrics) -> Iterator[MetricsServer]:
    srv = metrics.serve("127.0.0.1", 0)
    yield srv
    srv.close()


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------


def test_all_metric_names_are_exactly_what_the_registry_exports(metrics: WorkerMetrics) -> None:
    assert len(set(ALL_METRIC_NAMES)) == len(ALL_METRIC_NAMES)
    # Before any partition is assigned only the partition-labelled series are missing.
    assert names_in(metrics.registry) == set(ALL_METRIC_NAMES) - set(PARTITION_METRIC_NAMES)
    metrics.set_consumer_lag("ratings", 0, 5)
    assert names_in(metrics.registry) == set(ALL_METRIC_NAMES)


def test_names_follow_prometheus_conventions(metrics: WorkerMetrics) -> None:
    for fam in metrics.registry.collect():
        assert fam.name.startswith(PREFIX), fam.name
        names = {s.name for s in fam.samples}
        if fam.type == "counter":
            assert all(n.endswith(("_total", "_created")) for n in names), names
        else:
            assert not any(n.endswith("_total") for n in names), names
        if "latency" in fam.name or "lag_seconds" in fam.name or "timestamp" in fam.name:
            assert fam.name.endswith("_seconds"), fam.name  # base unit, never _ms
    assert not any("_ms" in n or "millis" in n for n in ALL_METRIC_NAMES)


def test_label_sets_are_preinitialised(metrics: WorkerMetrics) -> None:
    from prometheus_client import generate_latest

    values = sample_values(generate_latest(metrics.registry).decode())
    for reason in REASONS:
        assert values[("online_als_events_dead_lettered_total", (("reason", reason),))] == 0
    for server in ("kafka", "redis", "cassandra"):
        assert values[("online_als_reconnects_total", (("server", server),))] == 0
        assert values[("online_als_server_up", (("server", server),))] == 0
    assert values[("online_als_redis_latency_seconds_count", (("op", "write"),))] == 0
    assert values[("online_als_cassandra_latency_seconds_count", (("op", "read"),))] == 0
    assert math.isnan(values[("online_als_prequential_rmse", ())])
    version = metadata.version("online-als")
    assert values[("online_als_worker_info", (("version", version),))] == 1


def test_each_instance_has_its_own_registry() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()  # would raise "Duplicated timeseries" if shared
    a.events_consumed.inc(3)
    assert b.registry.get_sample_value("online_als_events_consumed_total") == 0
    shared = CollectorRegistry()
    assert WorkerMetrics(shared, info={"version": "x", "mode": "implicit"}).registry is shared
    assert shared.get_sample_value("online_als_worker_info", {"version": "x", "mode": "implicit"})


def test_helpers_update_the_right_series(metrics: WorkerMetrics) -> None:
    reg = metrics.registry
    metrics.observe_batch(consumed=10, applied=7, seconds=0.02)
    metrics.count_rejects([(1, "undecodable", ""), (4, "wrong_mode", ""), (5, "undecodable", "")])
    assert reg.get_sample_value("online_als_events_consumed_total") == 10
    assert reg.get_sample_value("online_als_events_applied_total") == 7
    assert reg.get_sample_value("online_als_batch_size_sum") == 10
    assert reg.get_sample_value("online_als_batch_latency_seconds_count") == 1
    dl = "online_als_events_dead_lettered_total"
    assert reg.get_sample_value(dl, {"reason": "undecodable"}) == 2
    assert reg.get_sample_value(dl, {"reason": "wrong_mode"}) == 1

    metrics.set_event_time_lag(np.array([np.nan, 100.0, 250.0]), now=300.0)
    assert reg.get_sample_value("online_als_event_time_lag_seconds") == 50.0
    metrics.set_event_time_lag(np.array([400.0]), now=300.0)  # producer clock ahead
    assert reg.get_sample_value("online_als_event_time_lag_seconds") == 0.0

    metrics.set_consumer_lag("ratings", 3, 42)
    lag = {"topic": "ratings", "partition": "3"}
    assert reg.get_sample_value("online_als_consumer_lag_messages", lag) == 42
    metrics.forget_partition("ratings", 3)
    metrics.forget_partition("ratings", 3)  # idempotent
    assert reg.get_sample_value("online_als_consumer_lag_messages", lag) is None

    metrics.set_server_up("redis", True)
    assert reg.get_sample_value("online_als_server_up", {"server": "redis"}) == 1

    metrics.observe_prequential([3.0, 4.0, np.nan], [4.0, 2.0, 1.0])
    assert reg.get_sample_value("online_als_prequential_mae") == pytest.approx(1.5)
    assert reg.get_sample_value("online_als_prequential_rmse") == pytest.approx(math.sqrt(2.5))
    assert reg.get_sample_value("online_als_prequential_window_events") == 2


# --------------------------------------------------------------------------------------------
# Sliding window
# --------------------------------------------------------------------------------------------


@given(
    st.integers(1, 50),
    st.lists(
        st.lists(
            st.tuples(st.floats(-10, 10), st.one_of(st.floats(-10, 10), st.just(math.nan))),
            max_size=70,
        ),
        max_size=8,
    ),
)
@settings(max_examples=200, deadline=None)
def test_window_matches_naive_last_n(
    capacity: int, batches: list[list[tuple[float, float]]]
) -> None:
    window = SlidingErrorWindow(capacity)
    errors: list[float] = []
    for batch in batches:
        pred = np.array([p for p, _ in batch])
        actual = np.array([a for _, a in batch])
        window.update(pred, actual)
        errors += [p - a for p, a in batch if math.isfinite(p - a)]
    tail = np.array(errors[-capacity:])
    assert len(window) == len(tail)
    if len(tail) == 0:
        assert math.isnan(window.rmse()) and math.isnan(window.mae())
    else:
        assert window.rmse() == pytest.approx(math.sqrt(np.mean(tail**2)), rel=1e-12, abs=1e-12)
        assert window.mae() == pytest.approx(np.mean(np.abs(tail)), rel=1e-12, abs=1e-12)


def test_window_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError):
        SlidingErrorWindow(0)


# --------------------------------------------------------------------------------------------
# HTTP endpoints
# --------------------------------------------------------------------------------------------


def test_metrics_endpoint_serves_every_name(metrics: WorkerMetrics, server: MetricsServer) -> None:
    metrics.set_consumer_lag("ratings", 0, 7)
    status, ctype, body = get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    served = {name for name, _ in sample_values(body)}
    missing = set(ALL_METRIC_NAMES) - served
    assert not missing, missing


def test_readiness_flips_and_health_follows_alive(
    metrics: WorkerMetrics, server: MetricsServer
) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert get(base + "/healthz")[0] == 200
    assert get(base + "/readyz")[0] == 503
    metrics.ready.set()  # the worker's flag is the server's flag
    assert get(base + "/readyz")[0] == 200
    server.ready = False
    assert not metrics.ready.is_set() and get(base + "/readyz")[0] == 503
    server.ready = True
    assert get(base + "/readyz?verbose=1")[0] == 200
    server.alive = False
    assert get(base + "/healthz")[0] == 503
    assert get(base + "/nope")[0] == 404


def test_start_http_server_with_its_own_flag() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    srv = start_http_server("127.0.0.1", 0, registry)
    try:
        base = f"http://127.0.0.1:{srv.port}"
        assert get(base + "/readyz")[0] == 503
        srv.ready = True
        assert srv.ready and get(base + "/readyz")[0] == 200
        assert "online_als_events_consumed_total" in get(base + "/metrics")[2]
    finally:
        srv.close()

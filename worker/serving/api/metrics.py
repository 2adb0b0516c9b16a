"""Prometheus metrics of ``online-als serve``, one set per process; with several worker
processes (``serve.workers > 1``) prometheus_client's multiprocess mode sums them, so any
process answers ``/metrics`` for all (``PROMETHEUS_MULTIPROC_DIR``, set by the CLI before the
workers start).
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

PREFIX: Final = "online_als_serve_"
ENDPOINTS: Final = ("recommend", "because", "similar", "popular")
LATENCY_BUCKETS: Final = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                          0.5, 1.0)

#: Every sample name ``online-als serve`` exports (histograms as _bucket/_count/_sum).
SERVE_METRIC_NAMES: Final[tuple[str, ...]] = (
    "online_als_serve_requests_total",
    "online_als_serve_request_seconds_bucket",
    "online_als_serve_request_seconds_count",
    "online_als_serve_request_seconds_sum",
    "online_als_serve_model_version",
    "online_als_serve_items",
    "online_als_serve_attribute_serial",
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServeMetrics:
    """Request counts and latencies by endpoint, and what the process serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg, p = self.registry, PREFIX
        self.requests = Counter(p + "requests", "HTTP API requests by endpoint and status.",
                                ["endpoint", "status"], registry=reg)
        self.latency = Histogram(p + "request_seconds", "Time to answer a request, in the "
                                 "process (parsing, Redis read, scoring, encoding).",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=reg)
        self.model_version = Gauge(p + "model_version", "The model version being served.",
                                   registry=reg, multiprocess_mode="max")
        self.items = Gauge(p + "items", "Items in the served version's cache.", registry=reg,
                           multiprocess_mode="max")
        self.attribute_serial = Gauge(p + "attribute_serial", "The <P>:attrs:serial of the "
                                      "attribute sets in use (0: none loaded).", registry=reg,
                                      multiprocess_mode="min")
        for e in ENDPOINTS:
            self.latency.labels(e)
            self.requests.labels(e, "200")

    def exposition(self) -> bytes:
        """The text format of every process's metrics (multiprocess) or this one's."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path)
        return generate_latest(merged)

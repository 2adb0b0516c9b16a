"""Bounded retries of Redis calls with capped exponential backoff (the worker's adapter rule).

>>> import threading, redis
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise redis.ConnectionError("down")
...     return "ok"
>>> retry = RedisRetry("localhost:6379", budget_s=5, backoff_max_s=0.01,
...                    stop=threading.Event(), first_delay_s=0.001)
>>> retry(flaky), len(calls)
('ok', 3)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

log = logging.getLogger("online_als.worker")
T = TypeVar("T")


class RedisRetry:
    """Run a function; while Redis is away, retry it with capped exponential backoff for at
    most ``budget_s``, then raise RuntimeError (the worker exits and the group reassigns its
    partitions; ``max.poll.interval.ms`` is set above that budget, so the group does not
    evict a worker that is only waiting for Redis). ``on_state(up)`` reports each outcome."""

    def __init__(self, server: str, budget_s: float, backoff_max_s: float,
                 stop: threading.Event, on_state: Callable[[bool], Any] | None = None,
                 first_delay_s: float = 0.1) -> None:
        self.server, self.budget_s, self.backoff_max_s = server, budget_s, backoff_max_s
        self.stop, self.on_state, self.first_delay_s = stop, on_state, first_delay_s
        self._down_since: float | None = None  # one line when Redis goes away, one when back
        self._failures = 0

    def _failed(self, exc: BaseException, delay: float) -> None:
        self._failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            kind = "stalled (no reply within the socket timeout)" if isinstance(
                exc, redis.TimeoutError) else "unavailable"
            log.warning("redis %s %s: %s; retrying with backoff for up to %.0fs",
                        self.server, kind, exc, self.budget_s)
        else:
            log.debug("redis %s still unavailable (%s); retrying in %.1fs", self.server, exc, delay)

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("redis %s is back after %.1fs (%d failed attempts)", self.server,
                        time.monotonic() - self._down_since, self._failures)
            self._down_since, self._failures = None, 0

    def __call__(self, fn: Callable[[], T]) -> T:
        delay = self.first_delay_s
        deadline = time.monotonic() + self.budget_s
        while True:
            try:
                result = fn()
                if self.on_state is not None:
                    self.on_state(True)
                self._recovered()
                return result
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.on_state is not None:
                    self.on_state(False)
                self._failed(exc, delay)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis {self.server} unavailable for {self.budget_s:.0f}s; exiting so "
                        "the group can reassign this worker's partitions") from exc
                if self.stop.wait(delay):
                    raise
                delay = min(delay * 2, self.backoff_max_s)

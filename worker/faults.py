"""Named fault points of the commit protocol, for crash tests that must hit an exact step.

A point is a place in :mod:`worker.runtime.commit` / :mod:`worker.stores.redis.script_batch`:

- ``after_intent``: the intent of a batch is in Redis, none of its writes are sent;
- ``after_writes``: every write of the batch returned, its commit step is not sent yet
  (on a Redis Cluster as on one Redis: the commit is a phase of its own);
- ``after_commit``: the commit step returned, the worker has not moved its positions;
- ``after_fence``: the worker has just dropped a fenced batch (its partitions not consumed
  until taken back or revoked).

A test arms a point in two ways: in a worker subprocess with the environment variable
``ONLINE_ALS_FAULT=<point>`` or ``<point>@<n>`` (the process kills itself with SIGKILL the
``n``-th time it reaches the point, default the first), or in process with :func:`arm` and a
callback (``nth=None``: every time, with the count). An unarmed point costs one lookup.

>>> calls = []
>>> arm("after_intent", lambda: calls.append("hit"), nth=2)
>>> reached("after_intent"); reached("after_intent"); reached("after_intent")
>>> calls
['hit']
>>> arm("after_commit", lambda n: calls.append(n), nth=None)
>>> reached("after_commit"); reached("after_commit")
>>> calls
['hit', 1, 2]
>>> disarm()
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

log = logging.getLogger("online_als.faults")

FAULT_ENV = "ONLINE_ALS_FAULT"
POINTS = ("after_intent", "after_writes", "after_commit", "after_fence")

_armed: dict[str, tuple[int | None, Callable[..., Any]]] = {}
_seen: dict[str, int] = {}
_env_read = False


def _kill() -> None:
    log.error("fault hook: killing this process with SIGKILL")
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, action: Callable[..., Any] = _kill, nth: int | None = 1) -> None:
    """Run ``action()`` (default: SIGKILL of this process) the ``nth`` time ``point`` is
    reached, or ``action(count)`` every time when ``nth`` is None."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; one of {', '.join(POINTS)}")
    _armed[point] = (nth, action)
    _seen[point] = 0


def disarm() -> None:
    _armed.clear()
    _seen.clear()


def _from_env() -> None:
    global _env_read
    _env_read = True
    spec = os.environ.get(FAULT_ENV, "").strip()
    if spec:
        point, _, nth = spec.partition("@")
        arm(point, nth=int(nth or 1))


def is_armed(point: str) -> bool:
    if not _env_read:
        _from_env()
    return point in _armed


def reached(point: str) -> None:
    """Called at ``point``; runs its action when armed and this is the chosen time."""
    if not is_armed(point):
        return
    _seen[point] += 1
    nth, action = _armed[point]
    if nth is None:
        action(_seen[point])
    elif _seen[point] == nth:
        action()

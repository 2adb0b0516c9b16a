"""Named pause points of the version lifecycle, for race tests that must hold a window open.

A test that runs a rollback, retrain or prune as a real process sets
``ONLINE_ALS_LIFECYCLE_PAUSE=<point>=<seconds>[,<point>=<seconds>...]`` in its environment;
the process sleeps that long each time it reaches the point, so a second process started
meanwhile meets exactly that state (a namespace loaded but not yet serving, a switch about to
be made). Unset, a point costs one dictionary lookup. The points:

- ``rollback.loaded``: a rollback loaded its version from Cassandra and has not switched yet
  (it holds the lifecycle lock);
- ``promote.before_lock``: a retrain caught up and is about to take the lifecycle lock to
  switch (it holds only the retrain lease).

(:mod:`worker.faults` kills at the commit protocol's steps; these only wait.)

>>> import os
>>> os.environ[PAUSE_ENV] = "rollback.loaded=0.01"
>>> _reset(); pause("rollback.loaded"); pause("promote.before_lock")
>>> _armed
{'rollback.loaded': 0.01}
>>> del os.environ[PAUSE_ENV]; _reset()
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("online_als.lifecycle")

PAUSE_ENV = "ONLINE_ALS_LIFECYCLE_PAUSE"
POINTS = ("rollback.loaded", "promote.before_lock")

_armed: dict[str, float] = {}
_read = False


def _reset() -> None:
    global _read
    _armed.clear()
    _read = False


def _from_env() -> None:
    global _read
    _read = True
    for part in os.environ.get(PAUSE_ENV, "").split(","):
        point, _, seconds = part.strip().partition("=")
        if not point:
            continue
        if point not in POINTS:
            raise ValueError(f"{PAUSE_ENV}: unknown pause point {point!r}; one of {', '.join(POINTS)}")
        _armed[point] = float(seconds or 1.0)


def pause(point: str) -> None:
    """Sleep at ``point`` when the environment arms it."""
    if not _read:
        _from_env()
    seconds = _armed.get(point)
    if seconds:
        log.warning("lifecycle pause hook: %s, sleeping %.1fs", point, seconds)
        time.sleep(seconds)

"""Leases in Redis: one retrain at a time, one load of a version from Cassandra at a time.

A lease is a STRING set with ``SET NX PX`` and renewed every ttl/3 while its holder runs, so
it lapses by itself soon after the holder dies (kill -9 included). Its value records who holds
it (JSON: what, pid, host, since, a random token), so a refused caller can say who holds the
lease and, from the key's PTTL, when it expires, instead of only "another one is running".
Release and renewal compare the whole value, so a holder never extends or deletes a lease
that lapsed and was taken by someone else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from worker.stores.redis.store import RedisStore


class LeaseHeld(RuntimeError):
    """The lease is held by another process; the message says who and when it expires."""


@dataclass(frozen=True)
class Holder:
    """What a lease's value says about its holder, and how long the lease has left."""

    what: str
    pid: int | None
    host: str
    since: float | None
    expires_in_s: float | None  # None: no TTL (never set by this module) or already gone

    def describe(self) -> str:
        who = self.what or "an unknown holder"
        where = []
        if self.pid is not None:
            where.append(f"pid {self.pid}")
        if self.host:
            where.append(f"on host {self.host}")
        if self.since is not None:
            where.append(f"since {time.time() - self.since:.0f} s")
        text = f"{who} ({' '.join(where)})" if where else who
        if self.expires_in_s is None:
            return text + ", no expiry known"
        return (f"{text}, expires in {self.expires_in_s:.1f} s unless its holder renews it "
                "(a killed holder's lease lapses by itself)")


def _value(what: str) -> str:
    return json.dumps({"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                       "since": round(time.time(), 3), "token": uuid.uuid4().hex},
                      sort_keys=True)


def holder(store: RedisStore, key: str) -> Holder | None:
    """Who holds the lease ``key`` (None when nobody does). A value that is not this module's
    JSON (an older release wrote a bare token) is reported as an unknown holder."""
    pipe = store.client.pipeline(transaction=True)
    pipe.get(key)
    pipe.pttl(key)
    raw, pttl = pipe.execute()
    if raw is None:
        return None
    expires = int(pttl) / 1000.0 if pttl is not None and int(pttl) >= 0 else None
    try:
        info = json.loads(raw)
        if not isinstance(info, dict):
            raise ValueError(raw)
    except ValueError:
        return Holder("", None, "", None, expires)
    pid = info.get("pid")
    since = info.get("since")
    return Holder(str(info.get("what", "")), int(pid) if pid is not None else None,
                  str(info.get("host", "")), float(since) if since is not None else None, expires)


@contextlib.contextmanager
def lease(store: RedisStore, key: str, ttl_s: float, wait_s: float,
          what: str) -> Iterator[bool]:
    """Hold ``key`` while the block runs, renewed every ttl/3. Yields False when it could not
    be had within ``wait_s``."""
    value, ttl_ms = _value(what), max(1000, int(ttl_s * 1000))
    mine = value.encode()
    deadline = time.monotonic() + wait_s
    while not (got := bool(store.client.set(key, value, nx=True, px=ttl_ms))):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl_s / 3):
            with contextlib.suppress(Exception):  # a missed renewal is retried next period
                if store.client.get(key) == mine:
                    store.client.pexpire(key, ttl_ms)

    if got:
        threading.Thread(target=renew, name=f"lease {key}", daemon=True).start()
    try:
        yield got
    finally:
        done.set()
        if got:
            with contextlib.suppress(Exception):  # it lapses by itself otherwise
                if store.client.get(key) == mine:
                    store.client.delete(key)


LOCK_WAIT_S = 600.0  # how long a promotion, retention or cleanup waits for the lifecycle lock


@contextlib.contextmanager
def load_lock(store: RedisStore, wait_s: float = 0.0, ttl_s: float = 60.0,
              what: str = "a version load (restore or rollback)") -> Iterator[bool]:
    """The lifecycle lock: serialises every change to which namespaces exist and which one
    serves (loads from Cassandra, switches, retention, cleanup; ``worker.control.lifecycle``).
    Two loads of one namespace at once would delete each other's keys, and a prune during a
    load would delete what it loads. True to the holder."""
    with lease(store, store.keys.restore_lock(), ttl_s, wait_s, what) as got:
        yield got


@contextlib.contextmanager
def lifecycle_locked(store: RedisStore, what: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the lifecycle lock for ``what`` or raise :class:`LeaseHeld` naming its holder."""
    with load_lock(store, wait_s=wait_s, what=what) as held:
        if not held:
            who = holder(store, store.keys.restore_lock())
            raise LeaseHeld(f"{what}: the lifecycle lock is held by "
                            f"{who.describe() if who else 'a holder whose lease just lapsed'}; "
                            f"waited {wait_s:g} s, try again later")
        yield


@contextlib.contextmanager
def retrain_lock(store: RedisStore, ttl_s: float) -> Iterator[None]:
    """Only one retrain at a time; the lease is renewed while it runs and expires soon after
    the process dies, so the next retrain can clean up after a killed one. Raises
    :class:`LeaseHeld` naming the holder and when its lease expires."""
    key = store.keys.retrain_lock()
    with lease(store, key, ttl_s, 0.0, "online-als retrain") as got:
        if not got:
            held = holder(store, key)
            who = held.describe() if held is not None else "a holder whose lease just lapsed"
            raise LeaseHeld(f"retrain lease {key} is held by {who}; try again then "
                            f"(retrain.lock_ttl_s = {ttl_s:g})")
        yield

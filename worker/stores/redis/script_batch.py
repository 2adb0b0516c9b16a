"""Script calls and plain commands sent to Redis together, with the replies read later.

On a standalone Redis a :class:`ScriptBatch` packs every call as ``EVALSHA`` with hiredis (no
per-argument Python work) and sends the lot on one pooled connection. ``start()`` does the
sending and the reading on a background thread, so the worker can consume and decode its next
messages while Redis applies this batch (:class:`worker.runtime.commit.CommitProtocol`); ``result()``
waits for the replies. Redis runs the calls of one connection in order, one at a time, and
serves other clients between them, so a bounded script is a bounded pause for serving apps.

On a Redis Cluster the scripts run concurrently, one call per hash-slot group, and the plain
commands go through a cluster pipeline. A :meth:`ScriptBatch.barrier` splits a batch into
phases: on a cluster a phase starts only after every call of the one before returned (the
commit protocol's checkpoints go after its writes, whichever node holds them); on one Redis
the calls of one connection run in order anyway, so the phases go out in one send unless a
fault point (:mod:`worker.faults`) is armed between them.

A script missing from Redis's cache (after a restart or ``SCRIPT FLUSH``) is loaded and the
whole batch is sent again (up to 5 sends): every call in it is idempotent (guarded writes, fenced and
forward-only checkpoint steps, set additions, reads).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import hiredis
from redis.exceptions import NoScriptError, ResponseError

from worker import faults

#: Sends of one batch while Redis keeps losing its script cache (each one reloads the scripts);
#: more means someone is flushing it in a loop.
_NOSCRIPT_ATTEMPTS = 5


class ScriptBatch:
    """Calls queued with :meth:`script` and :meth:`sadd`, run by :meth:`execute` (now) or
    :meth:`start` + :meth:`result` (in the background)."""

    def __init__(self, client: Any, cluster: bool, pool: ThreadPoolExecutor | None = None) -> None:
        self.client = client
        self.cluster = cluster
        self._pool = pool
        self._calls: list[tuple[Any, list[Any], list[Any]]] = []  # (script or None, keys, args)
        self._barriers: list[int] = []  # call indices where a new phase starts
        self._thread: threading.Thread | None = None
        self._replies: list[Any] | None = None
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._calls)

    def script(self, script: Any, keys: list[Any], args: list[Any]) -> None:
        """Queue ``script`` (a redis-py ``Script``) with ``keys`` and ``args``."""
        self._calls.append((script, keys, args))

    def sadd(self, key: str, *members: Any) -> None:
        self._calls.append((None, [key], ["SADD", key, *members]))

    def command(self, key: str, *args: Any) -> None:
        """Queue a plain command on ``key``, e.g. ``command(k, "SET", k, blob, "EX", 60)``."""
        self._calls.append((None, [key], list(args)))

    def barrier(self) -> None:
        """Calls queued from now on run only after every call queued before has returned."""
        if self._calls and (not self._barriers or self._barriers[-1] != len(self._calls)):
            self._barriers.append(len(self._calls))

    def _phases(self) -> list[tuple[int, int]]:
        bounds = [0, *self._barriers, len(self._calls)]
        return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    # -- running -------------------------------------------------------------------------
    def execute(self) -> list[Any]:
        """Run every queued call now; the replies in call order."""
        return self._run()

    def start(self) -> None:
        """Run the queued calls on a background thread; :meth:`result` waits for them."""
        def run() -> None:
            try:
                self._replies = self._run()
            except BaseException as exc:  # handed to result(), on the caller's thread
                self._error = exc

        self._thread = threading.Thread(target=run, name="redis-batch", daemon=True)
        self._thread.start()

    def result(self) -> list[Any]:
        """The replies of a started batch (raises what running it raised)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        assert self._replies is not None
        return self._replies

    def _run(self) -> list[Any]:
        if not self._calls:
            return []
        phased = self.cluster or (len(self._phases()) > 1 and faults.is_armed("after_writes"))
        if not phased:
            return self._run_standalone(self._calls)
        out: list[Any] = []
        for n, (a, b) in enumerate(self._phases()):
            if n:
                faults.reached("after_writes")
            calls = self._calls[a:b]
            out += self._run_cluster(calls) if self.cluster else self._run_standalone(calls)
        return out

    def _run_standalone(self, calls: list[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        for attempt in range(_NOSCRIPT_ATTEMPTS):
            try:
                replies = self._send_all(calls)
                break
            except NoScriptError:
                if attempt == _NOSCRIPT_ATTEMPTS - 1:
                    raise
                for script in {id(s): s for s, _, _ in calls if s is not None}.values():
                    self.client.script_load(script.script)
        errors = [r for r in replies if isinstance(r, ResponseError)]
        if errors:
            raise errors[0]
        return replies

    def _send_all(self, calls: list[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        packed = [hiredis.pack_command(tuple(_command(s, k, a))) for s, k, a in calls]
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(packed, check_health=False)
            replies = read_replies(conn, len(packed))
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand this stream back as is
            raise
        finally:
            pool.release(conn)
        missing = [r for r in replies if isinstance(r, NoScriptError)]
        if missing:
            raise missing[0]  # every reply was read: the connection is clean
        return replies

    def _run_cluster(self, calls: list[tuple[Any, list[Any], list[Any]]]) -> list[Any]:
        """One phase on a cluster: its scripts concurrently, its plain commands in a cluster
        pipeline; returns when every call returned."""
        out: list[Any] = [None] * len(calls)
        scripts = [j for j, c in enumerate(calls) if c[0] is not None]
        plain = [j for j, c in enumerate(calls) if c[0] is None]
        if scripts:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="redis-slot")
            for j, r in zip(scripts, self._pool.map(lambda c: c[0](keys=c[1], args=c[2]),
                                                    [calls[j] for j in scripts]), strict=True):
                out[j] = r
        if plain:
            pipe = self.client.pipeline(transaction=False)
            for j in plain:
                pipe.execute_command(*calls[j][2])
            for j, r in zip(plain, pipe.execute(), strict=True):
                out[j] = r
        return out


def read_replies(conn: Any, n: int) -> list[Any]:
    """Read ``n`` replies of commands sent on ``conn``, an error reply in its place as its
    ``ResponseError`` (so the connection stays in step whatever the replies say)."""
    replies: list[Any] = []
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


def _command(script: Any, keys: list[Any], args: list[Any]) -> list[Any]:
    """The command as hiredis packs it (str, bytes, memoryview, int and float as they are;
    keys are str already, so only the few arguments are checked)."""
    args = [a if type(a) in _PACKABLE else _convert(a) for a in args]
    if script is None:
        return args
    return ["EVALSHA", script.sha, len(keys), *keys, *args]


_PACKABLE = frozenset((str, bytes, int, float))


def _convert(value: Any) -> Any:
    return bytes(value) if isinstance(value, bytearray | memoryview) else str(value)

"""The one Redis read of a recommend request, asynchronous, so one ``online-als serve`` process
scores a request while the next one's user read is in flight (a blocking read left the core
idle for the whole round trip).

A minimal RESP client on an asyncio protocol: the same two commands as
:meth:`worker.serving.reads.RedisReads.read_user_seen_rows` (``HMGET f b`` + ``HKEYS``), packed
by hiredis and pipelined on one connection per process (replies come back in order), parsed by
``hiredis.Reader``. It speaks AUTH (ACL user), SELECT and TLS with the client's settings. A
Redis Cluster, or any failure, falls back to the blocking client (its retry policy); the
connection is then rebuilt on the next request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from typing import Any

import hiredis

from worker.config import RedisSettings
from worker.serving.cache import UserRecord, VersionCache
from worker.serving.reads import I64, RedisReads
from worker.stores.redis.keys import FIELD_BIAS, FIELD_FACTORS, RedisKeys

log = logging.getLogger("online_als.serve")


class _Resp(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = \
            collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut, n, acc = self.waiting[0]
            acc.append(reply)
            if len(acc) == n:
                self.waiting.popleft()
                if not fut.done():
                    fut.set_result(acc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(ConnectionError(f"Redis connection lost: {exc}"))

    def call(self, packed: bytes, replies: int) -> asyncio.Future[list[Any]]:
        assert self.transport is not None
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((fut, replies, []))
        self.transport.write(packed)
        return fut


def _ssl_context(s: RedisSettings) -> ssl.SSLContext | None:
    if not s.tls:
        return None
    ctx = ssl.create_default_context(cafile=s.tls_ca_file)
    ctx.check_hostname = s.tls_check_hostname
    if s.tls_cert_file:
        ctx.load_cert_chain(s.tls_cert_file, s.tls_key_file)
    return ctx


class AsyncUserReads:
    """``HMGET`` + ``HKEYS`` of one user over a pipelined asyncio connection."""

    def __init__(self, settings: RedisSettings, keys: RedisKeys, fallback: RedisReads) -> None:
        self.settings, self.keys, self.fallback = settings, keys, fallback
        self.enabled = not settings.cluster
        self._proto: _Resp | None = None
        self._connecting: asyncio.Future[_Resp] | None = None

    async def _connection(self) -> _Resp:
        if self._proto is not None and not self._proto.lost:
            return self._proto
        connecting = self._connecting
        if connecting is None:
            connecting = self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self) -> _Resp:
        s = self.settings
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(loop.create_connection(
            _Resp, s.host, s.port, ssl=_ssl_context(s)), s.socket_timeout_s)
        setup: list[tuple[Any, ...]] = []
        if s.password is not None:
            pw = s.password.get_secret_value()
            setup.append(("AUTH", s.username, pw) if s.username else ("AUTH", pw))
        if s.db:
            setup.append(("SELECT", str(s.db)))
        if setup:
            replies = await asyncio.wait_for(
                proto.call(b"".join(hiredis.pack_command(c) for c in setup),  # type: ignore[arg-type]
                           len(setup)),
                s.socket_timeout_s)
            bad = [r for r in replies if isinstance(r, hiredis.ReplyError)]
            if bad:
                proto.transport.close()  # type: ignore[union-attr]
                raise ConnectionError(f"Redis refused the connection setup: {bad[0]}")
        self._proto = proto
        return proto

    async def user_seen_rows(self, cache: VersionCache, user_id: str) -> tuple[UserRecord, I64]:
        if not self.enabled:
            return self.fallback.read_user_seen_rows(cache, user_id)
        v = cache.version
        pack: Any = hiredis.pack_command  # its stub takes 1-tuples only
        packed = (pack(("HMGET", self.keys.user(v, user_id), FIELD_FACTORS, FIELD_BIAS))
                  + pack(("HKEYS", self.keys.seen(v, user_id))))
        try:
            proto = await self._connection()
            fut = proto.call(packed, 2)
            timer = asyncio.get_running_loop().call_later(
                self.settings.socket_timeout_s, _expire, fut)
            try:
                fb, ids = await fut
            finally:
                timer.cancel()
        except (OSError, TimeoutError) as exc:
            log.warning("async Redis read failed (%s); this request reads through the "
                        "blocking client", exc)
            self._drop()
            return self.fallback.read_user_seen_rows(cache, user_id)
        if isinstance(fb, hiredis.ReplyError) or isinstance(ids, hiredis.ReplyError):
            return self.fallback.read_user_seen_rows(cache, user_id)  # raises the real error
        return self.fallback._decode_user(cache, fb, None), cache.rows_of(ids)

    def _drop(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("Redis did not answer within redis.socket_timeout_s"))

"""Periodic refresh of the implicit fold-in's cached Gram inverses of one Redis version.

One worker at a time refreshes (a Redis lock with expiry); every worker picks the new inverses
up when the version's ``gram_serial`` changes. Between refreshes the inverses are constant, so
the online updates stay reproducible.
"""

from __future__ import annotations

import logging

from online_als.kernels.implicit_foldin import gram_inverse
from worker.stores.redis.store import RedisStore, dump_vectors

log = logging.getLogger(__name__)


def refresh_grams(store: RedisStore, version: int, rank: int, reg: float) -> bool:
    """Recompute (YᵀY+λI)⁻¹ and (XᵀX+λI)⁻¹ from the stored vectors, unless another worker is."""
    lock = f"{store.keys.meta(version)}:gram_lock"
    if not store.client.set(lock, "1", nx=True, ex=60):
        return False
    try:
        items = dump_vectors(store, version, "i", rank).vectors
        users = dump_vectors(store, version, "u", rank).vectors
        store.write_grams(version, gram_inverse(items, reg), gram_inverse(users, reg))
        log.info("refreshed gram inverses of version %d (%d items, %d users)",
                 version, len(items), len(users))
        return True
    finally:
        store.client.delete(lock)


def gram_serial(store: RedisStore, version: int) -> int:
    value = store.client.hget(store.keys.meta(version), "gram_serial")
    return int(value) if value is not None else 0

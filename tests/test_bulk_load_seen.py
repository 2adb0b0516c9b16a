"""Seen-hashes and vectors streamed on one connection (worker.stores.redis.bulk_load) on the real Redis:
byte for byte what the redis-py pipeline writes, error replies surfaced, the pool still sound."""

from __future__ import annotations

import numpy as np
import pytest
import redis
import scipy.sparse as sp

from online_als.factors import Factors
from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import store_for
from worker.stores.redis import bulk_load
from worker.stores.redis.keys import FIELD_AUX
from worker.stores.redis.store import RedisStore

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def _history(n_users: int = 2500, n_items: int = 700, nnz: int = 60_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = rng.choice(np.array([1.0, 4.0, -4.0, 2.5, 1e-3, 123456.789], np.float32), nnz)
    rows = rng.integers(0, n_users, nnz)
    rows[rows % 11 == 0] += 1  # some users without history (no key either way)
    csr = sp.csr_matrix((values, (rows % n_users, rng.integers(0, n_items, nnz))),
                        shape=(n_users, n_items))  # fmt: skip
    csr.sum_duplicates()
    users = [f"u{j}" if j % 7 else f"usér {j}" for j in range(n_users)]  # non-ASCII ids too
    items = [str(j) if j % 5 else f"it:{j}" for j in range(n_items)]
    return users, items, csr


def _cleanup(store: RedisStore) -> None:
    for key in list(store.client.scan_iter(match=f"{store.keys.prefix}:*", count=5000)):
        store.client.unlink(key)


def test_streamed_seen_equals_the_pipeline(stack: StackInfo, isolated: Isolated) -> None:
    store = store_for(make_settings(stack, isolated))
    users, items, csr = _history()
    indptr, indices = csr.indptr.astype(np.int64), csr.indices.astype(np.int64)
    assert not store.cluster
    try:
        bulk_load._write_seen_pipeline(store, 1, users, items, indptr, indices, csr.data)
        bulk_load.write_seen(store, 2, users, items, csr.indptr, csr.indices, csr.data)
        empty_rows = 0
        for uid in users:
            old = store.client.hgetall(store.keys.seen(1, uid))
            assert old == store.client.hgetall(store.keys.seen(2, uid)), uid
            empty_rows += not old
        assert empty_rows > 0  # users without history get no key in either path
        assert store.client.ping()
    finally:
        _cleanup(store)


def test_an_error_reply_is_raised_after_every_reply_is_read(
        stack: StackInfo, isolated: Isolated) -> None:
    store = store_for(make_settings(stack, isolated))
    users, items, csr = _history(n_users=300, nnz=5000, seed=1)
    try:
        store.client.set(store.keys.seen(3, users[3]), "not a hash")  # HSET on it: WRONGTYPE
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            bulk_load.write_seen(store, 3, users, items, csr.indptr, csr.indices, csr.data)
        # every other user was written, and the connections left in the pool answer in order
        row = csr.getrow(299)
        assert store.client.hlen(store.keys.seen(3, users[299])) == row.nnz
        for _ in range(5):
            assert store.client.get(store.keys.seen(3, users[3])) == b"not a hash"
    finally:
        _cleanup(store)


@pytest.mark.parametrize("counts", [False, True])
@pytest.mark.parametrize("with_aux", [False, True])
def test_streamed_vectors_equal_the_pipeline(stack: StackInfo, isolated: Isolated,
                                             counts: bool, with_aux: bool) -> None:
    """The streamed bulk load writes the same hashes and index as the pipeline path, the
    adaptive learner's aux state (field `a`) included."""
    store = store_for(make_settings(stack, isolated))
    rng = np.random.default_rng(2)
    ids = [f"i{j}" if j % 3 else f"ïd {j}" for j in range(4500)]  # > one chunk, non-ASCII
    f = rng.normal(size=(len(ids), 8)).astype(np.float32)
    b = rng.normal(size=len(ids)).astype(np.float32)
    a = rng.normal(size=(len(ids), 9)).astype(np.float32) if with_aux else None
    n = rng.integers(0, 10**6, len(ids)) if counts else None
    try:
        cluster = RedisStore(store.client, store.keys, cluster=True)  # the pipeline path
        bulk_load._write_vectors(cluster, 1, "i", Factors(ids, f, b, a), n)
        bulk_load._write_vectors(store, 2, "i", Factors(ids, f, b, a), n)
        for j in range(0, len(ids), 7):
            assert (store.client.hgetall(store.keys.item(1, ids[j]))
                    == store.client.hgetall(store.keys.item(2, ids[j])))  # fmt: skip
        assert (store.client.smembers(store.keys.item_index(1))
                == store.client.smembers(store.keys.item_index(2)))  # fmt: skip
        if a is not None:
            got = store.read_vectors(store.vector_keys(2, "i", ids), 8, extra={FIELD_AUX: 9})
            np.testing.assert_array_equal(got.extra[FIELD_AUX], a)
            np.testing.assert_array_equal(got.factors, f)
            with pytest.raises(ValueError, match="aux state"):
                bulk_load._write_vectors(store, 3, "i", Factors(ids, f, b, a[:-1]), n)
    finally:
        _cleanup(store)

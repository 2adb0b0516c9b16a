"""ServingClient on the real stack: a real worker writes Redis, the client reads what it wrote.

Reference numbers come from the in-memory model fed the same events (``reference_model``), so
these tests check the whole path Kafka -> worker -> Redis -> serving client.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_als.online import OnlineModel
from online_als.serving import SimilarityIndex, fold_in_user, fold_in_user_explicit
from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, run_worker, store_for, synthetic_events
from tests.test_worker_stream import reference_model
from worker.cli.common import EXIT_DOWN, EXIT_OK
from worker.cli.main import main
from worker.config import Settings
from worker.serving.client import FoldInParams, NoModelError, ServingClient
from worker.stores.redis.batch_args import SeenUpdates
from worker.stores.redis.keys import FORMAT_VERSION, RedisKeys
from worker.stores.redis.store import RedisStore, connect

pytestmark = pytest.mark.stack

N_EVENTS, N_USERS, N_ITEMS, RANK = 3000, 300, 200, 16


def assert_scores(got: Any, expected: Any) -> None:
    """float32 serving scores vs float64 reference: tolerance relative to the score scale."""
    g, e = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * scale)


@dataclass
class Trained:
    settings: Settings
    events: list[dict[str, object]]  # the events the kernels applied (the guard may refuse some)
    model: OnlineModel
    client: ServingClient

    @property
    def mode(self) -> str:
        return self.settings.model.mode

    def seen(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for e in self.events:
            out[str(e["user_id"])].add(str(e["item_id"]))
        return out

    def users_by_activity(self) -> list[str]:
        return [u for u, _ in Counter(str(e["user_id"]) for e in self.events).most_common()]

    def reference_scores(self, user: str) -> dict[str, float]:
        """Every item's score for ``user`` in float64 from the in-memory model."""
        s = self.model.state
        x = s.user_factors[s.users.rows_for([user], add=False)[0]].astype(np.float64)
        scores = s.item_factors.astype(np.float64) @ x
        if self.mode == "explicit":
            u = s.users.rows_for([user], add=False)[0]
            scores += s.global_mean + float(s.user_bias[u]) + s.item_bias.astype(np.float64)
        return dict(zip(s.items.ids, scores.tolist(), strict=True))


def _isolated(name: str) -> Isolated:
    tag = f"{name}_{uuid.uuid4().hex[:8]}"
    return Isolated(tag=tag, topic=f"t_{tag}", dlq_topic=f"t_{tag}.dlq",
                    redis_prefix=f"test_{tag}", keyspace=f"ks_{tag}"[:48], group=f"g_{tag}")


def _drop_prefix(settings: Settings) -> None:
    client = connect(settings.redis)
    keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    for s in range(0, len(keys), 1000):
        client.delete(*keys[s:s + 1000])


def _train(stack: StackInfo, mode: str) -> Iterator[Trained]:
    settings = make_settings(stack, _isolated(f"serving_{mode[:3]}"), **{
        "model.mode": mode, "model.rank": RANK, "worker.batch_max_events": 257,
        # serving is under test here, not the learner: the reference is OnlineModel's SGD
        "model.learner": "sgd", "cassandra.enabled": False})
    events = synthetic_events(N_EVENTS, N_USERS, N_ITEMS, seed=3, implicit=mode == "implicit")
    produce(settings, events)
    worker = run_worker(settings, idle_exit_s=3)
    captured: dict[str, np.ndarray] = {}
    learn = OnlineModel.learn_batch

    def spy(self: OnlineModel, *args: Any) -> Any:
        out = learn(self, *args)
        captured["applied"] = out[1]
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OnlineModel, "learn_batch", spy)
        model = reference_model(settings, events)
    applied = [e for e, ok in zip(events, captured["applied"].tolist(), strict=True) if ok]
    assert worker.applied_total == len(applied) > 0
    yield Trained(settings, applied, model, ServingClient.from_settings(settings))
    _drop_prefix(settings)


@pytest.fixture(scope="module")
def explicit_model(stack: StackInfo) -> Iterator[Trained]:
    yield from _train(stack, "explicit")


@pytest.fixture(scope="module")
def implicit_model(stack: StackInfo) -> Iterator[Trained]:
    yield from _train(stack, "implicit")


@pytest.fixture(params=["explicit", "implicit"])
def trained(request: pytest.FixtureRequest) -> Trained:
    return request.getfixturevalue(f"{request.param}_model")  # type: ignore[no-any-return]


def _redis_keys(settings: Settings) -> set[bytes]:
    client = connect(settings.redis)
    return set(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))


# -- recommendations equal the reference --------------------------------------------------
def test_recommend_excludes_seen_and_equals_reference_top_n(trained: Trained) -> None:
    seen = trained.seen()
    for user in trained.users_by_activity()[:25]:
        recs = trained.client.recommend(user, n=10)
        assert recs.source == "model" and len(recs) == 10
        assert not set(recs.item_ids) & seen[user]
        ref = trained.reference_scores(user)
        expected = sorted((s for i, s in ref.items() if i not in seen[user]), reverse=True)[:10]
        got = [s for _, s in recs]
        assert_scores(got, expected)
        assert_scores(got, [ref[i] for i in recs.item_ids])


def test_user_read_on_own_connection_equals_pipeline_and_survives_a_kill(
        explicit_model: Trained) -> None:
    """recommend's user read (HMGET + HKEYS written straight to the thread's own connection)
    gives what the pipelined HMGET + HGETALL gives; when Redis drops that connection the call
    is answered through the client's pipeline and the next call reconnects."""
    client = explicit_model.client
    cache = client.cache()
    for user in explicit_model.users_by_activity()[:20] + ["nobody-1"]:
        fast, rows = client.read_user_seen_rows(cache, user)
        slow = client.read_user(cache, user)
        assert (fast.vector is None) == (slow.vector is None) and fast.bias == slow.bias
        if fast.vector is not None:
            assert fast.vector.tobytes() == slow.vector.tobytes()  # type: ignore[union-attr]
        assert sorted(rows.tolist()) == sorted(cache.seen_rows(slow).tolist())
    user = explicit_model.users_by_activity()[0]
    want = client.recommend(user, n=10)
    conn = client.reads._own_connection()
    assert conn is not None
    conn.send_command("CLIENT", "ID")
    conn_id = int(conn.read_response())
    assert client.client.client_kill_filter(_id=str(conn_id)) == 1
    assert client.recommend(user, n=10) == want  # through the pipeline
    assert client.recommend(user, n=10) == want  # own connection again, reconnected
    conn.send_command("CLIENT", "ID")
    assert int(conn.read_response()) != conn_id

def test_recommend_including_seen_and_batch_equal_single(trained: Trained) -> None:
    users = trained.users_by_activity()[:30] + ["nobody-1"]
    seen = trained.seen()
    user = users[0]
    ref = trained.reference_scores(user)
    all_recs = trained.client.recommend(user, n=20, exclude_seen=False)
    assert_scores([s for _, s in all_recs], sorted(ref.values(), reverse=True)[:20])
    assert set(all_recs.item_ids) & seen[user]  # the most active user's favourites are seen
    for exclude_seen in (True, False):
        batch = trained.client.recommend_batch(users, n=10, exclude_seen=exclude_seen)
        assert len(batch) == len(users)
        for u, recs in zip(users, batch, strict=True):
            single = trained.client.recommend(u, n=10, exclude_seen=exclude_seen)
            assert recs.source == single.source
            assert recs.item_ids == single.item_ids
            assert_scores([s for _, s in recs], [s for _, s in single])


def test_filters_callable_and_set(trained: Trained) -> None:
    user = trained.users_by_activity()[1]
    asked: list[str] = []

    def even(item_id: str) -> bool:
        asked.append(item_id)
        return int(item_id[1:]) % 2 == 0

    recs = trained.client.recommend(user, n=5, filter=even)
    assert len(recs) == 5 and all(int(i[1:]) % 2 == 0 for i in recs.item_ids)
    assert len(asked) < N_ITEMS  # only the best candidates were asked about
    unfiltered = [i for i in trained.client.recommend(user, n=50).item_ids if even(i)][:5]
    assert recs.item_ids == unfiltered
    allowed = {"i1", "i2", "i3", "i150", "not-an-item"}
    recs = trained.client.recommend(user, n=10, filter=allowed, exclude_seen=False)
    assert set(recs.item_ids) <= allowed and len(recs) == 4
    batch = trained.client.recommend_batch([user, "nobody"], n=10, filter=allowed,
                                           exclude_seen=False)
    assert batch[0].item_ids == recs.item_ids and set(batch[1].item_ids) <= allowed


def test_predict_and_rank_match_reference_with_fallbacks(trained: Trained) -> None:
    c, model = trained.client, trained.model
    users = trained.users_by_activity()[:10]
    items = [f"i{j}" for j in (0, 1, 2, 5, 17, 60)]
    for u in users:
        got = [c.predict(u, i) for i in items]
        assert_scores(got, model.predict([u] * len(items), items))
        ranked = c.rank(u, [*items, "no-such-item"])
        assert_scores(sorted(s for _, s in ranked), sorted([*got, c.predict(u, "no-such-item")]))
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    s = model.state
    u = users[0]
    if trained.mode == "explicit":
        mu = s.global_mean
        bu = float(s.user_bias[s.users.rows_for([u], add=False)[0]])
        bi = float(s.item_bias[s.items.rows_for(["i0"], add=False)[0]])
        assert c.predict(u, "no-such-item") == pytest.approx(mu + bu, abs=1e-5)
        assert c.predict("no-such-user", "i0") == pytest.approx(mu + bi, abs=1e-5)
        assert c.predict("no-such-user", "no-such-item") == pytest.approx(mu)
    else:
        assert c.predict(u, "no-such-item") == 0.0
        assert c.predict("no-such-user", "i0") == 0.0


def test_unknown_user_and_item_fall_back_to_popular_items(trained: Trained) -> None:
    counts = Counter(str(e["item_id"]) for e in trained.events)
    recs = trained.client.recommend("never-seen-user", n=10)
    assert recs.source == "popular"
    assert [s for _, s in recs] == sorted(counts.values(), reverse=True)[:10]
    assert all(counts[i] == s for i, s in recs)
    similar = trained.client.similar_items("never-seen-item", n=10)
    assert similar.source == "popular" and similar == recs
    new = trained.client.recommend_for_new_user({"never-seen-item": 5.0}, n=10)
    assert new.source == "popular" and new == recs


def test_similar_items_and_users_are_cosine_neighbours(trained: Trained) -> None:
    s = trained.model.state
    index = SimilarityIndex(s.item_factors)
    for item in ("i0", "i1", "i7"):
        recs = trained.client.similar_items(item, n=8)
        assert recs.source == "model" and item not in recs.item_ids
        rows, sims = index.similar(int(s.items.rows_for([item], add=False)[0]), 8)
        np.testing.assert_allclose([v for _, v in recs], sims, rtol=1e-5, atol=1e-5)
        assert [s.items.ids[r] for r in rows] == recs.item_ids
    user = trained.users_by_activity()[0]
    uidx = SimilarityIndex(s.user_factors)
    urecs = trained.client.similar_users(user, n=5)
    rows, sims = uidx.similar(int(s.users.rows_for([user], add=False)[0]), 5)
    assert urecs.item_ids == [s.users.ids[r] for r in rows]
    np.testing.assert_allclose([v for _, v in urecs], sims, rtol=1e-5, atol=1e-5)
    assert trained.client.similar_users("nobody", 5).source == "unknown"


def test_new_user_recommendations_fold_in_and_write_nothing(trained: Trained) -> None:
    c, s = trained.client, trained.model.state
    m = trained.settings.model
    if trained.mode == "explicit":
        ratings: dict[str, float | str] = {"i0": 5.0, "i3": 1.0, "i9": 4.0, "unknown-x": 2.0}
    else:
        ratings = {"i0": "like", "i3": "view", "i9": 2.0, "unknown-x": "like"}
    before = _redis_keys(trained.settings)
    recs = c.recommend_for_new_user(ratings, n=10)
    assert _redis_keys(trained.settings) == before  # nothing written
    assert recs.source == "model" and not {"i0", "i3", "i9"} & set(recs.item_ids)
    rows = s.items.rows_for(["i0", "i3", "i9"], add=False)
    f64 = s.item_factors.astype(np.float64)
    if trained.mode == "explicit":
        x, b = fold_in_user_explicit(s.item_factors, s.item_bias, s.global_mean, rows,
                                     [5.0, 1.0, 4.0], reg=m.regularization,
                                     reg_bias=m.bias_regularization)
        ref = s.global_mean + b + s.item_bias + f64 @ x
    else:
        gram = f64.T @ f64 + m.implicit_regularization * np.eye(RANK)
        w = FoldInParams.from_model(m)
        x = fold_in_user(s.item_factors, gram, rows, [w.value_of("like"), 1.0, 2.0],
                         alpha=m.alpha)
        ref = f64 @ x
    ref[rows] = -np.inf
    assert_scores([v for _, v in recs], np.sort(ref)[::-1][:10])


def test_because_explains_with_seen_items(trained: Trained) -> None:
    seen = trained.seen()
    for user in trained.users_by_activity()[:5]:
        top = trained.client.recommend(user, n=3)
        for item in top.item_ids:
            why = trained.client.because(user, item, n=3)
            assert len(why) <= 3 and {i for i, _ in why} <= seen[user]
            assert all(c > 0 for _, c in why)
            assert [c for _, c in why] == sorted((c for _, c in why), reverse=True)
        if trained.mode == "implicit":  # the fold-in score splits exactly over the history
            assert trained.client.because(user, top.item_ids[0], n=3)
    assert trained.client.because("nobody", "i0") == []
    assert trained.client.because(trained.users_by_activity()[0], "no-such-item") == []


# -- a reader without redis-py or NumPy sees the same numbers -------------------------------
def _resp(sock: socket.socket, buf: list[bytes], *args: str | bytes) -> Any:
    """One command in the Redis wire protocol (RESP2), as any language's client would."""
    parts = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode() if isinstance(a, str) else a
        parts += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
    sock.sendall(b"".join(parts))

    def need(n: int) -> bytes:
        while len(buf[0]) < n:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buf[0] += chunk
        out, buf[0] = buf[0][:n], buf[0][n:]
        return out

    def line() -> bytes:
        while b"\r\n" not in buf[0]:
            buf[0] += sock.recv(65536)
        out, _, buf[0] = buf[0].partition(b"\r\n")
        return out

    def reply() -> Any:
        head = line()
        kind, rest = head[:1], head[1:]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else need(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [reply() for _ in range(n)]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return int(rest) if kind == b":" else rest

    return reply()


def test_language_neutral_reading_matches_client(explicit_model: Trained) -> None:
    """Spec steps 1-4 of docs/redis-keys.md with raw sockets and struct only."""
    st, p = explicit_model.settings, explicit_model.settings.redis.key_prefix
    user = explicit_model.users_by_activity()[0]
    buf = [b""]
    with socket.create_connection((st.redis.host, st.redis.port)) as sock:
        v = int(_resp(sock, buf, "GET", f"{p}:current"))
        fmt, mode, rank, mu = _resp(sock, buf, "HMGET", f"{p}:v{v}:meta", "format", "mode",
                                    "rank", "global_mean")
        assert int(fmt) == FORMAT_VERSION and mode == b"explicit"
        k, mu_f = int(rank), float(mu)
        items = sorted(m.decode() for m in _resp(sock, buf, "SMEMBERS", f"{p}:v{v}:items"))
        vecs = {}
        for iid in items:
            f, b, _n = _resp(sock, buf, "HMGET", f"{p}:v{v}:i:{{{iid}}}", "f", "b", "n")
            vecs[iid] = (struct.unpack(f"<{k}f", f), struct.unpack("<f", b)[0])
        uf, ub = _resp(sock, buf, "HMGET", f"{p}:v{v}:u:{{{user}}}", "f", "b")
        x, bu = struct.unpack(f"<{k}f", uf), struct.unpack("<f", ub)[0]
        flat = _resp(sock, buf, "HGETALL", f"{p}:v{v}:s:{{{user}}}")
        seen = {flat[j].decode() for j in range(0, len(flat), 2)}
    scores = {i: mu_f + bu + bi + sum(a * c for a, c in zip(x, f, strict=True))
              for i, (f, bi) in vecs.items() if i not in seen}
    expected = sorted(scores.items(), key=lambda t: (-t[1], t[0]))[:10]
    recs = explicit_model.client.recommend(user, n=10)
    assert recs.version == v
    assert [i for i, _ in recs] == [i for i, _ in expected]
    assert_scores([s for _, s in recs], [s for _, s in expected])
    cli = shutil.which("redis-cli")
    if cli:  # the shell one-liner of the spec returns the same 4k bytes
        raw = subprocess.run([cli, "-h", st.redis.host, "-p", str(st.redis.port), "--raw",
                              "HGET", f"{p}:v{v}:u:{{{user}}}", "f"], capture_output=True,
                             check=True).stdout
        assert raw[:-1] == uf and len(raw[:-1]) == 4 * k  # --raw adds one newline


# -- pointer switches ----------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write_version(store: RedisStore, mode: str, rank: int, items: list[str],
                   users: dict[str, list[str]], seed: int) -> tuple[int, dict[str, Any]]:
    """A complete version written straight through RedisStore (no worker)."""
    rng = np.random.default_rng(seed)
    v = store.allocate_version()
    store.write_meta(v, {"format": FORMAT_VERSION, "mode": mode, "rank": rank,
                         "global_mean": 3.0, "status": "online", "source": "test"})
    item_f = rng.standard_normal((len(items), rank)).astype(np.float32)
    item_b = rng.standard_normal(len(items)).astype(np.float32)
    counts = rng.integers(1, 100, len(items))
    zeros_f = np.zeros_like(item_f)
    store.write_vectors(store.vector_keys(v, "i", items), "", zeros_f, item_f,
                        np.zeros(len(items), np.float32), item_b, counts=counts)
    uids = list(users)
    user_f = rng.standard_normal((len(uids), rank)).astype(np.float32)
    user_b = rng.standard_normal(len(uids)).astype(np.float32)
    urows = np.repeat(np.arange(len(uids)), [len(users[u]) for u in uids])
    hist = [i for u in uids for i in users[u]]
    seen = SeenUpdates([store.keys.seen(v, u) for u in uids], urows, np.asarray(hist, object),
                       np.full(len(hist), 4.0), "set")
    store.write_vectors(store.vector_keys(v, "u", uids), "", np.zeros_like(user_f), user_f,
                        np.zeros(len(uids), np.float32), user_b, seen=seen)
    pipe = store.client.pipeline(transaction=False)
    store.add_to_index(v, "i", items, pipe)
    store.add_to_index(v, "u", uids, pipe)
    pipe.execute()
    return v, {"items": items, "item_f": item_f, "item_b": item_b, "user_f": user_f,
               "user_b": user_b, "users": uids}


@pytest.fixture
def bare_store(stack: StackInfo, isolated: Isolated) -> Iterator[tuple[Settings, RedisStore]]:
    settings = make_settings(stack, isolated)
    yield settings, store_for(settings)
    _drop_prefix(settings)


def test_pointer_switch_refreshes_cache_and_never_mixes_versions(
        bare_store: tuple[Settings, RedisStore]) -> None:
    settings, store = bare_store
    clock = FakeClock()
    client = ServingClient(connect(settings.redis), settings.redis.key_prefix, refresh_s=1.0,
                           reload_items_s=None, clock=clock)
    with pytest.raises(NoModelError):
        client.recommend("a")
    v1, d1 = _write_version(store, "explicit", 8, [f"a{j}" for j in range(30)],
                            {"alice": ["a0", "a1"], "bob": ["a2"]}, seed=1)
    store.compare_and_switch(store.current_version(), v1, "test")
    r1 = client.recommend("alice", n=5)
    assert r1.version == v1 and set(r1.item_ids) <= set(d1["items"]) - {"a0", "a1"}
    ref1 = 3.0 + d1["user_b"][0] + d1["item_b"] + d1["item_f"] @ d1["user_f"][0]
    assert_scores([s for _, s in r1], np.sort(np.delete(ref1, [0, 1]))[::-1][:5])

    v2, d2 = _write_version(store, "implicit", 8, [f"b{j}" for j in range(40)],
                            {"alice": ["b5"]}, seed=2)
    store.compare_and_switch(store.current_version(), v2, "test")
    clock.now += 0.5  # pointer not re-checked yet: still v1, users read from v1's keys
    stale = client.recommend("alice", n=5)
    assert stale.version == v1 and stale == r1
    assert client.recommend("bob", n=3).version == v1
    clock.now += 0.6  # due: the switch is seen and the cache rebuilt for v2
    r2 = client.recommend("alice", n=5)
    assert r2.version == v2 and set(r2.item_ids) <= set(d2["items"]) - {"b5"}
    ref2 = d2["item_f"] @ d2["user_f"][0]
    ref2[5] = -np.inf
    assert_scores([s for _, s in r2], np.sort(ref2)[::-1][:5])
    bob = client.recommend("bob", n=3)  # bob is not in v2: v2's popular items, not v1's
    assert bob.version == v2 and bob.source == "popular" and set(bob.item_ids) <= set(d2["items"])
    assert client.similar_items("a3", n=3).source == "popular"  # v1's item is unknown in v2

    store.compare_and_switch(store.current_version(), v1, "rollback")
    assert client.recommend("alice", n=5).version == v2  # not due yet
    assert client.refresh().version == v1  # on demand
    assert client.recommend("alice", n=5) == r1


def test_same_version_items_reload_after_reload_items_s(
        bare_store: tuple[Settings, RedisStore]) -> None:
    settings, store = bare_store
    clock = FakeClock()
    v, _ = _write_version(store, "implicit", 4, ["x0", "x1"], {"u": ["x0"]}, seed=3)
    store.compare_and_switch(store.current_version(), v, "test")
    client = ServingClient(connect(settings.redis), settings.redis.key_prefix, refresh_s=1.0,
                           reload_items_s=10.0, clock=clock)
    assert len(client.cache()) == 2
    store.write_vectors(store.vector_keys(v, "i", ["x2"]), "", np.zeros((1, 4), np.float32),
                        np.ones((1, 4), np.float32), np.zeros(1, np.float32),
                        np.zeros(1, np.float32), counts=np.array([500]))
    pipe = store.client.pipeline(transaction=False)
    store.add_to_index(v, "i", ["x2"], pipe)
    pipe.execute()
    clock.now += 5
    assert len(client.cache()) == 2  # pointer checked, same version, items not due
    clock.now += 6
    assert len(client.cache()) == 3
    assert client.recommend("new", n=1) == [("x2", 500.0)]


# -- CLI --------------------------------------------------------------------------------------
def _cli_args(settings: Settings) -> list[str]:
    r = settings.redis
    return ["--set", f"redis.host={r.host}", "--set", f"redis.port={r.port}",
            "--set", f"redis.key_prefix={r.key_prefix}"]


def _titles_dir(tmp_path: Path) -> Path:
    d = tmp_path / "movielens" / "ml-100k"
    d.mkdir(parents=True)
    (d / "u.genre").write_text("unknown|0\nDrama|1\n", encoding="ascii")
    (d / "u.item").write_text(
        "".join(f"i{j}|Film {j} (1999)|01-Jan-1999||http://x|0|1\n" for j in range(N_ITEMS)),
        encoding="latin-1")
    return d / "u.item"


def test_cli_recommend_and_similar(explicit_model: Trained, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    st = explicit_model.settings
    user = explicit_model.users_by_activity()[0]
    common = _cli_args(st)
    assert main(["recommend", "--user", user, "--n", "5", "--json", *common]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    recs = explicit_model.client.recommend(user, n=5)
    assert [r["id"] for r in out["results"]] == recs.item_ids
    assert out["source"] == "model" and out["version"] == recs.version
    titles = _titles_dir(tmp_path)
    assert main(["recommend", "--user", user, "--n", "3", "--titles", str(titles),
                 "--because", recs.item_ids[0], *common]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"Film {recs.item_ids[0][1:]} (1999)" in text and "results (model)" in text
    assert main(["recommend", "--new-user", "i0=5,i3=1", "--json", *common]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert len(out["results"]) == 10 and not {"i0", "i3"} & {r["id"] for r in out["results"]}
    assert main(["similar", "--item", "i1", "--n", "4", "--json", "--titles", str(titles.parent),
                 *common]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in out["results"]] == explicit_model.client.similar_items("i1", 4).item_ids
    assert all(r["title"].startswith("Film ") for r in out["results"])
    assert main(["similar", "--user", user, "--json", *common]) == EXIT_OK
    assert len(json.loads(capsys.readouterr().out)["results"]) == 10
    assert main(["recommend", "--new-user", "i0", *common]) == 2
    empty = ["--set", f"redis.host={st.redis.host}", "--set", f"redis.port={st.redis.port}",
             "--set", f"redis.key_prefix=empty_{uuid.uuid4().hex[:8]}"]
    assert main(["recommend", "--user", user, *empty]) == EXIT_DOWN
    assert main(["similar", "--item", "i1", *empty]) == EXIT_DOWN
    assert "no model version" in capsys.readouterr().err


def test_keys_module_is_the_only_key_builder() -> None:
    """The client builds keys through worker.stores.redis.keys (spec: docs/redis-keys.md)."""
    source = Path(__file__).parents[1].joinpath("worker", "serving", "client.py").read_text()
    assert ":v{" not in source and "RedisKeys" in source
    assert RedisKeys("p").seen(3, "u") == "p:v3:s:{u}"

"""The Node.js reader in examples/node-reader, written from docs/redis-keys.md alone, agrees
with ServingClient (issue 16 item 4): same top-10 ids in the same order, on the real stack.

Two kinds of model: one a real worker wrote from Kafka events (the product path), and one bulk
loaded the way retrains and restores write a version, built to hit the spec's corners: exact
score ties split by the top-10 cut-off, ids whose byte order differs from numeric and locale
order, ids that need escaping inside the hash tag, a zero-vector user, popularity ties.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from online_als.factors import Factors, ModelArrays
from tests.conftest import Isolated, StackInfo, make_settings, unavailable
from tests.streaming import produce, run_worker, store_for, synthetic_events
from worker.config import Settings
from worker.serving.client import Recommendations, ServingClient
from worker.stores.redis.bulk_load import load_version
from worker.stores.redis.store import connect

pytestmark = pytest.mark.stack

NODE_DIR = Path(__file__).resolve().parents[1] / "examples" / "node-reader"
STAMP = "node_modules/.online-als-lock.sha256"  # npm ci deletes node_modules, so it goes too
MIN_NODE = (18, 19)  # node-redis 5's engines field
N = 10


@pytest.fixture(scope="session")
def node_reader() -> Path:
    """examples/node-reader with its dependencies installed by `npm ci`, once per lock file."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("node/npm not found on PATH: the Node.js reader test needs Node.js >= 18.19")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major_minor = tuple(int(p) for p in version.stdout.strip().lstrip("v").split(".")[:2])
    if major_minor < MIN_NODE:
        unavailable(f"node {version.stdout.strip()} is older than the reader needs (>= 18.19)")
    digest = hashlib.sha256(b"".join((NODE_DIR / f).read_bytes()
                                     for f in ("package.json", "package-lock.json"))).hexdigest()
    stamp = NODE_DIR / STAMP
    if not (stamp.exists() and stamp.read_text() == digest):
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            unavailable(f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}")
        stamp.write_text(digest)
    return NODE_DIR


def _redis_url(settings: Settings) -> str:
    r = settings.redis
    assert not r.tls and r.password is None, "the reader test runs against the plain local stack"
    return f"redis://{r.host}:{r.port}/{r.db}"


def node_recommend(reader: Path, settings: Settings, users: list[str], n: int = N,
                   include_seen: bool = False) -> list[dict[str, Any]]:
    """One `node recommend.js` run for all ``users``: one JSON object per user."""
    cmd = ["node", "recommend.js", f"--n={n}", f"--prefix={settings.redis.key_prefix}",
           f"--redis-url={_redis_url(settings)}", *(f"--user={u}" for u in users)]
    if include_seen:
        cmd.append("--include-seen")
    done = subprocess.run(cmd, cwd=reader, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["user"] for line in lines] == users
    return lines


def assert_same(reader: Path, settings: Settings, users: list[str],
                include_seen: bool = False) -> list[Recommendations]:
    """Node's top-N equals ServingClient's for every user: ids in order, source, scores."""
    client = ServingClient(connect(settings.redis), settings.redis.key_prefix)
    got = node_recommend(reader, settings, users, include_seen=include_seen)
    wants = []
    for user, line in zip(users, got, strict=True):
        want = client.recommend(user, n=N, exclude_seen=not include_seen)
        ids = [r["item"] for r in line["items"]]
        assert ids == want.item_ids, f"user {user!r}: node {ids} != python {want.item_ids}"
        assert line["version"] == want.version
        assert line["fallback"] == (want.source == "popular"), user
        np.testing.assert_allclose([r["score"] for r in line["items"]], [s for _, s in want],
                                   rtol=1e-6, atol=1e-6, err_msg=user)
        wants.append(want)
    return wants


def _drop_prefix(settings: Settings) -> None:
    r = connect(settings.redis)
    keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    for s in range(0, len(keys), 1000):
        r.delete(*keys[s:s + 1000])


def _settings(stack: StackInfo, name: str, **overrides: object) -> Settings:
    tag = f"{name}_{uuid.uuid4().hex[:8]}"
    iso = Isolated(tag, f"t_{tag}", f"t_{tag}.dlq", f"test_{tag}", f"ks_{tag}", f"g_{tag}")
    return make_settings(stack, iso, **overrides)


# -- a version a real worker wrote -----------------------------------------------------------
@pytest.fixture(scope="module", params=["explicit", "implicit"])
def streamed(request: pytest.FixtureRequest,
             stack: StackInfo) -> Iterator[tuple[Settings, list[dict[str, object]]]]:
    mode = request.param
    settings = _settings(stack, f"node_{mode}", **{"model.mode": mode, "model.rank": 8})
    events = synthetic_events(1500, 80, 60, seed=11, implicit=mode == "implicit")
    produce(settings, events)
    run_worker(settings, idle_exit_s=3)
    yield settings, events
    _drop_prefix(settings)


def test_node_matches_serving_client_on_a_worker_written_version(
        node_reader: Path, streamed: tuple[Settings, list[dict[str, object]]]) -> None:
    settings, events = streamed
    seen: dict[str, set[str]] = {}
    for e in events:
        seen.setdefault(str(e["user_id"]), set()).add(str(e["item_id"]))
    users = sorted(seen)[:60] + [f"nobody-{uuid.uuid4().hex[:6]}"]
    wants = assert_same(node_reader, settings, users)
    assert wants[-1].source == "popular"  # the unknown user got the fallback
    assert sum(w.source == "model" for w in wants) >= 50
    # seen items were excluded for real: some user has seen an item that otherwise would rank
    with_seen = assert_same(node_reader, settings, users[:20], include_seen=True)
    assert any(set(w.item_ids) & seen[u] for u, w in zip(users, with_seen, strict=False))


# -- a bulk-loaded version built for ties and odd ids ----------------------------------------
# Groups of ids whose vectors and biases are identical, so their scores tie exactly; within a
# group, id byte order differs from numeric, case-insensitive and locale order, and some ids
# need escaping inside the `{}` hash tag ("{" and "%7B" are different ids with different keys).
TIE_GROUPS = [
    ["10", "9", "100", "1"],
    ["Z", "a", "_", "B"],
    ["é", "z", "ü", "E"],
    ["日本", "}x{", "%7B", "{"],
    ["i{1}", "i%", "i 1", "i-1"],
    ["ä", "a\u0308", "Ä", "b"],
    ["item-3", "item-20", "Item-1", "item_0"],
    ["x", "X", "xx", "x0"],
]
SINGLES = ["s1", "s2", "s3", "s4", "s5"]
ODD_USERS = ["}u{%", "ユーザー", "%7Bu%7D", "u 1"]


@pytest.fixture(scope="module", params=["explicit", "implicit"])
def bulk(request: pytest.FixtureRequest, stack: StackInfo) -> Iterator[tuple[Settings, ModelArrays]]:
    mode = request.param
    rank = 6
    settings = _settings(stack, f"nodebulk_{mode}", **{"model.mode": mode, "model.rank": rank})
    rng = np.random.default_rng(7)
    item_ids = [i for g in TIE_GROUPS for i in g] + SINGLES
    group_f = rng.normal(size=(len(TIE_GROUPS), rank)).astype(np.float32)
    group_b = rng.normal(scale=0.3, size=len(TIE_GROUPS)).astype(np.float32)
    item_f = np.vstack([np.repeat(group_f, 4, axis=0),
                        rng.normal(size=(len(SINGLES), rank)).astype(np.float32)])
    item_b = np.concatenate([np.repeat(group_b, 4), rng.normal(scale=0.3, size=len(SINGLES))])
    user_ids = [f"u{j}" for j in range(40)] + ODD_USERS + ["zero", "watcher"]
    user_f = rng.normal(size=(len(user_ids), rank)).astype(np.float32)
    user_f[user_ids.index("zero")] = 0.0  # a zero vector: the spec's other unknown user
    user_b = rng.normal(scale=0.3, size=len(user_ids)).astype(np.float32)
    if mode == "implicit":
        item_b[:] = 0.0
        user_b[:] = 0.0
    model = ModelArrays(mode, Factors(user_ids, user_f, user_b),
                        Factors(item_ids, item_f, item_b.astype(np.float32)),
                        3.52986 if mode == "explicit" else 0.0)
    # popularity in tied pairs so the fallback's id tie-break decides, too
    counts = np.repeat(np.arange(len(item_ids) // 2 + 1, 0, -1), 2)[:len(item_ids)] * 7
    # seen: "watcher" and "zero" saw parts of several groups, the others one item each
    rows: list[list[int]] = [[j % len(item_ids)] for j in range(len(user_ids))]
    rows[user_ids.index("watcher")] = [0, 1, 5, 9, 12, 13, 14, 15, 17, 29]
    rows[user_ids.index("zero")] = [0, 3, 4, 8, 9, 30]
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.concatenate(rows)
    values = np.full(indices.size, 4.0 if mode == "explicit" else 1.5)
    store = store_for(settings)
    version = store.allocate_version()
    load_version(store, version, model, item_counts=counts, source="test",
                 seen=(indptr, indices, values))
    assert store.compare_and_switch(None, version, "test", "tests/test_node_reader.py")
    yield settings, model
    _drop_prefix(settings)


def test_node_matches_serving_client_on_ties_and_odd_ids(
        node_reader: Path, bulk: tuple[Settings, ModelArrays]) -> None:
    settings, model = bulk
    users = [*model.users.id_list(), f"nobody-{uuid.uuid4().hex[:6]}", "{unknown}"]
    wants = assert_same(node_reader, settings, users)
    by_user = dict(zip(users, wants, strict=True))
    # the cases this fixture exists for really happened
    assert by_user["zero"].source == by_user["{unknown}"].source == "popular"
    assert by_user["u0"].source == "model"
    cut_in_tie = sum(len(w) == N and [s for _, s in w].count(w[-1][1]) > 1 for w in wants)
    assert cut_in_tie >= 10, f"the top-10 cut-off fell inside a tied group {cut_in_tie} times"
    # ties went by id bytes, including pairs that numeric, case or locale order would swap
    ties = {(a, b) for w in wants
            for (a, sa), (b, sb) in zip(w, w[1:], strict=False) if sa == sb}
    assert all(a.encode() < b.encode() for a, b in ties)
    telling = {("100", "9"), ("10", "100"), ("B", "Z"), ("_", "a"), ("z", "é"), ("%7B", "{"),
               ("Ä", "a\u0308"), ("Item-1", "item-20"), ("item-20", "item-3"), ("X", "x")}
    assert len(ties & telling) >= 3, ties
    assert assert_same(node_reader, settings, users[-8:], include_seen=True)


def test_node_module_recommend_export(node_reader: Path,
                                      bulk: tuple[Settings, ModelArrays]) -> None:
    """`recommend(client, prefix, user, n)` as a library call, as an app would use it."""
    settings, _ = bulk
    script = (
        "const { createClient } = require('redis');"
        "const { recommend } = require('./reader');"
        "(async () => { const c = createClient({ url: process.argv[1] }); await c.connect();"
        "const r = await recommend(c, process.argv[2], process.argv[3], 10);"
        "console.log(JSON.stringify(r)); await c.quit(); })()"
        ".catch((e) => { console.error(e); process.exit(1); });")
    user = "}u{%"
    done = subprocess.run(["node", "-e", script, _redis_url(settings), settings.redis.key_prefix,
                           user], cwd=node_reader, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    want = ServingClient(connect(settings.redis), settings.redis.key_prefix).recommend(user, n=N)
    assert [r["item"] for r in got] == want.item_ids

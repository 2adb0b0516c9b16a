"""Business filters in every recommend call (issue 25 item 2), on the real Redis: excluded ids,
include-only sets and item attributes stored under the <P>:attr... keys (docs/redis-keys.md),
checked against a brute-force ranking of the same model; attributes loaded from MovieLens
genres and updated while a client serves; the spec's key table matches worker/stores/redis/keys.py.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from online_als.factors import Factors, ModelArrays
from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import store_for
from worker.config import Settings
from worker.serving.attributes import read_attribute_file, read_item_attributes, write_attributes
from worker.serving.client import ItemFilters, ServingClient
from worker.stores.redis.bulk_load import load_version
from worker.stores.redis.keys import RedisKeys
from worker.stores.redis.store import connect

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, N_USERS, RANK = 60, 12, 6
ITEMS = [f"i{j:02d}" for j in range(N_ITEMS)]
USERS = [f"u{j}" for j in range(N_USERS)]
CATS = {i: (["even"] if j % 2 == 0 else ["odd"]) + (["fives"] if j % 5 == 0 else [])
        for j, i in enumerate(ITEMS)}


def drop_prefix(settings: Settings) -> None:
    r = connect(settings.redis)
    keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="module")
def model(stack: StackInfo) -> Iterator[tuple[Settings, ModelArrays]]:
    tag = f"filters_{uuid.uuid4().hex[:8]}"
    iso = Isolated(tag, f"t_{tag}", f"t_{tag}.dlq", f"test_{tag}", f"ks_{tag}", f"g_{tag}")
    settings = make_settings(stack, iso, **{"model.mode": "explicit", "model.rank": RANK})
    rng = np.random.default_rng(3)
    m = ModelArrays("explicit",
                    Factors(USERS, rng.normal(size=(N_USERS, RANK)).astype(np.float32),
                            rng.normal(scale=0.2, size=N_USERS).astype(np.float32)),
                    Factors(ITEMS, rng.normal(size=(N_ITEMS, RANK)).astype(np.float32),
                            rng.normal(scale=0.2, size=N_ITEMS).astype(np.float32)), 3.5)
    rows = [[(3 * u + k) % N_ITEMS for k in range(4)] for u in range(N_USERS)]
    seen = (np.cumsum([0] + [len(r) for r in rows]), np.concatenate(rows),
            np.full(4 * N_USERS, 4.0))
    store = store_for(settings)
    version = store.allocate_version()
    load_version(store, version, m, item_counts=np.arange(N_ITEMS, 0, -1) * 3, source="test",
                 seen=seen)
    assert store.compare_and_switch(None, version, "test", "tests/test_serving_filters.py")
    write_attributes(store.client, store.keys, "category", CATS, replace=True)
    write_attributes(store.client, store.keys, "brand",
                     {i: ["acme" if j < 30 else "other"] for j, i in enumerate(ITEMS)})
    yield settings, m
    drop_prefix(settings)


def brute_force(m: ModelArrays, user: str, n: int, allowed: set[str]) -> list[str]:
    u = m.users.id_list().index(user)
    scores = m.items.vectors @ m.users.vectors[u] + m.items.biases + m.users.biases[u] + 3.5
    order = sorted(range(N_ITEMS), key=lambda j: (-np.float32(scores[j]), ITEMS[j]))
    return [ITEMS[j] for j in order if ITEMS[j] in allowed][:n]


def seen_of(user: str) -> set[str]:
    u = USERS.index(user)
    return {ITEMS[(3 * u + k) % N_ITEMS] for k in range(4)}


def test_filters_match_brute_force(model: tuple[Settings, ModelArrays]) -> None:
    settings, m = model
    client = ServingClient(connect(settings.redis), settings.redis.key_prefix)
    everything = set(ITEMS)
    cases = [
        (ItemFilters(exclude=["i00", "i01", "i07"]), everything - {"i00", "i01", "i07"}),
        (ItemFilters(include=ITEMS[10:25]), set(ITEMS[10:25])),
        (ItemFilters(categories=["fives"]), {i for i, c in CATS.items() if "fives" in c}),
        (ItemFilters(categories=["odd", "fives"]),
         {i for i, c in CATS.items() if {"odd", "fives"} & set(c)}),
        (ItemFilters(exclude_categories=["even"]), {i for i, c in CATS.items() if "odd" in c}),
        (ItemFilters(categories=["even"], attributes={"brand": ["acme"]}, exclude=["i02"]),
         {i for j, i in enumerate(ITEMS) if j % 2 == 0 and j < 30} - {"i02"}),
        (ItemFilters(categories=["no-such-category"]), set()),
        (ItemFilters(include=["i03", "unknown-id"], categories=["odd"]), {"i03"}),
    ]
    for flt, allowed in cases:
        for user in USERS[:6]:
            got = client.recommend(user, n=8, filter=flt)
            want = brute_force(m, user, 8, allowed - seen_of(user))
            assert got.item_ids == want, (flt, user)
            assert got.source == "model"
        # the other recommend calls take the same filters
        batch = client.recommend_batch(USERS[:3], n=5, filter=flt)
        assert all(set(r.item_ids) <= allowed for r in batch)
        assert set(client.similar_items("i04", n=10, filter=flt).item_ids) <= allowed - {"i04"}
        pop = client.popular(n=5, filter=flt)
        assert pop.item_ids == [i for i in ITEMS if i in allowed][:5]  # counts fall with j
        anon = client.recommend_for_new_user({"i05": 5.0, "i06": 1.0}, n=6, filter=flt)
        assert set(anon.item_ids) <= allowed - {"i05", "i06"}
        unknown = client.recommend(f"nobody-{uuid.uuid4().hex[:4]}", n=5, filter=flt)
        assert unknown.source == "popular" and set(unknown.item_ids) <= allowed
    assert client.recommend(USERS[0], n=5, filter=ItemFilters()).item_ids == \
        client.recommend(USERS[0], n=5).item_ids


def test_attributes_update_while_serving(model: tuple[Settings, ModelArrays]) -> None:
    settings, _ = model
    r = connect(settings.redis)
    keys = RedisKeys(settings.redis.key_prefix)
    client = ServingClient(r, settings.redis.key_prefix, refresh_s=0.0)
    flt = ItemFilters(attributes={"season": ["summer"]})
    assert client.popular(n=5, filter=flt).item_ids == []  # no such attribute yet
    write_attributes(r, keys, "season", {"i10": ["summer"], "i11": ["summer", "winter"]})
    assert client.popular(n=5, filter=flt).item_ids == ["i10", "i11"]
    write_attributes(r, keys, "season", {"i10": []})  # one item loses it, the other keeps it
    assert client.popular(n=5, filter=flt).item_ids == ["i11"]
    assert read_item_attributes(r, keys, "i11")["season"] == ["summer", "winter"]
    write_attributes(r, keys, "season", {"i20": ["summer"]}, replace=True)  # replace all
    assert client.popular(n=5, filter=flt).item_ids == ["i20"]
    assert "season" not in read_item_attributes(r, keys, "i11")
    write_attributes(r, keys, "season", {}, replace=True)
    assert not r.sismember(keys.attr_names(), "season")
    with pytest.raises(ValueError, match="attribute name"):
        write_attributes(r, keys, "bad:name", {"i1": ["x"]})


def test_movielens_genres_load_and_filter(model: tuple[Settings, ModelArrays], movielens: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli.main import main

    genres = read_attribute_file(movielens)
    assert len(genres) == 1682 and set(genres["1"]) == {"Animation", "Children's", "Comedy"}
    assert read_attribute_file(movielens / "ml-100k" / "u.item.gz") == genres
    small = read_attribute_file(movielens, "ml-latest-small")
    assert "Adventure" in small["1"]
    settings, _ = model
    common = ["--set", f"redis.host={settings.redis.host}", "--set",
              f"redis.port={settings.redis.port}", "--set",
              f"redis.key_prefix={settings.redis.key_prefix}"]
    assert main(["attributes", "load", "--file", str(movielens), "--name", "genre", "--json",
                 *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == 1682 and out["values"] == 19  # u.genre's 19 genres incl. unknown
    assert main(["attributes", "show", "--item", "1", "--json", *common]) == 0
    assert set(json.loads(capsys.readouterr().out)["genre"]) == set(genres["1"])
    assert main(["attributes", "load", *common]) == 2
    assert main(["attributes", "load", "--file", "/nonexistent.csv", *common]) == 2
    assert main(["attributes", "set", "--name", "a:b", "--item", "1", "--values", "x",
                 *common]) == 2
    assert "--name" in capsys.readouterr().err


def test_cli_takes_the_filters(model: tuple[Settings, ModelArrays],
                               capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli.main import main

    settings, m = model
    common = ["--json", "--set", f"redis.host={settings.redis.host}", "--set",
              f"redis.port={settings.redis.port}", "--set",
              f"redis.key_prefix={settings.redis.key_prefix}"]
    assert main(["recommend", "--user", "u1", "--n", "5", "--category", "fives", "--exclude",
                 "i05", *common]) == 0
    got = [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    allowed = {i for i, c in CATS.items() if "fives" in c} - {"i05"} - seen_of("u1")
    assert got == brute_force(m, "u1", 5, allowed)
    assert main(["similar", "--item", "i04", "--include", "i01,i02,i03", *common]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)["results"]} <= {"i01", "i02",
                                                                                 "i03"}
    assert main(["similar", "--user", "u1", "--category", "odd", *common]) == 2
    assert "not to similar users" in capsys.readouterr().err


def test_generic_attribute_csv(tmp_path: Path) -> None:
    f = tmp_path / "brands.csv"
    f.write_text("item_id,brand\n1,acme\n2,acme|zenith\n3,\n")
    assert read_attribute_file(f) == {"1": ("acme",), "2": ("acme", "zenith"), "3": ()}
    (tmp_path / "bad.csv").write_text("just-one-column\n")
    with pytest.raises(ValueError, match="item_id,values"):
        read_attribute_file(tmp_path / "bad.csv")


# -- the spec's key table and the keys module ----------------------------------------------------
_PLACEHOLDER = {"version": "<V>", "user_id": "<uid>", "item_id": "<iid>", "topic": "<topic>",
                "partition": "<partition>", "worker_name": "<worker>", "name": "NAME",
                "value": "<value>", "batch_id": "<batch id>"}
#: RedisKeys methods with no row in the table, and why
_NOT_IN_TABLE = {"item_counts": "defined, never written by any code (no key to document)"}


def test_redis_keys_doc_table_matches_the_keys_module() -> None:
    """Every key in the table of docs/redis-keys.md is built by one RedisKeys method, and every
    RedisKeys method that builds a key (not a SCAN pattern) has its row."""
    text = (ROOT / "docs" / "redis-keys.md").read_text()
    table = text.split("| key | type | content |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    keys = RedisKeys("<P>")
    built: dict[str, str] = {}
    for name, fn in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or name.endswith("_pattern"):
            continue
        params = inspect.signature(fn).parameters
        key = fn(*(_PLACEHOLDER[p] for p in params)).replace("NAME", "<name>")
        built[key] = name
    missing = documented - set(built)
    assert not missing, f"documented keys no RedisKeys method builds: {missing}"
    undocumented = {k: m for k, m in built.items() if k not in documented
                    and m not in _NOT_IN_TABLE}
    assert not undocumented, f"RedisKeys builds keys the spec does not list: {undocumented}"


@pytest.mark.parametrize("name", ["worker.stores.redis.keys", "worker.serving.attributes",
                                  "worker.serving.filters", "worker.serving.api.params",
                                  "worker.serving.api.app", "worker.freshness"])
def test_doctests(name: str) -> None:
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(name)).failed == 0

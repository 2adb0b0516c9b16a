"""What `recommend`, `snapshots list` and `demo` print (issue 16, the CLI output defects)."""

from __future__ import annotations

import argparse
import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.conftest import Isolated, StackInfo, make_settings
from tests.streaming import produce, run_worker, synthetic_events
from worker.cli import demo
from worker.cli.common import EXIT_OK
from worker.cli.main import main
from worker.cli.ops_cli import _table
from worker.cli.serving_cli import load_titles
from worker.config import Settings
from worker.serving.client import ServingClient


@pytest.fixture(scope="module")
def explicit(stack: StackInfo) -> Iterator[tuple[Settings, list[dict[str, object]]]]:
    tag = f"cliout_{uuid.uuid4().hex[:8]}"
    iso = Isolated(tag, f"t_{tag}", f"t_{tag}.dlq", f"test_{tag}", f"ks_{tag}", f"g_{tag}")
    settings = make_settings(stack, iso, **{"model.mode": "explicit", "model.rank": 8})
    events = synthetic_events(800, 60, 50, seed=5)
    produce(settings, events)
    run_worker(settings, idle_exit_s=3)
    yield settings, events
    from worker.stores.redis.store import connect

    r = connect(settings.redis)
    keys = list(r.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    for s in range(0, len(keys), 1000):
        r.delete(*keys[s:s + 1000])


def _cli(settings: Settings, *args: str) -> list[str]:
    r = settings.redis
    return [*args, "--set", f"redis.host={r.host}", "--set", f"redis.port={r.port}",
            "--set", f"redis.key_prefix={r.key_prefix}"]


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.stack
def test_because_never_explains_an_item_by_itself(
        explicit: tuple[Settings, list[dict[str, object]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings, events = explicit
    user = Counter(str(e["user_id"]) for e in events).most_common(1)[0][0]
    client = ServingClient.from_settings(settings)
    seen = client.read_user(client.cache(), user).seen
    # the user's best-rated item: with itself in the history it is its own top reason
    item = max(seen, key=lambda i: seen[i])
    assert main(_cli(settings, "recommend", "--user", user, "--because", item, "--json")) == 0
    why = _json(capsys)["because"]
    assert why and item not in {r["id"] for r in why}
    assert item not in dict(client.because(user, item, n=50))


@pytest.mark.stack
def test_explicit_scores_are_clipped_to_the_rating_range_ranking_unchanged(
        explicit: tuple[Settings, list[dict[str, object]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings, events = explicit
    user = str(events[0]["user_id"])
    raw = ServingClient.from_settings(settings).recommend(user, n=10)
    top = sorted(s for _, s in raw)[5]  # a rating_max below half of the top-10 scores
    assert main(_cli(settings, "recommend", "--user", user, "--json",
                     "--set", f"model.rating_max={top}", "--set", f"model.rating_min={top - 1}")) == 0
    got = _json(capsys)["results"]
    assert [r["id"] for r in got] == raw.item_ids
    assert max(r["score"] for r in got) == pytest.approx(top)
    assert all(top - 1 - 1e-6 <= r["score"] <= top + 1e-6 for r in got)


@pytest.mark.stack
def test_popular_fallback_prints_event_counts_as_integers(
        explicit: tuple[Settings, list[dict[str, object]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = explicit
    assert main(_cli(settings, "recommend", "--user", "nobody-at-all", "--n", "3")) == 0
    text = capsys.readouterr().out
    assert "(popular)" in text and "events" in text and ".0000" not in text
    assert main(_cli(settings, "recommend", "--user", "nobody-at-all", "--json")) == 0
    out = _json(capsys)
    assert out["source"] == "popular" and all(type(r["score"]) is int for r in out["results"])


def test_snapshots_list_summarises_the_cutoff_without_cutting_it() -> None:
    row = {"version": 7, "status": "promoted", "current": True, "created": "2026-01-01 00:00:00",
           "metrics": {"rmse": 0.91}}
    text = _table([{**row, "cutoff": {0: 33_412, 1: 33_290, 2: 23_298}},
                   {**row, "version": 6, "current": False, "cutoff": {}}])
    assert "3 partitions, 90,000 offsets" in text and "{" not in text
    assert "rmse=0.9100" in text


def test_titles_accepts_any_existing_file(tmp_path: Path) -> None:
    item = tmp_path / "my-items.txt"  # not under <root>/ml-100k/, no u.genre beside it
    item.write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|GoldenEye (1995)|\n",
                    encoding="latin-1")
    assert load_titles(str(item)) == {"1": "Toy Story (1995)", "2": "GoldenEye (1995)"}
    csv_gz = tmp_path / "movies.csv.gz"
    csv_gz.write_bytes(gzip.compress(b'movieId,title,genres\n1,"Heat, The (1995)",Action\n'))
    assert load_titles(str(csv_gz)) == {"1": "Heat, The (1995)"}


@pytest.mark.stack
def test_demo_closes_producers_before_the_stack_goes_down(
        stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[Producer] = []
    at_down: list[bool] = []

    def fake_demo(args: Any, run_id: str, started: float) -> int:
        p = Producer({"bootstrap.servers": stack.bootstrap})
        p.produce("cliout-unused", b"x")  # a queued message, never flushed by the "demo"
        held.append(p)
        return EXIT_OK

    def closed(p: Producer) -> bool:
        try:
            p.flush(0)
        except RuntimeError:
            return True
        return False

    class FakeStack:
        def __init__(self, cfg: Any) -> None: ...
        def up(self) -> None: ...
        def down(self) -> None:
            at_down.append(all(closed(p) for p in held))

    monkeypatch.setattr("worker.devstack.Stack", FakeStack)
    monkeypatch.setattr(demo, "_demo", fake_demo)
    assert demo.run_demo(argparse.Namespace(keep_stack=False)) == EXIT_OK
    assert held and at_down == [True]

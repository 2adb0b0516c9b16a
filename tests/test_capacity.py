"""benchmarks/capacity.py recomputes docs/capacity.md's model; bench_scaleout.py runs (quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=BENCH.parent)


def test_capacity_prints_the_three_worked_examples() -> None:
    proc = _run(str(BENCH / "capacity.py"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for name in ("MovieLens 20M replayed at 10k/s", "1B ratings, 100M users, 10M items",
                 "10B ratings at 1M events/s"):
        assert name in out
    assert out.count("| Kafka partitions |") == 3 and "| Redis CPU (cores) / shards |" in out


def test_capacity_grows_with_the_load() -> None:
    small = _run(str(BENCH / "capacity.py"), "--events-per-s", "1000", "--users", "1e5",
                 "--items", "1e4", "--ratings", "1e7", "--json")
    big = _run(str(BENCH / "capacity.py"), "--events-per-s", "100000", "--users", "1e7",
               "--items", "1e6", "--ratings", "1e9", "--json")
    s, b = json.loads(small.stdout)[0], json.loads(big.stdout)[0]
    for key in ("worker_processes", "redis_gib_total", "cassandra_tib", "retrain_it_s_cpu_node"):
        assert b[key] > s[key], key


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_scaleout_quick(tmp_path: Path) -> None:
    out = tmp_path / "so.json"
    proc = _run(str(BENCH / "bench_scaleout.py"), "--quick", "--events", "12000", "--workers",
                "1,2", "--cassandra", "3000", "--json", str(out), timeout=580)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert [r["workers"] for r in data["runs"]] == [1, 2]
    assert all(r["complete"] for r in data["runs"])
    mem = data["runs"][0]["memory"]
    assert 256 < mem["user_vector"] < 10_000 and mem["seen_entry"] > 0
    assert 20 < data["cassandra"]["log_bytes_per_rating"] < 200
    assert 256 < data["cassandra"]["snapshot_bytes_per_vector"] < 1000

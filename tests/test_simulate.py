"""``online-als simulate`` on the local stack: real Kafka, Redis and an in-process worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.conftest import StackInfo
from worker.cli.common import EXIT_OK, EXIT_USAGE
from worker.cli.main import main

pytestmark = pytest.mark.stack


def _stack_flags(stack: StackInfo) -> list[str]:
    return ["--set", f"kafka.bootstrap_servers={stack.bootstrap}",
            "--set", f"redis.host={stack.host}", "--set", f"redis.port={stack.redis_port}",
            "--set", "metrics.port=0"]


def test_simulate_learns_from_the_feedback_loop(
    stack: StackInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "sim.png"
    code = main(["simulate", "--users", "150", "--items", "200", "--rounds", "6",
                 "--plot", str(plot), "--json", *_stack_flags(stack)])
    assert code == EXIT_OK
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rounds = out["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5, 6]
    # every event sent went through Kafka and was applied by the worker before the next round
    assert out["events_sent"] == 150 * 5 + sum(r["events"] for r in rounds)
    assert out["events_applied"] == out["events_sent"] and out["dead_lettered"] == 0
    assert all(r["model_lists"] == 150 for r in rounds)  # top-10s from the factors, not popular
    # the worker learns from the answers: later rounds beat random lists (4:1:2 -> ~0.57)
    late = sum(r["precision"] for r in rounds[-2:]) / 2
    assert late > out["random_precision"] + 0.04, out
    assert plot.stat().st_size > 0
    # the run's keys are gone (its topic too: --keep keeps them)
    client = redis.Redis(host=stack.host, port=stack.redis_port)
    assert not list(client.scan_iter(match=f"{out['key_prefix']}:*"))


def test_simulate_rejects_bad_answer_weights(
    stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--answer-weights", "4:1", *_stack_flags(stack)]) == EXIT_USAGE
    assert "LIKE:DISLIKE:NEUTRAL" in capsys.readouterr().err

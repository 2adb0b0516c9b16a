"""One CLI: every subcommand has --help; bad configuration exits 2 with the fix; --json works."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from worker.cli.main import SUBCOMMANDS, main

EXPECTED = {"stack", "worker", "produce", "retrain", "snapshots", "rollback", "restore",
            "recommend", "similar", "evaluate", "tune", "demo", "config"}


def test_every_subcommand_is_registered_and_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(SUBCOMMANDS) >= EXPECTED
    for name in sorted(EXPECTED):
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: online-als" in capsys.readouterr().out


def test_bad_configuration_fails_at_start_with_the_fix() -> None:
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--set", "model.rank=-3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "model.rank" in proc.stderr and "ONLINE_ALS_MODEL__RANK" in proc.stderr


def test_config_json_masks_secrets() -> None:
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "config", "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={"ONLINE_ALS_REDIS__PASSWORD": "pa55", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["redis"]["password"] == "**********" and "pa55" not in proc.stdout


def test_evaluate_prequential_on_movielens_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--json", "--set", "model.rank=8"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["events"] == 100_000 and 0.8 < out["rmse"] < 1.2

"""Every failure a user can cause: one line on stderr, the documented exit code, no traceback.

Exit codes (README): 2 bad usage or configuration, 3 a server down or nothing to act on.
Servers are "down" here by pointing at a closed port, so no stack is needed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker.cli.main import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    err = out.err.strip()
    assert "Traceback" not in out.err + out.out, out.err
    return code, err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


NO_CASSANDRA = ("--set", f"cassandra.port={_closed_port()}")
NO_REDIS = ("--set", f"redis.port={_closed_port()}", "--set", "redis.socket_timeout_s=2")


def test_config_errors_exit_2_and_never_echo_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "config", "--set", "redis.passwd=hunter2")
    assert code == 2 and "hunter2" not in err and "redis.password" in one_line(err)
    code, err = run(capsys, "config", "--set", "model.rating_min=6")
    assert code == 2 and "rating_min" in one_line(err)
    code, err = run(capsys, "config", "--set", "model.rank")
    assert code == 2 and "section.key=value" in one_line(err)


def test_worker_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "worker", "--no-metrics-server", "--set", "model.rating_max=0")
    assert code == 2 and "rating_min" in one_line(err)


@pytest.mark.parametrize("command", ["evaluate", "tune"])
def test_dataset_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               command: str) -> None:
    code, err = run(capsys, command, "--dataset", str(tmp_path / "missing.csv"))
    assert code == 2 and "not found" in one_line(err)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 8)
    code, err = run(capsys, command, "--dataset", str(binary))
    assert code == 2 and "not a text" in one_line(err)
    binary.write_bytes(bytes(range(256)) * 8)  # ASCII bytes among the garbage
    code, err = run(capsys, command, "--dataset", str(binary))
    assert code == 2 and "cannot be read" in one_line(err)


@pytest.mark.parametrize("argv", [("snapshots", "list"), ("restore",), ("rollback", "--to", "1"),
                                  ("retrain", "--force")])
def test_cassandra_down_exits_3(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, err = run(capsys, *argv, *NO_CASSANDRA, *NO_REDIS)
    assert code == 3, err
    assert "did not answer" in one_line(err) or "not reachable" in err or "unreachable" in err


@pytest.mark.parametrize("argv", [("recommend", "--user", "u1"), ("similar", "--item", "i1")])
def test_redis_down_exits_3(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, err = run(capsys, *argv, *NO_REDIS)
    assert code == 3 and "Redis" in one_line(err)


def test_produce_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "produce", str(tmp_path / "nope.csv"))
    assert code == 2 and "not found" in one_line(err)


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["stack", "up", "--only", "nope"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["recommend"])  # --user missing
    assert exc.value.code == 2
    capsys.readouterr()


def test_snapshots_show_without_a_version_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "snapshots", "show", *NO_CASSANDRA)
    assert code == 2 and "version number" in one_line(err)


def test_binary_config_file_names_the_setting_and_toml(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    binary = tmp_path / "settings.toml"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(128, 256)) * 8)
    code, err = run(capsys, "config", "--config", str(binary))
    line = one_line(err)
    assert code == 2 and "--config" in line and "TOML" in line, line
    assert "CSV" not in line and "MovieLens" not in line, line

"""Each issue-3 benchmark script runs end to end in its ``--quick`` mode (a subprocess each).

Checks the exit code, that a Markdown table was printed and that ``--json`` wrote valid JSON.
The MovieLens-based scripts skip when the data is not found (they exit with
``_common.EXIT_NO_DATA``). All four together take well under a minute with warm numba caches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import unavailable

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
EXIT_NO_DATA = 3  # benchmarks/_common.py

SCRIPTS = {
    "bench_kernels.py": [],
    "bench_ml100k_explicit.py": ["--plot", "{tmp}/prequential.png"],
    "bench_implicit_windows.py": [],
    "bench_retrain.py": [],
    "bench_rebase.py": ["--plot", "{tmp}/rebase.png"],
}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_quick_mode_runs(script: str, tmp_path: Path) -> None:
    out_json = tmp_path / "result.json"
    extra = [arg.format(tmp=tmp_path) for arg in SCRIPTS[script]]
    cmd = [sys.executable, str(BENCH / script), "--quick", "--json", str(out_json), *extra]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, env=env)
    if proc.returncode == EXIT_NO_DATA:
        unavailable(f"{script}: MovieLens data not found ({proc.stderr.strip()[:200]})")
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "| " in proc.stdout and "|--" in proc.stdout, proc.stdout[-2000:]
    payload = json.loads(out_json.read_text())
    assert payload["machine"]["cpu_count"] >= 1
    if script == "bench_ml100k_explicit.py":
        assert (tmp_path / "prequential.png").stat().st_size > 0

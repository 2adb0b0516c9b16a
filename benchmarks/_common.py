"""Shared helpers of the issue-3 benchmark scripts: machine line, timing, tables, CLI.

Imported first by each script (``python benchmarks/bench_*.py`` puts this folder on
``sys.path``); it also puts the repository root on ``sys.path`` so the scripts run from a
fresh clone once the dependencies are installed (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PLOT_DIR = BENCH_DIR / "plots"
EXIT_NO_DATA = 3  # a script exits with this when the MovieLens files are not found

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_VERSIONED = ("numpy", "scipy", "numba", "implicit", "river")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "n/a"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"3.9 5.4 5.7"``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict[str, Any]:
    """Date, CPU, cores (total and usable by this process), load average, versions, git rev."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average": load_average(),
        "python": platform.python_version(),
        **{name: _version(name) for name in _VERSIONED},
        "git": _git_rev(),
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line describing the machine and the software, for the top of every output."""
    m = machine_info() if info is None else info
    versions = " ".join(f"{name} {m[name]}" for name in _VERSIONED)
    return (
        f"{m['date']} | {m['cpu']} | {m['cpu_count']} cpus ({m['usable_cpus']} usable) | "
        f"load {m['load_average']} | python {m['python']} {versions} | git {m['git']}"
    )


def pin_to_one_core(cpu: int | None = None) -> int:
    """Pin this process to one CPU (default: the last one it may use); return it.

    Call it before the first numba/BLAS call; set ``NUMBA_NUM_THREADS=1`` before numba is
    imported (the scripts do it at their top) so no worker threads compete for the core.
    """
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"--cpu {chosen}: this process may use CPUs {allowed}")
    os.sched_setaffinity(0, {chosen})
    return chosen


@dataclass
class Timer:
    """Elapsed wall seconds of a ``with timed() as t:`` block (``t.seconds``)."""

    start: float = 0.0
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    t = Timer(start=time.perf_counter())
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - t.start


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: floats with ``digits`` significant decimals, the rest as str."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def fmt_rate(per_second: float) -> str:
    """``3.2M/s``, ``14.1k/s``: a rate with a unit a person reads at a glance."""
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f}M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f}k/s"
    return f"{per_second:.0f}/s"


def goal_mark(met: bool) -> str:
    return "met" if met else "**MISSED**"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> str:
    """A Markdown table (pastes straight into RESULTS.md); printed and returned."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]

    def line(parts: Sequence[str]) -> str:
        return "| " + " | ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)) + " |"

    out = [f"\n### {title}\n"] if title else []
    out += [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def base_parser(description: str | None) -> argparse.ArgumentParser:
    """Parser with the options every script shares: ``--quick`` and ``--json``."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the script")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p


def header(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Print the command, the machine line and a shared-machine warning; return the info."""
    info = machine_info()
    print(f"# {name}")
    print("command: python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]))
    print("machine: " + machine_line(info))
    if (info["cpu_count"] or 0) <= 4:
        print(
            "note: few cores, possibly shared with other jobs: timings are noisy "
            "(compare peers measured in the same run, not across runs)"
        )
    if args.quick:
        print(
            "note: --quick smoke mode, sizes far below the real benchmark; figures are not results"
        )
    return info


def progress(iterable: Iterable[Any], **kwargs: Any) -> Iterable[Any]:
    """A tqdm bar on stderr when it is a terminal (none in logs and pipes)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None, leave=False, mininterval=0.5, **kwargs)


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    print(f"results written to {path}")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def exit_no_data(exc: BaseException) -> None:
    """Leave with :data:`EXIT_NO_DATA` and the loader's message (it lists where it looked)."""
    print(f"MovieLens data not found: {exc}", file=sys.stderr)
    raise SystemExit(EXIT_NO_DATA)

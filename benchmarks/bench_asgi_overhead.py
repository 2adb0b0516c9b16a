"""Per-request cost of three ASGI stacks under uvicorn (uvloop + httptools), measured before
choosing the one ``online-als serve`` uses (issue 25 item 1).

The same endpoint (``benchmarks/asgi_candidates.py``: query parsing + a 10-item orjson body, no
Redis) as a raw ASGI callable, a Starlette app and a FastAPI app; each runs as one uvicorn
process and gets ``--requests`` keep-alive GETs from ``--connections`` connections. The figure
that counts is the **server's CPU µs per request** (from /proc, so it holds on a busy shared
machine); requests/s and latencies are printed beside it with the load average. Rounds
alternate between the stacks so that load changes hit them alike.

    python benchmarks/bench_asgi_overhead.py
    python benchmarks/bench_asgi_overhead.py --requests 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
from _http_load import free_port, run_load, start_uvicorn, wait_http

STACKS = ("raw", "starlette", "fastapi")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=10_000, help="per stack and round")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [f"/recommend?user=u{j}&n=10" for j in range(1000)]
    servers = {}
    try:
        for name in STACKS:
            port = free_port()
            servers[name] = (start_uvicorn(f"asgi_candidates:{name}", port, app_dir=here), port)
        for proc, port in servers.values():
            wait_http(port, proc=proc)
            run_load(port, paths, 2000, a.connections, proc.pid)  # warm-up
        cpu: dict[str, list[float]] = {n: [] for n in STACKS}
        rate: dict[str, list[float]] = {n: [] for n in STACKS}
        p99: dict[str, list[float]] = {n: [] for n in STACKS}
        load0 = os.getloadavg()[0]
        for r in range(a.rounds):
            for name in STACKS[r % 3:] + STACKS[:r % 3]:
                proc, port = servers[name]
                res = run_load(port, paths, a.requests, a.connections, proc.pid)
                assert res.statuses == {200: res.requests}, res.statuses
                cpu[name].append(res.cpu_us_per_request)
                rate[name].append(res.rate)
                p99[name].append(res.pct(99))
        load1 = os.getloadavg()[0]
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    base = float(np.median(cpu["raw"]))
    print(f"\nASGI stacks under uvicorn {_ver('uvicorn')} (uvloop, httptools), one process each, "
          f"{a.requests:,} GETs x {a.rounds} rounds over {a.connections} keep-alive connections; "
          f"{os.cpu_count()} cores, load average {load0:.1f} at the start, {load1:.1f} at the end")
    print("| stack | version | server CPU µs/request (median of rounds) | vs raw | requests/s "
          "(client-bound) | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name in STACKS:
        c = float(np.median(cpu[name]))
        ver = {"raw": "-", "starlette": _ver("starlette"), "fastapi": _ver("fastapi")}[name]
        print(f"| {name} | {ver} | {c:.0f} ({min(cpu[name]):.0f}-{max(cpu[name]):.0f}) | "
              f"+{c - base:.0f} | {np.median(rate[name]):,.0f} | {np.median(p99[name]):.2f} |")
    return 0


def _ver(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())

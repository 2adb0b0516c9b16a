"""A small closed-loop HTTP/1.1 load generator and a per-process CPU meter for the HTTP
benchmarks (``bench_asgi_overhead.py``, ``bench_http_serving.py``).

The client is raw asyncio streams with keep-alive connections (no HTTP library), so its own
cost stays small next to the server's; the server's cost is read from ``/proc/<pid>/stat``
(user + system CPU of the process and its children), which is what "CPU µs per request" means
in ``benchmarks/RESULTS.md``: it does not depend on how busy the shared machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its reaped children, plus those of its live
    children (uvicorn's worker processes)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str = "/healthz", timeout_s: float = 60.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``GET path`` answers 200 (the server has started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"nothing answered 200 on 127.0.0.1:{port}{path} in {timeout_s:.0f} s")


def start_uvicorn(app: str, port: int, *, app_dir: str | None = None, workers: int = 1,
                  env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http",
           "httptools", "--workers", str(workers)]
    if app_dir:
        cmd += ["--app-dir", app_dir]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})})


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_ms: np.ndarray
    server_cpu_s: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / max(self.requests, 1) * 1e6

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


async def _one_conn(port: int, paths: Sequence[bytes], start: int, count: int,
                    out: list[float], statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for j in range(count):
            path = paths[(start + j) % len(paths)]
            t = time.perf_counter()
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            out.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def run_load(port: int, paths: Sequence[str], requests: int, connections: int,
             server_pid: int) -> LoadResult:
    """``requests`` GETs over ``connections`` keep-alive connections (closed loop)."""
    enc = [p.encode() for p in paths]
    lats: list[float] = []
    statuses: dict[int, int] = {}
    per = max(1, requests // connections)

    async def go() -> None:
        await asyncio.gather(*(_one_conn(port, enc, c * per, per, lats, statuses)
                               for c in range(connections)))

    cpu0, t0 = process_cpu_s(server_pid), time.perf_counter()
    asyncio.run(go())
    seconds, cpu = time.perf_counter() - t0, process_cpu_s(server_pid) - cpu0
    return LoadResult(len(lats), seconds, np.asarray(lats) * 1e3, cpu, statuses)

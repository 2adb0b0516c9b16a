"""HTTP recommend through ``online-als serve`` vs the in-process ``ServingClient`` call, on the
same model in the local Redis, with the worker idle (issue 25 goal: >= 2,000 requests/s on one
core, p99 <= 10 ms, at 26,744 items and k=64).

Writes the model of ``bench_serving.py`` (random ``--items`` x ``--rank``, ``--users`` users
with ~100 seen items) under a fresh prefix, then

1. times ``--calls`` in-process ``recommend(user, n)`` calls (wall and CPU time of this process);
2. starts ``online-als serve --workers W`` pinned to one core (``taskset -c --cpu``; the load
   generator and Redis get the others) and sends ``--requests`` GETs of
   ``/v1/recommend?user=...&n=...`` over ``--connections`` keep-alive connections;
3. times the in-process calls again while a load generator hits ``/healthz`` beside them (a
   control: on a 2-core VM the generator's own CPU use slows whatever runs next to it);
4. prints requests/s, latency percentiles seen by the client, the server's CPU µs per request
   (from /proc: independent of how busy the shared machine is), the same for the in-process
   call, and their difference: the per-request overhead of HTTP. ``capacity/core`` is
   1e6 / CPU µs: the requests/s one core sustains when it does nothing else.

    python benchmarks/bench_http_serving.py
    python benchmarks/bench_http_serving.py --workers 2 --connections 8 --requests 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np
import redis
from _http_load import free_port, run_load, wait_http
from bench_serving import _drop, write_model

from worker.serving.client import ServingClient
from worker.stores.redis.keys import RedisKeys
from worker.stores.redis.store import RedisStore

GOAL_RATE, GOAL_P99_MS = 2000.0, 10.0


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=26_744)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--seen", type=int, default=100)
    p.add_argument("--mode", choices=("explicit", "implicit"), default="explicit")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--calls", type=int, default=5000, help="in-process recommend calls")
    p.add_argument("--requests", type=int, default=10_000, help="HTTP requests per round")
    p.add_argument("--rounds", type=int, default=3, help="HTTP rounds (median reported)")
    p.add_argument("--connections", type=int, default=6)
    p.add_argument("--workers", type=int, default=1, help="serve processes (all on --cpu)")
    p.add_argument("--cpu", type=int, default=0, help="the core the server is pinned to "
                   "(-1: not pinned)")
    p.add_argument("--host", default=os.environ.get("ONLINE_ALS_REDIS__HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("ONLINE_ALS_REDIS__PORT", 6379)))
    p.add_argument("--prefix", default=f"bench_http_{os.getpid()}")
    return p.parse_args(argv)


def in_process(client: ServingClient, users: list[str], a: argparse.Namespace
               ) -> tuple[float, np.ndarray, float]:
    """(calls/s, latencies ms, CPU µs per call) of ``recommend`` in this process."""
    for u in users[:200]:
        client.recommend(u, a.n)
    lat = np.empty(a.calls)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for j in range(a.calls):
        t = time.perf_counter()
        client.recommend(users[j % len(users)], a.n)
        lat[j] = time.perf_counter() - t
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return a.calls / wall, lat * 1e3, cpu / a.calls * 1e6


def start_server(a: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "worker.cli.main", "serve", "--port", str(port), "--workers",
           str(a.workers), "--set", f"redis.host={a.host}", "--set", f"redis.port={a.port}",
           "--set", f"redis.key_prefix={a.prefix}", "--set", "serve.reload_items_s=3600",
           "--log-level", "WARNING"]
    if a.cpu >= 0 and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(a.cpu), *cmd]
    return subprocess.Popen(cmd, cwd=_common.REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    r = redis.Redis(host=a.host, port=a.port)
    r.ping()
    store = RedisStore(r, RedisKeys(a.prefix))
    proc = None
    try:
        _, users = write_model(store, a)
        rng = np.random.default_rng(1)
        order = [users[j] for j in rng.integers(0, len(users), max(a.calls, a.requests))]
        client = ServingClient(r, a.prefix, reload_items_s=None)
        client.refresh()
        load0 = os.getloadavg()[0]
        ip_rate, ip_lat, ip_cpu = in_process(client, order, a)
        port = free_port()
        proc = start_server(a, port)
        wait_http(port, "/readyz", 120, proc)
        paths = [f"/v1/recommend?user={u}&n={a.n}" for u in order]
        run_load(port, paths, 2000, a.connections, proc.pid)  # warm-up
        # control: the in-process call again while a load generator keeps the other core as
        # busy as the HTTP rounds do (hitting /healthz), to tell neighbour cost from HTTP cost
        noise = subprocess.Popen([sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:2]; "
                                  "from _http_load import run_load; run_load(int(sys.argv[2]), "
                                  "['/healthz'], 10**7, 4, int(sys.argv[3]))",
                                  str(_common.BENCH_DIR), str(port), str(proc.pid)])
        time.sleep(1.0)
        busy_rate, busy_lat, busy_cpu = in_process(client, order, a)
        noise.kill()
        noise.wait()
        rounds = []
        for _ in range(a.rounds):
            res = run_load(port, paths, a.requests, a.connections, proc.pid)
            assert res.statuses == {200: res.requests}, res.statuses
            rounds.append(res)
        load1 = os.getloadavg()[0]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        _drop(r, a.prefix)
    res = sorted(rounds, key=lambda x: x.cpu_us_per_request)[len(rounds) // 2]
    http_cpu = res.cpu_us_per_request
    pin = f"pinned to core {a.cpu}" if a.cpu >= 0 else "not pinned"
    print(f"\nHTTP recommend vs in-process, {a.mode} model: {a.items:,} items x k={a.rank}, "
          f"{a.users:,} users with ~{a.seen} seen, n={a.n}; server: {a.workers} process(es) "
          f"{pin}, {a.connections} keep-alive connections, {a.requests:,} requests x "
          f"{a.rounds} rounds (median round by CPU); {os.cpu_count()} cores, load average "
          f"{load0:.1f} at the start, {load1:.1f} at the end; worker idle")
    print("| path | requests/s | p50 ms | p99 ms | CPU µs/request | capacity/core (1e6/CPU µs) |")
    print("|---|---|---|---|---|---|")
    print(f"| in-process `ServingClient.recommend` | {ip_rate:,.0f} | "
          f"{np.percentile(ip_lat, 50):.3f} | {np.percentile(ip_lat, 99):.3f} | {ip_cpu:.0f} | "
          f"{1e6 / ip_cpu:,.0f} |")
    print(f"| in-process, load generator busy beside it | {busy_rate:,.0f} | "
          f"{np.percentile(busy_lat, 50):.3f} | {np.percentile(busy_lat, 99):.3f} | "
          f"{busy_cpu:.0f} | {1e6 / busy_cpu:,.0f} |")
    print(f"| HTTP `GET /v1/recommend` | {res.rate:,.0f} | {res.pct(50):.3f} | {res.pct(99):.3f} | "
          f"{http_cpu:.0f} | {1e6 / http_cpu:,.0f} |")
    print(f"HTTP overhead per request: {http_cpu - ip_cpu:+.0f} µs CPU over the quiet "
          f"in-process call ({(http_cpu - ip_cpu) / ip_cpu:+.0%}), {http_cpu - busy_cpu:+.0f} µs "
          f"over the in-process call beside the same load generator; p50 "
          f"{res.pct(50) - float(np.percentile(ip_lat, 50)):+.3f} ms")
    ok = res.rate >= GOAL_RATE and res.pct(99) <= GOAL_P99_MS
    print(f"goal >= {GOAL_RATE:,.0f} requests/s on one core and p99 <= {GOAL_P99_MS:g} ms: "
          f"{'met' if ok else 'NOT met'} ({res.rate:,.0f}/s, p99 {res.pct(99):.2f} ms; "
          f"capacity {1e6 / http_cpu:,.0f}/s per core by CPU)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

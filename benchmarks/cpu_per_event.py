"""CPU seconds per applied event, per process: the worker, Redis, Kafka and Cassandra.

Wall-clock throughput on a shared 2-core box says little about where the cost is; CPU time per
event does. Pre-produces N synthetic ML-20M-shaped events, runs one worker in this process
until they are applied, and reads each component's CPU time before and after (the worker from
``os.times``, Redis from ``INFO cpu``, Kafka and Cassandra from ``/proc/<pid>/stat``). Other
clients of the same servers count too, so run it on a quiet stack.

    python benchmarks/cpu_per_event.py --events 200000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_worker as bw  # noqa: E402

from worker.runtime.loop import Worker  # noqa: E402
from worker.stores.redis.store import connect  # noqa: E402


def process_cpu_s(pattern: str) -> float:
    """User + system CPU seconds of the processes whose command line matches ``pattern``."""
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--learner", choices=("adaptive", "sgd"), default=None,
                    help="the worker's explicit learner (default: the shipped one)")
    ap.add_argument("--owned-users", type=int, default=None,
                    help="worker.owned_users_max (0: read every user from Redis every batch)")
    a = ap.parse_args()
    s = bw.settings_for(uuid.uuid4().hex[:8], a.partitions, a.rank, persist=False)
    if a.learner:
        s = s.model_copy(update={"model": s.model.model_copy(update={"learner": a.learner})})
    if a.owned_users is not None:
        s = s.model_copy(update={"worker": s.worker.model_copy(
            update={"owned_users_max": a.owned_users})})
    bw.produce(s, a.events, seed=7)
    redis_client = connect(s.redis)

    def redis_cpu() -> float:
        info = redis_client.info("cpu")
        return float(info["used_cpu_user"] + info["used_cpu_sys"])

    def sample() -> tuple[float, float, float, float]:
        t = os.times()
        return (t.user + t.system, redis_cpu(), process_cpu_s("kafka.Kafka"),
                process_cpu_s("CassandraDaemon"))

    worker = Worker(s)
    print(f"# {a.events:,} events, k={a.rank}, {a.partitions} partitions, learner "
          f"{s.model.learner}, owned users {s.worker.owned_users_max:,}; "
          f"load {os.getloadavg()}", flush=True)
    before = sample()
    t0 = time.perf_counter()
    idle_s = 3.0
    worker.run(idle_exit_s=idle_s)
    wall = time.perf_counter() - t0 - idle_s
    after = sample()
    bw.cleanup(s)
    per = [1e6 * (b - a_) / a.events for a_, b in zip(before, after, strict=True)]
    print(f"applied {worker.applied_total:,} in {wall:.1f} s = {worker.applied_total / wall:,.0f}/s; "
          f"load {os.getloadavg()}")
    print("| process | CPU µs per event |\n|---|---:|")
    for name, value in zip(("worker", "redis", "kafka", "cassandra"), per, strict=True):
        print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()

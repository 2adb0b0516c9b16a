"""Redis bytes per user and item key against their state payload (issue 22, goal 3).

Streams N synthetic ML-20M-shaped events through one worker into a Redis of its own (started
by the devstack on a free port), once per ``hash-max-listpack-value`` setting, and reads
``MEMORY USAGE`` of a sample of user and item keys. The payload is what a key must hold:
``f`` (4k bytes), ``b`` (4) and the adaptive learner's ``a`` (4(k+3) for a user, 4(k+1) for an
item).

    python benchmarks/redis_key_bytes.py --events 200000
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_worker as bw  # noqa: E402
import redis  # noqa: E402

from worker.devstack import Stack, StackConfig  # noqa: E402
from worker.runtime.loop import Worker  # noqa: E402
from worker.stores.redis.store import RedisStore  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--listpack-values", default="64,2048",
                    help="hash-max-listpack-value settings to compare (64: Redis's default)")
    ap.add_argument("--sample", type=int, default=2000)
    a = ap.parse_args()
    port = free_port()
    stack = Stack(StackConfig.from_env(runtime_dir=Path(tempfile.mkdtemp()), redis_port=port))
    stack.up(["redis"])
    client = redis.Redis(port=port)
    k = a.rank
    payload = {"u": 4 * k + 4 + 4 * (k + 3), "i": 4 * k + 4 + 4 * (k + 1)}
    print(f"# {a.events:,} events, k={k}, one worker; payload user {payload['u']} B, item "
          f"{payload['i']} B; load {os.getloadavg()}")
    print("| hash-max-listpack-value | encoding | bytes per user key | x payload "
          "| bytes per item key | x payload |\n|---|---|---:|---:|---:|---:|")
    try:
        for value in (int(v) for v in a.listpack_values.split(",")):
            client.config_set("hash-max-listpack-value", value)
            s = bw.settings_for(uuid.uuid4().hex[:8], 4, k, persist=False)
            s = s.model_copy(update={"redis": s.redis.model_copy(update={"port": port})})
            bw.produce(s, a.events, seed=7)
            Worker(s).run(idle_exit_s=3.0)
            store = RedisStore.from_settings(s.redis)
            version = store.current_version()
            assert version is not None
            row = [str(value)]
            for kind in ("u", "i"):
                index = store.keys.user_index(version) if kind == "u" else store.keys.item_index(version)
                ids = [m.decode() for m in client.srandmember(index, a.sample)]  # type: ignore[union-attr]
                keys = store.vector_keys(version, kind, ids)
                sizes = [int(client.memory_usage(key, samples=0) or 0) for key in keys]
                mean = sum(sizes) / len(sizes)
                if kind == "u":
                    row.append(client.object("encoding", keys[0]).decode())  # type: ignore[union-attr]
                row += [f"{mean:,.0f}", f"{mean / payload[kind]:.2f}"]
            print("| " + " | ".join(row) + " |", flush=True)
            bw.cleanup(s)
    finally:
        stack.down(["redis"])


if __name__ == "__main__":
    main()

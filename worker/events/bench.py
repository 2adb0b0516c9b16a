"""Decode throughput on one core: ``python -m worker.events.bench [--n 200000] [--repeat 7]``.

Pin it for a one-core number: ``taskset -c 0 python -m worker.events.bench``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from worker.events.binary import encode_binary
from worker.events.decode import RawValue, decode_batch, encode_json
from worker.events.schema import DecodeConfig


def _workloads(n: int) -> dict[str, tuple[list[RawValue], DecodeConfig]]:
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in rng.integers(0, 1_000_000, n)]
    items = [f"i{i}" for i in rng.integers(0, 100_000, n)]
    ratings = (rng.integers(1, 11, n) / 2).tolist()
    ts = 1_718_000_000.0
    explicit, implicit = DecodeConfig(), DecodeConfig(mode="implicit")
    rows = list(zip(users, items, ratings, strict=True))
    json_rows: list[RawValue] = [
        encode_json(u, i, rating=r, ts=ts + k, event_id=f"e{k}") for k, (u, i, r) in enumerate(rows)
    ]
    mixed = list(json_rows)
    mixed[::20] = [b'{"user_id":"u","item_id":"i","rating":9}'] * len(mixed[::20])  # 5% bad
    return {
        "json explicit": (json_rows, explicit),
        "json implicit": (
            [encode_json(u, i, event="click", ts=int(ts * 1000)) for u, i, _ in rows],
            implicit,
        ),
        "binary explicit": (
            [encode_binary(u, i, rating=r, ts=ts) for u, i, r in rows],
            explicit,
        ),
        "json explicit, 5% rejects": (mixed, explicit),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="messages per workload")
    parser.add_argument("--repeat", type=int, default=7, help="runs per workload; best is kept")
    args = parser.parse_args(argv)
    kafka_ts = np.full(args.n, 1_718_000_000_000, dtype=np.int64)
    for name, (values, cfg) in _workloads(args.n).items():
        wall = cpu = 0.0
        for _ in range(args.repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            decode_batch(values, kafka_ts, cfg)
            # CPU time too: on a shared machine wall time mostly measures the neighbours.
            cpu = max(cpu, args.n / max(time.process_time() - c0, 1e-9))
            wall = max(wall, args.n / (time.perf_counter() - w0))
        size = sum(len(v) for v in values if v is not None) / args.n
        print(
            f"{name:28s} {cpu / 1e3:6.0f}k msgs per CPU-s  {wall / 1e3:6.0f}k msgs/s wall"
            f"  ({size:.0f} B/msg)"
        )


if __name__ == "__main__":
    main()

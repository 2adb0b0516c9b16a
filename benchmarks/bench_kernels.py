"""Kernel throughput on one core: explicit SGD and implicit fold-in vs River's BiasedMF.

A synthetic ML-20M-shaped stream (138,493 users x 26,744 items, Zipf-like item popularity and
user activity, ratings 1..5) is fed to ``sgd_update_batch`` and ``foldin_update_batch`` one
call per micro-batch, for each k. The JIT is warmed up first; the process is pinned to one
CPU with ``NUMBA_NUM_THREADS=1``. Rate = events / time inside the kernel calls; best and
median of ``--repeats`` passes. River's ``reco.BiasedMF.learn_one`` (the configuration of
River's ML-100K example) runs on a prefix of the same stream on the same core. Also shown:
``OnlineModel.learn_batch`` with string ids at k=64 (id lookup included), as a worker sees it.

Goal: >= 3M ratings/s at k=64 for the explicit kernel.

    python benchmarks/bench_kernels.py                  # 1M events, k = 16 32 64 128
    python benchmarks/bench_kernels.py --quick
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # before numba is imported, anywhere
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import _common as C  # noqa: E402
import numpy as np  # noqa: E402

from online_als.events import confidence_preference_from_weights  # noqa: E402
from online_als.kernels import foldin_update_batch, gram_inverse, sgd_update_batch  # noqa: E402
from online_als.online import OnlineModel  # noqa: E402

GOAL_K, GOAL_RATE = 64, 3e6
LR, REG, REG_BIAS, CLIP, MU = 0.01, 0.02, 0.02, 10.0, 3.5
ALPHA, REG_IMPLICIT = 10.0, 0.05


def synthetic_stream(
    n: int, n_users: int, n_items: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows (int64) and ratings (float32 1..5): Zipf-like popularity, rows shuffled so the
    popular ones are spread over the tables (as an IdMap fills them in arrival order)."""
    rng = np.random.default_rng(seed)

    def draw(n_rows: int, exponent: float) -> np.ndarray:
        w = 1.0 / np.arange(1, n_rows + 1) ** exponent
        ranks = rng.choice(n_rows, size=n, p=w / w.sum())
        return rng.permutation(n_rows)[ranks].astype(np.int64)

    users, items = draw(n_users, 0.6), draw(n_items, 0.9)
    ratings = rng.integers(1, 6, size=n).astype(np.float32)
    return users, items, ratings


def _passes(
    run_batch: Callable[[slice], None], n: int, batch: int, repeats: int, desc: str
) -> list[float]:
    """Seconds inside ``run_batch`` per full pass over the stream."""
    times = []
    for _ in C.progress(range(repeats), desc=desc):
        spent = 0.0
        for start in range(0, n, batch):
            sl = slice(start, min(start + batch, n))
            t0 = time.perf_counter()
            run_batch(sl)
            spent += time.perf_counter() - t0
        times.append(spent)
    return times


def bench_explicit(stream: tuple[np.ndarray, ...], k: int, a: Any) -> list[float]:
    users, items, ratings = stream
    rng = np.random.default_rng(k)
    uf = (rng.standard_normal((a.users, k)) * 0.1).astype(np.float32)
    itf = (rng.standard_normal((a.items, k)) * 0.1).astype(np.float32)
    ub, ib = np.zeros(a.users, np.float32), np.zeros(a.items, np.float32)
    pred, applied = np.empty(a.batch, np.float32), np.empty(a.batch, np.uint8)

    def run(sl: slice) -> None:
        m = sl.stop - sl.start
        sgd_update_batch(
            uf, ub, itf, ib, users[sl], items[sl], ratings[sl], MU, LR, REG, REG_BIAS, CLIP,
            pred[:m], applied[:m],
        )  # fmt: skip

    run(slice(0, min(a.batch, len(users))))  # JIT warm-up (or cache load)
    return _passes(run, len(users), a.batch, a.repeats, f"sgd k={k}")


def bench_foldin(stream: tuple[np.ndarray, ...], k: int, a: Any) -> list[float]:
    users, items, _ = stream
    n = min(len(users), a.foldin_events)
    rng = np.random.default_rng(k)
    uf = (rng.standard_normal((a.users, k)) * 0.1).astype(np.float32)
    itf = (rng.standard_normal((a.items, k)) * 0.1).astype(np.float32)
    gy, gx = gram_inverse(itf, REG_IMPLICIT), gram_inverse(uf, REG_IMPLICIT)
    conf, pref = confidence_preference_from_weights(np.ones(n), ALPHA)
    pred, applied = np.empty(a.batch, np.float32), np.empty(a.batch, np.uint8)

    def run(sl: slice) -> None:
        m = sl.stop - sl.start
        foldin_update_batch(
            uf, itf, users[sl], items[sl], conf[sl], pref[sl], gy, gx, True,
            pred[:m], applied[:m],
        )  # fmt: skip

    run(slice(0, min(a.batch, n)))
    return _passes(run, n, a.batch, a.repeats, f"fold-in k={k}")


def bench_river(stream: tuple[np.ndarray, ...], k: int, n: int) -> float:
    """Seconds of ``learn_one`` over the first ``n`` events (River's ML-100K example config)."""
    from river import optim, reco

    model = reco.BiasedMF(
        n_factors=k,
        bias_optimizer=optim.SGD(0.025),
        latent_optimizer=optim.SGD(0.05),
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
        l2_bias=0.0,
        l2_latent=0.0,
    )
    users, items, ratings = (x[:n].tolist() for x in stream)
    t0 = time.perf_counter()
    for u, i, r in C.progress(
        zip(users, items, ratings, strict=True), total=n, desc=f"river k={k}"
    ):
        model.learn_one(u, i, r)
    return time.perf_counter() - t0


def bench_online_model(stream: tuple[np.ndarray, ...], k: int, n: int, batch: int) -> float:
    """Seconds of ``OnlineModel.learn_batch`` with string ids (new ids added on the way)."""
    users, items, ratings = stream
    u_ids, i_ids = users[:n].astype(str), items[:n].astype(str)
    model = OnlineModel.explicit(k, lr=LR, reg=REG, reg_bias=REG_BIAS, global_mean=MU)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        model.learn_batch(u_ids[sl], i_ids[sl], ratings[sl])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=10_000, help="events per kernel call")
    p.add_argument("--ks", default="16,32,64,128")
    p.add_argument("--users", type=int, default=138_493)
    p.add_argument("--items", type=int, default=26_744)
    p.add_argument("--repeats", type=int, default=3, help="passes over the stream per kernel")
    p.add_argument("--foldin-events", type=int, default=1_000_000)
    p.add_argument("--river-events", type=int, default=100_000)
    p.add_argument("--no-river", action="store_true")
    p.add_argument("--model-events", type=int, default=300_000,
                   help="events for the OnlineModel.learn_batch row (0: skip)")  # fmt: skip
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.quick:
        a.events, a.foldin_events, a.river_events, a.model_events = 50_000, 20_000, 2_000, 20_000
        a.ks, a.repeats, a.users, a.items = "16,64", 1, 20_000, 5_000
    cpu = C.pin_to_one_core(a.cpu)
    info = C.header("bench_kernels: per-event kernels on one core", a)
    print(f"pinned to cpu {cpu}; NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']}; "
          f"stream {a.events:,} events, {a.users:,} users x {a.items:,} items, "
          f"batches of {a.batch:,}, best/median of {a.repeats} passes")  # fmt: skip
    stream = synthetic_stream(a.events, a.users, a.items, a.seed)
    ks = [int(x) for x in a.ks.split(",")]
    rows, results = [], []
    for k in ks:
        sgd = bench_explicit(stream, k, a)
        fold = bench_foldin(stream, k, a)
        n_fold = min(a.events, a.foldin_events)
        river = None if a.no_river else bench_river(stream, k, min(a.river_events, a.events))
        sgd_best, sgd_med = a.events / min(sgd), a.events / statistics.median(sgd)
        fold_best = n_fold / min(fold)
        river_rate = float("nan") if river is None else min(a.river_events, a.events) / river
        goal = C.goal_mark(sgd_best >= GOAL_RATE) if k == GOAL_K else ""
        rows.append([
            k, C.fmt_rate(sgd_best), C.fmt_rate(sgd_med), C.fmt_rate(fold_best),
            C.fmt_rate(n_fold / statistics.median(fold)),
            "n/a" if river is None else C.fmt_rate(river_rate),
            "n/a" if river is None else f"{sgd_best / river_rate:,.0f}x", goal,
        ])  # fmt: skip
        results.append({"k": k, "sgd_seconds": sgd, "sgd_events": a.events,
                        "foldin_seconds": fold, "foldin_events": n_fold,
                        "river_seconds": river, "river_events": a.river_events})  # fmt: skip
    C.table(
        ["k", "SGD best", "SGD median", "fold-in best", "fold-in median", "River learn_one",
         "SGD / River", f"goal >= {C.fmt_rate(GOAL_RATE)} at k={GOAL_K}"],
        rows, "Kernel throughput, one core, ratings per second",
    )  # fmt: skip
    if a.model_events:
        n = min(a.model_events, a.events)
        secs = bench_online_model(stream, 64, n, a.batch)  # first call also compiles nothing new
        print(
            f"\nOnlineModel.learn_batch, string ids, k=64, batches of {a.batch:,}: "
            f"{C.fmt_rate(n / secs)} over {n:,} events (IdMap lookup + new-id init included)"
        )
    print(f"\nload average at the end: {C.load_average()}")
    C.write_json(a.json, {"machine": info, "args": vars(a), "results": results})


if __name__ == "__main__":
    main()

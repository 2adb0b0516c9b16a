"""Retrain on a synthetic ML-20M-shaped matrix: our ``retrain`` path vs bare ``implicit``.

The matrix has ML-20M's shape (138,493 users x 26,744 items) and ``--nnz`` distinct
(user, item) pairs (20M by default), with skewed popularity (item p ~ 1/(rank + 50), top item
~0.3% of events as in ML-20M) and log-normal user activity. It reaches our path the way the
retrain job reads the log: chunks of ``--chunk`` shuffled events with integer ids, which
``build_matrix`` maps through ``IdMap`` (``--ids rows`` skips the id mapping). Then:

1. ours, implicit: ``build_matrix(chunks, "sum")`` + ``retrain("implicit", ...)``;
2. bare ``implicit.cpu.als.AlternatingLeastSquares.fit`` of the same CSR, same params
   (BLAS limited to one thread, as ``fit_implicit`` does and ``implicit`` advises);
3. ours, explicit ALS-WR (``retrain("explicit", ...)``) on the same pattern with ratings
   0.5..5, fewer iterations.

Per-iteration time: ``implicit``'s own callback for the bare fit; fit seconds / iterations
(setup included) for ours. Both use every core (2 here, shared with other jobs).

    python benchmarks/bench_retrain.py                         # 20M nnz, k=64, 3 + 1 iterations
    python benchmarks/bench_retrain.py --nnz 5000000 --als-iterations 2
    python benchmarks/bench_retrain.py --quick

``--spark SHAPES`` (``ml-1m``, ``ml-20m``, comma separated) runs instead Spark MLlib ALS on
``--spark-master`` (``local[2]``) beside ``implicit`` (CPU, all cores) and ALS-WR, on the same
matrix built from ``producers.synthetic`` events of that shape (implicit events summed; the
explicit ratings, last wins). ``--scale`` shrinks ML-20M's event count (users and items kept), for
boxes where the full ML-20M does not fit. Seconds per iteration = fit seconds / iterations
(setup, Parquet staging and factor collection included for Spark; the SparkSession start is
reported apart). Ratio = Spark / in-process.

    python benchmarks/bench_retrain.py --spark ml-1m,ml-20m --scale 0.25 --iterations 5
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
from collections.abc import Iterator

import _common as C
import implicit.cpu.als
import numpy as np
from threadpoolctl import threadpool_limits

from online_als.retrain import AlsWrParams, ImplicitParams, RatingMatrix, build_matrix, retrain

N_USERS, N_ITEMS = 138_493, 26_744


def synthetic_pairs(nnz: int, n_users: int, n_items: int, seed: int) -> np.ndarray:
    """``nnz`` distinct keys ``user * n_items + item`` in random order."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / (np.arange(1, n_items + 1) + 50.0)
    item_p = item_p[rng.permutation(n_items)]
    user_p = rng.lognormal(0.0, 1.0, n_users)
    item_p, user_p = item_p / item_p.sum(), user_p / user_p.sum()
    keys: np.ndarray = np.empty(0, np.int64)
    while keys.size < nnz:
        draw = int((nnz - keys.size) * 1.15) + 1000
        u = rng.choice(n_users, size=draw, p=user_p).astype(np.int64)
        i = rng.choice(n_items, size=draw, p=item_p).astype(np.int64)
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
    keys = keys[rng.permutation(keys.size)[:nnz]]
    return keys


def chunks(
    keys: np.ndarray, n_items: int, size: int, ids: str, values: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The events as the log reader yields them: integer ids (or rows), one chunk at a time."""
    for start in C.progress(range(0, keys.size, size), desc="build_matrix"):
        k = keys[start : start + size]
        u, i = k // n_items, k % n_items
        if ids == "ids":  # ids that are not their rows: 1-based like MovieLens, so IdMap works
            u, i = u + 1, i + 1
        yield u, i, values[start : start + size]


def main(argv: list[str] | None = None) -> None:
    p = C.base_parser(__doc__)
    p.add_argument("--nnz", type=int, default=20_000_000)
    p.add_argument("--users", type=int, default=N_USERS)
    p.add_argument("--items", type=int, default=N_ITEMS)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--iterations", type=int, default=3, help="implicit iterations (both fits)")
    p.add_argument("--als-iterations", type=int, default=1, help="ALS-WR iterations (0: skip)")
    p.add_argument("--reg", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=10.0)
    p.add_argument("--chunk", type=int, default=1_000_000, help="events per build_matrix chunk")
    p.add_argument("--ids", choices=["ids", "rows"], default="ids",
                   help="ids: map integer ids through IdMap (as the retrain job); rows: skip it")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spark", default="", help="shapes for the Spark comparison: ml-1m,ml-20m")
    p.add_argument("--spark-master", default="local[2]")
    p.add_argument("--scale", type=float, default=1.0, help="ML-20M event-count factor (--spark)")
    a = p.parse_args(argv)
    if a.spark:
        spark_vs_implicit(a)
        return
    if a.quick:
        a.nnz, a.users, a.items, a.k, a.iterations, a.als_iterations = (
            200_000,
            20_000,
            5_000,
            16,
            2,
            1,
        )
    info = C.header("bench_retrain: implicit/ALS-WR retrain at ML-20M shape", a)
    print(f"{a.users:,} users x {a.items:,} items, {a.nnz:,} nnz, k={a.k}, implicit "
          f"{a.iterations} iterations (CG), ALS-WR {a.als_iterations}, reg={a.reg} "
          f"alpha={a.alpha}, chunks of {a.chunk:,}, ids={a.ids}")  # fmt: skip

    with C.timed() as t_gen:
        keys = synthetic_pairs(a.nnz, a.users, a.items, a.seed)
    print(f"generated {keys.size:,} distinct pairs in {t_gen.seconds:.1f} s")
    ones = np.ones(keys.size, np.float32)
    params = ImplicitParams(factors=a.k, reg=a.reg, alpha=a.alpha, iterations=a.iterations,
                            seed=a.seed, use_gpu=False)  # fmt: skip
    rows_arg = dict(ids_are_rows=True, shape=(a.users, a.items)) if a.ids == "rows" else {}
    matrix: RatingMatrix = build_matrix(chunks(keys, a.items, a.chunk, a.ids, ones), "sum",
                                        **rows_arg)  # type: ignore[arg-type]  # fmt: skip
    ours = retrain("implicit", matrix, params)
    gc.collect()

    # implicit was imported at the top: importing it loads scipy's own OpenBLAS, which a
    # threadpool_limits entered *before* that import does not cover (fit_implicit imports
    # implicit inside its limit; see RESULTS.md). Imported first, both fits run with BLAS at 1.
    iter_secs: list[float] = []
    with threadpool_limits(1, "blas"):
        bare = implicit.cpu.als.AlternatingLeastSquares(
            factors=a.k, regularization=a.reg, alpha=a.alpha, iterations=a.iterations,
            random_state=a.seed, num_threads=0,
        )  # fmt: skip
    with threadpool_limits(1, "blas"), C.timed() as t_bare:
        bare.fit(matrix.matrix, show_progress=False,
                 callback=lambda _it, secs, _loss: iter_secs.append(secs))  # fmt: skip
    del bare
    gc.collect()

    fit_s = ours.seconds["fit"]
    rows = [
        ["ours: build_matrix (chunks, IdMap)" if a.ids == "ids" else "ours: build_matrix (rows)",
         f"{matrix.seconds:.1f}", "", f"{a.nnz / matrix.seconds / 1e6:.2f}M events/s"],
        ["ours: retrain('implicit') fit", f"{fit_s:.1f}", f"{fit_s / a.iterations:.2f}", ""],
        ["ours: build + fit + checks", f"{sum(ours.seconds.values()):.1f}", "", ""],
        ["bare implicit fit (same CSR)", f"{t_bare.seconds:.1f}",
         f"{float(np.mean(iter_secs)):.2f}", f"per-iteration min {min(iter_secs):.2f}"],
        ["ours fit / bare fit", f"{fit_s / t_bare.seconds:.2f}x", "", ""],
    ]  # fmt: skip
    results = {"build_matrix_s": matrix.seconds, "ours_seconds": ours.seconds,
               "bare_fit_s": t_bare.seconds, "bare_iteration_s": iter_secs}  # fmt: skip
    del ours
    gc.collect()

    if a.als_iterations:
        ratings = np.random.default_rng(a.seed + 1).integers(1, 11, matrix.matrix.nnz) / 2.0
        csr = matrix.matrix.copy()
        csr.data = ratings.astype(np.float32)
        explicit = dataclasses.replace(matrix, matrix=csr, duplicates="last")
        als = AlsWrParams(factors=a.k, reg=a.reg, iterations=a.als_iterations, seed=a.seed)
        res = retrain("explicit", explicit, als)
        als_s = res.seconds["fit"]
        rows.append([f"ours: retrain('explicit') ALS-WR fit, {a.als_iterations} it",
                     f"{als_s:.1f}", f"{als_s / a.als_iterations:.2f}", "k+1 Cholesky per row"])  # fmt: skip
        results["als_wr_fit_s"] = als_s
    C.table(
        ["step", "seconds", "seconds / iteration", "note"],
        rows,
        f"Retrain, {a.users:,} x {a.items:,}, {matrix.matrix.nnz:,} nnz, k={a.k}",
    )
    print(f"\nload average at the end: {C.load_average()}")
    C.write_json(a.json, {"machine": info, "args": vars(a), "results": results})


SHAPES = {"ml-1m": (1_000_209, 6_040, 3_706), "ml-20m": (20_000_263, 138_493, 26_744)}


def spark_vs_implicit(a: argparse.Namespace) -> None:
    """Spark ALS vs the in-process solvers at ML-1M / ML-20M shapes (module docstring)."""
    from online_als.retrain.spark_als import SparkParams, fit_spark, session
    from producers.synthetic import generate

    info = C.header("bench_retrain --spark: Spark MLlib ALS vs implicit / ALS-WR", a)
    with C.timed() as t_session:
        spark = session(a.spark_master, {"spark.driver.memory": "6g"})
    print(f"SparkSession {a.spark_master} started in {t_session.seconds:.1f} s; "
          f"{spark.version}")
    rows: list[list[str]] = []
    results: dict[str, dict[str, float]] = {}
    for shape in a.spark.split(","):
        n_events, n_users, n_items = SHAPES[shape]
        scale = a.scale if shape == "ml-20m" else 1.0
        n_events = int(n_events * scale)
        for mode in ("implicit", "explicit"):
            data = list(generate(n_events, n_users, n_items, k=16, seed=a.seed, mode=mode))
            dup = "sum" if mode == "implicit" else "last"
            weights = {"view": 1.0, "like": 4.0, "dislike": -4.0}  # model.event_weights' defaults
            matrix = build_matrix([(d.user_ids, d.item_ids, d.values if mode == "explicit" else
                                    np.vectorize(weights.get, otypes=[np.float32])(d.events))
                                   for d in data], dup)  # type: ignore[arg-type]
            del data
            gc.collect()
            params: ImplicitParams | AlsWrParams
            if mode == "implicit":
                params = ImplicitParams(factors=a.k, reg=a.reg, alpha=a.alpha,
                                        iterations=a.iterations, seed=a.seed, use_gpu=False)
                sp = SparkParams(factors=a.k, reg=a.reg, alpha=a.alpha, iterations=a.iterations,
                                 seed=a.seed, implicit=True)
                name = "implicit (CPU)"
            else:
                params = AlsWrParams(factors=a.k, reg=a.reg, iterations=a.iterations,
                                     seed=a.seed)
                sp = SparkParams(factors=a.k, reg=a.reg, iterations=a.iterations, seed=a.seed)
                name = "ALS-WR (numba)"
            ours = retrain(mode, matrix, params).seconds["fit"]
            gc.collect()
            theirs = fit_spark(matrix, sp, spark).seconds["fit"]
            gc.collect()
            it = a.iterations
            label = f"{shape}{'' if scale == 1 else f' x{scale:g}'}"
            nnz = matrix.matrix.nnz
            rows.append([label, mode, f"{nnz:,}", name, f"{ours / it:.2f}", f"{theirs / it:.2f}",
                         f"{theirs / ours:.1f}x"])
            results[f"{shape}/{mode}"] = {"nnz": nnz, "ours_fit_s": ours, "spark_fit_s": theirs}
            print(rows[-1], f"load {C.load_average()}", flush=True)
    C.table(["shape", "mode", "nnz", "in-process", "s/it in-process", f"s/it Spark {a.spark_master}",
             "Spark / in-process"], rows,
            f"Retrain fit, k={a.k}, {a.iterations} iterations, reg={a.reg}, alpha={a.alpha}")
    print(f"\nload average at the end: {C.load_average()}")
    spark.stop()
    C.write_json(a.json, {"machine": info, "args": vars(a), "results": results,
                          "spark_session_s": t_session.seconds})


if __name__ == "__main__":
    main()

"""``implicit``'s GPU retrain against its CPU path on ML-100K (marked ``gpu``).

This is the one test allowed to skip: it runs only where a CUDA device is visible, and says
so when it skips. Where a device is visible but ``implicit`` was built without CUDA, it fails
(install a CUDA build of implicit there). Both fits start from the same factors and run the
same conjugate-gradient ALS, so their factors agree to float32 solver noise; the test compares
the scores they give (per-user correlation) and the top-10 lists, and prints the speed-up.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from online_als.retrain import ImplicitParams, build_matrix, retrain
from online_als.retrain.implicit_fit import gpu_available
from online_als.serving import top_n_batch

pytestmark = pytest.mark.gpu
PARAMS = ImplicitParams(factors=64, reg=0.05, alpha=10.0, iterations=15, seed=0)


def _cuda_device_visible() -> bool:
    if Path("/dev/nvidia0").exists():
        return True
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and "GPU" in out.stdout


def test_gpu_factors_match_cpu_on_ml100k(movielens: Path) -> None:
    if not _cuda_device_visible():
        pytest.skip("no CUDA device visible (no /dev/nvidia0, nvidia-smi lists no GPU): the "
                    "GPU retrain test runs only on a machine with one")
    if not gpu_available():
        pytest.fail("a CUDA device is visible but implicit.gpu.HAS_CUDA is False: install an "
                    "implicit build with CUDA to test the GPU retrain", pytrace=False)
    from online_als.datasets import load_movielens_100k

    data = load_movielens_100k(movielens)
    pos = data.take(data.values >= 4)
    m = build_matrix([(pos.user_ids, pos.item_ids, np.ones(len(pos), np.float32))], "sum")
    n_users, n_items = m.shape
    rng = np.random.default_rng(0)
    start_u = (rng.standard_normal((n_users, PARAMS.factors)) * 0.01).astype(np.float32)
    start_i = (rng.standard_normal((n_items, PARAMS.factors)) * 0.01).astype(np.float32)
    from online_als.factors import Factors
    from online_als.retrain import WarmStart

    warm = WarmStart(Factors(None, start_u, np.zeros(n_users, np.float32)),
                     Factors(None, start_i, np.zeros(n_items, np.float32)))
    timings = {}
    res = {}
    for name, use_gpu in (("cpu", False), ("gpu", True)):
        params = dataclasses.replace(PARAMS, use_gpu=use_gpu)
        retrain("implicit", m, dataclasses.replace(params, iterations=1), warm)  # warm-up
        t0 = time.perf_counter()
        res[name] = retrain("implicit", m, params, warm)
        timings[name] = time.perf_counter() - t0
    cpu, gpu = res["cpu"], res["gpu"]
    s_cpu = cpu.users.vectors @ cpu.items.vectors.T
    s_gpu = gpu.users.vectors @ gpu.items.vectors.T
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(s_cpu, s_gpu, strict=True)])
    seen = m.matrix.tocsr()
    top_c, _ = top_n_batch(cpu.users.vectors, cpu.items.vectors, 10, exclude=seen)
    top_g, _ = top_n_batch(gpu.users.vectors, gpu.items.vectors, 10, exclude=seen)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_c, top_g, strict=True)])
    print(f"ML-100K implicit k=64 x15: CPU {timings['cpu']:.2f} s, GPU {timings['gpu']:.2f} s "
          f"(speed-up {timings['cpu'] / timings['gpu']:.1f}x); score correlation median "
          f"{np.median(corr):.4f} min {corr.min():.4f}; top-10 overlap {overlap:.3f}")
    assert np.median(corr) > 0.99 and corr.min() > 0.9, corr
    assert overlap > 0.8, overlap

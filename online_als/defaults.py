"""The one source of the model's default hyper-parameters (explicit, and implicit's alpha).

The library (:class:`online_als.online.ExplicitParams`, :meth:`OnlineModel.explicit`,
:class:`online_als.adaptive.AdaptiveParams`), ``worker.config.ModelSettings`` (hence the
worker, ``online-als evaluate`` / ``tune`` and the demo) all take their defaults from here.

**How they were chosen** (issue 13). Prequential RMSE, predict-then-learn in time order,
batches of 1,000, predictions clipped to the rating range:

- tuned on **ml-latest-small** (grids over lr, lr_bias, reg, reg_bias, acc_init, init_scale,
  k, session_lr, session_reg, session_seconds, the implicit factor's settings);
- checked on the project's synthetic drift streams (``producers.synthetic``: 20,000 users,
  5,000 items, rank 8, item factors rotating 1.5 rad over the stream, noise sd 0.3), where the
  same settings must stay below River ``BiasedMF`` in the same run;
- **never tuned on ML-100K**, which is only the verification set (``benchmarks/RESULTS.md``,
  section "Issue 13").

``LEARNING_RATE``, ``REGULARIZATION``, ``BIAS_REGULARIZATION`` and ``INIT_SCALE`` are shared by
the plain SGD kernel (what the worker runs today) and the adaptive learner; for SGD the best
ml-latest-small settings are the same values except ``reg`` 0 (0.8589 vs 0.8608 there).
"""

from __future__ import annotations

from typing import Final

#: ``"adaptive"`` (AdaGrad + session bias, :mod:`online_als.kernels.explicit_adaptive`) or
#: ``"sgd"`` (plain biased MF, :mod:`online_als.kernels.explicit_sgd`).
LEARNER: Final = "adaptive"
RANK: Final = 64
LEARNING_RATE: Final = 0.1  # SGD step; AdaGrad base step of the factors
REGULARIZATION: Final = 0.02
BIAS_REGULARIZATION: Final = 0.1
GRADIENT_CLIP: Final = 5.0
INIT_SCALE: Final = 0.03  # N(0, scale) for the vectors of new ids
GLOBAL_MEAN: Final = 3.5  # prior for the first batch; a running mean takes over
SEED: Final = 42

# Adaptive learner only.
BIAS_LEARNING_RATE: Final = 0.2  # AdaGrad base step of the biases
ACC_INIT: Final = 0.1  # initial AdaGrad sum of squared gradients (bounds the first step)
SESSION_LEARNING_RATE: Final = 0.1
SESSION_REGULARIZATION: Final = 1.0
SESSION_SECONDS: Final = 3600.0  # the session bias restarts at 0 in a new hour (0: never)
IMPLICIT: Final = False  # SVD++-style implicit factor: +0.001 RMSE on ML-100K, 2x the state
IMPLICIT_LEARNING_RATE: Final = 0.05
IMPLICIT_REGULARIZATION: Final = 0.02
IMPLICIT_INIT_SCALE: Final = 0.05

# Implicit mode (issue 13, ``benchmarks/bench_implicit_windows.py``): confidence c = alpha * |w|
# per event, in the worker's fold-in and in its retrain. 10 is the confidence of the window
# protocol's reference fit; on ml-latest-small the worker's own path scores NDCG@10 0.0629 with
# it against 0.0566 with 1 (ML-100K, the verification set: 0.1208 vs 0.1235), and the feedback
# simulation (``online-als simulate``) only learns from its answers with it.
IMPLICIT_ALPHA: Final = 10.0

# Batch size of the prequential evaluation (``online-als evaluate``) and of the benchmarks.
EVAL_BATCH: Final = 1000

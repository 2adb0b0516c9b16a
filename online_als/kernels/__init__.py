"""numba kernels (one call per micro-batch) and their plain NumPy ``*_reference`` twins.

See ``docs/kernels.md`` for each kernel's objective, update, exactness and guard.
"""

from online_als.kernels.explicit_sgd import sgd_update_batch, sgd_update_batch_reference
from online_als.kernels.guard import DENOM_MIN, GUARD_BOUND
from online_als.kernels.implicit_foldin import (
    foldin_update_batch,
    foldin_update_batch_reference,
    gram_inverse,
    gram_inverse_reference,
)
from online_als.kernels.implicit_resolve import resolve_users, resolve_users_reference
from online_als.kernels.linalg import gram

__all__ = [
    "DENOM_MIN",
    "GUARD_BOUND",
    "foldin_update_batch",
    "foldin_update_batch_reference",
    "gram",
    "gram_inverse",
    "gram_inverse_reference",
    "resolve_users",
    "resolve_users_reference",
    "sgd_update_batch",
    "sgd_update_batch_reference",
]

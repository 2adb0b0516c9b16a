"""NaN/Inf guard shared by the kernels and their NumPy twins.

An event is refused (``applied_out[j] = 0``, arrays untouched) when an input value is
non-finite or when any value it would write is non-finite or larger than ``GUARD_BOUND`` in
absolute value. The bound is far above any sane factor or bias (they live near 1) and far
below float32 overflow, so a diverging learning rate is stopped before it poisons the model.

numba's ``cache=True`` tracks only a kernel's own file: after editing this module, delete
``online_als/kernels/__pycache__/*.nb[ic]`` or cached kernels keep the old constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: Largest absolute value a kernel may write into a factor or bias.
GUARD_BOUND = 1.0e6

#: Smallest Sherman-Morrison denominator ``1 + (c - 1) q`` accepted by the fold-in: below it
#: the rank-one-updated Gram matrix is not (numerically) positive definite.
DENOM_MIN = 1.0e-6


@njit(cache=True, nogil=True)
def in_bound(v: float) -> bool:
    """True when ``v`` is finite and ``|v| <= GUARD_BOUND`` (NaN compares false)."""
    return abs(v) <= GUARD_BOUND


@njit(cache=True, nogil=True)
def rows_in_range(rows: np.ndarray, n: int) -> bool:
    """True when every row index is in ``[0, n)``.

    Kernels call it before applying anything: numba does not bounds-check indexing, so a bad
    row would otherwise corrupt memory silently.
    """
    for j in range(rows.shape[0]):
        r = rows[j]
        if r < 0 or r >= n:
            return False
    return True


def rows_in_range_reference(rows: np.ndarray, n: int) -> bool:
    """NumPy twin of :func:`rows_in_range`."""
    return not rows.size or bool(rows.min() >= 0 and rows.max() < n)


#: Events ahead whose rows the kernels prefetch (rows of big tables are random cache misses).
PREFETCH_AHEAD = 4


@intrinsic
def _prefetch_row(typingctx: Any, arr: Any, row: Any) -> Any:
    """``prefetch_row(arr, r)``: LLVM prefetch of row ``r`` of a 1-D or 2-D array.

    A hint only: it never changes a result, and needs no bounds (a prefetch cannot fault).
    """
    if not (isinstance(arr, types.Array) and arr.ndim in (1, 2)):
        return None
    if not isinstance(row, types.Integer):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        intp = context.get_value_type(types.intp)
        r = context.cast(builder, args[1], sig.args[1], types.intp)
        item = context.get_abi_sizeof(context.get_data_type(sig.args[0].dtype))
        stride = cgutils.unpack_tuple(builder, ary.strides)[0]
        row_bytes = ir.Constant(intp, item)
        if sig.args[0].ndim == 2:
            row_bytes = builder.mul(cgutils.unpack_tuple(builder, ary.shape)[1], row_bytes)
        i8p = ir.IntType(8).as_pointer()
        base = builder.gep(builder.bitcast(ary.data, i8p), [builder.mul(r, stride)])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        line = ir.Constant(intp, 64)
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), row_bytes, line, intp) as (
            off,
            _,
        ):
            # read (0), keep in all cache levels (3), data cache (1)
            builder.call(fn, [builder.gep(base, [off]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, row), codegen


# Typed as Any: numba's intrinsic wrapper hides the (arr, row) call signature from mypy.
prefetch_row: Any = _prefetch_row

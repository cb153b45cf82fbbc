"""Test configuration: float64 available, strict dtype promotion, no implicit rank promotion.

Strict promotion makes a silent upcast inside the library (bfloat16 * float32, int32 == int64) an
error, and rank promotion "raise" makes accidental broadcasting between different ranks an error;
the library broadcasts explicitly.
"""

import jax
import numpy as np
import pytest

from mlnll._src.verify.tolerances import TOLERANCES

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

# Relative tolerances keyed by dtype, for comparisons against an oracle computed in float64
# (scipy, mpmath, or autodiff of the plain formula in float64): the "value" column of the one
# tolerance table, mlnll._src.verify.tolerances (its docstring says how the entries are set).
RTOL = {dtype: tol.value for dtype, tol in TOLERANCES.items()}


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=[False, True], ids=["eager", "jit"])
def use_jit(request):
    return request.param

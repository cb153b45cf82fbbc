"""Test configuration: float64 available, strict dtype promotion, no implicit rank promotion, and
compilation kept cheap.

Strict promotion makes a silent upcast inside the library (bfloat16 * float32, int32 == int64) an
error, and rank promotion "raise" makes accidental broadcasting between different ranks an error;
the library broadcasts explicitly.

Most of the suite's time is XLA compiling small programs, so by default the tests (and the notebook
kernels they start, which inherit the environment) compile at XLA backend optimisation level 0,
as ``python -m mlnll check`` does: the HLO passes (fusion, algebraic simplification) still run,
only LLVM's code generation is not optimised. ``MLNLL_TEST_XLA_OPT=default`` runs the suite at the
level users get. And the test processes share one persistent compilation cache, a fresh directory
made for this run and deleted after it (never reused between runs, so a clean machine and this one
compile the same programs). jax writes an entry without a lock (its locking comes with eviction,
which rescans the directory on every write and made the suite slower than no cache), so a worker may
read an entry another is still writing: that read fails to decompress, jax warns and compiles
instead (pyproject's filterwarnings lets that one warning through).
"""

import os
import shutil
import tempfile

if os.environ.get("MLNLL_TEST_XLA_OPT", "O0") != "default" and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# Made once by the process that starts the run (xdist's controller, or pytest without xdist); its
# workers and the notebook kernels inherit the variables and so share the directory.
if "MLNLL_TEST_COMPILATION_CACHE" not in os.environ:
    os.environ["MLNLL_TEST_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="mlnll-test-jax-cache-")
    _CACHE_OWNER = True
else:
    _CACHE_OWNER = False
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["MLNLL_TEST_COMPILATION_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

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


def pytest_unconfigure(config):
    if _CACHE_OWNER and "PYTEST_XDIST_WORKER" not in os.environ:
        shutil.rmtree(os.environ["MLNLL_TEST_COMPILATION_CACHE"], ignore_errors=True)

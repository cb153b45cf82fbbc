"""The one table of tolerances, keyed by dtype, that the check command and the tests share.

How a tolerance is set: a stable formula evaluated in a dtype is wrong by a few rounding errors of
that dtype (eps = ``finfo(dtype).eps``) times the condition number of the quantity, i.e. how far
the exact value moves when each input moves by one relative ulp. The table's entries are eps times
the number of ulps such a comparison may honestly lose when the quantity is well conditioned
(condition number of order 1); a test of an ill-conditioned quantity (a log-CDF far in a tail, a
score component that crosses zero) multiplies by its condition number, computed from the inputs,
or judges the error against the natural scale of the quantity (``check_grad`` uses ``sqrt(F_ii)``,
the standard deviation of a score component), and never by a loosened constant.

Two columns:

* ``value``: one computation in the dtype against an oracle in float64 or mpmath (scipy,
  mpmath, autodiff of the plain formula in float64). float32: 2e-6, 17 ulps. float64: 1e-12,
  ~4500 ulps, because the float64 oracles themselves (scipy's special functions, autodiff of a
  formula that cancels) are trusted to about 1e-13, not to an ulp.
* ``grad``: two computations in the same dtype against each other (a closed form and ``jax.grad``
  of a stable formula): each carries its own rounding, and a gradient component is a difference
  of terms of the size of its natural scale, so float32 allows 84 ulps (1e-5); float64 1e-12.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    value: float
    grad: float


TOLERANCES = {
    np.dtype(jnp.float64): Tolerance(value=1e-12, grad=1e-12),
    np.dtype(jnp.float32): Tolerance(value=2e-6, grad=1e-5),
    np.dtype(jnp.float16): Tolerance(value=4 * float(np.finfo(np.float16).eps), grad=4e-3),
    np.dtype(jnp.bfloat16): Tolerance(value=4 * float(jnp.finfo(jnp.bfloat16).eps), grad=2e-2),
}

# Finite differences are approximations: fourth-order central differences with step 1e-3 along
# random directions, ~1e-12 truncation and ~1e-13 rounding of the summed loss in float64, judged
# with room for sums of many examples.
FD_RTOL = 1e-7


def value_rtol(dtype) -> float:
    """The ``value`` tolerance of ``dtype`` (see the module docstring)."""
    return TOLERANCES[np.dtype(dtype)].value


def grad_rtol(dtype) -> float:
    """The ``grad`` tolerance of ``dtype`` (see the module docstring)."""
    return TOLERANCES[np.dtype(dtype)].grad

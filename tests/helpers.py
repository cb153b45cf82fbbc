"""Small helpers the test files share (one place, not one copy per file)."""

import functools

import jax
import numpy as np


def f64(x) -> np.ndarray:
    """``x`` as a float64 numpy array (for comparisons against oracles)."""
    return np.asarray(x, np.float64)


@functools.lru_cache(maxsize=None)
def jitted(family, method: str):
    """``jax.jit(family.<method>)``, compiled once per family and shape across the suite
    (``sample``'s ``sample_shape`` is static: it sets the shape of the draws)."""
    static = ("sample_shape",) if method == "sample" else ()
    return jax.jit(getattr(family, method), static_argnames=static)


def maybe_jit(f, use_jit: bool):
    """``jax.jit(f)`` or ``f``: the jit / no-jit parameter of a test."""
    return jax.jit(f) if use_jit else f


@functools.lru_cache(maxsize=None)
def _jitted_expected_hessian():
    from mlnll._src.verify.check_grad import expected_hessian

    return jax.jit(expected_hessian, static_argnums=(0, 2))


def expected_hessian(family, outputs, rule: str = "expectation_nodes"):
    """``check_grad.expected_hessian`` compiled (once per family, rule and shape): the suite's
    quadrature oracle for Fisher information, which op by op costs a compile per operation."""
    return _jitted_expected_hessian()(family, outputs, rule)

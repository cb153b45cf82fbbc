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


def fused_tolerances():
    """``(value rtol, gradient rel-L2 rtol)`` by dtype for the fused vocabulary functions against a
    float64 materialised oracle: the one table's "grad" column (float32 84 ulps: a float32 matmul and
    sums over V classes round the logits, the value and every gradient entry; float64 1e-12);
    bfloat16 inputs are computed in float32, so their per-row float32 values meet 1e-4, and the
    returned bfloat16 gradients are the float32 ones rounded once (5e-3)."""
    import jax.numpy as jnp

    from mlnll._src.verify.tolerances import TOLERANCES

    value = {np.dtype(d): TOLERANCES[np.dtype(d)].grad for d in ("float32", "float64")}
    value[np.dtype(jnp.bfloat16)] = 1e-4
    grad = dict(value)
    grad[np.dtype(jnp.bfloat16)] = 5e-3
    return value, grad


def rel(got, want) -> np.ndarray:
    """Elementwise relative error, in float64."""
    got, want = f64(got), f64(want)
    return np.abs(got - want) / np.abs(want)


def rel_l2(got, want) -> float:
    """Relative L2 error ``|got - want| / |want|``, in float64."""
    got, want = f64(got), f64(want)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def softmax_conditions(logits, labels, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the condition numbers of ``-log p_y`` and of the entropy ``H`` of
    ``softmax(logits / t)`` when each ``u_c = (logits_c - max) / t`` carries one relative rounding:
    ``sum_c |d f / d u_c| |u_c| / |f|``, at least 1 (``d(-log p_y)/du_c = p_c - [c = y]``,
    ``dH/du_c = -p_c (log p_c + H)``). A confident row's ``exp(u)`` of ``u = -54`` turns the 6e-8 of
    ``u`` into 3e-6 of the small value: whatever computes it from the differences, in float32."""
    z = f64(logits) / temperature
    u = z - np.max(z, axis=1, keepdims=True)
    first_max = np.arange(z.shape[1])[None, :] == np.argmax(z, axis=1)[:, None]
    log_total = np.log1p(np.sum(np.where(first_max, 0.0, np.exp(u)), axis=1))  # log S for S near 1 too
    log_p = u - log_total[:, None]
    p = np.exp(log_p)
    entropy = log_total - np.sum(np.exp(u) * u, axis=1) / np.exp(log_total)  # two terms >= 0
    onehot = np.arange(z.shape[1])[None, :] == np.asarray(labels)[:, None]
    nll = log_total - np.sum(np.where(onehot, u, 0.0), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond_nll = np.sum(np.abs(p - onehot) * np.abs(u), axis=1) / nll
        cond_entropy = np.sum(p * np.abs(log_p + entropy[:, None]) * np.abs(u), axis=1) / entropy
    return np.maximum(np.nan_to_num(cond_nll, nan=1.0), 1.0), np.maximum(np.nan_to_num(cond_entropy, nan=1.0), 1.0)

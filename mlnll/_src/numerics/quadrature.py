"""Quadrature rules as arrays that broadcast over a batch (for the families' ``expectation_nodes``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

def batch_nodes(values: np.ndarray, like: jax.Array) -> jax.Array:
    """A 1-D numpy rule as ``[K, 1, ..., 1]`` in ``like``'s dtype and rank, to broadcast over a batch."""
    return jnp.asarray(values, like.dtype).reshape((-1,) + (1,) * like.ndim)


def trapezoid_grid(half_width: float, step: float) -> np.ndarray:
    """The points ``k * step`` for ``|k * step| <= half_width``: a trapezoid rule on the real line.

    For a function analytic in the strip |Im t| < d and decaying fast, the trapezoid rule's error
    is O(exp(-2 pi d / step)), so a modest step gives float64 accuracy.
    """
    k = int(math.floor(half_width / step))
    return np.arange(-k, k + 1, dtype=np.float64) * step


def gauss_legendre_panel(rule: tuple[np.ndarray, np.ndarray], lo: jax.Array, hi: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nodes ``[K, *batch]`` and log-weights of the Gauss-Legendre ``rule`` (``leggauss(K)``) on
    ``[lo, hi]``, per example; an empty panel (``hi == lo``) gets log-weights of ``-inf``."""
    nodes, weights = (batch_nodes(r, lo) for r in rule)
    half = 0.5 * (hi - lo)[None]
    empty = half <= 0
    log_w = jnp.where(empty, -jnp.inf, jnp.log(jnp.where(empty, jnp.ones_like(half), half)) + jnp.log(weights))
    return lo[None] + half * (1 + nodes), log_w


def log_integral_and_mean(log_terms: jax.Array, nodes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log sum_k e^{t_k}, sum_k softmax(t)_k s_k)`` over the leading axis: the log of a rule's
    integral of ``e^t`` and the mean of the node ``s`` under it (the max subtracted first)."""
    top = jax.lax.stop_gradient(jnp.max(log_terms, axis=0))
    e = jnp.exp(log_terms - top[None])
    total = jnp.sum(e, axis=0)
    return top + jnp.log(total), jnp.sum(e * nodes, axis=0) / total

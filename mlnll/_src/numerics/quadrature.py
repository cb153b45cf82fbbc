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


def quadratic_root(fall, curvature, drop: float):
    """The root of ``-fall r - curvature r^2 / 2 = -drop``: where a kernel falling at rate ``fall``
    with ``curvature`` would reach ``-drop`` if it stayed quadratic."""
    return 2 * drop / (fall + jnp.sqrt(fall * fall + 2 * curvature * drop))


def newton_cut(kernel, slope, start, drop: float, steps: int = 6):
    """The point where the concave ``kernel`` (0 at its peak, before ``start``) has fallen to
    ``-drop``: Newton on ``kernel + drop`` from ``start``. Newton on a concave function steps past
    the root at most once (its tangent lies above it) and then falls back to it monotonically: an
    upper bound after each step."""
    s = start
    for _ in range(steps):
        s = s - (kernel(s) + drop) / slope(s)
    return s


def tail_cut_depth(dtype) -> float:
    """How far below its peak (in log) a log-concave tail integrand is cut: e^-40 in float64,
    e^-20 in float32, below the dtype's rounding of the integral (it falls at least that fast after)."""
    return 40.0 if np.dtype(dtype) == np.float64 else 20.0


def geometric_panels(rule: tuple[np.ndarray, np.ndarray], cut: jax.Array, count: int, ratio: float = 3.0) -> tuple[jax.Array, jax.Array]:
    """Gauss-Legendre panels ``[0, cut r^-(count-1)], ..., [cut / r, cut]`` (r = ``ratio``): nodes and
    log-weights ``[count K, *batch]``. Each panel ``[c, r c]`` sees a singularity of the integrand
    near 0 (or at a distance of the order of w from the panel at w) no closer than its own length,
    so the rule converges geometrically on every panel whatever the cut's size."""
    edges = [jnp.zeros_like(cut)] + [cut * ratio ** -(count - 1 - k) for k in range(count)]
    panels = [gauss_legendre_panel(rule, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    return jnp.concatenate([nodes for nodes, _ in panels]), jnp.concatenate([log_w for _, log_w in panels])

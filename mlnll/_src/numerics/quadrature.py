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

"""Random inputs for check cases (``Case.random``) that compile small and that a dtype can resolve.

The check command compiles every row's ``random`` into the row's program, so its size counts:

* ``uniform_rows`` draws every uniform a case needs in one call (each ``jax.random`` call and
  split adds about 0.1 s of compile time), and ``standard_normal`` turns uniforms into normals
  by the inverse CDF;
* ``well_conditioned`` picks, per example, one of ``CANDIDATES`` target draws whose gradient the
  checked dtype can resolve, by one ``jax.vmap`` over candidates and perturbations (a single copy
  of the gradient in the program, however many candidates).

Why the choice: every score crosses 0, and a gradient component that cancels to 1e-3 of its
terms carries ~1e3 ulp of rounding in any formula, closed or autodiff, more than the check's
elementwise tolerance. A family with ``fisher`` and ``expectation_nodes`` needs no choice: the
check judges each component against the larger of its size and its natural scale sqrt(F_ii),
so its cases keep every draw; without an expectation rule (Dirichlet) the check has no Fisher
information at hand and judges components by their own size, and the choice keeps it fair. A component counts as resolvable in a dtype when moving the outputs by
``DELTA`` and the targets by a relative ``DELTA`` changes it by at most ``KAPPA[dtype] DELTA``
of its size: rounding (of exp(log_a), log y, y - loc, ...) then shifts it by about KAPPA eps, a
fraction of the check's tolerance (1e-5 in float32, 1e-12 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

F64 = jnp.float64
DELTA = 1e-7
KAPPA = {np.dtype(jnp.float32): 20.0, np.dtype(jnp.float64): 1500.0}
CANDIDATES = 8
# The perturbations, one sign per output leaf (up to three) and for the targets (the second
# entry): none (the reference), all up, the targets and second leaf down, the first and third down.
_SIGNS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1.0, -1.0, 1.0), (-1.0, 1.0, -1.0))


def uniform_rows(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Float64 uniforms of ``shape`` in the open interval (0, 1), from one ``jax.random`` call.

    ``minval = 2^-54``: ``jax.random.uniform`` returns multiples of 2^-52 in [0, 1), shifted off 0
    so that ``log(u)`` and ``standard_normal(u)`` are finite.
    """
    return jax.random.uniform(key, shape, F64, minval=2.0**-54, maxval=1.0)


def standard_normal(u: jax.Array) -> jax.Array:
    """The standard normal inverse CDF ``sqrt(2) erfinv(2u - 1)`` of uniforms ``u`` in (0, 1)."""
    return math.sqrt(2.0) * jax.lax.erf_inv(2 * u - 1)


def box_muller(u: jax.Array) -> jax.Array:
    """Standard normals from uniforms ``u`` in (0, 1), one per uniform (the last axis even in length).

    The first half ``a`` and second half ``b`` of the last axis pair up: ``sqrt(-2 log a)`` times
    ``cos(2 pi b)`` and ``sin(2 pi b)`` (Box-Muller). A log, a square root, a cosine and a sine where
    ``standard_normal`` evaluates float64 ``erf_inv``, a long piecewise polynomial that XLA copies
    into every fusion that reads the draws: a check row whose outputs come from one such draw
    compiles in about half the time (MultivariateNormal: 1.5 s -> 0.8 s in float64).
    """
    half = u.shape[-1] // 2
    radius = jnp.sqrt(-2 * jnp.log(u[..., :half]))
    angle = (2 * math.pi) * u[..., half:2 * half]
    return jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=-1)


def relative_move(y: jax.Array, sign: jax.Array) -> jax.Array:
    """Positive or angular targets moved by a relative ``DELTA`` (towards 0 where ``sign`` < 0)."""
    return y * (1 + sign * DELTA)


def positive(y: jax.Array, dtype) -> jax.Array:
    """``y`` rounded to ``dtype``, raised to its smallest normal number if it rounded to 0."""
    y = jnp.asarray(y, F64).astype(dtype)
    return jnp.maximum(y, jnp.asarray(np.finfo(dtype).tiny, dtype))


def well_conditioned(gradient: Callable, outputs, draws: jax.Array, dtype,
                     move_targets: Callable[[jax.Array, jax.Array], jax.Array] = relative_move) -> jax.Array:
    """One target per example: the first of the candidate ``draws`` ([C, n, ...], float64) whose
    gradient is resolvable in ``dtype``; an example with none keeps its first draw.

    ``gradient(outputs, targets)`` is the score in float64, as a tree of arrays [n, ...]: the
    family's ``grad``, or (a fraction of the compile time) ``jax.grad`` of the textbook formula,
    since how much a score moves under a perturbation is a property of the score, not of the
    formula that evaluates it (float64 resolves it far below the 1e-4 relative change that
    counts). Each draw is scored by the relative change of every gradient component under three
    perturbations of the outputs (float64, full batch shape [n, ...]; by DELTA, with the signs of
    ``_SIGNS``) and of the targets (``move_targets(y, sign)``), against the unperturbed gradient.
    """
    n = draws.shape[1]
    leaves, tree = jax.tree.flatten(outputs)
    signs = jnp.asarray(_SIGNS, F64)

    def perturbed(y, s):
        moved = jax.tree.unflatten(tree, [x + s[i] * DELTA for i, x in enumerate(leaves)])
        y = jnp.where(s[1] == 0, y, move_targets(y, s[1]))  # the reference sees the draw itself
        return [g.reshape(n, -1) for g in jax.tree.leaves(gradient(moved, y))]

    # leaves [C, 4, n, m]: candidates x perturbations x examples x gradient components.
    grads = jax.vmap(lambda y: jax.vmap(lambda s: perturbed(y, s))(signs))(draws)
    worse = jnp.zeros(draws.shape[:2], bool)
    for g in grads:
        before, after = g[:, :1], g[:, 1:]
        change = jnp.abs(after - before) > KAPPA[np.dtype(dtype)] * DELTA * jnp.abs(before)
        worse = worse | jnp.any(change, axis=(1, 3))
    first = jnp.argmax(~worse, axis=0)  # 0 when every draw is ill-conditioned
    return jnp.take_along_axis(draws, first.reshape((1, n) + (1,) * (draws.ndim - 2)), axis=0)[0]

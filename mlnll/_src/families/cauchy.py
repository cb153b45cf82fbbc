"""Cauchy: a real target given a location and a log-scale. A heavy-tailed, outlier-robust loss."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics
from mlnll._src.closed_form import closed_form
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.types import CauchyOutputArrays, CauchyOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE
_LOG_PI = math.log(math.pi)
_LOG_4PI = math.log(4 * math.pi)
# Midpoint rule in theta after the CDF substitution r = tan(theta), theta uniform on (-pi/2, pi/2):
# with K points it integrates exp(2 i m theta) exactly for 0 < |m| < K, hence every trigonometric
# polynomial of degree < 2K in theta. The Hessian entries of the NLL are of degree <= 4.
_K = 8
_THETA = math.pi * ((np.arange(_K) + 0.5) / _K - 0.5)


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -log(1 + r^2) - log_scale - log pi``, ``r = (y - loc) / s``, and its partials.

    ``d log p / d loc = 2 r / ((1 + r^2) s)``, ``d log p / d log_scale = (r^2 - 1) / (1 + r^2)`` and
    ``d log p / d y = -2 r / ((1 + r^2) s)`` (the class docstring), from ``one_plus_square``: one
    ``log1p`` and one division, no overflow of r^2, ``r^2 - 1`` factored near |r| = 1.
    """
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    q = ls_.one_plus_square(r, far=(y, loc, -log_scale))  # log|r| from y - loc where r overflows
    d_loc = 2 * q.odd_over_scale(inv_scale, 1.0, y - loc)
    return ls_.with_terms(-q.log, log_scale, _LOG_PI, keep), (d_loc, q.square_minus_one_over(jnp.abs(r)), -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
cauchy_log_pdf = closed_form(_value_and_partials, num_static=1)


@dataclasses.dataclass(frozen=True)
class Cauchy(_tails.SymmetricTails, ls_.FixedScaleUnpacking):
    r"""Cauchy distribution of a real target.

    outputs: ``(loc, log_scale)``; with ``Cauchy(scale=s)`` the scale is fixed and outputs is
    ``loc`` alone. targets: reals, broadcastable with the outputs.

    Density, with ``s = exp(log_scale)`` and ``r = (y - loc) / s``:
    ``log p(y) = -log(1 + r^2) - log_scale - log pi``. Its NLL grows like ``2 log|y - loc|``, so an
    outlier's pull on loc, ``2 r / (1 + r^2) / s``, fades instead of growing (the Lorentzian loss).
    The Cauchy distribution has no mean: ``mean`` returns NaN.

    Gradient. ``dr/dloc = -1/s``, ``dr/dlog_scale = -r`` and ``d log(1 + r^2)/dr = 2r / (1 + r^2)``:
    ``d(-log p)/dloc = -2 r / ((1 + r^2) s)`` and
    ``d(-log p)/dlog_scale = 1 - 2 r^2 / (1 + r^2) = (1 - r^2) / (1 + r^2)``.
    Beyond ``|r| = 2^60`` the ratios are evaluated as ``1 / r`` and ``1`` (to 2^-120), so a target 1e30
    scales away gives finite, correct gradients even in float32; ``1 - r^2`` is taken as
    ``(1 - |r|)(1 + |r|)``, which keeps its relative accuracy near ``|r| = 1``. ``jax.grad`` (and
    ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form; the targets are
    differentiable too (``d log p/dy = -2 r / ((1 + r^2) s)``).

    Fisher information in ``(loc, log_scale)``: with ``r = tan(theta)``, theta uniform,
    ``E[4 r^2 / (1 + r^2)^2] = E[sin^2(2 theta)] = 1/2`` and
    ``E[(1 - r^2)^2 / (1 + r^2)^2] = E[cos^2(2 theta)] = 1/2``; the cross term is odd. So
    ``diag(1 / (2 s^2), 1/2)``; with the scale fixed, ``1 / (2 s^2)``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> float(mlnll.Cauchy().log_prob((jnp.array(0.0), jnp.array(0.0)), jnp.array(1.0)))  # -log(2 pi)
      -1.837877...
    """

    _standard_tail = _tails.CAUCHY  # log_cdf and log_survival (_tails.SymmetricTails)

    scale: float | None = None

    # -- unpacking: ls_.FixedScaleUnpacking (validation, name, fixed outputs, _unpack, _unpack_with)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: CauchyOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log Cauchy(y; loc, s)``, equal to scipy.stats.cauchy.logpdf."""
        return self._real_log_prob(cauchy_log_pdf, outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: CauchyOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-log(1 + r^2) - log_scale`` (what
        ``drop_constants=True`` uses)."""
        return self._real_log_prob(cauchy_log_pdf, outputs, targets, ls_.without_constants(self.scale))

    def grad(self, outputs: CauchyOutputs, targets: ArrayLike) -> CauchyOutputArrays:
        """Closed form ``(-2 r / ((1 + r^2) s), (1 - r^2) / (1 + r^2))``; loc's alone for a fixed scale."""
        return self._real_grad(_value_and_partials, outputs, targets)

    def params(self, outputs: CauchyOutputs) -> dict[str, jax.Array]:
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: CauchyOutputs) -> jax.Array:
        """NaN everywhere: E|y| is infinite, so the Cauchy distribution has no mean (loc is its median)."""
        p = self._unpack(outputs)
        return jnp.full(p.batch_shape, jnp.nan, p.dtype)

    def sample(self, key: jax.Array, outputs: CauchyOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + s * e`` with e standard Cauchy, shape ``sample_shape + batch``."""
        return self._shifted_and_scaled_sample(jax.random.cauchy, key, outputs, sample_shape)

    def entropy(self, outputs: CauchyOutputs) -> jax.Array:
        """``log(4 pi) + log_scale``."""
        p = self._unpack(outputs)
        return (p.log_scale + _LOG_4PI).astype(p.dtype)

    def kl(self, outputs_p: CauchyOutputs, outputs_q: CauchyOutputs) -> jax.Array:
        """KL(p || q) in a form that stays accurate when p and q are close.

        ``KL = log(((s_p + s_q)^2 + (mu_p - mu_q)^2) / (4 s_p s_q))``, and
        ``(s_p + s_q)^2 = 4 s_p s_q + (s_p - s_q)^2`` with ``(s_p - s_q)^2 / (4 s_p s_q) = sinh^2(d/2)``
        (``d = log s_p - log s_q``), so ``KL = log(1 + sinh(d/2)^2 + B^2)`` with
        ``B = |mu_p - mu_q| / (2 sqrt(s_p s_q))``: a ``log1p`` of a sum of squares, no cancellation
        (KL = 2.5e-15 at d = 1e-7), and scaled so that the squares cannot overflow.
        """
        p, q, dtype = ls_.kl_pair("Cauchy", self._unpack(outputs_p), self._unpack(outputs_q))
        a = jnp.sinh((p.log_scale - q.log_scale) / 2)
        b = 0.5 * (p.loc - q.loc) * jnp.exp(-(p.log_scale + q.log_scale) / 2)
        return numerics.log_hypot1(a, b).astype(dtype)

    def fisher(self, outputs: CauchyOutputs) -> jax.Array:
        """``diag(1 / (2 s^2), 1/2)`` per example (shape [..., 2, 2]); ``1 / (2 s^2)`` with a fixed scale."""
        p = self._unpack(outputs)
        entries = {("loc", "loc"): 0.5 * jnp.exp(-2 * p.log_scale),
                   ("log_scale", "log_scale"): jnp.full_like(p.log_scale, 0.5)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log pi``, and ``-log(scale)`` if fixed."""
        const = -_LOG_PI - (math.log(self.scale) if self.scale is not None else 0.0)
        return ls_.constant_like(targets, const, family=self._name)

    def expectation_nodes(self, outputs: CauchyOutputs) -> tuple[jax.Array, jax.Array]:
        """Nodes ``loc + s tan(theta_k)`` at the 8 midpoints theta_k of (-pi/2, pi/2), weights 1/8.

        The CDF substitution ``y = loc + s tan(theta)`` makes theta uniform; the midpoint rule is
        exact for trigonometric polynomials of degree < 16 in theta, and every entry of the Hessian
        of the NLL is one of degree <= 4 (e.g. ``4 r^2 / (1 + r^2)^2 = sin^2(2 theta)``).
        """
        p = self._unpack(outputs)
        nodes = p.loc[None] + jnp.exp(p.log_scale)[None] * numerics.batch_nodes(np.tan(_THETA), p.loc)
        return nodes, jnp.full(nodes.shape, 1.0 / _K, p.loc.dtype)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: log-scales of ±80, targets 1e30 away (r^2 overflows float32)."""
        return (
            Case("Cauchy", cls(), _random, ls_.extreme_inputs,
                 scipy=ScipyReference(_scipy_cauchy), plain_log_prob=_plain_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-log(pi) - log(s) - log(1 + ((y - loc) / s)^2)``: the textbook formula."""
    loc, log_scale = outputs
    return -jnp.log(jnp.pi) - log_scale - jnp.log(1 + ((y - loc) / jnp.exp(log_scale)) ** 2)


def _scipy_cauchy(outputs):
    import scipy.stats

    loc, log_scale = outputs
    return scipy.stats.cauchy(loc, np.exp(log_scale))


# The inverse CDF of the standard Cauchy: tan(pi (u - 1/2)).
_random = ls_.random_inputs(lambda u: jnp.tan(math.pi * (u - 0.5)))

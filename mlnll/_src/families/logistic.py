"""Logistic: a real target given a location and a log-scale. Between squared and absolute error."""

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
from mlnll._src.types import LogisticOutputArrays, LogisticOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE
_LOG_4 = math.log(4.0)
_PI2 = math.pi**2
# Trapezoid rule in r = (y - loc) / s on [-50, 50] with step 1/3. The density sech^2(r/2) / 4 and
# the Hessian entries (tanh(r/2), r, r^2 times sech^2(r/2)) are analytic in the strip |Im r| < pi,
# so the error is ~exp(-2 pi (pi - 1/2) / (1/3)) ~ 1e-21 relative; the tails beyond |r| = 50
# weigh e^-50 r^2 < 1e-18.
_R = numerics.trapezoid_grid(50.0, 1.0 / 3.0)


def _log_density(r: np.ndarray) -> np.ndarray:
    """log of the standard logistic density, ``-|r| - 2 log1p(e^-|r|)``, in numpy."""
    a = np.abs(r)
    return -a - 2 * np.log1p(np.exp(-a))


_W = np.exp(_log_density(_R))
_W = _W / _W.sum()


# Beyond |r| = 150, log cosh(r/2) = |r|/2 - log 2 to e^-150: the formula below runs on |r| clamped there.
_CLAMP = 150.0


def _log_cosh_half(a: jax.Array) -> jax.Array:
    """``log cosh(a/2)`` for ``a = |r| >= 0``, to full relative accuracy (a tiny loss stays accurate).

    ``log cosh(a/2) = log1p(2 sinh^2(a/4))`` and ``2 sinh^2(a/4) = h^2 / (2 e)`` with
    ``h = e^(-a/2) - 1`` (``expm1``, exact at small a) and ``e = e^(-a/2)`` (``exp``, exact at large
    a): no cancellation anywhere, and no ``where``. Beyond a = 150 it continues as ``a/2 - log 2``
    from the value there (``e`` would underflow float32 near a = 175).
    """
    ac = jnp.minimum(a, _CLAMP)
    h = jnp.expm1(-0.5 * ac)
    e = jnp.exp(-0.5 * ac)
    return jnp.log1p(h * h / (2 * e)) + 0.5 * jnp.maximum(a - _CLAMP, 0.0)


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -2 log cosh(r/2) - log 4 - log_scale``, ``r = (y - loc) / s``, and its partials.

    The partials (the class docstring) are ``d log p / d loc = tanh(r/2) / s``,
    ``d log p / d log_scale = r tanh(r/2) - 1`` and ``d log p / d y = -tanh(r/2) / s``; ``tanh``
    keeps its relative accuracy at tiny r.
    """
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    t = jnp.tanh(0.5 * r)
    d_loc = t * inv_scale
    value = ls_.with_terms(-2 * _log_cosh_half(jnp.abs(r)), log_scale, _LOG_4, keep)
    return value, (d_loc, r * t - 1, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
logistic_log_pdf = closed_form(_value_and_partials, num_static=1)


@dataclasses.dataclass(frozen=True)
class Logistic(_tails.SymmetricTails, ls_.FixedScaleUnpacking):
    r"""Logistic distribution of a real target.

    outputs: ``(loc, log_scale)``; with ``Logistic(scale=s)`` the scale is fixed and outputs is
    ``loc`` alone. targets: reals, broadcastable with the outputs.

    Density, with ``s = exp(log_scale)`` and ``r = (y - loc) / s``:
    ``p(y) = sigmoid(r) sigmoid(-r) / s = 1 / (4 s cosh^2(r/2))``, so
    ``log p(y) = -2 log cosh(r/2) - log 4 - log_scale``. The NLL is quadratic near the location and
    linear (``|r|``) in the tails: between squared and absolute error, and smooth everywhere.

    Gradient. ``d log cosh(u)/du = tanh(u)``, ``dr/dloc = -1/s`` and ``dr/dlog_scale = -r``:
    ``d(-log p)/dloc = -tanh(r/2) / s`` and ``d(-log p)/dlog_scale = 1 - r tanh(r/2)``.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form, whose
    ``tanh`` keeps its relative accuracy at tiny r (``sigmoid(-r) - sigmoid(r)`` would not); the
    targets are differentiable too (``d log p/dy = -tanh(r/2) / s``).

    Fisher information in ``(loc, log_scale)``: under the logistic, ``E[tanh^2(r/2)] = 1/3`` and
    ``E[(1 - r tanh(r/2))^2] = (pi^2 + 3) / 9``; the cross term is odd. So
    ``diag(1 / (3 s^2), (pi^2 + 3) / 9)``; with the scale fixed, ``1 / (3 s^2)``.
    The Kullback-Leibler divergence between two logistics has no closed form: ``kl`` raises.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> float(mlnll.Logistic().log_prob((jnp.array(0.0), jnp.array(0.0)), jnp.array(0.0)))  # -log 4
      -1.386294...
    """

    _standard_tail = _tails.LOGISTIC  # log_cdf and log_survival (_tails.SymmetricTails)

    scale: float | None = None

    # -- unpacking: ls_.FixedScaleUnpacking (validation, name, fixed outputs, _unpack, _unpack_with)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LogisticOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log Logistic(y; loc, s)``, equal to scipy.stats.logistic.logpdf."""
        return self._real_log_prob(logistic_log_pdf, outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: LogisticOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-2 log cosh(r/2) - log_scale`` (what
        ``drop_constants=True`` uses)."""
        return self._real_log_prob(logistic_log_pdf, outputs, targets, ls_.without_constants(self.scale))

    def grad(self, outputs: LogisticOutputs, targets: ArrayLike) -> LogisticOutputArrays:
        """Closed form ``(-tanh(r/2) / s, 1 - r tanh(r/2))``; loc's alone if the scale is fixed."""
        return self._real_grad(_value_and_partials, outputs, targets)

    def params(self, outputs: LogisticOutputs) -> dict[str, jax.Array]:
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: LogisticOutputs) -> jax.Array:
        p = self._unpack(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LogisticOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + s * e`` with e standard logistic, shape ``sample_shape + batch``."""
        return self._shifted_and_scaled_sample(jax.random.logistic, key, outputs, sample_shape)

    def entropy(self, outputs: LogisticOutputs) -> jax.Array:
        """``log_scale + 2``."""
        p = self._unpack(outputs)
        return (p.log_scale + 2).astype(p.dtype)

    def kl(self, outputs_p: LogisticOutputs, outputs_q: LogisticOutputs) -> jax.Array:
        """Not available: the KL divergence between two logistic distributions has no closed form."""
        raise NotImplementedError(
            f"{self._name}.kl: the KL divergence between two logistic distributions has no closed form; "
            "estimate it by Monte Carlo, e.g. mean(log_prob(p, y) - log_prob(q, y)) over y = sample(key, p)."
        )

    def fisher(self, outputs: LogisticOutputs) -> jax.Array:
        """``diag(1 / (3 s^2), (pi^2 + 3) / 9)`` per example ([..., 2, 2]); ``1 / (3 s^2)`` for a fixed scale."""
        p = self._unpack(outputs)
        entries = {("loc", "loc"): jnp.exp(-2 * p.log_scale) / 3,
                   ("log_scale", "log_scale"): jnp.full_like(p.log_scale, (_PI2 + 3) / 9)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log 4``, and ``-log(scale)`` if fixed."""
        const = -_LOG_4 - (math.log(self.scale) if self.scale is not None else 0.0)
        return ls_.constant_like(targets, const, family=self._name)

    def expectation_nodes(self, outputs: LogisticOutputs) -> tuple[jax.Array, jax.Array]:
        """Trapezoid rule in ``r = (y - loc) / s``: ``r_k = k/3`` for ``|r_k| <= 50``, ``[301, *batch]``.

        Weights are the logistic density at the nodes, normalised to sum to 1. Every integrand
        here is analytic in the strip ``|Im r| < pi``, where the trapezoid rule converges
        geometrically: the expected Hessian comes out to ~1e-16 relative.
        """
        p = self._unpack(outputs)
        nodes = p.loc[None] + jnp.exp(p.log_scale)[None] * numerics.batch_nodes(_R, p.loc)
        return nodes, jnp.broadcast_to(numerics.batch_nodes(_W, p.loc), nodes.shape)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: log-scales of ±80, targets 1e30 away from the location."""
        return (
            Case("Logistic", cls(), _random, ls_.extreme_inputs,
                 scipy=ScipyReference(_scipy_logistic), plain_log_prob=_plain_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-r - log(s) - 2 log(1 + exp(-r))``, ``r = (y - loc) / s``: the textbook formula."""
    loc, log_scale = outputs
    r = (y - loc) / jnp.exp(log_scale)
    return -r - log_scale - 2 * jnp.log(1 + jnp.exp(-r))


def _scipy_logistic(outputs):
    import scipy.stats

    loc, log_scale = outputs
    return scipy.stats.logistic(loc, np.exp(log_scale))


# The inverse CDF of the standard logistic: logit(u) = log(u) - log(1 - u).
_random = ls_.random_inputs(lambda u: jnp.log(u) - jnp.log1p(-u))

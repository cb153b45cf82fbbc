"""Gumbel: a real target given a location and a log-scale; the law of maxima (extreme values).

Also home to what the Gumbel shares with the Weibull, whose log-target is a (reflected) Gumbel:
the quadrature rule in ``t = log E`` for E standard exponential, and the KL divergence of two
extreme-value laws (``extreme_value_kl``).
"""

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
from mlnll._src.types import LocScaleOutputArrays, LocScaleOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE
EULER_GAMMA = numerics.EULER_GAMMA  # Euler-Mascheroni: -digamma(1), the mean of a standard Gumbel
_PI2_6 = math.pi**2 / 6
# E[(1 + (1 - E) log E)^2] for E standard exponential: the information of a log-scale (Gumbel) or
# of a log-concentration (Weibull).
SHAPE_INFORMATION = _PI2_6 + (1 - EULER_GAMMA) ** 2

# The expectation rule: t = log E, E standard exponential, has the density exp(t - e^t), an entire
# function decaying like e^t on the left and doubly exponentially on the right. The trapezoid rule
# with step 0.21 on [-42, 4.2] integrates it, and it times t^m e^(j t) (m, j <= 2: every Hessian
# entry of the Gumbel and Weibull NLLs), to ~1e-15 (against digamma and trigamma values); the
# tails left out weigh below e^-42 42^2 ~ 1e-15.
T_NODES = np.arange(-200, 21, dtype=np.float64) * 0.21
T_WEIGHTS = np.exp(T_NODES - np.exp(T_NODES))
T_WEIGHTS = T_WEIGHTS / T_WEIGHTS.sum()
# Below this z (e^-z overflows every float) the value is -inf: z is clamped there so that the value
# is z + expm1(-z) = -1e4 + inf = inf, never -inf + inf (an r of -inf when y - loc over the scale
# overflows).
_Z_FLOOR = -1e4


# expm1(x) - x = sum_(k>=2) x^k / k! on |x| <= 1/2, to the terms whose tail is below the dtype's
# rounding (the leading terms of numerics.EXPM1MX_COEFFS): relative truncation error
# 2 (1/2)^(K-1) / (K+1)! at |x| = 1/2, 2e-9 (float32, K = 9) and 6e-18 (float64, K = 15).
_SERIES = {4: numerics.EXPM1MX_COEFFS[:8], 8: numerics.EXPM1MX_COEFFS[:14]}


def exp_parts(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(near, e^x, expm1(x), expm1(x) - x)``, each to a few ulps of its own size, from one ``exp``;
    ``near`` is ``|x| <= 1/2``.

    Near 0, the Taylor series of ``e^x - 1 - x`` (no cancellation), plus x, plus 1; beyond, ``e^x``
    itself (relative accuracy at tiny e^x), ``e^x - 1``, which loses at most a factor 2.6 to
    cancellation (at x = 1/2), and its difference with x, which cancels at most 8-fold (x = -1/2).
    XLA's ``expm1`` costs 2.4 times an ``exp`` on a CPU, and an expm1 - x series on top of it more.
    """
    near = jnp.abs(x) <= 0.5
    xs = jnp.where(near, x, jnp.zeros_like(x))
    series = xs * xs * numerics.horner(_SERIES[np.dtype(x.dtype).itemsize], xs)
    e = jnp.exp(jnp.where(near, jnp.zeros_like(x), x))
    em1 = e - 1
    m = jnp.where(near, xs + series, em1)
    return near, jnp.where(near, 1 + m, e), m, jnp.where(near, series, em1 - x)


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -z - e^-z - log_scale``, ``z = (y - loc) / s``, and its partials (the class docstring).

    With ``m = expm1(-z) = e^-z - 1``: ``d log p / d loc = -m / s``, ``d log p / d log_scale =
    -1 - z m`` and ``d log p / d y = m / s``; m keeps its relative accuracy near the mode z = 0
    (``exp_parts``). The value is ``-(q + (1 + log_scale))`` with ``q = z + m = e^-z - 1 + z >= 0``,
    taken from the same series near the mode.
    """
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    z = jnp.maximum(r, _Z_FLOOR)
    _, _, m, q = exp_parts(-z)
    d_loc = -m * inv_scale
    if keep == ls_.NO_CONSTANT_NOR_LOG_SCALE:
        value = -(q + 1)
    else:  # Gumbel has no output-free constant: both other keeps hold every term
        value = -(q + (1 + log_scale))
    return value, (d_loc, -1 - z * m, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
gumbel_log_pdf = closed_form(_value_and_partials, num_static=1)


def extreme_value_kl(log_ratio: jax.Array, shift: jax.Array) -> jax.Array:
    """``KL = phi(rho) + expm1mx(shift + lgamma(1 + rho))`` for two extreme-value laws, both terms >= 0.

    For Gumbels p, q (locations mu, scales b): ``rho = b_p / b_q`` and ``shift = (mu_q - mu_p) / b_q``.
    With ``z_q = rho z_p - shift`` and ``E = e^-z_p`` standard exponential under p
    (``E[z_p] = gamma``, ``E[E^rho] = Gamma(1 + rho)``), ``KL = E_p[log p - log q]
    = -log rho + gamma (rho - 1) - shift + e^shift Gamma(1 + rho) - 1``; writing
    ``e^x - 1 = expm1mx(x) + x`` with ``x = shift + lgamma(1 + rho)`` and
    ``lgamma(1 + rho) - log rho = lgamma(rho)`` leaves
    ``phi(rho) = lgamma(rho) + gamma (rho - 1)`` (``numerics.lgamma_bregman_at_one``) plus ``expm1mx(x)``:
    each vanishes to second order as q -> p, so a small KL keeps its digits. Near rho = 1, x takes
    ``lgamma(1 + rho) = log rho + phi(rho) - gamma (rho - 1)`` from ``log_ratio`` and
    ``rho - 1 = expm1(log_ratio)``, never from rho rounded (whose ulp would be all of a KL of 1e-6
    in float32). The Weibull's log-target is a Gumbel of the minimum (location log_scale, scale
    1/k), so the same form serves it.
    """
    phi = numerics.lgamma_bregman_at_one(log_ratio)
    u = jnp.expm1(log_ratio)
    near = jnp.abs(u) <= 0.5
    un = jnp.where(near, u, jnp.zeros_like(u))
    rho_far = jnp.where(near, jnp.ones_like(u), jnp.exp(log_ratio))
    lgamma_1p = jnp.where(near, (jnp.where(near, log_ratio, jnp.zeros_like(u)) - EULER_GAMMA * un)
                          + jnp.where(near, phi, jnp.zeros_like(u)), numerics.lgamma1p(rho_far))
    return phi + numerics.expm1mx(shift + lgamma_1p)


@dataclasses.dataclass(frozen=True)
class Gumbel(ls_.FixedScaleUnpacking):
    r"""Gumbel (type I extreme-value, of the maximum) distribution of a real target.

    outputs: ``(loc, log_scale)``; with ``Gumbel(scale=s)`` the scale is fixed and outputs is
    ``loc`` alone. targets: reals, broadcastable with the outputs. The law of a maximum of many
    draws (annual peak flows, the largest of n logits): right-skewed, with an exponential right
    tail and a doubly exponential left one.

    Density (scipy.stats.gumbel_r), with ``s = exp(log_scale)`` and ``z = (y - loc) / s``:
    ``log p(y) = -z - e^-z - log_scale``. ``z`` is ``r`` of ``standardize`` (range-reduced inverse
    scale, no overflow of ``y - loc``). Far left of the location ``e^-z`` is the whole value: it
    is -inf exactly where ``e^-z`` overflows the dtype, i.e. where the exact value is below minus
    the largest float too (at z = -88 in float32 it is -1.65e38, finite, with finite gradients).

    Gradient. With ``m = expm1(-z) = e^-z - 1``, ``dz/dloc = -1/s`` and ``dz/dlog_scale = -z``:
    ``d(-log p)/dz = 1 - e^-z = -m``, so ``d(-log p)/dloc = m / s = (e^-z - 1) / s`` and
    ``d(-log p)/dlog_scale = 1 + z m = 1 - z (1 - e^-z)``; in the target ``d log p/dy = m / s``.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form.

    Fisher information in ``(loc, log_scale)``: ``E = e^-z`` is standard exponential, with
    ``E[E] = 1``, ``E[E^2] = 2`` and ``E[E^j log E] = Gamma(1 + j) digamma(1 + j)``; so the loc
    score ``(1 - E)/s`` has ``E[(1 - E)^2] = 1``, the log-scale score ``-1 + (E - 1) log E`` has
    second moment ``pi^2/6 + (1 - gamma)^2``, and their cross moment is
    ``-E[(E - 1)^2 log E] = -(1 - gamma)``:
    ``[[1/s^2, -(1 - gamma)/s], [-(1 - gamma)/s, pi^2/6 + (1 - gamma)^2]]``; ``1/s^2`` with the scale
    fixed. Entropy ``log_scale + gamma + 1``; mean ``loc + gamma s``; KL in closed form
    (``extreme_value_kl``).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> float(mlnll.Gumbel().log_prob((jnp.array(0.0), jnp.array(0.0)), jnp.array(0.0)))  # -e^0
      -1.0
    """

    scale: float | None = None

    # -- unpacking: ls_.FixedScaleUnpacking (validation, name, fixed outputs, _unpack, _unpack_with)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log Gumbel(y; loc, s)``, equal to scipy.stats.gumbel_r.logpdf."""
        return self._real_log_prob(gumbel_log_pdf, outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``: all of it for a free scale (no term is free of the
        outputs), ``-z - e^-z`` for ``Gumbel(scale=s)`` (what ``drop_constants=True`` uses)."""
        return self._real_log_prob(gumbel_log_pdf, outputs, targets, ls_.without_constants(self.scale))

    def grad(self, outputs: LocScaleOutputs, targets: ArrayLike) -> LocScaleOutputArrays:
        """Closed form ``((e^-z - 1) / s, 1 - z (1 - e^-z))``; loc's alone if the scale is fixed."""
        return self._real_grad(_value_and_partials, outputs, targets)

    def log_cdf(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y) = -e^-z`` (``F = exp(-e^-z)``, scipy.stats.gumbel_r.logcdf), exact to
        the rounding of one exp in both tails: -1.01e-43 at z = 99 in float64, ``-e^50`` at z = -50.
        ``jax.grad`` runs its closed form: ``d log F/dz = e^-z``, so ``d log F/dloc = -e^-z / s`` and
        ``d log F/dlog_scale = -z e^-z`` (``_tails``)."""
        return _tails.real_log_tail(_tails.GUMBEL, self._name, self.scale, outputs, targets, upper=False)

    def log_survival(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log(1 - exp(-e^-z)) = log1mexp(e^-z)``, accurate where S is tiny
        (``-z`` once e^-z is below e^-40: log S(800) = -800 in float64, where e^-z underflows) and where
        it is near 1 (``log1p(-exp(-e^-z))``, -1.94e-24 at z = -4); ``d log S/dz = -h`` with
        ``h = f/S = e^-z / expm1(e^-z)``, taken as ``exp(-z - e^-z) / (1 - exp(-e^-z))``."""
        return _tails.real_log_tail(_tails.GUMBEL, self._name, self.scale, outputs, targets, upper=True)

    def params(self, outputs: LocScaleOutputs) -> dict[str, jax.Array]:
        """``{"loc": loc, "scale": exp(log_scale)}``."""
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: LocScaleOutputs) -> jax.Array:
        """``loc + gamma s`` (gamma: Euler's constant)."""
        p = self._unpack(outputs)
        return (p.loc + EULER_GAMMA * jnp.exp(p.log_scale)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LocScaleOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + s * g`` with g standard Gumbel (``jax.random.gumbel``), shape ``sample_shape + batch``."""
        return self._shifted_and_scaled_sample(jax.random.gumbel, key, outputs, sample_shape)

    def entropy(self, outputs: LocScaleOutputs) -> jax.Array:
        """``log_scale + gamma + 1``."""
        p = self._unpack(outputs)
        return (p.log_scale + (EULER_GAMMA + 1)).astype(p.dtype)

    def kl(self, outputs_p: LocScaleOutputs, outputs_q: LocScaleOutputs) -> jax.Array:
        """KL(p || q) in closed form, as two non-negative terms (``extreme_value_kl``).

        ``rho = s_p / s_q`` and ``shift = (loc_q - loc_p) / s_q``:
        ``KL = lgamma(rho) + gamma (rho - 1) + expm1mx(shift + lgamma(1 + rho))``.
        """
        p, q, dtype = ls_.kl_pair("Gumbel", self._unpack(outputs_p), self._unpack(outputs_q))
        shift = (q.loc - p.loc) * jnp.exp(-q.log_scale)
        return extreme_value_kl(p.log_scale - q.log_scale, shift).astype(dtype)

    def fisher(self, outputs: LocScaleOutputs) -> jax.Array:
        """``[[1/s^2, -(1 - gamma)/s], [-(1 - gamma)/s, pi^2/6 + (1 - gamma)^2]]`` per example
        ([..., 2, 2]); ``1/s^2`` with a fixed scale."""
        p = self._unpack(outputs)
        inv_scale = jnp.exp(-p.log_scale)
        entries = {("loc", "loc"): inv_scale * inv_scale,
                   ("loc", "log_scale"): -(1 - EULER_GAMMA) * inv_scale,
                   ("log_scale", "log_scale"): jnp.full_like(p.log_scale, SHAPE_INFORMATION)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: none (0), or ``-log(scale)`` if fixed."""
        const = -math.log(self.scale) if self.scale is not None else 0.0
        return ls_.constant_like(targets, const, family=self._name)

    def expectation_nodes(self, outputs: LocScaleOutputs) -> tuple[jax.Array, jax.Array]:
        """A rule for ``E_y[f(y)]``: nodes ``loc - s t_k``, ``[221, *batch]``, and their weights.

        ``t = -z = log E`` with E standard exponential has the density ``exp(t - e^t)``; ``t_k``
        and the weights are the trapezoid rule ``T_NODES``, ``T_WEIGHTS`` (step 0.21 on
        [-42, 4.2]), exact to ~1e-15 for every Hessian entry of the NLL.
        """
        p = self._unpack(outputs)
        t = numerics.batch_nodes(T_NODES, p.loc)
        nodes = p.loc[None] - jnp.exp(p.log_scale)[None] * t
        return nodes, jnp.broadcast_to(numerics.batch_nodes(T_WEIGHTS, p.loc), nodes.shape)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: free scale (log-scales of ±80 and ±60, targets 1e30 away on the
        right and 70 scales away on the left), and ``scale=1``."""
        return (
            Case("Gumbel", cls(), _random, _extreme,
                 scipy=ScipyReference(lambda o: _scipy_gumbel(o[0], np.exp(o[1]))),
                 plain_log_prob=_plain_log_prob),
            Case("Gumbel(scale=1.0)", cls(scale=1.0), _fixed_random, _fixed_extreme,
                 scipy=ScipyReference(lambda loc: _scipy_gumbel(loc, 1.0)),
                 plain_log_prob=lambda loc, y: _plain_log_prob((loc, jnp.zeros_like(loc)), y)),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-z - exp(-z) - log(s)``, ``z = (y - loc) / s``: the textbook formula."""
    loc, log_scale = outputs
    z = (y - loc) / jnp.exp(log_scale)
    return -z - jnp.exp(-z) - log_scale


def _scipy_gumbel(loc, scale):
    import scipy.stats

    return scipy.stats.gumbel_r(loc, scale)


def _standard_gumbel(u: jax.Array) -> jax.Array:
    """The inverse CDF of the standard Gumbel: ``-log(-log u)``."""
    return -jnp.log(-jnp.log(u))


_random = ls_.random_inputs(_standard_gumbel)


def _fixed_random(key, dtype, n):
    """Standard normal ``loc`` and targets ``loc + g``, g standard Gumbel (scale 1)."""
    u = ls_.open_uniforms(key, (2, n), dtype)
    loc = ls_.standard_normal(u[0])
    return loc, loc + _standard_gumbel(u[1])


def _extreme(dtype) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """``[8]``: log-scales of ±80 and ±60, z from -70 (e^70 = 2.5e30, finite in float32 with its
    gradients) to 1.8e4 (targets 1e30 away on the right), y - loc overflowing (3e38 - (-3e38)), y = loc."""
    loc = jnp.array([0.0, 1e4, 1e30, -5.0, 0.0, 2.0, -1e-30, -3e38], dtype)
    log_scale = jnp.array([-80.0, 80.0, 60.0, 0.0, 30.0, 0.5, -60.0, 88.0], dtype)
    y = jnp.array([1e-35, -1e4, 3e30, -75.0, 1e13, 2.0, 1e-30, 3e38], dtype)
    return (loc, log_scale), y


def _fixed_extreme(dtype) -> tuple[jax.Array, jax.Array]:
    """``(loc, y)`` at scale 1, ``[5]``: z of 1e30 and -70, and y = loc.

    ``|loc| <= 100``: the quadrature nodes ``loc - t`` keep t to ~1e-14 (the loc Hessian, e^-z / s^2,
    depends on z, unlike the Normal's and the Laplace's).
    """
    return jnp.array([30.0, -20.0, 3.0, 0.0, 1e-30], dtype), jnp.array([1e30, -90.0, 3.0, 1e-30, 0.0], dtype)

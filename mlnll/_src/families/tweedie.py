"""Tweedie: a non-negative target with a point mass at 0 (insurance claims, rainfall), 1 < power < 2."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.numerics import counts, gamma_bessel
from mlnll._src.types import TweedieOutputArrays, TweedieOutputs
from mlnll._src.verify.case import Case

_NAMES = ("log_mean", "log_dispersion")
_LOG_2PI = math.log(2 * math.pi)

# How far below the largest term (in log units) a term of the series may be and still be left out:
# e^-40 = 4e-18 is under float64's half-ulp, e^-20 = 2e-9 under float32's.
_DROP_BELOW = {4: 20.0, 8: 40.0}


def _delta(x: float) -> float:
    """The log-gamma remainder ``lgamma(x) - (x - 1/2) log x + x - log(2 pi)/2`` in Python floats."""
    return math.lgamma(x) - (x - 0.5) * math.log(x) + x - 0.5 * _LOG_2PI


class _Plan(NamedTuple):
    """The static window of the series for one power and dtype (see ``_plan``)."""

    num_terms: int  # N, the number of terms summed for every example
    tau: float  # 2 T / (1 + a): a term (j - M)^2 (1 + a) / (2 M) >= T below M is dropped, and so on
    g_coeffs: tuple[float, ...]  # Taylor coefficients of the deviance's g(r) / r^2 at |r| <= 1


@functools.lru_cache(maxsize=None)
def _plan(power: float, itemsize: int) -> _Plan:
    r"""The window's size from the power and the dtype (the derivation is in the class docstring).

    With ``a = (2 - p)/(p - 1)`` the terms are ``exp(-(1 + a) bd0(j, M) - delta(j) - delta(a j))``.
    ``T_eff = T + (1 + a)/8 + delta(1) + delta(a)``: the term nearest M (within 1/2 of it, bd0 <= 1/8
    there) and the remainders, which fall with j (a tail term's are at most ``delta(1) + delta(a)``
    above the peak's), are the slack added to the drop threshold T.
    """
    a = (2 - power) / (power - 1)
    t_eff = _DROP_BELOW[itemsize] + (1 + a) / 8 + _delta(1.0) + _delta(a)
    tau = 2 * t_eff / (1 + a)
    # Clamped at j = 1 while M - sqrt(tau M) < 1, i.e. M < M*: there the window is 1 .. hi(M*).
    m_star = ((math.sqrt(tau) + math.sqrt(tau + 4)) / 2) ** 2
    clamped = math.ceil(m_star + (tau + math.sqrt(tau * tau + 4 * tau * m_star)) / 2) + 1
    # Strided: sigma / stride >= 2 everywhere (the Poisson-summation error exp(-2 pi^2 (sigma/h)^2) <
    # 1e-34), which N - 1 >= 10 sqrt(2 T_eff) guarantees (see the class docstring).
    strided = math.ceil(1 + 10 * math.sqrt(2 * t_eff))
    b, c = 1 - power, 2 - power
    # g(r) = expm1(c r)/c - expm1(b r)/b = sum_{k>=2} (c^(k-1) - b^(k-1)) r^k / k!; at |r| <= 1 the
    # first omitted term is below 1/21! (float64) or 1/13! (float32).
    last = 20 if itemsize == 8 else 12
    g_coeffs = tuple((c ** (k - 1) - b ** (k - 1)) / math.factorial(k) for k in range(2, last + 1))
    return _Plan(max(clamped, strided), tau, g_coeffs)


def num_terms(power: float, dtype) -> int:
    """How many terms of the series ``log_prob`` sums per example at this power and dtype."""
    return _plan(float(power), np.dtype(numerics.accumulation_dtype(np.dtype(dtype))).itemsize).num_terms


def _scaled_expm1(log_scale: jax.Array, x: jax.Array, log_scale_plus_x: jax.Array | None = None) -> jax.Array:
    """``exp(log_scale) expm1(x)`` without overflow of ``expm1(x)`` alone: for x > 0 it is
    ``exp(log_scale + x) (-expm1(-x))`` (double where: each branch sees a safe x).

    ``log_scale_plus_x``, where the caller has it from its own inputs (``(2-p) log mu - log phi`` for
    ``log(y^(2-p)/phi) + (2-p) log(mu/y)``), is used for ``log_scale + x``: that rounded sum cancels
    the two ``(2-p) log y`` (each ~44 nats at y = 1e-38), an absolute error of eps |(2-p) log y|."""
    up = x > 0
    x_up = numerics.where(up, x, jnp.zeros_like(x))
    x_down = numerics.where(up, jnp.zeros_like(x), x)
    exponent = log_scale + x_up if log_scale_plus_x is None else log_scale_plus_x
    # the scale as the square of exp(exponent / 2) around the expm1 factor: the scale alone overflows
    # (phi = e^-88.7 in float32) where the product does not
    half = jnp.exp(0.5 * numerics.where(up, exponent, log_scale))
    return half * numerics.where(up, -jnp.expm1(-x_up), jnp.expm1(x_down)) * half


def _half_deviance_over_dispersion(plan: _Plan, power: float, log_u_over_phi: jax.Array, r: jax.Array,
                                   log_kappa_over_phi: jax.Array, log_y_mu_over_phi: jax.Array) -> jax.Array:
    """``d(y, mu) / (2 phi) = (u / phi) g(r)``, ``u = y^(2-p)``, ``r = log(mu / y)``, ``g >= 0``.

    ``g(r) = expm1((2-p) r)/(2-p) + expm1((1-p) r)/(p-1)``: at ``|r| <= 1`` its Taylor series (the two
    expm1 cancel to ``r^2/2`` at r -> 0), elsewhere the two terms (they cancel at most ~4-fold),
    each ``exp(log(u/phi)) expm1(.)`` formed without overflow (``_scaled_expm1``; where mu > y the
    first from ``log_kappa_over_phi = (2-p) log mu - log phi``, free of log y; where mu < y the second
    from ``log_y_mu_over_phi = log y + (1-p) log mu - log phi``, one rounding of log y).
    """
    near = jnp.abs(r) <= 1
    r_near = numerics.where(near, r, jnp.zeros_like(r))
    r_far = numerics.where(near, jnp.full_like(r, 2.0), r)
    # u/phi as the square of e^(log(u/phi)/2) around the small factor r^2 g(r)/r^2: u/phi alone
    # overflows float32 at phi = e^-88.7 where d/(2 phi) does not
    half = jnp.exp(0.5 * log_u_over_phi)
    series = half * ((r_near * r_near) * numerics.horner(plan.g_coeffs, r_near)) * half
    far = (_scaled_expm1(log_u_over_phi, (2 - power) * r_far, log_kappa_over_phi) / (2 - power)
           + _scaled_expm1(log_u_over_phi, (1 - power) * r_far, log_y_mu_over_phi) / (power - 1))
    return numerics.where(near, series, far)


class _Series(NamedTuple):
    """``log sum_j exp(-(1 + a) bd0(j, M) - delta(j) - delta(a j))`` and the weighted mean of j - M."""

    log_sum: jax.Array
    mean_offset: jax.Array  # E_w[j - M], w_j the terms' share of the sum
    mean_above_one: jax.Array  # E_w[j - 1]
    log_sum_over_first: jax.Array  # log_sum minus the log of the window's first term (j = 1 where M < 1/2)


def _series(plan: _Plan, power: float, log_m: jax.Array) -> _Series:
    """The series of Dunn and Smyth (2005) around its largest term, on the window of the class
    docstring: N terms, consecutive (stride 1) from ``max(1, ceil(M - sqrt(tau M)))`` where they
    cover up to ``M + (tau + sqrt(tau^2 + 4 tau M))/2``, otherwise every h-th, ``h = ceil(width/(N-1))``,
    from ``M - sqrt(tau M)``, times h."""
    a = (2 - power) / (power - 1)
    n, tau = plan.num_terms, plan.tau
    full = log_m.shape + (n,)
    wide = lambda x: jnp.broadcast_to(x[..., None], full)  # noqa: E731  # an example's value on its window
    m, log_m = wide(jnp.exp(log_m)), wide(log_m)
    sq = jnp.sqrt(tau * m)
    hi = m + 0.5 * (tau + jnp.sqrt(tau * tau + 4 * tau * m))
    k_lo = jnp.maximum(jnp.ceil(m - sq), 1.0)
    stride = jnp.maximum(jnp.ceil((hi - k_lo) / (n - 1)), 1.0)
    strided = stride > 1
    steps = jax.lax.broadcasted_iota(m.dtype, full, len(full) - 1)  # 0 .. N-1 along the window
    # j - M: exact integers minus M where consecutive; offsets from M itself where strided (the
    # grid's position does not matter there, and j - M keeps its digits at M = 1e30 in float32).
    offset = numerics.where(strided, -sq + steps * stride, (k_lo + steps) - m)
    j = numerics.where(strided, m + offset, k_lo + steps)
    log_j = jnp.log(j)
    # t = log(j / M): log1p(offset / M) near M (no rounding of j at huge M), log j - log M far
    # from it (also where M underflows to 0: double where on the quotient).
    near = jnp.abs(offset) < 0.5 * m
    t_near = jnp.log1p(numerics.where(near, offset, jnp.zeros_like(offset)) / numerics.where(near, m, jnp.ones_like(m)))
    t = numerics.where(near, t_near, log_j - log_m)
    log_terms = (-(1 + a) * counts.bd0_in_dtype(j, t, m)
                 - gamma_bessel.stirling_remainder_in_dtype(j, log_j)
                 - gamma_bessel.stirling_remainder_in_dtype(a * j, log_j + math.log(a)))
    # logsumexp with the max subtracted under stop_gradient; the shares give E_w[j - M].
    top = jax.lax.stop_gradient(jnp.max(log_terms, axis=-1, keepdims=True))
    shares = jnp.exp(log_terms - top)
    total = jnp.sum(shares, axis=-1)
    log_total = jnp.log(total) + jnp.log(stride[..., 0])
    log_sum = jnp.squeeze(top, -1) + log_total
    # The sum relative to the first term, log(sum_j W_j / W_1) where the window starts at j = 1: its
    # (top - first) is 0 where j = 1 is the largest term, so no term of the size of log M enters it.
    # Where M underflows (phi = e^3e38) the first term is -inf and the ratio's limit, 1, is taken.
    first = log_terms[..., 0]
    finite = jnp.isfinite(first)
    log_sum_over_first = numerics.where(finite, (jnp.squeeze(top, -1) - numerics.where(finite, first, jnp.zeros_like(first)))
                                        + log_total, jnp.zeros_like(first))
    return _Series(log_sum, jnp.sum(shares * offset, axis=-1) / total, jnp.sum(shares * (j - 1), axis=-1) / total,
                   log_sum_over_first)


def _log_density_and_partials(power: float, log_mean: jax.Array, log_dispersion: jax.Array, y: jax.Array):
    """``log p(y)`` for valid targets y >= 0 and its partials in ``(log_mean, log_dispersion, y)``
    (the derivation is in the class docstring)."""
    plan = _plan(power, np.dtype(y.dtype).itemsize)
    a, b, c = (2 - power) / (power - 1), 1 - power, 2 - power
    positive = numerics.positive_and_finite(y)  # from the bits: y > 0 is false for a subnormal y under DAZ
    ys = numerics.where(positive, y, jnp.ones_like(y))  # double where: log y
    log_y = numerics.log_of_positive(ys)
    r = log_mean - log_y  # log(mu / y)
    log_u_over_phi = c * log_y - log_dispersion  # log(y^(2-p) / phi)
    log_kappa_over_phi = c * log_mean - log_dispersion  # log(mu^(2-p) / phi), exact in the inputs
    log_y_mu_over_phi = log_y + b * log_mean - log_dispersion  # log(y mu^(1-p) / phi)
    dev = _half_deviance_over_dispersion(plan, power, log_u_over_phi, r, log_kappa_over_phi, log_y_mu_over_phi)
    log_m = log_u_over_phi - math.log(c)  # M = y^(2-p) / (phi (2 - p)), the largest term's j
    # M = inf (phi = e^-1e4 flushes to 0): the window would be inf - inf; there the bell's sum is its
    # Gaussian limit sqrt(2 pi M / (1 + a)) (the terms ~ exp(-(1 + a)(j - M)^2 / (2 M)), the remainders 0).
    huge = log_m > math.log(float(jnp.finfo(log_m.dtype).max))
    series = _series(plan, power, numerics.where(positive & ~huge, log_m, jnp.zeros_like(log_m)))
    log_sum = numerics.where(huge, 0.5 * (_LOG_2PI + log_m - math.log(1 + a)), series.log_sum)
    mean_offset = numerics.where(huge, jnp.zeros_like(log_m), series.mean_offset)  # E_w[j - M] -> 0
    # log p(y | mu = y) = -log y + log(a)/2 - log(2 pi) + log W~; then - d(y, mu) / (2 phi).
    at_y_peak = -log_y + (0.5 * math.log(a) - _LOG_2PI) + log_sum
    # M < 1/2 (the window starts at j = 1): W_1's j z - lgamma(a) taken out of the sum exactly,
    # -log y + z = (a - 1) log y - (1 + a) log(phi (2 - p)) + a log a, so -log y and the (1 + a) log M of
    # bd0(1, M) never meet (each ~87 nats at y = 1e-38, the result ~0.3).
    at_y_first = ((a - 1) * log_y - (1 + a) * (log_dispersion + math.log(c)) + (a * math.log(a) - math.lgamma(a))
                  - (1 + a) * jnp.exp(log_m) + series.log_sum_over_first)
    at_y = numerics.where(log_m < -math.log(2.0), at_y_first, at_y_peak)
    lam_phi = jnp.exp(log_kappa_over_phi)  # mu^(2-p) / phi = (2 - p) lambda
    value = numerics.where(positive, at_y - dev, -lam_phi / c)
    # d/d log_mean: (y - mu) mu^(1-p) / phi = -(u/phi) e^((1-p) r) expm1(r) (its scale times e^r is
    # mu^(2-p)/phi, taken from log_mean: no cancellation of the (2-p) log y).
    d_log_mean = numerics.where(positive, -_scaled_expm1(log_u_over_phi + b * r, r, log_kappa_over_phi), -lam_phi)
    # d/d log_dispersion: (u/phi) g(r) - (1 + a) E_w[j - M]; at y = 0, lambda.
    d_log_dispersion = numerics.where(positive, dev - (1 + a) * mean_offset, lam_phi / c)

    def d_y():
        # (a E_w[j] - 1)/y - mu^(1-p)/(phi (p - 1)), 0 at the point mass y = 0. Where M >= 1 as
        # (a E_w[j - M] - 1)/y + (y^(1-p) - mu^(1-p))/(phi (p - 1)) (a M/y = y^(1-p)/(phi (p - 1)):
        # the two terms that cancel near mu = y are one expm1). Where M < 1 (tiny y) in the first
        # form, with a E_w[j] - 1 = a E_w[j - 1] + (a - 1) (exactly E_w[j - 1] at p = 3/2, where the
        # two 1/y terms that overflow float32 at y = 1e-45 cancel) divided by y in logs.
        near_mu = (a * mean_offset - 1) * jnp.exp(-log_y) - _scaled_expm1(
            b * log_y - log_dispersion, b * r, b * log_mean - log_dispersion) / (power - 1)
        numerator = a * series.mean_above_one + (a - 1)
        nonzero = numerator != 0
        log_abs = jnp.log(numerics.where(nonzero, jnp.abs(numerator), jnp.ones_like(numerator)))  # double where: log 0
        over_y = numerics.where(nonzero, jnp.sign(numerator) * jnp.exp(log_abs - log_y), jnp.zeros_like(numerator))
        tiny_y = over_y - jnp.exp(b * log_mean - log_dispersion) / (power - 1)
        slope = numerics.where(log_m >= 0, near_mu, tiny_y)
        return numerics.where(positive, slope, jnp.zeros_like(slope))

    return value, (d_log_mean, d_log_dispersion, d_y)


# log p, differentiated by its partials (closed_form.py): jax.grad, jacfwd and hessian of log_prob run
# the closed forms of the class docstring, not autodiff of the window's selects and the series.
tweedie_log_density = closed_form(_log_density_and_partials, num_static=1)
# One program for an eager call (op by op, its few hundred operations would each compile on first
# use); inside a caller's jit it is inlined.
_log_density = jax.jit(tweedie_log_density, static_argnums=0)


@functools.partial(jax.jit, static_argnames=("power", "shape"))
def _compound_draws(key: jax.Array, log_mean: jax.Array, log_dispersion: jax.Array, power: float,
                    shape: tuple[int, ...]) -> jax.Array:
    """``y = s G``, ``G ~ Gamma(N a, 1)`` (drawn in logs), ``N ~ Poisson(lambda)``; 0 where N = 0."""
    a, c = (2 - power) / (power - 1), 2 - power
    k_count, k_size = jax.random.split(key)
    lam = jnp.broadcast_to(jnp.exp(c * log_mean - log_dispersion) / c, shape)
    count = jax.random.poisson(k_count, lam, shape).astype(log_mean.dtype)
    jumps = count > 0
    shape_param = numerics.where(jumps, count * a, jnp.ones_like(count))  # double where: Gamma(0)
    log_g = jax.random.loggamma(k_size, shape_param, shape, log_mean.dtype)
    log_s = jnp.broadcast_to(log_dispersion + math.log(power - 1) + (power - 1) * log_mean, shape)
    return numerics.where(jumps, jnp.exp(log_s + log_g), jnp.zeros_like(log_g))


def _check_power(power) -> None:
    ok = isinstance(power, numbers.Real) and not isinstance(power, bool)
    if not (ok and 1 < power < 2):
        raise ValueError(f"Tweedie(power=...) must be a number with 1 < power < 2 (the compound "
                         f"Poisson-Gamma range); got {power!r}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tweedie:
    r"""Tweedie distribution with ``1 < power < 2``: a compound Poisson-Gamma, zero with positive probability.

    outputs: ``(log_mean, log_dispersion)``, ``mu = exp(log_mean)``, ``phi = exp(log_dispersion)``,
    ``Var[y] = phi mu^p``; with ``Tweedie(power=p, dispersion=phi)`` the dispersion is fixed and
    outputs is ``log_mean`` alone. targets: ``y >= 0`` (0 is an atom, y > 0 has a density);
    ``y < 0``, infinite or NaN gives ``-inf`` (and NaN derivatives). The power is static.

    Model. ``y = X_1 + ... + X_N``, ``N ~ Poisson(lambda)``, ``lambda = mu^(2-p) / (phi (2-p))``, the
    ``X_i ~ Gamma(shape a, scale s)`` independent, ``a = (2-p)/(p-1)``, ``s = phi (p-1) mu^(p-1)``
    (``sample`` draws exactly this: N, then ``s Gamma(N a, 1)``). So ``P(y = 0) = exp(-lambda)``,
    and for y > 0, with ``theta = mu^(1-p)/(1-p)`` and ``kappa = mu^(2-p)/(2-p)``,
    ``log p(y) = (y theta - kappa)/phi - log y + log W``, ``W = sum_{j>=1} W_j``,
    ``log W_j = j z - lgamma(j + 1) - lgamma(j a)``,
    ``z = a log(y/(p-1)) - (1 + a) log phi - log(2-p)`` (Dunn and Smyth 2005; W is free of mu).

    Evaluation. The terms peak at ``j ~ M = y^(2-p)/(phi (2-p))`` (``d log W_j/dj = 0``), where
    ``z = (1 + a) log M + a log a``. Stirling's formula with its remainder ``delta``
    (``lgamma(x) = (x - 1/2) log x - x + log(2 pi)/2 + delta(x)``) turns each term into
    ``log W_j = (1 + a) M + log(a)/2 - log(2 pi) - (1 + a) bd0(j, M) - delta(j) - delta(a j)``,
    ``bd0(j, M) = j log(j/M) + M - j >= 0`` (Loader's deviance term), and the ``(1 + a) M`` cancels
    exactly against ``(y theta_y - kappa_y)/phi = -(1 + a) M`` at mu = y. Hence
    ``log p(y) = log p(y | mu = y) - d(y, mu)/(2 phi)``, with
    ``log p(y | mu = y) = -log y + log(a)/2 - log(2 pi) + log sum_j exp(-(1 + a) bd0(j, M) - delta(j)
    - delta(a j))`` and the unit deviance ``d(y, mu)/2 = y^(2-p) g(log(mu/y))``,
    ``g(r) = expm1((2-p) r)/(2-p) + expm1((1-p) r)/(p-1) >= 0`` (its Taylor series at ``|r| <= 1``). No
    term is larger than the result needs: ``lgamma`` of 1e10 (2e11, whose rounding alone would be
    2e-5 nats) never appears, and log p keeps its relative accuracy at y = 1e30.

    The window. ``bd0(j, M) >= (j - M)^2/(2M)`` below M and ``>= (j - M)^2/(2j)`` above it
    (``bd0 = M h(j/M)``, ``h(x) = x log x + 1 - x``, ``h'' = 1/x``), so every term outside
    ``[M - sqrt(tau M), M + (tau + sqrt(tau^2 + 4 tau M))/2]``, ``tau = 2 T_eff/(1 + a)``, is below
    ``e^-T`` times the largest (T = 40 in float64, 20 in float32; ``T_eff`` adds the slack of the
    remainders and of the integer nearest M, ``_plan``), and the terms fall faster than geometrically
    beyond. The window has a static number N of terms. Where its width fits in N it is summed term by
    term from ``max(1, ceil(M - sqrt(tau M)))`` (exact: every term that matters); beyond, every h-th
    term from ``M - sqrt(tau M)`` with ``h = ceil(width/(N - 1))``, times h. That is the trapezoid
    rule on a smooth bell of standard deviation ``sigma = sqrt(M/(1 + a))`` (the curvature of
    ``(1 + a) bd0`` at M), whose error (Poisson summation) is ``~exp(-2 pi^2 (sigma/h)^2)``; N is
    chosen (``_plan``) so that the consecutive window holds every M where it is clamped at j = 1 and
    ``sigma/h >= 2`` wherever it is strided (error < 1e-34). N depends on the power and the dtype
    (``tweedie.num_terms``): 93 terms at p <= 1.5 in float64, up to ~210 at p = 1.95 (the series
    approaches the Poisson's as p -> 2); each term costs a log, a bd0 and two Stirling remainders,
    and the terms are held as a ``[..., N]`` array (memory N times the batch).

    Gradient. ``d theta/d log_mean = mu^(1-p)``, ``d kappa/d log_mean = mu^(2-p)``, so
    ``d log p/d log_mean = (y - mu) mu^(1-p)/phi`` (the deviance form; ``-mu^(2-p)/phi`` at y = 0),
    evaluated as ``-(y^(2-p)/phi) e^((1-p) r) expm1(r)``. In ``log_dispersion`` (``dM = -M``):
    ``d log p/d log_dispersion = d(y, mu)/(2 phi) + (1 + a) E_w[M - j]`` with
    ``d bd0(j, M)/dM = 1 - j/M`` and ``E_w`` the mean over the series' terms weighted by their share
    of W (equivalently ``lambda + y/s - (1 + a) E_w[j]`` in the original form: ``-d log W/d log phi
    = (1 + a) E_w[j]``); ``lambda`` at y = 0. In the target (y > 0):
    ``d log p/dy = (a E_w[j - M] - 1)/y + (y^(1-p) - mu^(1-p))/(phi (p - 1))`` (0 on the atom y = 0).
    ``jax.grad``, ``jacfwd`` and ``hessian`` of ``log_prob`` run these partials (a ``closed_form``
    custom_jvp, the same ones ``grad`` returns); their own derivatives are autodiff of the weighted
    mean.

    Fisher information in ``(log_mean, log_dispersion)``. ``E[(y - mu)^2] = phi mu^p`` gives
    ``I_11 = mu^(2-p)/phi``; the cross term is ``-E[d^2 log p/d log_mean d log_dispersion] =
    E[y - mu] mu^(1-p)/phi = 0``. ``I_22 = (1 + a)^2 E[Var_w(j)] - ...`` needs the expectation of the
    series' variance over y, which has no closed form: ``fisher`` returns ``mu^(2-p)/phi`` with the
    dispersion fixed and raises NotImplementedError otherwise.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.Tweedie(power=1.5, dispersion=1.0)
      >>> round(float(fam.log_prob(jnp.array(0.0), jnp.array(0.0))), 12)  # log P(0) = -1/(1 * 0.5)
      -2.0

    References:
      P. K. Dunn and G. K. Smyth (2005), Series evaluation of Tweedie exponential dispersion model
      densities, Statistics and Computing 15, 267-280.
    """

    power: float
    dispersion: float | None = None

    def __post_init__(self):
        _check_power(self.power)
        ls_.check_positive_option("Tweedie", "dispersion", self.dispersion)

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return ls_.describe("Tweedie", power=self.power, dispersion=self.dispersion)

    @property
    def _fixed(self) -> dict[str, float]:
        return {} if self.dispersion is None else {"log_dispersion": math.log(self.dispersion)}

    def _params(self, outputs) -> unpack.Params:
        return unpack.unpack(outputs, family=self._name, names=_NAMES, fixed=self._fixed)

    def _prepare(self, outputs, targets) -> tuple[unpack.Params, jax.Array, jax.Array]:
        """The outputs, the targets (those off the support replaced by 1: double where) and
        whether each target is valid (0, or finite and positive: a subnormal y is positive)."""
        p, y = unpack.with_targets(self._params(outputs), targets, family=self._name)
        valid = numerics.nonnegative_and_finite(y)  # from the bits: a negative subnormal y is outside
        return p, numerics.where(valid, y, jnp.ones_like(y)), valid

    def _log_dispersion(self, p: unpack.Params) -> jax.Array:
        """``p.log_dispersion``, or the scalar ``log phi`` when fixed (its tangent a symbolic zero)."""
        if self.dispersion is None:
            return p.log_dispersion
        return jnp.asarray(math.log(self.dispersion), p.log_mean.dtype)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: TweedieOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(y)``: ``-mu^(2-p)/(phi (2-p))`` at y = 0, the series above for y > 0."""
        p, y, valid = self._prepare(outputs, targets)
        lp = _log_density(float(self.power), p.log_mean, self._log_dispersion(p), y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: TweedieOutputs, targets: ArrayLike) -> TweedieOutputArrays:
        """Closed form of ``d(-log_prob)/d(log_mean, log_dispersion)`` (NaN where the target is
        invalid); log_mean's alone if the dispersion is fixed."""
        p, y, valid = self._prepare(outputs, targets)
        _, (d_log_mean, d_log_dispersion, _) = _log_density_and_partials(
            float(self.power), p.log_mean, p.log_dispersion, y)
        grads = ls_.neg_partials({"log_mean": d_log_mean, "log_dispersion": d_log_dispersion},
                                 _NAMES, self._fixed, p.dtype)
        return ls_.nan_off_support(valid, grads)

    def params(self, outputs: TweedieOutputs) -> dict[str, jax.Array]:
        """``{"mean": exp(log_mean), "dispersion": exp(log_dispersion)}`` (the power is static)."""
        p = self._params(outputs)
        return {"mean": jnp.exp(p.log_mean).astype(p.dtype), "dispersion": jnp.exp(p.log_dispersion).astype(p.dtype)}

    def mean(self, outputs: TweedieOutputs) -> jax.Array:
        """``mu = exp(log_mean)``."""
        p = self._params(outputs)
        return jnp.exp(p.log_mean).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: TweedieOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws of the compound Poisson-Gamma: ``N ~ Poisson(mu^(2-p)/(phi (2-p)))`` jumps, and given
        N >= 1 their sum ``s G``, ``G ~ Gamma(N a, 1)`` (a sum of N Gamma(a) jumps of scale
        ``s = phi (p-1) mu^(p-1)``), ``log G`` from ``jax.random.loggamma``; 0 where N = 0. Shape
        ``sample_shape + batch``; the Poisson draw has ``Poisson.sample``'s range."""
        p = self._params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        return _compound_draws(key, p.log_mean, p.log_dispersion, float(self.power), shape).astype(p.dtype)

    def entropy(self, outputs: TweedieOutputs) -> jax.Array:
        """Not implemented: the Tweedie entropy has no closed form."""
        raise NotImplementedError(
            "Tweedie.entropy has no closed form: it needs E[log W(y, phi, p)], an expectation of "
            "the log of an infinite series.")

    def kl(self, outputs_p: TweedieOutputs, outputs_q: TweedieOutputs) -> jax.Array:
        """Not implemented: with different dispersions the KL needs E_p[log W_p - log W_q]."""
        raise NotImplementedError(
            "Tweedie.kl has no closed form: with different dispersions it needs "
            "E_p[log W(y, phi_p) - log W(y, phi_q)], an expectation of logs of infinite series.")

    def fisher(self, outputs: TweedieOutputs) -> jax.Array:
        """``mu^(2-p)/phi`` with the dispersion fixed; NotImplementedError otherwise.

        The (log_mean, log_mean) entry is ``mu^(2-p)/phi`` and the cross entry 0 (class docstring);
        the (log_dispersion, log_dispersion) entry needs ``E_y[Var_w(j)]`` over the series' terms,
        which has no closed form.
        """
        if self.dispersion is None:
            raise NotImplementedError(
                "Tweedie.fisher: the (log_dispersion, log_dispersion) entry needs the expectation "
                "over y of the variance of j under the series' weights, which has no closed form. "
                "The (log_mean, log_mean) entry is mu^(2-p)/phi and the cross term is 0; "
                "Tweedie(power=p, dispersion=phi).fisher returns mu^(2-p)/phi.")
        p = self._params(outputs)
        return jnp.exp((2 - self.power) * p.log_mean - math.log(self.dispersion)).astype(p.dtype)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: ``power=1.5`` with a free dispersion, and ``power=1.2,
        dispersion=0.5``; a quarter of the targets 0, means of e^(±30) and
        targets of 1e-30 to 1e30 among the extremes."""
        return (
            Case("Tweedie(power=1.5)", cls(power=1.5), _random, _extreme,
                 plain_log_prob=functools.partial(textbook_log_prob, 1.5), continuous_targets=False),
            Case("Tweedie(power=1.2, dispersion=0.5)", cls(power=1.2, dispersion=0.5), _fixed_random, _fixed_extreme,
                 plain_log_prob=_fixed_textbook_log_prob, continuous_targets=False),
        )


# -- check cases ------------------------------------------------------------------------------------

# The textbook series is summed over j = 1 .. 200: enough for the check cases' y^(2-p)/(phi (2-p)) <= ~30.
_TEXTBOOK_TERMS = 200
_FIXED_LOG_DISPERSION = math.log(0.5)


def textbook_log_prob(power: float, outputs, y):
    """``-lambda`` at y = 0; ``(y theta - kappa)/phi - log y + logsumexp_j (j z - lgamma(j + 1) -
    lgamma(j a))`` over j = 1..200 for y > 0: the series as Dunn and Smyth write it, a user's
    ``jax.numpy``."""
    log_mean, log_dispersion = outputs
    mu, phi = jnp.exp(log_mean), jnp.exp(log_dispersion)
    a = (2 - power) / (power - 1)
    positive = y > 0
    ys = jnp.where(positive, y, jnp.ones_like(y))
    z = a * jnp.log(ys / (power - 1)) - (1 + a) * log_dispersion - math.log(2 - power)
    j = jnp.arange(1, _TEXTBOOK_TERMS + 1, dtype=z.dtype).reshape((1,) * z.ndim + (_TEXTBOOK_TERMS,))
    lgamma = jax.scipy.special.gammaln
    log_w = jax.nn.logsumexp(j * z[..., None] - lgamma(j + 1) - lgamma(j * a), axis=-1)
    theta, kappa = mu ** (1 - power) / (1 - power), mu ** (2 - power) / (2 - power)
    return jnp.where(positive, (ys * theta - kappa) / phi - jnp.log(ys) + log_w, -kappa / phi)


def _fixed_textbook_log_prob(log_mean, y):
    return textbook_log_prob(1.2, (log_mean, jnp.full_like(log_mean, _FIXED_LOG_DISPERSION)), y)


def _draw(key, dtype, n):
    """Log-means ``N(0, 1)``, log-dispersions ``0.5 N(0, 1)`` and targets: 0 with probability 1/4,
    else ``mu e^(0.7 N(0, 1))`` (from uniforms and normals alone: a Poisson draw in the check's
    program would cost more to compile than the family)."""
    k_normal, k_zero = jax.random.split(key)
    normals = jax.random.normal(k_normal, (3, n), dtype)
    log_mean = normals[0]
    y = jnp.where(jax.random.uniform(k_zero, (n,), dtype) < 0.25, jnp.zeros_like(log_mean),
                  jnp.exp(log_mean + 0.7 * normals[2]))
    return log_mean, 0.5 * normals[1], y


def _random(key, dtype, n):
    log_mean, log_dispersion, y = _draw(key, dtype, n)
    return (log_mean, log_dispersion), y


def _fixed_random(key, dtype, n):
    log_mean, _, y = _draw(key, dtype, n)
    return log_mean, y


_EXTREME_LOG_MEAN = [30.0, -30.0, 0.0, 0.0, 5.0, -5.0, 0.0, 10.0, 20.0]
_EXTREME_Y = [0.0, 1e-30, 1e30, 1e-20, 1e10, 0.0, 3.0, 1e6, 1e-10]


def _extreme(dtype):
    """``[9]``: log-means of ±30, log-dispersions of ±8, targets 0 and 1e-30 to 1e30."""
    log_dispersion = [0.0, 0.0, 8.0, -8.0, 0.0, 0.0, 0.0, -3.0, 5.0]
    as_dtype = lambda x: jnp.asarray(np.asarray(x, np.float64), dtype)  # noqa: E731
    return (as_dtype(_EXTREME_LOG_MEAN), as_dtype(log_dispersion)), as_dtype(_EXTREME_Y)


def _fixed_extreme(dtype):
    as_dtype = lambda x: jnp.asarray(np.asarray(x, np.float64), dtype)  # noqa: E731
    return as_dtype(_EXTREME_LOG_MEAN), as_dtype(_EXTREME_Y)

"""StudentT: a real target given a location, a log-scale and a log degrees-of-freedom."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.types import StudentTOutputArrays, StudentTOutputs
from mlnll._src.unpack import Params
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("loc", "log_scale", "log_df")

# -- the gamma-ratio function A(x) = log(x)/2 - log Gamma(x + 1/2) + log Gamma(x) ------------------
#
# The Student t normaliser is Gamma((nu+1)/2) / (Gamma(nu/2) sqrt(nu pi)) = exp(-A(nu/2)) / sqrt(2 pi).
# For large x, A(x) ~ 1/(8x) is the difference of two log-gammas of size x log x: at nu = 1e6 the
# plain difference loses 10 digits (and ~3 at nu = 20). No log-gamma is evaluated here:
# * Stirling's series. With B_k(1/2) = (2^(1-k) - 1) B_k, A(X) = sum over even k >= 2 of
#   c_k X^(1-k), c_k = (2 - 2^(1-k)) B_k / (k (k-1)) = 1/(8X) - 1/(192 X^3) + 1/(640 X^5) - ...;
#   six terms (k <= 12) leave a relative truncation error below 2e-19 at X >= 30.
# * The recurrence Gamma(x + 1) = x Gamma(x) brings any x > 0 there:
#   A(x) = A(x + 30) + (1/2) sum_{j<30} log1p(q_j), q_j = 1 / (4 (x+j) (x+j+1)),
#   because log1p(1/(2a)) - log1p(1/a)/2 = log((1 + 1/(2a))^2 / (1 + 1/a)) / 2 = log1p(q)/2 with
#   a = x + j: a sum of positive terms, no cancellation, and the same for its derivatives. It is
#   used for every x (no branch: a smaller graph for autodiff, and q_j ~ 1/(4x^2) is harmless).
_SERIES_FROM = 30.0
_SHIFT = 30
_BERNOULLI = numerics.BERNOULLI_2K[:6]  # B_2 .. B_12
_K = range(2, 14, 2)
_C = tuple((2 - Fraction(2) ** (1 - k)) * b / (k * (k - 1)) for k, b in zip(_K, _BERNOULLI))
# With t = 1/x^2: A = (1/x) sum_j a_j t^j, x A' = (1/x) sum_j a'_j t^j, x^2 A'' = (1/x) sum_j a''_j t^j.
_A = tuple(float(c) for c in _C)
_XA1 = tuple(float(c * (1 - k)) for c, k in zip(_C, _K))
_X2A2 = tuple(float(c * k * (k - 1)) for c, k in zip(_C, _K))

# |z| <= 1, i.e. w = z^2 <= 1 and u = w / (1 + w) <= 1/2: there the log_df score's
# L = log1p(w) - u ~ w^2/2 is the log1pmx series in -u (the direct difference would cancel);
# beyond, the difference cancels at most (log 2) / (log 2 - 1/2) ~ 3.6-fold.
_SMALL_Z = 1.0

# Trapezoid rule for the expectation: y = loc + s sqrt(nu) sinh(tau), tau = xi / sqrt(nu), xi on a
# grid of step 1/6 over [-72, 72]. See StudentT.expectation_nodes.
_XI = numerics.trapezoid_grid(72.0, 1.0 / 6.0)


def _series(coeffs: Sequence[float], x: jax.Array, power: int) -> jax.Array:
    """``x^-power sum_j coeffs_j x^(-2j)``: one of the Stirling series for A, x A' or x^2 A''."""
    t = 1 / (x * x)
    return numerics.horner(coeffs, t) / x**power


def _shift_terms(x: jax.Array, order: int) -> jax.Array:
    """The order-th derivative of ``(1/2) sum_{j<30} log1p(q_j)``, ``q_j = 1 / (4 (x+j) (x+j+1))``.

    With ``a = x + j``, ``b = a + 1``, ``s1 = 1/a + 1/b``, ``s2 = 1/a^2 + 1/b^2`` and ``q'/q = -s1``:
    ``(log1p q)' = -q s1 / (1 + q)`` and ``(log1p q)'' = q (s1^2 + s2 (1 + q)) / (1 + q)^2``:
    terms of one sign, summed without cancellation. The thirty shifts run along a trailing axis.
    """
    a = x[..., None] + jnp.arange(_SHIFT, dtype=x.dtype).reshape((1,) * x.ndim + (_SHIFT,))
    ia, ib = 1 / a, 1 / (a + 1)
    q = 0.25 * ia * ib
    if order == 0:
        terms = jnp.log1p(q)
    elif order == 1:
        terms = -q * (ia + ib) / (1 + q)
    else:
        s1 = ia + ib
        terms = q * (s1 * s1 + (ia * ia + ib * ib) * (1 + q)) / jnp.square(1 + q)
    return 0.5 * jnp.sum(terms, axis=-1)


def _gap_derivative(x: jax.Array, order: int) -> jax.Array:
    """``x^order A^(order)(x)`` for order 0, 1, 2 and every x > 0 (see the comment at ``_SERIES_FROM``):
    the series at ``X = x + 30`` plus the thirty shift terms, each of one sign."""
    coeffs = (_A, _XA1, _X2A2)[order]
    # _series(coeffs, X, 1 + order) is A^(order)(X).
    return x**order * (_series(coeffs, x + _SHIFT, 1 + order) + _shift_terms(x, order))


def gamma_ratio_gap(x: jax.Array) -> jax.Array:
    """``A(x) = log(x)/2 - (log Gamma(x + 1/2) - log Gamma(x))``, ~1/(8x), accurate for every x > 0.

    Its autodiff derivatives are accurate too: the series is a polynomial in 1/x^2 and the shift
    terms are log1p's of positive rationals.
    """
    return _gap_derivative(x, 0)


def x_gamma_ratio_gap_prime(x: jax.Array) -> jax.Array:
    """``x A'(x) = 1/2 - x (digamma(x + 1/2) - digamma(x))``, ~ -1/(8x) for large x, accurately."""
    return _gap_derivative(x, 1)


def df_information(x: jax.Array) -> jax.Array:
    """The Fisher information of ``log_df`` at ``nu = 2x``, accurately for every x (~7/(8 x^2) when large).

    ``I = x^2 (trigamma(x) - trigamma(x + 1/2)) - x (2x + 5) / ((2x + 1)(2x + 3))``, a difference of
    two terms near 1/2. With ``A'' = -1/(2x^2) - trigamma(x + 1/2) + trigamma(x)`` it is
    ``x^2 A''(x) + (3 - 2x) / (2 (2x + 1)(2x + 3))``: for x < 30 the two terms cancel at most
    ~x/3-fold; for x >= 30 it is ``[x^2 A''(x) - 1/(4x)] + (14x + 3) / (4x (2x + 1)(2x + 3))``, where the
    bracket is the series tail ``sum_{k >= 4} c_k k (k-1) x^(1-k)`` (the k = 2 term is exactly
    1/(4x)): no cancellation at all.
    """
    shifted = x < _SERIES_FROM
    xs = jnp.where(shifted, x, jnp.ones_like(x))
    xl = jnp.where(shifted, jnp.full_like(x, _SERIES_FROM), x)
    small = _gap_derivative(xs, 2) + (3 - 2 * xs) / (2 * (2 * xs + 1) * (2 * xs + 3))
    t = 1 / (xl * xl)
    tail = numerics.horner(_X2A2[1:], t) * t / xl
    large = tail + (14 * xl + 3) / (4 * xl * (2 * xl + 1) * (2 * xl + 3))
    return jnp.where(shifted, small, large)


def _gamma_ratio_gap_float(x: float) -> float:
    """``A(x)`` for a Python float, in float64 whatever JAX's precision (for constants)."""
    shift = sum(0.5 * math.log1p(0.25 / ((x + j) * (x + j + 1))) for j in range(_SHIFT))
    big_x = x + _SHIFT
    t = 1 / (big_x * big_x)
    return shift + sum(a * t**j for j, a in enumerate(_A)) / big_x


def _log_df_score(nu: jax.Array, z: jax.Array, q: ls_.OnePlusSquare, r: jax.Array, held: jax.Array) -> jax.Array:
    """``d(-log p)/d log_df = x A'(x) + (nu/2) L - u/2`` (the class docstring), ``x = nu/2``.

    ``L = log1p(w) - u = -log1p(-u) - u``: ``-log1pmx(-u)`` (its series) for |z| <= 1 (u <= 1/2),
    where the difference would cancel; beyond, the difference, which cancels at most ~3.6-fold.
    Where nu is held (``held``: beyond half the largest float) ``nu L = r^2 (L / w)`` (nu w = r^2):
    the same number without nu, which is not O(1/nu) where r^2 is of the order of nu
    (``r^4 / (4 nu)`` for small w; it was taken as 0).
    """
    small = jnp.abs(z) <= _SMALL_Z
    us = jnp.where(small, q.ratio, jnp.zeros_like(q.ratio))
    big_l = jnp.where(small, -numerics.log1pmx(-us), q.log - q.ratio)
    w = z * z
    positive = held & (w > 0)
    nu_l = jnp.where(positive, (r * (big_l / jnp.where(positive, w, 1))) * r, nu * big_l)
    return x_gamma_ratio_gap_prime(nu / 2) + 0.5 * nu_l - 0.5 * q.ratio


def _largest_log_df(dtype) -> float:
    """log(largest float / 2): the log_df beyond which nu is held (the Normal limit)."""
    return math.log(float(jnp.finfo(dtype).max) / 2)


def _data_term(r: jax.Array, z: jax.Array, q: ls_.OnePlusSquare, inv_nu: float | jax.Array) -> jax.Array:
    """``(nu + 1)/2 log1p(z^2)``, ``z = r / sqrt(nu)``, written ``(r^2 / 2)(1 + 1/nu) log1p(w)/w`` for
    ``w = z^2 < 1``: at large nu, w underflows (flushed to 0, and ``log1p(w)/w`` is then 1), where
    the product form would lose the whole ``r^2 / 2`` (log_df = 88.5 in float32 gave the Normal
    value less r^2/2). The same identity; for ``w >= 1`` the weighted log of ``one_plus_square``."""
    w = z * z
    small = w < 1
    ratio = jnp.where(w > 0, q.log / jnp.where(w > 0, w, 1), 1)  # log1p(w) / w, 1 at w = 0
    return jnp.where(small, (0.5 * jnp.where(small, r * r, 0)) * (1 + inv_nu) * ratio, q.weighted_log)


def _value_and_partials(df: float | None, loc: jax.Array, log_scale: jax.Array, log_df: jax.Array,
                        y: jax.Array):
    """``log p`` (the class docstring) and its partials in ``(loc, log_scale, log_df, y)``.

    ``df`` is static: a fixed df (``log_df`` then unused) makes nu and the normaliser
    ``-A(nu/2) - log(2 pi)/2`` Python constants, and the log_df partial ``None``. With
    ``z = r / sqrt(nu)``, ``one_plus_square(z)`` gives ``log1p(w)``, ``z / (1 + w)``, ``u`` and
    ``(r^2 - 1) / (1 + w)`` from one ``log1p`` and one division, none overflowing:
    ``d log p / d loc = (nu + 1) z / ((1 + w) sqrt(nu) s) = -d log p / d y`` and
    ``d log p / d log_scale = (r^2 - 1) / (1 + w)``. The value's data term is
    ``(nu + 1)/2 log1p(w)``, to full relative accuracy at any nu (``log1p`` of a small w is).
    """
    if df is None:
        # nu itself at most half the largest float: (nu + 1) / 2 and the normaliser stay finite
        # (log_df = 1e4 gave NaN; A(nu/2) ~ 1/(4 nu) is below tiny there either way). What depends
        # on the exact nu goes through 1/sqrt(nu), sqrt(nu) and 1/nu of log_df held only at
        # -2 (log(tiny) + 1) (1/sqrt(nu) stays normal, so r / sqrt(nu) is never inf * 0; beyond, r^2/nu is
        # below tiny wherever r^2 is a number): z, w = z^2 and the data term
        # (r^2/2)(1 + 1/nu) log1p(w)/w are those of the exact nu (with nu held, r^2 / nu was up to 4
        # times too large: 5% off at log_df = 89.4, r = 3e18 in float32).
        held = log_df > _largest_log_df(log_df.dtype)
        nu = jnp.exp(jnp.minimum(log_df, _largest_log_df(log_df.dtype)))
        log_df = jnp.minimum(log_df, -2 * (math.log(float(jnp.finfo(log_df.dtype).tiny)) + 1))
        inv_sqrt_nu, sqrt_nu, inv_nu = jnp.exp(-0.5 * log_df), jnp.exp(0.5 * log_df), jnp.exp(-log_df)
        # (nu + 1)/2 where nu is held is (sqrt(nu)/2) sqrt(nu), finite up to twice the largest float
        weight = jnp.where(held, (0.5 * sqrt_nu) * sqrt_nu, 0.5 * (nu + 1))
        normaliser = -gamma_ratio_gap(nu / 2)
    else:
        nu, inv_sqrt_nu, sqrt_nu, inv_nu = df, 1 / math.sqrt(df), math.sqrt(df), 1 / df
        weight = 0.5 * (nu + 1)
        normaliser = -_gamma_ratio_gap_float(df / 2)
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    z = r * inv_sqrt_nu
    # log|z| = log|y - loc| - log_scale - log(nu)/2 where z overflows (one_plus_square's far)
    half_log_nu = 0.5 * log_df if df is None else 0.5 * math.log(df)
    q = ls_.one_plus_square(z, weight=weight, far=(y, loc, -log_scale - half_log_nu))
    # The forms that survive nu near the top of the range (a learned df, or a fixed df above
    # 2 eps / tiny = 2e31 in float32) cost a pass on XLA:CPU; a smaller fixed df loses nothing
    # visible to the underflow of w = z^2 or r / nu (what is lost is below tiny nu), so it keeps
    # the plain ones.
    robust = df is None or df > 2 * float(jnp.finfo(r.dtype).eps / jnp.finfo(r.dtype).tiny)
    data = _data_term(r, z, q, inv_nu) if robust else q.weighted_log
    value = normaliser - numerics.HALF_LOG_2PI - log_scale - data
    # (nu + 1) z / ((1 + z^2) sqrt(nu) s) = (1 + 1/nu) r h / s: r / nu would underflow at large nu.
    # Beyond |z| = 2^60 it is (nu + 1) / (y - loc) (OnePlusSquare.odd_over_scale says why).
    if robust:
        safe = jnp.where(q.huge, y - loc, jnp.ones_like(r))
        d_loc = jnp.where(q.huge, (nu + 1) / safe, (1 + inv_nu) * (r * q.h) * inv_scale)
    else:
        d_loc = (nu + 1) * q.odd_over_scale(inv_scale, inv_sqrt_nu, y - loc)
    d_log_scale = q.square_minus_one_over(jnp.abs(r), scale=sqrt_nu)
    d_log_df = None if df is not None else -_log_df_score(nu, z, q, r, held)  # type: ignore[arg-type]  # df None: nu is an array
    return value, (d_loc, d_log_scale, d_log_df, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
student_t_log_pdf = closed_form(_value_and_partials, num_static=1)


# -- the tails: log S(r) = log P(T > r) of the standard t(nu), r >= 0 (StudentT.log_cdf, log_survival) --
# Five geometric panels of 16 nodes on [0, cut]: cosh(theta)^-nu has its singularities at
# theta = +-i pi/2, within pi/2 of the real axis near theta = 0, where a small df's cut is ~80/nu long.
_TAIL_RULE = np.polynomial.legendre.leggauss(16)
_TAIL_PANELS = 5


def _kernel(nu, theta0, tanh0, w):
    """``-nu (log cosh(theta0 + w) - log cosh(theta0))``, w >= 0: ``-nu log1p(2 sinh(w/2)^2 +
    tanh(theta0) sinh(w))`` below w = 1 (cosh(theta0 + w) / cosh(theta0) = cosh w + tanh(theta0) sinh w,
    cosh w - 1 = 2 sinh(w/2)^2: no cancellation), the difference of the two ``log_cosh`` above."""
    near = w < 1
    wn = jnp.where(near, w, jnp.zeros_like(w))
    ratio = jnp.log1p(2 * jnp.square(jnp.sinh(wn / 2)) + tanh0 * jnp.sinh(wn))
    return -nu * jnp.where(near, ratio, numerics.log_cosh(theta0 + w) - numerics.log_cosh(theta0))


def _upper_tail(nu, log_nu, x_gap_prime, r0, log_p0):
    """``(log S(r0), log(p0(r0) / S(r0)), d log S / d log nu)`` for r0 >= 0 (``StudentT.log_cdf``)."""
    drop = numerics.tail_cut_depth(r0.dtype)
    theta0 = jnp.arcsinh(r0 * jnp.exp(-0.5 * log_nu))
    tanh0 = jnp.tanh(theta0)
    cut = numerics.newton_cut(lambda w: _kernel(nu, theta0, tanh0, w), lambda w: -nu * jnp.tanh(theta0 + w),
                              numerics.quadratic_root(nu * tanh0, nu * (1 - tanh0 * tanh0), drop), drop)
    w, log_weights = numerics.geometric_panels(_TAIL_RULE, cut, _TAIL_PANELS)
    theta = theta0[None] + w
    log_terms = _kernel(nu[None], theta0[None], tanh0[None], w) + log_weights
    # the log_df score of log p0 at each node (the class docstring's, negated), u = tanh(theta)^2:
    # -x A'(x) - (nu/2) L + u/2, L = log1p(w) - u = -log1pmx(-u) (u <= 1/2) or 2 log cosh - u
    u = jnp.square(jnp.tanh(theta))
    small = u <= 0.5
    big_l = jnp.where(small, -numerics.log1pmx(-jnp.where(small, u, jnp.zeros_like(u))), 2 * numerics.log_cosh(theta) - u)
    score = -x_gap_prime[None] - 0.5 * nu[None] * big_l + 0.5 * u
    top = jax.lax.stop_gradient(jnp.max(log_terms, axis=0))
    e = jnp.exp(log_terms - top[None])
    total = jnp.sum(e, axis=0)
    log_j = top + jnp.log(total)
    # S = p0(r0) sqrt(nu) cosh(theta0) J (r = sqrt(nu) sinh(theta): dr = sqrt(nu) cosh(theta) dtheta,
    # p0 ~ cosh(theta)^-(nu + 1)), so p0 / S = 1 / (sqrt(nu) cosh(theta0) J)
    log_ratio = -(0.5 * log_nu + numerics.log_cosh(theta0) + log_j)
    return log_p0 - log_ratio, log_ratio, jnp.sum(e * score, axis=0) / total


def _log_tails_and_partials(df, upper: bool, loc, log_scale, log_df, y):
    """``log F(y)`` (or ``log S(y)``) and its partials in ``(loc, log_scale, log_df, y)`` for finite y;
    ``df`` static as for ``log_prob`` (the derivation is ``StudentT.log_cdf``'s)."""
    log_p, (_, _, d_log_df_p, _) = _value_and_partials(df, loc, log_scale, log_df, y)
    if df is None:
        held = log_df > _largest_log_df(log_df.dtype)
        log_nu = jnp.minimum(log_df, _largest_log_df(log_df.dtype))
    else:
        log_nu = jnp.full_like(loc, math.log(df))
    nu = jnp.exp(log_nu)
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    r0 = jnp.abs(r)
    # x A'(x) from the log-density's own score at r0: d log p / d log_df = -(x A' + (nu/2) L - u/2)
    x_gap_prime = x_gamma_ratio_gap_prime(nu / 2)
    log_s, log_ratio, d_log_nu = _upper_tail(nu, log_nu, x_gap_prime, r0, log_p + log_scale)
    # S(|r|) is the smaller tail: log S for r >= 0, log F (= log S(-r) by symmetry) for r < 0
    own = (r >= 0) == upper
    complement = numerics.log1mexp(-jnp.where(own, -jnp.ones_like(log_s), log_s))
    value = jnp.where(own, log_s, complement)
    odds = jnp.exp(jnp.where(own, jnp.zeros_like(log_s), log_s - complement))  # S / (1 - S)
    # d log T / dr = +-p0(r) / T: +p0/F for log_cdf, -p0/S for log_survival; p0/T = p0/S (own) or
    # (p0/S) odds (the complement)
    slope = (-1.0 if upper else 1.0) * jnp.exp(log_ratio) * odds
    d_log_df = None if df is not None else jnp.where(held, 0, jnp.where(own, d_log_nu, -odds * d_log_nu))
    # dr/dloc = -1/scale, dr/dlog_scale = -r, dr/dy = 1/scale
    return value, (-slope * inv_scale, -slope * r, d_log_df, slope * inv_scale)


# log F and log S, differentiated by their partials (closed_form.py).
student_t_log_tail = closed_form(jax.jit(_log_tails_and_partials, static_argnums=(0, 1)), num_static=2)


@dataclasses.dataclass(frozen=True)
class StudentT:
    r"""Student's t distribution of a real target.

    outputs: ``(loc, log_scale, log_df)``. ``StudentT(df=nu)`` fixes the degrees of freedom and
    takes ``(loc, log_scale)``; ``StudentT(scale=s)`` fixes the scale and takes ``(loc, log_df)``;
    with both fixed, outputs is ``loc`` alone. targets: reals, broadcastable with the outputs.

    Density, with ``s = exp(log_scale)``, ``nu = exp(log_df)``, ``x = nu/2``, ``r = (y - loc) / s``,
    ``z = r / sqrt(nu)`` and ``w = z^2``:
    ``log p(y) = log Gamma((nu+1)/2) - log Gamma(nu/2) - log(nu pi)/2 - log_scale - (nu+1)/2 log(1 + w)``
    ``         = -A(x) - log(2 pi)/2 - log_scale - (nu+1)/2 log1p(w)``,
    with ``A(x) = log(x)/2 - log Gamma(x + 1/2) + log Gamma(x)`` evaluated without log-gammas (a
    Stirling series, shifted by the recurrence of Gamma below x = 30), so that nu = 1e6 keeps full
    accuracy (the normal limit is A -> 0, nu w -> r^2). With df fixed, ``A(nu/2)`` is a constant
    computed once in float64.

    Gradient of ``-log p``. With ``dr/dloc = -1/s``, ``dr/dlog_scale = -r``, ``dz/dr = 1/sqrt(nu)``,
    ``dw/dlog_df = -w`` and ``u = w / (1 + w)``:
    ``d/dloc = -(nu + 1) z / ((1 + z^2) sqrt(nu) s)``;
    ``d/dlog_scale = 1 - (nu + 1) u = (1 - r^2) / (1 + w)``;
    ``d/dlog_df = x A'(x) + (nu/2) log1p(w) - (nu + 1) u / 2 = x A'(x) + (nu/2) L - u/2``, where
    ``x A'(x) = 1/2 - x (digamma(x + 1/2) - digamma(x))`` and ``L = log1p(w) - u = -log1p(-u) - u``
    (the ``log1pmx`` series for small u): each term O(1/nu), none cancelling.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form, not
    through autodiff of the density's branches; the targets are differentiable too
    (``d log p/dy = -d log p/dloc``).

    Fisher information in ``(loc, log_scale, log_df)`` (Lange, Little & Taylor 1989, JASA 84, for
    ``(mu, sigma, nu)``, rescaled by ``d sigma/d log_scale = s`` and ``d nu/d log_df = nu``):
    ``I_loc,loc = (nu + 1) / ((nu + 3) s^2)``, ``I_ls,ls = 2 nu / (nu + 3)``,
    ``I_ls,ldf = -2 nu / ((nu + 1)(nu + 3))``, ``I_loc,ls = I_loc,ldf = 0`` (odd in r), and
    ``I_ldf,ldf = x^2 (trigamma(x) - trigamma(x + 1/2)) - x (2x + 5) / ((2x + 1)(2x + 3))``
    (by ``E[score^2]``; ``E[u] = 1/(nu+1)``, ``E[u^2] = 3/((nu+1)(nu+3))`` as u ~ Beta(1/2, nu/2)),
    evaluated without cancellation (see ``df_information``). Fixed parameters drop their rows.

    The mean is ``loc`` for nu > 1 and undefined (NaN) otherwise. The KL divergence between two t
    distributions has no closed form: ``kl`` raises.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> loc, log_scale, y = jnp.array(0.0), jnp.array(0.0), jnp.array(1.0)
      >>> float(mlnll.StudentT(df=1.0).log_prob((loc, log_scale), y))  # Cauchy: -log(2 pi)
      -1.837877...
      >>> float(mlnll.StudentT().log_prob((loc, log_scale, jnp.log(jnp.array(1e6))), y))  # ~Normal
      -1.41893...
    """

    df: float | None = None
    scale: float | None = None

    def __post_init__(self):
        ls_.check_positive_option("StudentT", "df", self.df)
        ls_.check_positive_option("StudentT", "scale", self.scale)

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return ls_.describe("StudentT", df=self.df, scale=self.scale)

    @property
    def _fixed(self) -> dict[str, float]:
        fixed = {}
        if self.scale is not None:
            fixed["log_scale"] = math.log(self.scale)
        if self.df is not None:
            fixed["log_df"] = math.log(self.df)
        return fixed

    def _with_nu(self, p: Params) -> Params:
        """``p`` with ``nu`` and ``inv_sqrt_nu = 1/sqrt(nu)``: a fixed df as given, else exp(log_df)."""
        if self.df is not None:
            nu = jnp.full_like(p.log_df, self.df)
            inv_sqrt_nu = jnp.full_like(p.log_df, 1 / math.sqrt(self.df))
        else:
            nu, inv_sqrt_nu = jnp.exp(p.log_df), jnp.exp(-0.5 * p.log_df)
        return p.replace(nu=nu, inv_sqrt_nu=inv_sqrt_nu)

    def _unpack(self, outputs) -> Params:
        """``loc``, ``log_scale``, ``log_df`` (fixed ones filled in), ``nu`` and ``inv_sqrt_nu``, by name."""
        return self._with_nu(unpack.unpack(outputs, family=self._name, names=_NAMES, fixed=self._fixed))

    def _with_targets(self, outputs, targets) -> tuple[Params, jax.Array]:
        """The parameters (fixed ones filled in) and the targets, broadcast together."""
        p = unpack.unpack(outputs, family=self._name, names=_NAMES, fixed=self._fixed)
        return unpack.with_targets(p, targets, family=self._name)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: StudentTOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log t(y; nu, loc, s)``, equal to scipy.stats.t.logpdf (nu = 1e6 included)."""
        p, y = self._with_targets(outputs, targets)
        log_df = p.log_df if self.df is None else jnp.asarray(math.log(self.df), p.loc.dtype)
        log_scale = ls_.log_scale_argument(p, self.scale)
        finite, ys = ls_.finite_targets(y)
        return minus_inf_off_support(student_t_log_pdf(self.df, p.loc, log_scale, log_df, ys), finite).astype(p.dtype)

    def grad(self, outputs: StudentTOutputs, targets: ArrayLike) -> StudentTOutputArrays:
        """Closed form (see the class docstring) for the free outputs, in table order."""
        p, y = self._with_targets(outputs, targets)
        finite, y = ls_.finite_targets(y)
        _, (d_loc, d_log_scale, d_log_df, _) = _value_and_partials(self.df, p.loc, p.log_scale, p.log_df, y)
        partials = {"loc": d_loc, "log_scale": d_log_scale, "log_df": d_log_df}
        return ls_.nan_off_support(finite, ls_.neg_partials(partials, _NAMES, self._fixed, p.dtype))

    def log_cdf(self, outputs: StudentTOutputs, targets: ArrayLike) -> jax.Array:
        r"""Per-example ``log F(y)`` (scipy.stats.t.logcdf), accurate in both tails for every df
        (0.5 to 1e6 tested against mpmath); ``-inf`` at y = -inf, 0 at +inf. ``jax.grad`` runs the
        closed form below, in loc, log_scale, log_df and y.

        With ``r = (y - loc)/s`` and the standard density p0: ``F(r) = S(-r)`` (symmetry), and the
        smaller tail ``S(r0)``, ``r0 = |r|``, is integrated after ``t = sqrt(nu) sinh(theta)``, under
        which ``p0(t) dt`` is proportional to ``cosh(theta)^-nu dtheta`` (log-concave): anchored at
        ``theta0 = asinh(r0 / sqrt(nu))``,
        ``S(r0) = p0(r0) sqrt(nu) cosh(theta0) J``, ``J = int_0^inf exp(-nu (log cosh(theta0 + w) - log cosh(theta0))) dw``,
        by Gauss-Legendre on five geometric panels of ``[0, cut]`` (16 nodes each), the cut where the exponent has fallen by 40
        (float64; 20 in float32), found by Newton's method on the concave exponent from the root of
        its quadratic model (an upper bound). ``log p0(r0)`` is ``log_prob``'s (accurate at any df);
        the other tail is ``log(1 - S)`` (``log1mexp``).

        Derivatives: ``d log F / dr = p0 / F``, as ``1 / (sqrt(nu) cosh(theta0) J)`` (times
        ``S / (1 - S)`` for the larger tail), so ``d/dloc = -(p0/F)/s``, ``d/dlog_scale = -r p0/F``,
        ``d/dy = (p0/F)/s``; in log_df, differentiating under the integral (r fixed),
        ``d log S / d log nu = E[g(t) | t > r0]``, g the log-density's log_df score
        ``-x A'(x) - (nu/2) L(t) + u(t)/2`` (``u = tanh(theta)^2``, ``L = -log1pmx(-u)``: each O(1/nu)
        at large nu and exact in relative terms), averaged with the quadrature's own weights; the
        larger tail's is ``-S/(1 - S)`` times it.
        """
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: StudentTOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log(1 - F(y))`` (scipy.stats.t.logsf), accurate where S is tiny
        and where it is near 1; the forms and derivatives are ``log_cdf``'s."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        p, y = self._with_targets(outputs, targets)
        log_df = p.log_df if self.df is None else jnp.asarray(math.log(self.df), p.loc.dtype)
        log_scale = ls_.log_scale_argument(p, self.scale)
        finite, ys = ls_.finite_targets(y)
        value = student_t_log_tail(self.df, upper, p.loc, log_scale, jnp.broadcast_to(log_df, p.loc.shape), ys)
        return _tails.at_the_ends(value, y, finite, upper).astype(p.dtype)

    def params(self, outputs: StudentTOutputs) -> dict[str, jax.Array]:
        p = self._unpack(outputs)
        return {**ls_.loc_and_scale(p), "df": p.nu.astype(p.dtype)}

    def mean(self, outputs: StudentTOutputs) -> jax.Array:
        """``loc`` where nu > 1; NaN where nu <= 1 (E|y| is infinite there)."""
        p = self._unpack(outputs)
        return jnp.where(p.nu > 1, p.loc, jnp.full_like(p.loc, jnp.nan)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: StudentTOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + s * e`` with e standard t(nu), shape ``sample_shape + batch``."""
        p = self._unpack(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        eps = jax.random.t(key, jnp.broadcast_to(p.nu, shape), shape, dtype=p.loc.dtype)
        return ls_.shift_and_scale(p.loc, p.log_scale, eps).astype(p.dtype)

    def entropy(self, outputs: StudentTOutputs) -> jax.Array:
        """``log_scale + (nu+1)/2 (digamma((nu+1)/2) - digamma(nu/2)) + log(sqrt(nu) B(nu/2, 1/2))``.

        In terms of A: ``log_scale + log(2 pi)/2 + 1/2 + A(x) + 1/(4x) - (1 + 1/(2x)) x A'(x)``, a sum
        of positive terms beyond the normal entropy (their total ~ 1/nu), accurate at any nu.
        """
        p = self._unpack(outputs)
        x = p.nu / 2
        excess = gamma_ratio_gap(x) + 0.25 / x - (1 + 0.5 / x) * x_gamma_ratio_gap_prime(x)
        return (p.log_scale + numerics.HALF_LOG_2PI + 0.5 + excess).astype(p.dtype)

    def kl(self, outputs_p: StudentTOutputs, outputs_q: StudentTOutputs) -> jax.Array:
        """Not available: the KL divergence between two t distributions has no closed form."""
        raise NotImplementedError(
            f"{self._name}.kl: the KL divergence between two Student t distributions has no closed form; "
            "estimate it by Monte Carlo, e.g. mean(log_prob(p, y) - log_prob(q, y)) over y = sample(key, p)."
        )

    def fisher(self, outputs: StudentTOutputs) -> jax.Array:
        """The 3 x 3 information of the class docstring (shape [..., P, P]; fixed parameters dropped)."""
        p = self._unpack(outputs)
        nu = p.nu
        entries = {
            ("loc", "loc"): (nu + 1) / (nu + 3) * jnp.exp(-2 * p.log_scale),
            ("log_scale", "log_scale"): 2 * nu / (nu + 3),
            ("log_scale", "log_df"): -2 * nu / ((nu + 1) * (nu + 3)),
            ("log_df", "log_df"): df_information(nu / 2),
        }
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs.

        ``-log(pi)/2`` when df is learned; with ``df`` fixed, the whole normaliser
        ``log Gamma((nu+1)/2) - log Gamma(nu/2) - log(nu pi)/2``; and ``-log(scale)`` if the scale is fixed.
        """
        if self.df is None:
            const = -0.5 * math.log(math.pi)
        else:
            const = -_gamma_ratio_gap_float(self.df / 2) - numerics.HALF_LOG_2PI
        if self.scale is not None:
            const -= math.log(self.scale)
        return ls_.constant_like(targets, const, family=self._name)

    def expectation_nodes(self, outputs: StudentTOutputs) -> tuple[jax.Array, jax.Array]:
        """Trapezoid rule after ``y = loc + s sqrt(nu) sinh(tau)``, ``tau = xi / sqrt(nu)``; ``[865, *batch]``

        Under that substitution ``p(y) dy`` is proportional to ``cosh(tau)^-nu dtau``, and every
        Hessian entry is a smooth function of ``tanh(tau)^2`` and ``log cosh(tau)``, analytic in
        the strip ``|Im tau| < pi/2``. The trapezoid rule on ``xi`` (step 1/6, ``|xi| <= 72``) then
        converges geometrically: about 1e-15 relative for every nu >= 0.5 (the grid resolves the
        Gaussian core of width 1 in xi at large nu, and the ``exp(-sqrt(nu) |xi|)`` tails at small nu).
        Weights are ``cosh(tau_k)^-nu``, normalised to sum to 1.
        """
        p = self._unpack(outputs)
        xi = numerics.batch_nodes(_XI, p.loc)
        tau = xi * p.inv_sqrt_nu[None]
        nodes = p.loc[None] + (jnp.exp(p.log_scale) * jnp.sqrt(p.nu))[None] * jnp.sinh(tau)
        log_w = -p.nu[None] * numerics.log_cosh(tau)
        w = jnp.exp(log_w - jnp.max(log_w, axis=0, keepdims=True))
        return nodes, w / jnp.sum(w, axis=0, keepdims=True)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: df from 0.5 to 200 at random, and 0.5 to 1e3 among the
        extremes (log-scales of ±80, targets 1e30 away from the location)."""
        return (
            Case("StudentT", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_t), plain_log_prob=_plain_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------
#
# At nu = 1e6 the closed forms stay exact, but the check's oracle for ``fisher``, the quadrature of
# autodiff Hessians, cancels to ~2e-11 there; tests/test_reals.py checks that corner against mpmath.
# Fixed-parameter variants are left to the tests: every row costs compile time.


def _plain_log_prob(outputs, y):
    """``log Gamma((nu+1)/2) - log Gamma(nu/2) - log(nu pi)/2 - log(s) - (nu+1)/2 log(1 + r^2/nu)``,
    ``r = (y - loc) / s``: the textbook formula.

    As an oracle it is good to about nu = 100 in float64: its log_df derivative is a difference of
    digammas of size log(nu) scaled by nu/2, so it carries ~nu log(nu) eps of rounding against a
    natural scale sqrt(I_ldf,ldf) ~ 1.9/nu (~1.5e-11 relative at nu = 200, where the closed form
    is within 1e-15 of mpmath); tests/test_reals.py checks large df against mpmath.
    """
    loc, log_scale, log_df = outputs
    nu, r = jnp.exp(log_df), (y - loc) / jnp.exp(log_scale)
    gammaln = jax.scipy.special.gammaln
    return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * jnp.log(nu * jnp.pi) - log_scale
            - (nu + 1) / 2 * jnp.log(1 + r**2 / nu))


def _scipy_t(outputs):
    import scipy.stats

    loc, log_scale, log_df = outputs
    return scipy.stats.t(np.exp(log_df), loc, np.exp(log_scale))


def _standard_t(nu: jax.Array, w: jax.Array, u: jax.Array) -> jax.Array:
    """Exact standard t(nu) draws in closed form: ``cos(2 pi u) sqrt(nu (w^(-2/nu) - 1))``, u, w uniform.

    Bailey's polar method (Math. Comp. 62, 1994) takes a point uniform in the unit disk, of
    squared radius w and angle theta, to ``t = cos(theta) sqrt(nu (w^(-2/nu) - 1))``; w is itself
    uniform on (0, 1), so no rejection step is needed (``jax.random.t`` draws a gamma variate by
    rejection, a loop that compiles slowly). ``w^(-2/nu) - 1 = expm1(-2 log(w) / nu)``.
    """
    return jnp.cos(2 * math.pi * u) * jnp.sqrt(nu * jnp.expm1(-2 * jnp.log(w) / nu))


def _random(key, dtype, n):
    """Standard normal ``loc`` and ``log_scale``, ``df`` log-uniform on [0.5, 200], ``y`` from the family."""
    u = ls_.open_uniforms(key, (5, n), dtype)
    loc, log_scale = ls_.standard_normal(u[0]), ls_.standard_normal(u[1])
    log_df = math.log(0.5) + (math.log(200.0) - math.log(0.5)) * u[2]
    return (loc, log_scale, log_df), loc + jnp.exp(log_scale) * _standard_t(jnp.exp(log_df), u[3], u[4])


def _extreme(dtype):
    (loc, log_scale), y = ls_.extreme_inputs(dtype)
    log_df = jnp.log(jnp.array([0.5, 1e3, 1.0, 0.5, 1e3, 30.0, 4.0], dtype))
    return (loc, log_scale, log_df), y

"""Stable pieces of log-gamma and of the modified Bessel function I0, for the positive families.

Gamma, Beta and Dirichlet log-likelihoods at large concentrations subtract numbers of size
``a log a`` (1.4e7 at a = 1e6) to leave a result of size 1; the plain ``gammaln`` formulas lose
about 9 digits there. They are rewritten with the Stirling remainder

    delta(x) = gammaln(x) - [(x - 1/2) log x - x + log(2 pi) / 2]        (~ 1/(12 x))

so that only O(1) quantities are added, and with ``x (exp(u) - 1 - u)`` for the part that
cancels (Loader's saddle-point form). VonMises needs ``log I0(k)`` and ``I1(k)/I0(k)`` near
k = 1e6, where ``1 - I1/I0 ~ 1/(2k)`` would lose 6 digits to cancellation; both get an asymptotic
series in 1/k there. Every function accepts and returns arrays of one floating dtype.

Where the derivative of one of these functions is another of them (delta' of delta, expm1 of
exp(u) - 1 - u, -(1 - I1/I0) of log i0e), it is stated with ``jax.custom_jvp`` (not custom_vjp:
``jacfwd`` and ``hessian`` keep working). The values are the same as autodiff's up to rounding,
the derivative of log i0e keeps the digits that ``(i1e - i0e)/i0e`` cancels at large k, and the
Hessians of the log-likelihoods compile to a fraction of the size of traced series.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from mlnll._src.numerics.elementary import HALF_LOG_2PI, expm1mx, mul_nonzero
from mlnll._src.numerics.series import STIRLING_COEFFS, horner, stirling_series

_STIRLING = STIRLING_COEFFS  # delta(x) = sum_k _STIRLING[k] x^-(2k+1), x >= 10
_STIRLING_MIN = 10.0


def _bessel_ratio_series(n_terms: int) -> tuple[Fraction, ...]:
    """Coefficients c_n of ``1 - I1(k)/I0(k) ~ sum_n c_n / k^n`` (k -> inf).

    B = 1 - I1/I0 solves the Riccati equation B' = 1/k - B/k - 2B + B^2 (from I0' = I1 and
    I1' = I0 - I1/k); matching powers of 1/k gives c_1 = 1/2 and
    2 c_n = (n - 2) c_(n-1) + sum_(i=1..n-1) c_i c_(n-i): 1/2, 1/8, 1/8, 25/128, 13/32, ...
    """
    c = [Fraction(0), Fraction(1, 2)]
    for n in range(2, n_terms + 1):
        c.append(((n - 2) * c[n - 1] + sum(c[i] * c[n - i] for i in range(1, n))) / 2)
    return tuple(c[1:])


# At k >= 25 the 25-term series is within 1e-17 (relative) of 1 - I1/I0 and of log i0e (checked
# against mpmath in the tests); below 25, i1e / i0e loses at most 2k ulp to the subtraction.
_BESSEL_SERIES_MIN = 25.0
_BESSEL_C = _bessel_ratio_series(25)


def _complement_quadrature(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``s_j = 1 - cos t_j`` and weights ``w_j / pi`` of n-point Gauss-Legendre on [0, pi]."""
    x, w = np.polynomial.legendre.leggauss(n)
    t = (x + 1) * (math.pi / 2)
    return 2 * np.sin(t / 2) ** 2, w / 2


# e^-k (I0(k) - I1(k)) = (1/pi) int_0^pi e^(-k (1 - cos t)) (1 - cos t) dt: a positive integrand, so
# no cancellation; 32 points reach ~1e-14 relative for k in (0, 25] (checked against mpmath).
_COMPLEMENT_NODES, _COMPLEMENT_WEIGHTS = _complement_quadrature(32)


def _bessel_ratio_complement_quadrature(k: jax.Array) -> jax.Array:
    """``1 - I1(k)/I0(k) = [e^-k (I0(k) - I1(k))] / i0e(k)``, the numerator by quadrature."""
    shape = (1,) * k.ndim + (len(_COMPLEMENT_NODES),)
    nodes = jnp.asarray(_COMPLEMENT_NODES, k.dtype).reshape(shape)
    weights = jnp.asarray(_COMPLEMENT_WEIGHTS, k.dtype).reshape(shape)
    numerator = jnp.sum(weights * nodes * jnp.exp(-k[..., None] * nodes), axis=-1)
    return numerator / special.i0e(k)
# Terms of the positive power series of ``scaled_bessel_ratio_grad`` below k = 25: the omitted
# tail (j >= 90) is below 1e-20 of the sum there.
_POSITIVE_SERIES_TERMS = 90


def _split(x: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(large, x_large, x_small)``: the branch mask and x clamped into each branch (double where)."""
    large = x >= threshold
    return large, jnp.where(large, x, threshold), jnp.where(large, jnp.ones_like(x), x)


# -- log-gamma ------------------------------------------------------------------------------------


@jax.custom_jvp
def stirling_remainder(x: jax.Array) -> jax.Array:
    """``delta(x) = gammaln(x) - (x - 1/2) log x + x - log(2 pi)/2``, accurate for all x > 0.

    Its derivative is stated (``stirling_remainder_grad``) rather than traced through the series:
    the same value, and Hessians of the log-likelihoods compile to a fraction of the size.
    """
    large, xl, xs = _split(x, _STIRLING_MIN)
    direct = special.gammaln(xs) - (xs - 0.5) * jnp.log(xs) + xs - HALF_LOG_2PI
    return jnp.where(large, stirling_series(xl), direct)


@stirling_remainder.defjvp
def _stirling_remainder_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return stirling_remainder(x), stirling_remainder_grad(x) * dx


def _stirling_remainder_grad_series(x: jax.Array) -> jax.Array:
    """``delta'(x)`` for x >= 10: the derivative of the Stirling series."""
    coeffs = [-(2 * k - 1) * c for k, c in enumerate(_STIRLING, start=1)]
    return horner(coeffs, 1 / (x * x)) / (x * x)


# delta'(x) - delta'(x + 1) = log1p(1/x) - 1/(2x) - 1/(2(x + 1)); with w = 1/(2x + 1),
# log1p(1/x) = 2 atanh(w) = 2 sum_k w^(2k+1)/(2k+1) and 1/(2x) + 1/(2(x+1)) = 2w/(1 - w^2)
# = 2 sum_k w^(2k+1), so the step is -2 sum_(k>=1) 2k/(2k+1) w^(2k+1): terms of one sign. At x >= 1/2
# (w <= 1/2) 26 of them reach 1e-16.
_STEP_COEFFS = tuple(-2 * (2 * k) / (2 * k + 1) for k in range(1, 27))
_SHIFTED_FROM = 0.5  # below, digamma(x) - log x + 1/(2x) cancels by at most a factor ~5


def _stirling_remainder_grad_step(x: jax.Array) -> jax.Array:
    """``delta'(x) - delta'(x + 1)`` for x >= 1/2, as a series of terms of one sign."""
    w = 1 / (2 * x + 1)
    w2 = w * w
    return horner(_STEP_COEFFS, w2) * w2 * w


@jax.custom_jvp
def stirling_remainder_grad(x: jax.Array) -> jax.Array:
    """``delta'(x) = digamma(x) - log x + 1/(2x)`` (~ -1/(12 x^2)), accurate for all x > 0.

    x >= 10: the series. 1/2 <= x < 10: ``delta'(x + 10) + sum_(j<10) [delta'(x+j) - delta'(x+j+1)]``,
    every step a sum of terms of one sign (see ``_STEP_COEFFS``), so nothing cancels; written as
    digamma(x) - log x + 1/(2x) it cancels ~12 x^2 log x-fold (2.4e-4 relative in float32 near 10).
    Below 1/2 that direct form, which cancels at most ~5-fold there.
    """
    large, xl, _ = _split(x, _STIRLING_MIN)
    middle = (x >= _SHIFTED_FROM) & ~large
    xm = jnp.where(middle, x, jnp.full_like(x, _SHIFTED_FROM))
    steps = int(_STIRLING_MIN)
    # A loop, not ten unrolled copies of the 26-term step: the same sums in the same order, and the
    # graph of delta' shrinks from ~690 to ~140 operations in every gradient and Hessian that calls it.
    add = lambda j, acc: acc + _stirling_remainder_grad_step(xm + j.astype(xm.dtype))  # noqa: E731
    shifted = jax.lax.fori_loop(0, steps, add, _stirling_remainder_grad_series(xm + steps))
    xs = jnp.where(x < _SHIFTED_FROM, x, jnp.full_like(x, 0.25))
    direct = special.digamma(xs) - jnp.log(xs) + 0.5 / xs
    return jnp.where(large, _stirling_remainder_grad_series(xl), jnp.where(middle, shifted, direct))


@stirling_remainder_grad.defjvp
def _stirling_remainder_grad_jvp(primals, tangents):
    """``delta''(x)``: the series below over x^2 from 10 on; below, with trigamma(x) =
    trigamma(x + 1) + 1/x^2, ``trigamma(x + 1) + (1/(2x) - 1)/x`` (no 1/x^2 - 1/x^2 overflow)."""
    (x,), (dx,) = primals, tangents
    large, xl, xs = _split(x, _STIRLING_MIN)
    hess = jnp.where(large, _scaled_stirling_remainder_hess(xl) / (xl * xl),
                     special.polygamma(1, xs + 1) + (0.5 / xs - 1) / xs)
    return stirling_remainder_grad(x), hess * dx


def _scaled_stirling_remainder_hess(x: jax.Array) -> jax.Array:
    """``x^2 delta''(x) = x^2 (trigamma(x) - 1/x - 1/(2 x^2))`` (~ 1/(6 x)), for x >= 10 only."""
    coeffs = [2 * k * (2 * k - 1) * c for k, c in enumerate(_STIRLING, start=1)]
    return horner(coeffs, 1 / (x * x)) / x


def _shifted_sum(term, x: jax.Array) -> jax.Array:
    """``sum_(j=0..9) term(j, x)`` as a loop (one copy of ``term`` in the compiled graph)."""
    add = lambda j, acc: acc + term(j.astype(x.dtype), x)  # noqa: E731
    return jax.lax.fori_loop(0, int(_STIRLING_MIN), add, jnp.zeros_like(x))


def _ratio(x: jax.Array, j: jax.Array) -> jax.Array:
    """``x / (x + j)``, exactly 1 at j = 0 (also when x underflowed to 0)."""
    return jnp.where(j == 0, jnp.ones_like(x), x / (x + j))


def scaled_trigamma(x: jax.Array) -> jax.Array:
    """``x^2 trigamma(x)``, finite for every positive float (-> 1 as x -> 0, ~ x + 1/2 as x -> inf).

    The recurrence ``trigamma(x) = trigamma(x + 10) + sum_(j<10) 1/(x + j)^2`` and, at X = x + 10,
    ``trigamma(X) = 1/X + 1/(2 X^2) + delta''(X)`` give
    ``sum_j (x/(x + j))^2 + x (x/X) + (x/X)^2 (1/2 + X^2 delta''(X))``: no x^2 or 1/x^2 is formed
    (either can overflow), and no special function is needed.
    """
    big_x = x + _STIRLING_MIN
    r = x / big_x
    head = _shifted_sum(lambda j, x: jnp.square(_ratio(x, j)), x)
    return head + x * r + r * r * (0.5 + _scaled_stirling_remainder_hess(big_x))


def scaled_trigamma_difference(x: jax.Array, d: jax.Array) -> jax.Array:
    """``x^2 (trigamma(x) - trigamma(x + d))`` for x, d > 0, with d given (not formed as y - x).

    The recurrence (as in ``scaled_trigamma``) turns each of the first ten terms into
    ``1/(x+j)^2 - 1/(x+d+j)^2 = d (2x + d + 2j) / ((x+j)^2 (x+d+j)^2)``, and at X = x + 10,
    Y = X + d the asymptotic form ``d/(X Y) + d (X + Y)/(2 X^2 Y^2) + delta''(X) - delta''(Y)``:
    every term is proportional to d, so nothing cancels when one concentration dominates (x >> d).
    """
    head = _shifted_sum(lambda j, x: d * (2 * x + d + 2 * j) * jnp.square(_ratio(x, j)) / jnp.square(x + d + j), x)
    big_x = x + _STIRLING_MIN
    big_y = big_x + d
    r = x / big_x
    tail = (d * r * (x / big_y) + 0.5 * d * (big_x + big_y) * r * r / (big_y * big_y)
            + r * r * (_scaled_stirling_remainder_hess(big_x)
                       - jnp.square(big_x / big_y) * _scaled_stirling_remainder_hess(big_y)))
    return head + tail


def scaled_expm1mx(scale: jax.Array, u: jax.Array, scale_exp_u: jax.Array) -> jax.Array:
    """``scale * (exp(u) - 1 - u)``, the saddle-point deviance, given ``scale * exp(u)`` as well.

    |u| <= 1: ``scale * expm1mx(u)``, with relative accuracy even when the deviance is 1e-14 of
    ``scale``; u > 1: ``scale_exp_u - scale (1 + u)``, which never forms exp(u) alone (it can
    overflow while ``scale exp(u)`` is finite) and cancels at most one bit. (Below u = -1,
    ``exp(u) - 1 - u`` has no cancellation and no overflow; ``expm1mx`` takes it too.)
    """
    big = u > 1
    us = jnp.where(big, jnp.zeros_like(u), u)
    ul = jnp.where(big, u, 2 * jnp.ones_like(u))
    big_exp = jnp.where(big, scale_exp_u, 2 * jnp.ones_like(scale_exp_u))
    # scale e^u > scale (1 + u) by e-fold more than the deviance: where scale e^u overflows, so
    # does the deviance (+inf; the difference of the two infinities would be NaN).
    large = jnp.where(jnp.isinf(big_exp), big_exp, big_exp - scale * (1 + ul))
    # An infinite scale (a concentration of e^1e4) meets u = 0 where y is the mean to the dtype's
    # precision (Dirichlet's other coordinates): that term is 0 (the others carry the inf), not
    # inf * 0 = NaN.
    return jnp.where(big, large, mul_nonzero(expm1mx(us), scale))


def gammaln_bregman(log_x_q: jax.Array, log_x_p: jax.Array) -> jax.Array:
    """``gammaln(x_q) - gammaln(x_p) - digamma(x_p) (x_q - x_p)`` from the logs of x_p, x_q > 0.

    Splitting gammaln = (x log x - x) - log(x)/2 + delta(x) + const, with t = log(x_q / x_p):
    the first part's Bregman divergence is ``x_p (t expm1(t) - expm1mx(t))``, the second's
    ``expm1mx(t) / 2``, and delta's is small; no term is of the size of gammaln itself.
    """
    x_p, x_q = jnp.exp(log_x_p), jnp.exp(log_x_q)
    t = log_x_q - log_x_p
    em1 = jnp.expm1(t)
    main = x_p * (t * em1 - expm1mx(t)) + 0.5 * expm1mx(t)
    remainder = stirling_remainder(x_q) - stirling_remainder(x_p) - stirling_remainder_grad(x_p) * x_p * em1
    return main + remainder


# -- modified Bessel functions --------------------------------------------------------------------


@jax.custom_jvp
def log_i0e(k: jax.Array) -> jax.Array:
    """``log(I0(k) e^-k)`` for k >= 0; ``log I0(k) = log_i0e(k) + k`` never overflows.

    Below 25, ``log(i0e(k))``; from 25 on, ``-log(2 pi k)/2 + sum_(n>=2) c_n / ((n - 1) k^(n-1))``,
    the integral of ``-(1 - I1/I0)``. Its derivative is stated as ``-bessel_ratio_complement(k)``
    (d log I0 / dk = I1/I0), which keeps the digits that ``(i1e - i0e)/i0e`` cancels.
    """
    large, kl, ks = _split(k, _BESSEL_SERIES_MIN)
    w = 1 / kl
    coeffs = [c / (n - 1) for n, c in enumerate(_BESSEL_C, start=1) if n >= 2]
    series = -0.5 * jnp.log(2 * math.pi * kl) + w * horner(coeffs, w)
    return jnp.where(large, series, jnp.log(special.i0e(ks)))


@log_i0e.defjvp
def _log_i0e_jvp(primals, tangents):
    (k,), (dk,) = primals, tangents
    return log_i0e(k), -bessel_ratio_complement(k) * dk


@jax.custom_jvp
def bessel_ratio_complement(k: jax.Array) -> jax.Array:
    """``1 - I1(k)/I0(k)`` for k >= 0, with relative accuracy also at large k (~ 1/(2k)).

    Below 25 it is ``e^-k (I0(k) - I1(k)) / i0e(k)`` with the numerator by quadrature of a
    positive integrand (``1 - i1e/i0e`` would lose up to 2k ulps: 4e-6 in float32 at k = 20);
    from 25 on the asymptotic series ``sum_n c_n / k^n`` of ``_bessel_ratio_series``.
    """
    large, kl, ks = _split(k, _BESSEL_SERIES_MIN)
    w = 1 / kl
    series = w * horner(_BESSEL_C, w)
    return jnp.where(large, series, _bessel_ratio_complement_quadrature(ks))


@bessel_ratio_complement.defjvp
def _bessel_ratio_complement_jvp(primals, tangents):
    """``d(1 - A)/dk = -A'``: ``A' = 1 - A/k - A^2`` below 25 (k ulp lost to cancellation, fine for a
    derivative), ``sum_n n c_n / k^(n+1)`` from 25 on."""
    (k,), (dk,) = primals, tangents
    large, kl, ks = _split(k, _BESSEL_SERIES_MIN)
    w = 1 / kl
    a = special.i1e(ks) / special.i0e(ks)
    grad = jnp.where(large, w * w * horner([n * c for n, c in enumerate(_BESSEL_C, start=1)], w),
                     1 - a / ks - a * a)
    return bessel_ratio_complement(k), -grad * dk


def bessel_ratio(k: jax.Array) -> jax.Array:
    """``A(k) = I1(k)/I0(k)``: ``i1e/i0e`` (relative accuracy near k = 0), ``1 - B(k)`` from 25 on."""
    large, _, ks = _split(k, _BESSEL_SERIES_MIN)
    return jnp.where(large, 1 - bessel_ratio_complement(k), special.i1e(ks) / special.i0e(ks))


def scaled_bessel_ratio_grad(k: jax.Array) -> jax.Array:
    """``k^2 A'(k)`` for ``A = I1/I0``: the variance of ``k cos(theta)`` under VonMises(0, k).

    A' = 1 - A/k - A^2 (from I0' = I1, I1' = I0 - I1/k) is a difference of numbers near 1 (k^2 A'
    tends to 1/2 while k^2 and (k A)^2 grow), so it is not evaluated that way. Below 25,
    ``A' I0^2 = (I0^2 + I0 I2)/2 - I1^2 = sum_j (2j)! / (2 (j+1)^2 (j!)^4) (k/2)^(2j)`` (the Cauchy
    products of the Bessel series; the three coefficient families collapse to this positive one),
    so ``k^2 A' = k^2 P(k) / I0(k)^2`` with two series of positive terms (relative error ~ k ulp);
    from 25 on the asymptotic series ``sum_n n c_n / k^(n-1)`` (A' = -B').
    """
    large, kl, ks = _split(k, _BESSEL_SERIES_MIN)
    w = 1 / kl
    series = horner([n * c for n, c in enumerate(_BESSEL_C, start=1)], w)
    q = 0.25 * ks * ks  # (k/2)^2

    def add_term(j, state):
        # Term ratios of (k/2)^(2j) / (j!)^2 and of (2j)! / (2 (j+1)^2 (j!)^4) (k/2)^(2j).
        i0_term, p_term, i0_sum, p_sum = state
        j = j.astype(ks.dtype)
        i0_term = i0_term * q / ((j + 1) * (j + 1))
        p_term = p_term * q * ((2 * j + 2) * (2 * j + 1)) / (jnp.square(j + 1) * jnp.square(j + 2))
        return i0_term, p_term, i0_sum + i0_term, p_sum + p_term

    one = jnp.ones_like(ks)
    _, _, i0_sum, p_sum = jax.lax.fori_loop(0, _POSITIVE_SERIES_TERMS, add_term, (one, 0.5 * one, one, 0.5 * one))
    return jnp.where(large, series, ks * ks * p_sum / (i0_sum * i0_sum))


# -- log-gamma near its zeros --------------------------------------------------------------------


# log Gamma(1 + t) = -euler_gamma t + sum_{k>=2} (-1)^k zeta(k) t^k / k (|t| < 1); the
# coefficients of t, t^2, ..., t^55 (from mpmath at 30 digits): 55 terms reach 1e-18 at |t| = 1/2.
_LGAMMA1P_COEFFS = (
    -0.5772156649015329, 0.8224670334241132, -0.40068563438653143,
    0.27058080842778454, -0.20738555102867398, 0.1695571769974082,
    -0.1440498967688461, 0.12550966952474304, -0.11133426586956469,
    0.1000994575127818, -0.09095401714582904, 0.083353840546109,
    -0.0769325164113522, 0.07143294629536133, -0.06666870588242046,
    0.06250095514121304, -0.058823978658684585, 0.055555767627403614,
    -0.05263167937961666, 0.05000004769810169, -0.047619070330142226,
    0.04545455629320467, -0.04347826605304026, 0.04166666915034121,
    -0.04000000119214014, 0.03846153903467518, -0.037037037312989324,
    0.035714285847333355, -0.034482758684919304, 0.03333333336437758,
    -0.03225806453115042, 0.03125000000727597, -0.030303030306558044,
    0.029411764707594344, -0.02857142857226011, 0.027777777778181998,
    -0.027027027027223673, 0.02631578947377995, -0.025641025641072283,
    0.025000000000022737, -0.024390243902450117, 0.023809523809529224,
    -0.023255813953491015, 0.02272727272727402, -0.022222222222222855,
    0.021739130434782917, -0.021276595744681003, 0.02083333333333341,
    -0.02040816326530616, 0.020000000000000018, -0.019607843137254912,
    0.019230769230769235, -0.01886792452830189, 0.01851851851851852,
    -0.01818181818181818,
)


# Its derivative's coefficients: d/dt sum_k c_k t^k = sum_k k c_k t^(k-1) (digamma(1 + t) near t = 0).
_LGAMMA1P_GRAD_COEFFS = tuple(k * c for k, c in enumerate(_LGAMMA1P_COEFFS, start=1))
EULER_GAMMA = -_LGAMMA1P_COEFFS[0]  # Euler-Mascheroni: -digamma(1), the mean of a standard Gumbel


def _lgamma1p_branches(t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(near_0, near_1, s, t_1, far)``: the branch masks and each branch's clamped argument."""
    near_0 = jnp.abs(t) <= 0.5
    near_1 = (t > 0.5) & (t <= 1.5)
    s = jnp.where(near_0, t, jnp.where(near_1, t - 1, jnp.zeros_like(t)))
    t_1 = jnp.where(near_1, t, jnp.ones_like(t))
    far = jnp.where(near_0 | near_1, jnp.ones_like(t), t)
    return near_0, near_1, s, t_1, far


@jax.custom_jvp
def lgamma1p(t: jax.Array) -> jax.Array:
    """``log Gamma(1 + t)`` for t > -1, with relative accuracy near its zeros t = 0 and t = 1.

    XLA's lgamma is accurate to absolute, not relative, rounding there (float32 lgamma(1) is
    4.8e-7, and at 1 + 1e-6 it is off by 13%). For |t| <= 1/2 this is the Taylor series above;
    for 1/2 < t <= 3/2, ``log Gamma(1 + t) = log t + log Gamma(1 + (t - 1))`` (t - 1 is exact
    there); elsewhere lgamma. Pass t itself (e.g. ``expm1(log_a)``), not 1 + t rounded.

    The derivative ``digamma(1 + t)`` is stated branch by branch (the series' derivative, plus
    ``1/t`` near t = 1), not traced through the 55-term Horner recursion: as accurate (tests/
    test_positive.py), and a Hessian through it is less than half the size.
    """
    near_0, near_1, s, t_1, far = _lgamma1p_branches(t)
    near = horner(_LGAMMA1P_COEFFS, s) * s
    return jnp.where(near_0, near, jnp.where(near_1, near + jnp.log(t_1), jax.lax.lgamma(1 + far)))


@lgamma1p.defjvp
def _lgamma1p_jvp(primals, tangents):
    (t,), (dt,) = primals, tangents
    near_0, near_1, s, t_1, far = _lgamma1p_branches(t)
    near = horner(_LGAMMA1P_GRAD_COEFFS, s)
    grad = jnp.where(near_0, near, jnp.where(near_1, near + 1 / t_1, jax.lax.digamma(1 + far)))
    return lgamma1p(t), grad * dt


def lgamma_bregman_at_one(log_ratio: jax.Array) -> jax.Array:
    """``lgamma(rho) + gamma (rho - 1) >= 0`` at ``rho = exp(log_ratio)``: the Bregman divergence of
    lgamma from rho to 1 (``digamma(1) = -gamma``; the first term of the KL of two
    Gumbels or two Weibulls), accurate near rho = 1 and for every rho.

    With ``u = rho - 1 = expm1(log_ratio)``: for ``|u| <= 1/2`` the Taylor series of
    ``lgamma(1 + u)`` less its first term, ``u^2 sum_(n>=2) (-1)^n zeta(n)/n u^(n-2)`` (no
    cancellation); below, ``lgamma(rho) = lgamma(1 + rho) - log rho`` with ``lgamma1p`` (finite
    where rho underflows: the limit ``-log rho``); above, lgamma itself.
    """
    u = jnp.expm1(log_ratio)
    near = jnp.abs(u) <= 0.5
    low = u < -0.5
    un = jnp.where(near, u, jnp.zeros_like(u))
    series = un * un * horner(_LGAMMA1P_COEFFS[1:], un)
    rho_low = jnp.where(low, jnp.exp(log_ratio), jnp.zeros_like(u))
    small = lgamma1p(rho_low) - jnp.where(low, log_ratio, jnp.zeros_like(u))
    high = jax.lax.lgamma(jnp.where(near | low, jnp.full_like(u, 2.0), u + 1))
    far = jnp.where(low, small, high) + EULER_GAMMA * u
    return jnp.where(near, series, far)


def lgamma_exp(log_x: jax.Array) -> jax.Array:
    """``log Gamma(exp(log_x))``: ``lgamma1p(expm1(log_x))`` near x = 1 and 2, lgamma elsewhere.

    (Below x = 1/2, ``1 + expm1(log_x)`` would round a tiny x away; lgamma of x itself is
    accurate there.)
    """
    t = jnp.expm1(log_x)
    near = (t >= -0.5) & (t <= 1.5)
    return jnp.where(near, lgamma1p(jnp.where(near, t, jnp.zeros_like(t))), jax.lax.lgamma(jnp.exp(log_x)))


# -- delta, delta' and log-gamma near 1 and 2 from arithmetic alone --------------------------------
# XLA's lgamma and digamma cost ~25x an exp on a CPU (a Lanczos sum of eight divisions, and a
# reflection through sin or tan evaluated for every input); the functions below use one division per
# set of unit steps, polynomials and the caller's own log(x), and keep delta and delta' accurate to
# a few ulps of their own size where ``stirling_remainder`` (for x < 10) subtracts gammaln(x) from
# x log x (49 ulps of 1 at x = 9).


def _series_tolerance(dtype) -> float:
    """Absolute truncation error allowed in delta (and x delta') in ``dtype``: far below its ulp."""
    return 1e-18 if np.dtype(dtype).itemsize >= 8 else 1e-9


def _series_plan(dtype) -> tuple[float, int, int]:
    """``(x0, terms, steps)``: Stirling's series with ``terms`` terms from x >= x0, and ``steps``
    unit steps from 1 <= x < x0 up to x + steps >= x0.

    float64: x0 = 10 and all ten terms (the first omitted, B_22 / (22 * 21 x^21), is 1e-20 of
    delta and 3e-19 of x delta' at x = 10), nine steps. float32: x0 = 4 and seven terms (first
    omitted 3e-11 and 4e-10 at x = 4), three steps: fewer divisions where float32 needs no more.
    """
    return (_STIRLING_MIN, len(_STIRLING), 9) if np.dtype(dtype).itemsize >= 8 else (4.0, 7, 3)


@functools.lru_cache(maxsize=None)
def _unit_step_terms(dtype) -> tuple[int, ...]:
    """Terms K_j of the two one-sign step series at x + j (x >= 1, so w <= 1/(2j + 3)): the
    smallest K whose tail, w^(2K+2)/((2K+3)(1-w^2)) for delta and 2 w^(2K+3)/(1-w^2) for delta'
    (times x <= 10), is below the dtype's tolerance. float64: 19, 13, 10, ...; float32: 10, 6, 5."""
    tol = _series_tolerance(dtype)
    counts = []
    for j in range(_series_plan(dtype)[2]):
        w, k = 1.0 / (2 * j + 3), 0
        while not (w ** (2 * k + 2) / ((2 * k + 3) * (1 - w * w)) <= tol
                   and 20 * w ** (2 * k + 3) / (1 - w * w) <= tol):
            k += 1
        counts.append(k)
    return tuple(counts)


def _reciprocals(ds: list[jax.Array]) -> list[jax.Array]:
    """``[1/d for d in ds]`` (every d >= 1, their product finite) with one division.

    ``1/d_k = (prod_(i != k) d_i) / prod_i d_i``, the products of the others from prefix and
    suffix products: each reciprocal is within ~len(ds)/2 ulp, and a division costs as much as a
    dozen multiplications (and XLA keeps each one as an array in memory when two results share it).
    """
    n = len(ds)
    prefix = [jnp.ones_like(ds[0])]
    for d in ds[:-1]:
        prefix.append(prefix[-1] * d)
    suffix = [jnp.ones_like(ds[0])]
    for d in reversed(ds[1:]):
        suffix.append(suffix[-1] * d)
    suffix.reverse()
    inv_all = 1 / (prefix[-1] * ds[-1])
    return [(prefix[k] * suffix[k]) * inv_all for k in range(n)]


def _unit_steps(x: jax.Array, inv_2x_plus: list[jax.Array], *, with_grad: bool) -> tuple[jax.Array, jax.Array | None]:
    """``(delta(x) - delta(x + m), delta'(x) - delta'(x + m))`` for x >= 1, m unit steps, given
    ``w_j = 1/(2(x + j) + 1)`` (the second None unless ``with_grad``).

    With w = 1/(2y + 1), delta(y) - delta(y + 1) = (y + 1/2) log1p(1/y) - 1 = atanh(w)/w - 1
    = sum_(k>=1) w^(2k)/(2k + 1), and its derivative in y (dw/dy = -2 w^2) is
    delta'(y) - delta'(y + 1) = -2 sum_(k>=1) 2k/(2k + 1) w^(2k+1): both series have terms of one
    sign, so nothing cancels (written as logs, the step would cancel 12 y^2-fold).
    """
    d_value = jnp.zeros_like(x)
    d_grad = jnp.zeros_like(x) if with_grad else None
    for w, k in zip(inv_2x_plus, _unit_step_terms(x.dtype), strict=True):
        w2 = w * w
        d_value = d_value + horner([1 / (2 * i + 3) for i in range(k)], w2) * w2
        if with_grad:
            d_grad = d_grad - 2 * horner([(2 * i + 2) / (2 * i + 3) for i in range(k)], w2) * (w2 * w)  # type: ignore[operator]  # an array when with_grad
    return d_value, d_grad


def _stirling_above_one(x: jax.Array, *, with_grad: bool) -> tuple[jax.Array, jax.Array | None]:
    """``(delta(x), x delta'(x))`` for x >= 1 (the second None unless ``with_grad``): Stirling's
    series from x0 on, unit steps up to x0 below it (``stirling_remainder_and_scaled_grad``)."""
    x0, n_terms, n_steps = _series_plan(x.dtype)
    large = x >= x0
    # The unit steps' domain [1, x0), by a select (maximum(x, 1) would halve the derivative at x = 1).
    xm = jnp.where(large | (x < 1), jnp.ones_like(x), x)
    big = jnp.where(large, x, xm + n_steps)
    # One division for all: the steps' 2(x + j) + 1 are replaced by 1 where x >= x0, so that the
    # product is x itself there (finite) and at most 13 * 11 * 9 * 7 (float32) elsewhere.
    steps = [jnp.where(large, jnp.ones_like(x), 2 * (xm + j) + 1) for j in range(n_steps)]
    inv = _reciprocals(steps + [big])
    d_value, d_grad = _unit_steps(xm, inv[:-1], with_grad=with_grad)
    inv_big = inv[-1]
    v = inv_big * inv_big
    coeffs = _STIRLING[:n_terms]
    tail_value = horner(coeffs, v) * inv_big
    delta = jnp.where(large, tail_value, tail_value + d_value)
    if not with_grad:
        return delta, None
    # X delta'(X) = -sum_k (2k - 1) c_k X^-(2k-1); delta'(X) is that times 1/X.
    tail_scaled = -horner([(2 * k - 1) * c for k, c in enumerate(coeffs, start=1)], v) * inv_big
    return delta, jnp.where(large, tail_scaled, xm * (tail_scaled * inv_big + d_grad))  # type: ignore[operator]  # an array when with_grad


def stirling_remainder_and_scaled_grad(x: jax.Array, log_x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(delta(x), x delta'(x))`` for x >= 0 given ``log_x`` (finite where x underflowed to 0).

    The same functions as ``stirling_remainder`` and ``x * stirling_remainder_grad``, from
    arithmetic alone (one division) and accurate to a few ulps of their own size for every x
    (tests/test_positive.py: 16; ``_series_plan`` gives x0 and m: 10 and 9 in float64, 4 and 3 in
    float32):

    * x >= x0: Stirling's series, ``x delta'(x) = -sum_k (2k - 1) c_k x^-(2k-1)`` (no x^2 formed);
    * 1 <= x < x0: ``delta(x) = delta(x + m) + sum_(j<m) [delta(x+j) - delta(x+j+1)]`` and the
      same for delta', every step a series of terms of one sign (``_unit_steps``);
    * x < 1: from ``lgamma(x) = lgamma(1 + x) - log x`` and ``digamma(x) = digamma(1 + x) - 1/x``
      with the polynomials of ``lgamma_below_two`` and ``_DIGAMMA1P_CHEBYSHEV``:
      ``delta(x) = lgamma(1 + x) - (x + 1/2) log x + x - log(2 pi)/2`` and
      ``x delta'(x) = x digamma(1 + x) - x log x - 1/2``, finite as x -> 0 (delta ~ -log(x)/2,
      x delta' -> -1/2); their terms cancel at most ~6-fold (near x = 1).

    Plain jax.numpy throughout (differentiable to any order); no lgamma or digamma is called.
    """
    high_value, high_scaled = _stirling_above_one(x, with_grad=True)
    below_one, xs, log_xs = _below_one_inputs(x, log_x)
    low_value = _low_value(xs, log_xs)
    low_scaled = xs * (horner(_digamma1p_coeffs(x.dtype), 2 * xs - 1) - log_xs) - 0.5
    return jnp.where(below_one, low_value, high_value), jnp.where(below_one, low_scaled, high_scaled)  # type: ignore[arg-type]  # with_grad=True: an array


def _below_one_inputs(x: jax.Array, log_x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x < 1, x there else 1/2, log x there else log 1/2)``: the polynomials' inputs below 1
    (x = 1/2 in the unused lanes keeps every term finite)."""
    below_one = x < 1
    xs = jnp.where(below_one, x, jnp.full_like(x, 0.5))
    log_xs = jnp.where(below_one, log_x, jnp.full_like(log_x, -math.log(2)))
    return below_one, xs, log_xs


def _low_value(xs: jax.Array, log_xs: jax.Array) -> jax.Array:
    """``delta(x) = lgamma(1 + x) - (x + 1/2) log x + x - log(2 pi)/2`` for 0 < x < 1."""
    lgamma_1p = xs * (xs - 1) * horner(_lgamma1p_ratio_coeffs(xs.dtype), 2 * xs - 1)
    return lgamma_1p - (xs + 0.5) * log_xs + xs - HALF_LOG_2PI


def stirling_remainder_in_dtype(x: jax.Array, log_x: jax.Array | None = None) -> jax.Array:
    """``delta(x)`` alone, as in ``stirling_remainder_and_scaled_grad`` (for a log-density's value,
    whose partials come from elsewhere: the derivative terms are not even traced).

    ``log_x=None`` promises x >= 1 (e.g. ``r + y`` with a count y >= 1): the x < 1 polynomial
    is then left out too.
    """
    value, _ = _stirling_above_one(x, with_grad=False)
    if log_x is None:
        return value
    below_one, xs, log_xs = _below_one_inputs(x, log_x)
    return jnp.where(below_one, _low_value(xs, log_xs), value)


# h(t) = lgamma(1 + t) / (t (t - 1)) on [0, 1] (h(0) = euler_gamma, h(1) = 1 - euler_gamma) as
# sum_j c_j T_j(2t - 1): Chebyshev interpolation at 40 nodes in mpmath at 60 digits. |c_j| falls
# ~6-fold per degree (h is analytic out to t = -1); a dtype keeps the c_j above its tolerance.
_LGAMMA1P_RATIO_CHEBYSHEV = (
    0.49141539302938714, -0.07611416167043585, 0.008432324965932778,
    -0.001079493726328608, 0.00014900748003692963, -2.1512399888556784e-05,
    3.1979329860862186e-06, -4.851693012139927e-07, 7.47148782116316e-08,
    -1.1638296700170518e-08, 1.829400437118668e-09, -2.8969180607129607e-10,
    4.61570140620909e-11, -7.392810230497983e-12, 1.1894280008333085e-12,
    -1.9212068676522805e-13, 3.113975526387164e-14, -5.0628432984486114e-15,
    8.254150281631144e-16, -1.3490578987574844e-16, 2.209876116782623e-17,
    -3.6274129549239766e-18, 5.965430068821522e-19, -9.827330943834438e-20,
    1.6215104117565284e-20, -2.679428633023532e-21,
)


def _lgamma1p_ratio_coeffs(dtype) -> tuple[float, ...]:
    """``h(t)`` for 0 <= t <= 1 in powers of 2t - 1 (float64: 22 terms; float32: 11)."""
    return _monomials(_LGAMMA1P_RATIO_CHEBYSHEV, dtype)


# digamma(1 + t) on [0, 1] as sum_j c_j T_j(2t - 1), as above (|c_j| falls ~6-fold per degree).
_DIGAMMA1P_CHEBYSHEV = (
    -0.01902854041760896, 0.49141539302938714, -0.05681574782124473,
    0.008357821225914313, -0.0013332328579943426, 0.00022031328706930824,
    -3.704023817845688e-05, 6.28379365485499e-06, -1.071263908506185e-06,
    1.8312839465484164e-07, -3.135350936180851e-08, 5.372808776200777e-09,
    -9.211681415978428e-10, 1.5798126521481822e-10, -2.7098646132380443e-11,
    4.6487228599096836e-12, -7.975272563830369e-13, 1.3682723857476993e-13,
    -2.3475156060658973e-14, 4.027630715560354e-15, -6.910251853117904e-16,
    1.185604713886335e-16, -2.034168961626156e-17, 3.4900749686463045e-18,
    -5.988014693497671e-19, 1.0273801628080589e-19, -1.7627049424561072e-20,
)


@functools.lru_cache(maxsize=None)
def _monomials(chebyshev: tuple[float, ...], dtype) -> tuple[float, ...]:
    """Monomial coefficients in s = 2t - 1 of a Chebyshev series, truncated for ``dtype`` (the
    c_j above its tolerance). In s the coefficients fall ~3-fold per power (|s| <= 1), so Horner's
    rule adds terms of decreasing size."""
    tol = _series_tolerance(dtype)
    kept = [c for c in chebyshev if abs(c) >= tol]
    return tuple(float(c) for c in np.polynomial.chebyshev.cheb2poly(kept))


def _digamma1p_coeffs(dtype) -> tuple[float, ...]:
    """``digamma(1 + t)`` for 0 <= t <= 1 in powers of 2t - 1 (float64: 24 terms; float32: 12)."""
    return _monomials(_DIGAMMA1P_CHEBYSHEV, dtype)


def lgamma_below_two(x: jax.Array, x_minus_1: jax.Array, log_x: jax.Array) -> jax.Array:
    """``log Gamma(x)`` for 0 < x < 2, with relative accuracy near its zeros x = 1 and x = 2 (near 2
    as far as ``x - 2 = x_minus_1 - 1`` is itself accurate).

    ``log Gamma(1 + t) = t (t - 1) h(t)`` for 0 <= t <= 1, h a polynomial (above): the zeros at
    t = 0, 1 are exact factors. 1 <= x < 2: t = x - 1; x < 1: ``log Gamma(x) = log Gamma(1 + x) -
    log x`` with t = x. Pass ``x - 1`` as ``expm1(log_x)`` (exact near x = 1, where 1 + t rounded
    would not be). Arithmetic and the caller's log alone; no lgamma is called.
    """
    below_one = x < 1
    t = jnp.where(below_one, x, x_minus_1)
    t_minus_1 = jnp.where(below_one, x_minus_1, x_minus_1 - 1)
    h = horner(_lgamma1p_ratio_coeffs(t.dtype), 2 * t - 1)
    return t * t_minus_1 * h - jnp.where(below_one, log_x, jnp.zeros_like(log_x))

"""Stable pieces shared by the count families (Binomial, Geometric, Poisson, NegativeBinomial,
Multinomial).

The textbook ``log C(n, y) + y log p + (n - y) log(1 - p)`` adds terms of size ``n log n`` to get a
result of size ``log n``: at n = 1e6 it loses five digits (scipy's logpmf does; its relative error
there is ~1e-10). The count families instead use Loader's saddle-point form (C. Loader, "Fast and
accurate computation of binomial probabilities", 2000; R's dbinom/dpois/dnbinom), written with
``stirlerr`` (the error of Stirling's formula) and ``bd0`` (the deviance term ``x log(x/m) + m - x``):
every term of the sum has the same sign, so the result keeps the relative accuracy of its parts.

The ``*_in_dtype`` variants (``stirlerr_in_dtype``, ``bd0_in_dtype``, ``log_factorial_part_in_dtype``,
``binomial_log_pmf_in_dtype``) compute the same values with their series stopped at the dtype's
precision (float64: the full series; float32: about half the terms), elementwise; ``where`` and
``softplus`` are ``jnp.where`` and ``jax.nn.softplus`` as primitives (no nested jit to trace).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mlnll._src.numerics.series import EXPM1MX_COEFFS, STIRLING_COEFFS, expm1mx_series, horner, stirling_series
from mlnll._src.numerics.elementary import LOG_2PI, softplus, where
from mlnll._src.numerics import positive


# stirlerr(k) = log(k!) - ((k + 1/2) log k - k + log(2 pi) / 2) for k = 0..9, from mpmath at 40
# digits (k = 0 is unused: stirlerr diverges at 0).
_STIRLERR_TABLE = (
    0.0,
    0.08106146679532725822,
    0.041340695955409294094,
    0.027677925684998339149,
    0.020790672103765093112,
    0.016644691189821192163,
    0.013876128823070747999,
    0.011896709945891770095,
    0.010411265261972096497,
    0.0092554621827127329177,
)
# psi(x) - log(x) = -1/(2x) - sum_k B_2k / (2k x^(2k)), k = 1..8: (power, coefficient) pairs; at
# x >= 10 the first omitted term is 3.05 / x^18 = 3e-18.
_DIGAMMA_TAIL = (
    (1, -0.5),
    (2, -1.0 / 12.0),
    (4, 1.0 / 120.0),
    (6, -1.0 / 252.0),
    (8, 1.0 / 240.0),
    (10, -1.0 / 132.0),
    (12, 691.0 / 32760.0),
    (14, -1.0 / 12.0),
    (16, 3617.0 / 8160.0),
)
_SERIES_FROM = 10.0
# Below this count the digamma gap is a finite sum; from it on r + y >= 10 and the series holds.
# 10 rather than 16: six terms fewer to trace and compile, and the sum minus r log1p(y/r) cancels
# less (largest error over r in [1e-30, 10), y < 40 against mpmath: 35.5 / 25.2 ulps in float64 /
# float32, against 37.6 / 25.6 with 16 terms).
_FINITE_SUM_BELOW = 10
# The series terms a float32 (or narrower) result needs; float64 keeps the full tables.
# exp(x) - 1 - x at |x| <= 1: k = 2..11; the first omitted term x^12/12! is below 5e-9 of the
# leading x^2/2, under float32's half-ulp.
_EXPM1MX_TERMS_32 = 10
# stirlerr(x) at x >= 10: k = 1..3 (to 1/(1260 x^5)); the first omitted term 1/(1680 x^7) <= 6e-11
# is under float32's half-ulp of every log-pmf it enters (|log p| >= 0.9 once a count is >= 1).
_STIRLING_TERMS_32 = 3
# log(x/m) is taken from the ratio x/m where it lies in (e^-1/2, e^1/2), from log x - log m elsewhere.
_E_MINUS_HALF, _E_HALF = math.exp(-0.5), math.exp(0.5)


def check_total_count(family: str, total_count) -> int:
    """``total_count`` as a Python int, or a ``ValueError`` naming the value it got.

    Whole numbers >= 0 are accepted as ints or as integer-valued floats (10.0); bools are not.
    """
    value = None
    if isinstance(total_count, numbers.Integral) and not isinstance(total_count, bool):
        value = int(total_count)
    elif isinstance(total_count, float) and math.isfinite(total_count) and total_count.is_integer():
        value = int(total_count)
    if value is None or value < 0:
        raise ValueError(f"{family}(total_count=...) must be a whole number >= 0; got {total_count!r}.")
    return value


def is_count(y: jax.Array) -> jax.Array:
    """Whether each entry is a finite, non-negative whole number (a valid count)."""
    if not jnp.issubdtype(y.dtype, jnp.floating):
        return jnp.isfinite(y) & (y >= 0) & (y == jnp.floor(y))
    # A subnormal is no whole number, but denormals-are-zero compares it as 0 and floors it to 0.
    return jnp.isfinite(y) & (y >= 0) & (y == jnp.floor(y)) & ~positive.nonzero_subnormal(y)


def _single_precision(x: jax.Array) -> bool:
    """Whether x's dtype is float32 or narrower (its series may stop at float32's precision)."""
    return jnp.finfo(x.dtype).bits <= 32


def _stirlerr(x: jax.Array, series: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``stirlerr`` with the series used at x >= 10 passed in (see ``stirlerr``)."""
    large = x >= _SERIES_FROM
    big = series(where(large, x, jnp.full_like(x, _SERIES_FROM)))
    xs = where(large, jnp.ones_like(x), x)
    small = jnp.full_like(x, _STIRLERR_TABLE[-1])
    for k in range(len(_STIRLERR_TABLE) - 2, 0, -1):
        small = where(xs == k, jnp.asarray(_STIRLERR_TABLE[k], x.dtype), small)
    return where(large, big, small)


def counts_or_zero(y: jax.Array, total_count: int | None = None) -> tuple[jax.Array, jax.Array]:
    """``(ys, valid)``: the valid counts of y (``is_count``, and ``<= total_count`` if given) with
    every other entry replaced by 0 (the double where's safe value), and whether each was valid.

    ``valid`` is returned as ``ys == y`` (an invalid entry is never 0, a valid one is unchanged):
    a compare XLA fuses into each consumer, where the mask itself would be stored as a boolean
    array, and a boolean array read by a large fusion runs it at half speed on XLA:CPU.
    """
    valid = is_count(y) if total_count is None else is_count(y) & (y <= total_count)
    ys = where(valid, y, jnp.zeros_like(y))
    if not jnp.issubdtype(y.dtype, jnp.floating):
        return ys, ys == y
    # Denormals-are-zero compares a subnormal y (replaced by 0) equal to its 0: its bits say no count.
    return ys, (ys == y) & ~positive.nonzero_subnormal(y)


def labels_or_zero(y: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
    """``(labels, valid)``: class labels of y as int32, each entry outside 0..num_classes-1 (or, for a
    floating y, not a finite whole number) replaced by 0 (the double where's safe value), and
    whether each was valid.

    The range is tested in y's own dtype, before any cast: an int64 label of 2**32 is invalid, never
    wrapped onto class 0.
    """
    if y.dtype == jnp.bool_:
        y = y.astype(jnp.int32)
    valid = (y >= 0) & (y < num_classes)
    if jnp.issubdtype(y.dtype, jnp.floating):
        valid = valid & (y == jnp.floor(y))  # NaN and inf fail a comparison or the range
    labels = jnp.where(valid, y, jnp.zeros_like(y)).astype(jnp.int32)
    return labels, valid


def stirlerr(x: jax.Array) -> jax.Array:
    """``log Gamma(x + 1) - ((x + 1/2) log x - x + log(2 pi)/2)`` at whole numbers x >= 1 (counts,
    never differentiated), to full precision.

    This is the log-gamma remainder ``delta(x)`` of ``stirling_remainder`` (lgamma(x + 1) = lgamma(x)
    + log x), specialised to counts: x >= 10, Stirling's series (lgamma's rounding would swamp a
    result of 1/(12 x)); below 10 the table's entry, picked by a chain of nine selects (a gather
    from a 10-entry table costs more than all of them on a CPU).
    """
    return _stirlerr(x, stirling_series)


def _stirling_series_in_dtype(x: jax.Array) -> jax.Array:
    """Stirling's series of ``stirlerr`` (x >= 10) with the terms x's dtype needs."""
    coeffs = STIRLING_COEFFS[:_STIRLING_TERMS_32] if _single_precision(x) else STIRLING_COEFFS
    inv = 1 / x
    return horner(coeffs, inv * inv) * inv


def stirlerr_in_dtype(x: jax.Array) -> jax.Array:
    """``stirlerr(x)`` to the precision of x's dtype: float64 is ``stirlerr``'s; float32 keeps three
    terms of Stirling's series (the fourth is below 6e-11 at x >= 10)."""
    return _stirlerr(x, _stirling_series_in_dtype)


def stirlerr_static(n: int) -> float:
    """``stirlerr(n)`` for a static whole number n >= 1, in Python floats (float64)."""
    if n < _SERIES_FROM:
        return _STIRLERR_TABLE[n]
    return float(sum(c / n ** (2 * k + 1) for k, c in enumerate(STIRLING_COEFFS)))


def log_ratio(x: jax.Array, log_m: jax.Array, m: jax.Array | None = None) -> jax.Array:
    """``log(x / m)`` for x > 0 given ``log m``, accurate to a few ulps even when x ~ m is large.

    ``log(x) - log_m`` carries the rounding of ``log x`` (eps * log x, 3e-15 at x = 1e6); where
    the ratio is within e^(+-1/2) of 1 it is ``log(x / exp(log_m))`` instead, two roundings of a
    number near 1 (halving both is exact for x, m >= 2 tiny; counts are >= 1). A caller that already holds ``m = exp(log_m)`` passes it: the ratio is then
    ``x / m``, the same two roundings for a division instead of an exp (non-differentiable callers
    only: a ratio that overflows in the branch not taken would send NaN through a gradient).
    """
    far = jnp.log(x) - log_m
    near = jnp.abs(far) < 0.5
    if m is None:
        # double where: away from 1 the ratio x / exp(log_m) could overflow; there it is replaced by 1.
        # A division, never x * exp(-log_m): exp(-log_m) flushes to 0 once m > 1/tiny (log_m > 87.3
        # in float32) while the ratio is ~1.
        m = jnp.exp(where(near, log_m, jnp.log(x)))
    # (x/2) / (m/2), exact powers of two: XLA rewrites x / exp(.) to x * exp(-.) (the flush above).
    ratio = (0.5 * x) / (0.5 * m)
    return where(near, jnp.log(ratio), far)


def log_ratio_and_log(x: jax.Array, log_m: jax.Array, m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log(x / m), log x)`` for x >= 1 given ``m = exp(log_m)``, from a single log (values only:
    the ratio of the branch not taken may overflow).

    Where ``x / m`` lies in (e^-1/2, e^1/2) (decided by comparing x with m e^-1/2 and m e^1/2, no
    log needed) the ratio is taken first, two roundings of a number near 1 as in ``log_ratio``, and
    ``log x = log(x/m) + log_m`` (an absolute error of ~eps |log m|, harmless in the
    ``log(2 pi x)/2`` it feeds); elsewhere ``log(x/m) = log x - log_m``.
    """
    near = (x > m * _E_MINUS_HALF) & (x < m * _E_HALF)
    log_arg = jnp.log(where(near, x / where(near, m, jnp.ones_like(m)), x))
    return where(near, log_arg, log_arg - log_m), where(near, log_arg + log_m, log_arg)


def log_share(y: jax.Array, n) -> jax.Array:
    """``log(y / n)`` for 0 < y <= n to a few ulps, also near 1: ``log1p(-(n - y)/n)`` where
    y > n/2 (n - y is exact for counts), so ``y log(y/n)`` at y = n - 1 = 1e6 - 1 keeps its digits."""
    high = y > 0.5 * n
    return jnp.where(high, jnp.log1p(-(n - y) / n), jnp.log(jnp.where(high, jnp.ones_like(y), y / n)))


def bd0(x: jax.Array, t: jax.Array, m: jax.Array) -> jax.Array:
    """The deviance term ``x log(x/m) + m - x >= 0``, given ``t = log(x/m)`` and m.

    Identity: with m = x e^(-t), ``x t + m - x = x (e^(-t) - 1 + t) = x expm1mx(-t)``, which keeps
    full relative accuracy at |t| <= 1 (near x ~ m it is ~x t^2 / 2; there the series of
    ``expm1mx`` is used). Elsewhere it is ``m - x (1 - t)``, which needs no exp: for t > 1 it is
    the sum of two positive terms ``m + x (t - 1)``, and for t < -1 (m > e x) it cannot overflow
    through m / x and cancels at most a factor 4. x = 0 gives m (``t`` is ignored there). Callers
    pass m computed directly (``n sigmoid(-z)``, not ``exp(log n + log_sigmoid(-z))``), so a term of
    1e-29 keeps its digits.
    """
    return _bd0(x, t, m, expm1mx_series)


def _bd0(x: jax.Array, t: jax.Array, m: jax.Array, series: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``bd0`` with the series of ``exp(s) - 1 - s`` (|s| <= 1) passed in (see ``bd0``)."""
    positive = x > 0
    near = positive & (jnp.abs(t) <= 1)
    t_near = where(near, t, jnp.zeros_like(t))
    t_far = where(positive & ~near, t, jnp.zeros_like(t))
    return where(near, x * series(-t_near), m - x * (1 - t_far))


def _expm1mx_series_in_dtype(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` for |x| <= 1 with the Taylor terms x's dtype needs (k <= 11 in float32)."""
    coeffs = EXPM1MX_COEFFS[:_EXPM1MX_TERMS_32] if _single_precision(x) else EXPM1MX_COEFFS
    return horner(coeffs, x) * x * x


def bd0_in_dtype(x: jax.Array, t: jax.Array, m: jax.Array) -> jax.Array:
    """``bd0(x, t, m)`` to the precision of the dtype: float64 is ``bd0``'s; float32 stops the
    ``expm1mx`` series at k = 11 (half the terms; the first omitted is below 5e-9 relative)."""
    return _bd0(x, t, m, _expm1mx_series_in_dtype)


def log_factorial(y: jax.Array) -> jax.Array:
    """``log y!`` for counts y >= 0: ``lgamma(y + 1)``, and exactly 0 at y = 0 and 1.

    XLA's lgamma(2) is 8.9e-16, not 0, when its CPU code is built without FMA contraction (backend
    optimisation level 0, or a CPU that lacks it), so ``-log(1!)`` is set rather than computed.
    """
    return jnp.where(y <= 1, jnp.zeros_like(y), jax.lax.lgamma(jnp.maximum(y, 1) + 1))


def log_factorial_part(y: jax.Array) -> jax.Array:
    """``stirlerr(y) + log(2 pi y) / 2`` for y >= 1, and 0 at y = 0: the part of ``log y!`` that
    Loader's form keeps besides ``y log y - y``."""
    positive = y > 0
    ys = jnp.where(positive, y, jnp.ones_like(y))
    return jnp.where(positive, stirlerr(ys) + 0.5 * (LOG_2PI + jnp.log(ys)), jnp.zeros_like(y))


def log_factorial_part_in_dtype(y: jax.Array, log_y: jax.Array) -> jax.Array:
    """``log_factorial_part(y)`` given ``log y`` (any value at y = 0), to the dtype's precision
    (``stirlerr_in_dtype``): ``stirlerr(y) + log(2 pi y)/2`` for y >= 1, 0 at y = 0."""
    positive = y > 0
    ys = where(positive, y, jnp.ones_like(y))
    return where(positive, stirlerr_in_dtype(ys) + 0.5 * (LOG_2PI + log_y), jnp.zeros_like(y))


@functools.partial(jax.jit, static_argnames="total_count")
def multinomial_log_pmf(
    counts: jax.Array, log_probs: jax.Array, probs: jax.Array, total_count: int
) -> jax.Array:
    """``log n! - sum_c log y_c! + sum_c y_c log p_c`` over the last axis, in Loader's form.

    With ``log k! = stirlerr(k) + log(2 pi k)/2 + k log k - k`` and ``sum_c y_c = n``,
    ``sum_c p_c = 1``:
    ``log P = stirlerr(n) + log(2 pi n)/2 - sum_c [stirlerr(y_c) + log(2 pi y_c)/2]_{y_c >= 1}
    - sum_c bd0(y_c, n p_c)``.
    Every term after the first pair is <= 0 and the first pair is at most the largest
    ``log_factorial_part(y_c)``, so nothing large cancels; with a single non-zero class the
    factorial terms are exactly 0. ``counts`` must be valid counts summing to ``total_count``
    (the caller masks the rest), ``probs`` = exp(log_probs) computed directly; n >= 1.
    """
    n = float(total_count)
    positive = counts > 0
    ys = jnp.where(positive, counts, jnp.ones_like(counts))
    # t_c = log(y_c / (n p_c)) from y_c / n, a correctly rounded ratio, rather than log y_c - log n.
    t = jnp.log(ys / n) - jnp.where(positive, log_probs, jnp.zeros_like(log_probs))
    deviance = bd0(counts, t, n * probs)
    head = stirlerr_static(total_count) + 0.5 * (LOG_2PI + math.log(n))
    # One class holding all n: the factorial parts cancel exactly (log C = 0), and log P = n log p_c
    # can be as small as 1e-29, so they are not left to round against each other.
    single = jnp.sum(positive.astype(jnp.int32), axis=-1) <= 1
    spread = head - jnp.sum(log_factorial_part(counts), axis=-1)
    return jnp.where(single, jnp.zeros_like(spread), spread) - jnp.sum(deviance, axis=-1)


@functools.partial(jax.jit, static_argnames="n")
def binomial_log_pmf(
    y: jax.Array, n: int, log_p: jax.Array, log_q: jax.Array, p: jax.Array, q: jax.Array
) -> jax.Array:
    """``log C(n, y) + y log p + (n - y) log q`` for valid counts 0 <= y <= n (q = 1 - p), in
    Loader's form: ``multinomial_log_pmf`` with the two classes y and n - y."""
    if n == 0:
        return jnp.zeros_like(y)
    stack = lambda u, v: jnp.stack([u, v], axis=-1)  # noqa: E731
    return multinomial_log_pmf(stack(y, n - y), stack(log_p, log_q), stack(p, q), n)


def binomial_log_pmf_in_dtype(
    y: jax.Array, n: int, log_p: jax.Array, log_q: jax.Array, p: jax.Array, q: jax.Array
) -> jax.Array:
    """``log C(n, y) + y log p + (n - y) log q`` for valid counts 0 <= y <= n (q = 1 - p), in
    Loader's form, elementwise and to the dtype's precision (``binomial_log_pmf``'s value without
    a stacked class axis).

    With k = min(y, n - y) (exact for counts), p_k the probability of the class holding k and
    p_rest the other's:
    ``log P = [stirlerr(n) - stirlerr(k) - stirlerr(n - k) - log(2 pi k (n - k)/n)/2]_{k >= 1}
    - bd0(k, n p_k) - bd0(n - k, n p_rest)``.
    The bracket is the log-pmf at p = y/n (<= 0, exactly 0 at k = 0) and the deviances are >= 0,
    so nothing cancels. Both shares are logs of correctly rounded ratios, ``log(k/n)`` and
    ``log((n - k)/n)`` (absolute error ~eps, all that ``t = log(share) - log p`` and the bracket
    need; XLA's log1p would be off by 2e-14 at arguments in (-0.5, -0.3) in float64), and
    ``log(k (n - k)/n)`` is their sum plus ``log n``.
    """
    if n == 0:
        return jnp.zeros_like(y)
    k = jnp.minimum(y, n - y)
    k_is_y = y <= n - y
    positive = k > 0
    ks = jnp.maximum(k, jnp.ones_like(k))  # double where: k = 0 takes the k = 0 branch
    log_share = jnp.log(ks / n)  # log(k / n)
    log_rest_share = jnp.log((n - k) / n)  # log((n - k) / n), exactly 0 at k = 0
    log_p_k, log_p_rest = where(k_is_y, log_p, log_q), where(k_is_y, log_q, log_p)
    mean_k, mean_rest = n * where(k_is_y, p, q), n * where(k_is_y, q, p)
    deviance = (bd0_in_dtype(k, log_share - log_p_k, mean_k)
                + bd0_in_dtype(n - k, log_rest_share - log_p_rest, mean_rest))
    # n - k >= n/2: at n >= 20 it is always in the range of Stirling's series.
    stirlerr_rest = _stirling_series_in_dtype(n - ks) if n >= 2 * _SERIES_FROM else stirlerr_in_dtype(n - ks)
    head = stirlerr_static(n) - 0.5 * (LOG_2PI + math.log(n))  # one rounded constant
    at_share = head - 0.5 * (log_share + log_rest_share) - stirlerr_in_dtype(ks) - stirlerr_rest
    return where(positive, at_share, jnp.zeros_like(at_share)) - deviance


def _digamma_tail_in_dtype(dtype) -> tuple[tuple[int, float], ...]:
    """The ``_DIGAMMA_TAIL`` terms a result in ``dtype`` needs at x >= 10: all nine in float64; in
    float32 to x^-8 (the first omitted, 1/(132 x^10) <= 7.6e-13, is 1e-11 of psi(x) - log x there)."""
    return _DIGAMMA_TAIL[:5] if jnp.finfo(dtype).bits <= 32 else _DIGAMMA_TAIL


def _psi_minus_log_series(x: jax.Array) -> jax.Array:
    """``psi(x) - log x = sum_j a_j x^(-m_j)`` for x >= 10 (first omitted term < 3e-18; fewer terms
    in float32), in powers of one reciprocal: ``-1/(2x) + sum_k c_k (1/x^2)^k``."""
    (_, half), *even = _digamma_tail_in_dtype(x.dtype)
    inv = 1 / x
    inv2 = inv * inv
    return half * inv + inv2 * horner([c for _, c in even], inv2)  # powers 2, 4, ... of 1/x


def _psi_minus_log_small_plus_inv(x: jax.Array, log_x: jax.Array) -> jax.Array:
    """``psi(x) - log x + 1/x`` for 0 < x < 10, shifted up by psi(x + 1) = psi(x) + 1/x:
    ``psi(x) - log x + 1/x = [psi(x + 10) - log(x + 10)] + log1p(10/x) - sum_{0<k<10} 1/(x + k)``.

    Terms of size ~1 instead of digamma's and log's, whose difference cancels ~30-fold near x = 7;
    the dominant -1/x at small x is left to the caller (``r psi(r)`` -> -1 as r -> 0, where 1/r
    overflows or r flushes to 0).
    """
    shift = 10
    head = _psi_minus_log_series(x + shift) + softplus(math.log(shift) - log_x)
    for k in range(1, shift):
        head = head - 1.0 / (x + k)
    return head


def _scaled_tail_differences(r: jax.Array, y: jax.Array) -> jax.Array:
    """``r [phi(r + y) - phi(r)]`` by the series of phi = psi - log, for r >= 10, y >= 0.

    With ``v = y/(r + y)`` (a correctly rounded ratio: it scales the result) and ``u = 1 - v``
    (needed to an absolute eps only: the terms it enters are <= 2% of the first):
    ``r [(r + y)^(-m) - r^(-m)] = r^(1 - m) (u^m - 1) = -v r^(1 - m) S_m``,
    ``S_m = 1 + u + ... + u^(m - 1)`` (u^m - 1 = (u - 1) S_m): every S_m is a sum of positive terms,
    so nothing cancels, and ``r^(1 - m)`` is a power of ``1/r`` (it underflows to 0 harmlessly
    at r = 1e35 in float32, where the first term alone is left). Two divisions and products, where
    ``expm1(-m log1p(y/r))`` per term would cost an expm1 each.
    """
    v = y / (r + y)
    u = 1 - v
    inv_r = 1 / r
    total = jnp.zeros_like(r)
    partial_sum, u_power, m = jnp.zeros_like(r), jnp.ones_like(r), 0  # S_m and u^m
    r_power, k = jnp.ones_like(r), 1  # r^(1 - k)
    for power, coeff in _digamma_tail_in_dtype(r.dtype):
        while m < power:
            partial_sum, u_power, m = partial_sum + u_power, u_power * u, m + 1
        while k < power:
            r_power, k = r_power * inv_r, k + 1
        total = total + coeff * r_power * partial_sum
    return -v * total


def scaled_digamma_gap(log_r: jax.Array, y: jax.Array) -> jax.Array:
    """``r [psi(r + y) - psi(r) - log(1 + y/r)]`` for r = exp(log_r) > 0, y >= 0 whole.

    The bracket is ``phi(r + y) - phi(r)``, phi(x) = psi(x) - log x = sum_j a_j x^(-m_j) + ...:
    * r >= 10: the differences of the tail, ``a_j r [(r + y)^(-m_j) - r^(-m_j)]``, without
      cancellation (``_scaled_tail_differences``; ~y/(2 r) at large r);
    * r < 10, y < 10: ``psi(r + y) - psi(r) = sum_{k<y} 1/(r + k)`` exactly, a sum of positive terms;
    * r < 10, y >= 10: ``phi(r + y)`` by the series and ``phi(r) + 1/r`` by ``_psi_minus_log_small_plus_inv``.
    No digamma call: near its root at 1.46 digamma loses 1e-14 (float64) / 3e-6 (float32).
    """
    r = jnp.exp(log_r)
    large = r >= _SERIES_FROM
    rl = where(large, r, jnp.full_like(r, _SERIES_FROM))
    series = _scaled_tail_differences(rl, y)
    rs = where(large, jnp.ones_like(r), r)
    log_rs = where(large, jnp.zeros_like(r), log_r)
    positive = y > 0
    log_ys = jnp.log(where(positive, y, jnp.ones_like(y)))
    log1p_y_over_r = where(positive, softplus(log_ys - log_rs), jnp.zeros_like(y))
    few = y < _FINITE_SUM_BELOW
    # k = 0: r / (r + 0) = 1 exactly (also where r is subnormal and flushes to 0, where 0/0 is NaN).
    finite_sum = where(y > 0, jnp.ones_like(r), jnp.zeros_like(r))
    for k in range(1, _FINITE_SUM_BELOW):
        finite_sum = finite_sum + where(k < y, rs / (rs + k), jnp.zeros_like(r))
    yl = where(few, jnp.full_like(y, _FINITE_SUM_BELOW), y)
    # r [phi(r + y) - phi(r)] = r [phi(r + y) - (phi(r) + 1/r)] + 1: no 0 * inf where r flushes to 0.
    by_tails = rs * (_psi_minus_log_series(rs + yl) - _psi_minus_log_small_plus_inv(rs, log_rs)) + 1
    direct = where(few, finite_sum - rs * log1p_y_over_r, by_tails)
    return where(large, series, direct)


def softplus_times_exp(log_scale: jax.Array, d: jax.Array, log_scale_plus_d: jax.Array | None = None) -> jax.Array:
    """``exp(log_scale) * softplus(d)`` without overflow or underflow of the factors.

    For d <= 0 it is ``exp(log_scale + d) * log1p(u)/u`` with u = e^d in (0, 1]: the quotient
    rounds twice (log1p is accurate to an ulp at any u, and log1p(u) = u where u is tiny), and
    u = 0 (d below the log of the smallest subnormal) takes its limit 1. So ``r log(1 + mu/r)``
    stays ``~mu`` when mu/r underflows. ``log_scale_plus_d``, where the caller has it exactly
    (``log mu`` for ``d = log mu - log r``), is used for ``log_scale + d``: the rounded sum of
    ``log_scale`` and a d of its size loses eps |log_scale| of it (r = e^1e4 in float32: the
    result 4e-4 off).
    """
    neg = d <= 0
    dn = where(neg, d, jnp.zeros_like(d))
    dp = where(neg, jnp.zeros_like(d), d)
    u = jnp.exp(dn)
    tiny = u == 0
    log1p_over_u = where(tiny, jnp.ones_like(u), jnp.log1p(u) / where(tiny, jnp.ones_like(u), u))
    exponent = log_scale + dn if log_scale_plus_d is None else where(neg, log_scale_plus_d, jnp.zeros_like(d))
    return where(neg, jnp.exp(exponent) * log1p_over_u, jnp.exp(log_scale) * softplus(dp))


def sum_over_counts(
    fn: Callable[[jax.Array], jax.Array], total_count: int, dtype, chunk: int = 1024
) -> jax.Array:
    """``sum_{y=0}^{n} fn(y)`` over the leading axis of ``fn``'s result, in chunks of ``chunk``.

    ``fn`` takes a 1-D array of counts (``dtype``) and returns ``[len(y), ...]``; memory stays
    O(chunk) per example whatever n is. Counts past n are masked out.
    """
    n = int(total_count)
    if n + 1 <= chunk:
        return jnp.sum(fn(jnp.arange(n + 1, dtype=dtype)), axis=0)
    steps = -(-(n + 1) // chunk)
    offsets = jnp.arange(chunk, dtype=dtype)

    def body(i, acc):
        y = i.astype(dtype) * chunk + offsets
        keep = y <= n
        values = fn(jnp.where(keep, y, jnp.zeros_like(y)))
        keep = keep.reshape((chunk,) + (1,) * (values.ndim - 1))
        return acc + jnp.sum(jnp.where(keep, values, jnp.zeros_like(values)), axis=0)

    shape = jax.eval_shape(fn, offsets)
    init = jnp.zeros(shape.shape[1:], shape.dtype)
    return jax.lax.fori_loop(0, steps, body, init)


def window_nodes(mean: jax.Array, sd: jax.Array, num_nodes: int) -> jax.Array:
    """``num_nodes`` consecutive counts from ``max(0, floor(mean - 10 sd))``, shape [K, *batch]."""
    lo = jnp.maximum(jnp.floor(mean - 10 * sd), jnp.zeros_like(mean))
    steps = jnp.arange(num_nodes, dtype=mean.dtype).reshape((num_nodes,) + (1,) * mean.ndim)
    return lo[None] + steps

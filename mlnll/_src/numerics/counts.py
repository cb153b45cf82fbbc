"""Stable pieces shared by the count families (Binomial, Geometric, Poisson, NegativeBinomial,
Multinomial).

The textbook ``log C(n, y) + y log p + (n - y) log(1 - p)`` adds terms of size ``n log n`` to get a
result of size ``log n``: at n = 1e6 it loses five digits (scipy's logpmf does; its relative error
there is ~1e-10). The count families instead use Loader's saddle-point form (C. Loader, "Fast and
accurate computation of binomial probabilities", 2000; R's dbinom/dpois/dnbinom), written with
``stirlerr`` (the error of Stirling's formula) and ``bd0`` (the deviance term ``x log(x/m) + m - x``):
every term of the sum has the same sign, so the result keeps the relative accuracy of its parts.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from mlnll._src.numerics.series import STIRLING_COEFFS, expm1mx_series, stirling_series
from mlnll._src.numerics.elementary import LOG_2PI, log1pmx_over_x


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
_FINITE_SUM_BELOW = 16


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
    return jnp.isfinite(y) & (y >= 0) & (y == jnp.floor(y))


def stirlerr(x: jax.Array) -> jax.Array:
    """``log Gamma(x + 1) - ((x + 1/2) log x - x + log(2 pi)/2)`` at whole numbers x >= 1 (counts,
    never differentiated), to full precision.

    This is the log-gamma remainder ``delta(x)`` of ``stirling_remainder`` (lgamma(x + 1) = lgamma(x)
    + log x), specialised to counts: x >= 10, Stirling's series (lgamma's rounding would swamp a
    result of 1/(12 x)); below 10 the table's entry, picked by a chain of nine selects (a gather
    from a 10-entry table costs more than all of them on a CPU).
    """
    large = x >= _SERIES_FROM
    big = stirling_series(jnp.where(large, x, jnp.full_like(x, _SERIES_FROM)))
    xs = jnp.where(large, jnp.ones_like(x), x)
    small = jnp.full_like(x, _STIRLERR_TABLE[-1])
    for k in range(len(_STIRLERR_TABLE) - 2, 0, -1):
        small = jnp.where(xs == k, jnp.asarray(_STIRLERR_TABLE[k], x.dtype), small)
    return jnp.where(large, big, small)


def stirlerr_static(n: int) -> float:
    """``stirlerr(n)`` for a static whole number n >= 1, in Python floats (float64)."""
    if n < _SERIES_FROM:
        return _STIRLERR_TABLE[n]
    return float(sum(c / n ** (2 * k + 1) for k, c in enumerate(STIRLING_COEFFS)))


def log_ratio(x: jax.Array, log_m: jax.Array, m: jax.Array | None = None) -> jax.Array:
    """``log(x / m)`` for x > 0 given ``log m``, accurate to a few ulps even when x ~ m is large.

    ``log(x) - log_m`` carries the rounding of ``log x`` (eps * log x, 3e-15 at x = 1e6); where
    the ratio is within e^(+-1/2) of 1 it is ``log(x exp(-log_m))`` instead, two roundings of a
    number near 1. A caller that already holds ``m = exp(log_m)`` passes it: the ratio is then
    ``x / m``, the same two roundings for a division instead of an exp (non-differentiable callers
    only: a ratio that overflows in the branch not taken would send NaN through a gradient).
    """
    far = jnp.log(x) - log_m
    near = jnp.abs(far) < 0.5
    if m is None:
        # double where: away from 1 the ratio x exp(-log_m) could overflow; there it is replaced by 1.
        ratio = x * jnp.exp(-jnp.where(near, log_m, jnp.log(x)))
    else:
        ratio = x / m
    return jnp.where(near, jnp.log(ratio), far)


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
    positive = x > 0
    near = positive & (jnp.abs(t) <= 1)
    t_near = jnp.where(near, t, jnp.zeros_like(t))
    t_far = jnp.where(positive & ~near, t, jnp.zeros_like(t))
    return jnp.where(near, x * expm1mx_series(-t_near), m - x * (1 - t_far))


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


def _psi_minus_log_series(x: jax.Array) -> jax.Array:
    """``psi(x) - log x = sum_j a_j x^(-m_j)`` for x >= 10 (first omitted term < 3e-18)."""
    series = jnp.zeros_like(x)
    for power, coeff in _DIGAMMA_TAIL:
        series = series + coeff * x ** (-power)
    return series


def _psi_minus_log_small(x: jax.Array, log_x: jax.Array) -> jax.Array:
    """``psi(x) - log x`` for 0 < x < 10, shifted up by psi(x + 1) = psi(x) + 1/x:
    ``psi(x) - log x = [psi(x + 10) - log(x + 10)] + log1p(10/x) - sum_{k<10} 1/(x + k)``.

    Terms of size ~1 (or the dominant -1/x at small x) instead of digamma's and log's, whose
    difference cancels ~30-fold near x = 7.
    """
    shift = 10
    head = _psi_minus_log_series(x + shift) + jax.nn.softplus(math.log(shift) - log_x)
    for k in range(shift):
        head = head - 1.0 / (x + k)
    return head


@jax.jit
def scaled_digamma_gap(log_r: jax.Array, y: jax.Array) -> jax.Array:
    """``r [psi(r + y) - psi(r) - log(1 + y/r)]`` for r = exp(log_r) > 0, y >= 0 whole.

    The bracket is ``phi(r + y) - phi(r)``, phi(x) = psi(x) - log x = sum_j a_j x^(-m_j) + ...:
    * r >= 10: each difference of the tail as ``a_j r^(-m_j) expm1(-m_j log1p(y/r))`` (no
      cancellation; ~y/(2 r) at large r), with r folded in as ``r^(1 - m_j)`` so nothing
      underflows at r = 1e35 in float32;
    * r < 10, y < 16: ``psi(r + y) - psi(r) = sum_{k<y} 1/(r + k)`` exactly, a sum of positive terms;
    * r < 10, y >= 16: ``phi(r + y)`` by the series and ``phi(r)`` by ``_psi_minus_log_small``.
    No digamma call: near its root at 1.46 digamma loses 1e-14 (float64) / 3e-6 (float32).
    """
    r = jnp.exp(log_r)
    large = r >= _SERIES_FROM
    rl = jnp.where(large, r, jnp.full_like(r, _SERIES_FROM))
    lr = jnp.log1p(y / rl)
    series = jnp.zeros_like(r)
    for power, coeff in _DIGAMMA_TAIL:
        scale = jnp.ones_like(r) if power == 1 else rl ** (1 - power)
        series = series + coeff * scale * jnp.expm1(-power * lr)
    rs = jnp.where(large, jnp.ones_like(r), r)
    log_rs = jnp.where(large, jnp.zeros_like(r), log_r)
    positive = y > 0
    log_ys = jnp.log(jnp.where(positive, y, jnp.ones_like(y)))
    log1p_y_over_r = jnp.where(positive, jax.nn.softplus(log_ys - log_rs), jnp.zeros_like(y))
    few = y < _FINITE_SUM_BELOW
    finite_sum = jnp.zeros_like(r)
    for k in range(_FINITE_SUM_BELOW):
        finite_sum = finite_sum + jnp.where(k < y, rs / (rs + k), jnp.zeros_like(r))
    yl = jnp.where(few, jnp.full_like(y, _FINITE_SUM_BELOW), y)
    by_tails = rs * (_psi_minus_log_series(rs + yl) - _psi_minus_log_small(rs, log_rs))
    direct = jnp.where(few, finite_sum - rs * log1p_y_over_r, by_tails)
    return jnp.where(large, series, direct)


def softplus_times_exp(log_scale: jax.Array, d: jax.Array) -> jax.Array:
    """``exp(log_scale) * softplus(d)`` without overflow or underflow of the factors.

    For d <= 0 it is ``exp(log_scale + d) * log1p(u)/u`` with u = e^d (log1p(u)/u -> 1 as u -> 0),
    so ``r log(1 + mu/r)`` stays ``~mu`` when mu/r underflows.
    """
    neg = d <= 0
    dn = jnp.where(neg, d, jnp.zeros_like(d))
    dp = jnp.where(neg, jnp.zeros_like(d), d)
    small = jnp.exp(log_scale + dn) * (1 + log1pmx_over_x(jnp.exp(dn)))
    return jnp.where(neg, small, jnp.exp(log_scale) * jax.nn.softplus(dp))


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

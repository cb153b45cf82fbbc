"""VonMisesFisher: a unit vector in R^d given a direction and a log-concentration."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.types import VonMisesFisherOutputArrays, VonMisesFisherOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

_FAMILY = "VonMisesFisher"
_NAMES = ("direction", "log_concentration")
_EVENT_NDIMS = {"direction": 1}
LOG_2PI = numerics.LOG_2PI

# -- the normaliser: log I_nu(k) e^-k and 1 - I_{nu+1}(k)/I_nu(k) for a static order nu = d/2 - 1 ----
# Debye's uniform expansion (DLMF 10.41.3-4) at an order M >= _DEBYE_ORDER, accurate to ~1e-17 with
# _DEBYE_TERMS terms for every k > 0 (sup_t |u_13(t)| = 48, and 48 / 25^13 = 4e-17), then the
# recurrence I_{j-1} = I_{j+1} + (2j/k) I_j downwards as ratios (stable: every term positive).
_DEBYE_ORDER = 25
_DEBYE_TERMS = 12
# Below k = _SMALL sqrt(nu + 1) the power series in k^2/4 (terms below (k^2/4)/(nu+1) = 2.5e-5 each),
# whose first 5 terms are exact to 1e-20; above 2^60 Hankel's limit (the next term ~ nu^2/k).
_SMALL = 0.01
_SERIES_TERMS = 5
_HUGE_K = 2.0**60


def _polymul(a, b):
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def _polyadd(a, b):
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def _deriv(a):
    return [i * a[i] for i in range(1, len(a))] or [Fraction(0)]


@functools.cache
def _debye_polynomials(terms: int) -> tuple[tuple[Fraction, ...], ...]:
    """Debye's ``u_k(t)``, k = 0..terms, exactly: ``u_{k+1} = t^2 (1 - t^2) u_k'/2 + int_0^t (1 - 5s^2) u_k/8``
    (DLMF 10.41.9), coefficients in increasing powers."""
    us = [[Fraction(1)]]
    for _ in range(terms):
        u = us[-1]
        first = _polymul([Fraction(0), Fraction(0), Fraction(1, 2), Fraction(0), Fraction(-1, 2)], _deriv(u))
        inner = _polymul([Fraction(1), Fraction(0), Fraction(-5)], u)
        second = [Fraction(0)] + [c / (8 * (i + 1)) for i, c in enumerate(inner)]
        us.append(_polyadd(first, second))
    return tuple(tuple(u) for u in us)


@functools.cache
def _debye_sums(order: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Monomial coefficients in t of ``U = sum_{k>=1} u_k(t)/M^k`` and of
    ``Q = sum_{k>=1} t (u_{k-1}(t)/2 + t u_{k-1}'(t)) / M^k`` at M = order.

    ``v_k - u_k = -(1 - t^2) t (u_{k-1}/2 + t u_{k-1}')`` (DLMF 10.41.12), so the expansion of
    ``I'_M`` is ``1 + U - (1 - t^2) Q``, with the factor ``1 - t^2`` that vanishes at z = 0 taken out.
    """
    us = _debye_polynomials(_DEBYE_TERMS)
    m = Fraction(order)
    U: list[Fraction] = [Fraction(0)]
    Q: list[Fraction] = [Fraction(0)]
    for k in range(1, _DEBYE_TERMS + 1):
        U = _polyadd(U, [c / m**k for c in us[k]])
        prev = us[k - 1]
        q = _polyadd([c / 2 for c in prev], [Fraction(0)] + _deriv(prev))  # u/2 + t u'
        Q = _polyadd(Q, [Fraction(0)] + [c / m**k for c in q])  # times t
    return tuple(float(c) for c in U), tuple(float(c) for c in Q)


def _debye(order: float, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log(I_M(k) e^-k), R_M = I_{M+1}/I_M, B_M = 1 - R_M)`` at the static order M, for finite k > 0.

    With ``z = k/M``, ``t = 1/sqrt(1 + z^2) = M / hypot(M, k)``, ``zt = k / hypot(M, k)``:
    ``log I_M e^-k = M eta - k - log(2 pi M)/2 - log(hypot(M, k)/M)/2 + log1p(U)``, where
    ``M eta - k = M^2/(hypot(M, k) + k) - M asinh(M/k)`` (eta = sqrt(1 + z^2) - asinh(1/z); the
    first term rationalised). ``I'_M/I_M = (1 + U - z^2 t^2 Q)/(z t (1 + U))`` and
    ``I_{M+1}/I_M = I'_M/I_M - M/k`` give ``R_M = z t (1/(1 + t) - Q/(1 + U))`` and
    ``B_M = (t + t^2/(1 + z t))/(1 + t) + z t Q/(1 + U)``, both sums of positive terms (``1 - z t =
    t^2/(1 + z t)``), with no cancellation at small or large k.
    """
    U_coeffs, Q_coeffs = _debye_sums(order)
    m = order
    h = jnp.hypot(jnp.full_like(k, m), k)
    t = m / h
    zt = k / h
    U = numerics.horner(U_coeffs, t)
    Q = numerics.horner(Q_coeffs, t)
    log_ive = (m * m / (h + k) - m * jnp.arcsinh(m / k) - 0.5 * math.log(2 * math.pi * m)
               - 0.5 * jnp.log(h * (1 / m)) + jnp.log1p(U))
    q = Q / (1 + U)
    ratio = zt * (1 / (1 + t) - q)
    complement = (t + jnp.square(t) / (1 + zt)) / (1 + t) + zt * q
    return log_ive, ratio, complement


def _middle(nu: float, k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log(I_nu(k) e^-k), R_nu(k), B_nu(k))`` for finite k > 0: Debye at ``M = nu + n >= 25`` (n whole),
    then n steps down: ``R_j = k / (2(j+1) + k R_{j+1})``, ``B_j = (2(j+1) - k B_{j+1}) / (2(j+1) + k
    R_{j+1})`` (B_j = 1 - R_j without forming it), ``log I_j = log I_{j+1} - log R_j`` (log1p(-B_j)
    where R_j > 1/2). Each step may double B's relative error at most where ``k B_{j+1} ~ j + 3/2``
    (large k); over the n steps the factor is ``(2M + 1)/(2 nu + 1)``, 51 at d = 2."""
    steps = max(0, math.ceil(_DEBYE_ORDER - nu))
    top = nu + steps
    log_ive, ratio, complement = _debye(top, k)
    for j in range(steps - 1, -1, -1):  # orders nu + j, from top - 1 down to nu
        order_above = nu + j + 1  # 2(j+1) in the recurrence is twice the order above
        denominator = 2 * order_above + k * ratio
        ratio, complement = k / denominator, (2 * order_above - k * complement) / denominator
        log_ratio = jnp.where(ratio > 0.5, jnp.log1p(-complement), jnp.log(ratio))
        log_ive = log_ive - log_ratio
    return log_ive, ratio, complement


def _small_series(nu: float, x: jax.Array) -> jax.Array:
    """``sum_m x^m / (m! (nu+1)_m)`` (I_nu(k) = (k/2)^nu S(k^2/4) / Gamma(nu + 1)), ``_SERIES_TERMS`` terms."""
    coeffs = [1.0]
    for m in range(1, _SERIES_TERMS):
        coeffs.append(coeffs[-1] / (m * (nu + m)))
    return numerics.horner(coeffs, x)


class Normaliser(NamedTuple):
    """The normaliser's pieces at one k: ``c = k + log C_d(k)``, ``k A``, ``k B``, ``A``, ``B``
    (``A = A_d(k) = I_{d/2}(k)/I_{d/2-1}(k)``, ``B = 1 - A``), each with relative accuracy."""

    c: jax.Array
    k_a: jax.Array
    k_b: jax.Array
    a: jax.Array
    b: jax.Array


# -- d = 3 (the sphere): the normaliser in closed form ---------------------------------------------
# k coth k - 1 = sum_{n>=1} 2^(2n) B_2n k^(2n) / (2n)! (B_2n Bernoulli numbers); successive terms
# shrink by about (k/pi)^2 <= 0.102 below k = 1, so 18 terms are exact to ~1e-18 relative there.
_SPHERE_SERIES_K = 1.0
_SPHERE_SERIES_TERMS = 18
# Below k = 0.01, log(sinh k / k) = k^2/6 - k^4/180 (the next term, k^6/2835, is below 4e-16).
_SPHERE_TINY_K = 0.01


@functools.cache
def _k_coth_k_minus_1_over_k2() -> tuple[Fraction, ...]:
    """Coefficients in k^2 of ``(k coth k - 1)/k^2 = sum_{n>=1} 2^(2n) B_2n k^(2n-2) / (2n)!``, exactly
    (the Bernoulli numbers by ``sum_{j<m} C(m + 1, j) B_j = -(m + 1) B_m``)."""
    count = 2 * _SPHERE_SERIES_TERMS + 1
    bernoulli = [Fraction(1)]
    for m in range(1, count):
        bernoulli.append(-sum((math.comb(m + 1, j) * bernoulli[j] for j in range(m)), Fraction(0)) / (m + 1))
    return tuple(Fraction(2 ** (2 * n)) * bernoulli[2 * n] / math.factorial(2 * n)
                 for n in range(1, _SPHERE_SERIES_TERMS + 1))


def _sphere_normaliser(log_k: jax.Array) -> Normaliser:
    """``log_normaliser_parts`` at d = 3, in closed form: ``C_3(k) = k / (4 pi sinh k)``,
    ``A_3(k) = coth k - 1/k``.

    ``c = k + log C_3 = log k - log(2 pi) - log(1 - e^-2k)`` (``log sinh k = k + log1mexp(2k) -
    log 2``), evaluated in three ranges so that nothing overflows or cancels:

    * ``k < 0.01``: ``c = -log(4 pi) + k - log(sinh k / k)``, ``log(sinh k/k) = k^2/6 - k^4/180``
      (log k cancels exactly against log(1 - e^-2k); also k = 0, the uniform density 1/(4 pi));
    * ``k <= 1``: ``c = -log(4 pi) - log(-expm1(-2k) / (2k))`` (the ratio in (0.43, 1], exact to an ulp);
    * ``k > 1``: ``c = log_k - log(2 pi) - log1p(-e^-2k)`` (finite log_k, and inf at k = inf).

    ``d log C_3 / dk = 1/k - coth k = -A``, so ``dc/dk = 1 - A = B``. ``k A = k coth k - 1`` is
    ``k^2 P(k^2)`` below k = 1 (the Bernoulli series, no cancellation of k coth k against 1) and
    ``(k - 1) + 2k / expm1(2k)`` above (``coth k = 1 + 2/expm1(2k)``; k - 1 >= 0 and the second
    term <= 0.32, so no cancellation); ``k B = k - k A`` below k = 1 (kA <= 0.32 k) and ``1 - 2k /
    expm1(2k)`` above (the same identity; 2k/expm1(2k) is taken at min(k, 30), where it is below an
    ulp and expm1 finite in every dtype: its derivative is then finite, not inf/inf).
    """
    k = jnp.exp(log_k)
    series = k <= _SPHERE_SERIES_K
    tiny = k < _SPHERE_TINY_K
    k_s = jnp.where(series, k, 0.0)  # double where: each branch sees a k in its range
    k_t = jnp.where(tiny, k, 0.0)
    k_m = jnp.where(series & ~tiny, k, 0.5)
    k_l = jnp.where(series, 2.0, k)
    log_4pi = math.log(4 * math.pi)
    k_t2 = jnp.square(k_t)
    c_tiny = -log_4pi + k_t - k_t2 * (1 / 6 - k_t2 / 180)
    c_mid = -log_4pi - jnp.log(-jnp.expm1(-2 * k_m) / (2 * k_m))
    c_large = jnp.where(series, 0.0, log_k) - LOG_2PI - jnp.log1p(-jnp.exp(-2 * k_l))
    c = jnp.where(tiny, c_tiny, jnp.where(series, c_mid, c_large))
    a_series = k_s * numerics.horner(_k_coth_k_minus_1_over_k2(), jnp.square(k_s))  # A = (k coth k - 1)/k
    # 2k / expm1(2k) is below 1e-24 from k = 30 on (beyond an ulp of kA and kB), and expm1(60) is
    # finite in float32: a clamp where expm1 overflows (k = 400 in float64, 45 in float32) gives a
    # finite value but a NaN derivative (2/expm1 - 4k e^2k / expm1^2 = inf/inf).
    k_clamped = jnp.minimum(k_l, 30.0)
    tail = 2 * k_clamped / jnp.expm1(2 * k_clamped)
    k_a = jnp.where(series, k_s * a_series, (k_l - 1) + tail)
    k_b = jnp.where(series, k_s - k_s * a_series, 1 - tail)
    huge = k > _HUGE_K
    k_big = jnp.where(huge, k, _HUGE_K)
    k_fin = jnp.where(series | huge, 2.0, k)
    b = jnp.where(series, 1 - a_series, jnp.where(huge, 1 / k_big, k_b / k_fin))
    a = jnp.where(series, a_series, jnp.where(huge, 1 - b, k_a / k_fin))
    return Normaliser(c=c, k_a=k_a, k_b=k_b, a=a, b=b)


def log_normaliser_parts(d: int, log_k: jax.Array) -> Normaliser:
    """The ``Normaliser`` at ``k = exp(log_k)`` for the static dimension d: at d = 3 (directions in
    3D, the most common case) the closed form ``_sphere_normaliser``, chosen statically by d (no
    Bessel function, and float32 keeps its digits: the Bessel path's float32 c is up to ~160 eps off
    at k ~ 0.05, see ``bessel_normaliser_parts``); for every other d ``bessel_normaliser_parts``."""
    if d == 3:
        return _sphere_normaliser(log_k)
    return bessel_normaliser_parts(d, log_k)


def bessel_normaliser_parts(d: int, log_k: jax.Array) -> Normaliser:
    """The ``Normaliser`` at ``k = exp(log_k)`` for any static dimension d, from Bessel functions.

    ``log C_d(k) = nu log k - d log(2 pi)/2 - log I_nu(k)``, nu = d/2 - 1, so
    ``c = nu log_k - d log(2 pi)/2 - log(I_nu(k) e^-k)``. Three ranges of k, each in its own
    double ``where``:

    * ``k < 0.01 sqrt(nu + 1)``: ``c = k + nu log 2 + lgamma(nu + 1) - d log(2 pi)/2 - log S_nu``
      (the series ``S``; nu log k cancels exactly against ``log I_nu``), ``A = k S_{nu+1} /
      (2 (nu + 1) S_nu)``; k = 0 (log_k = -inf) is the uniform density on the sphere;
    * ``k > 2^60``: ``c = (d - 1)(log_k - log(2 pi))/2`` and ``k B = (d - 1)/2`` (Hankel: the next
      terms are ~ nu^2 / k, below an ulp), also at k = inf;
    * between: ``_middle`` (Debye's expansion and the downward recurrence).

    In float32 the middle range is accurate to the size of the terms it sums, not of c: Debye's
    ``log(I_M e^-k)`` at M >= 25 and the n log-ratios of the recurrence are each up to ~100 at
    small k and cancel to c ~ -3, so c carries an absolute error of up to ~160 eps at k ~ 0.05
    (d = 3 and 5; ~75 eps at k = 3), while c's condition number in log_k is ``k B max(|log k|, 1)
    + |c|`` ~ 3. (float64: the same ~160 eps, 4e-14, inside the suite's 1e-12.)
    """
    nu = d / 2 - 1
    k = jnp.exp(log_k)
    small = k < _SMALL * math.sqrt(nu + 1)
    huge = k > _HUGE_K
    middle = ~(small | huge)
    k_mid = jnp.where(middle, k, 1.0)
    log_ive, ratio, complement = _middle(nu, k_mid)
    c_mid = nu * jnp.where(middle, log_k, 0.0) - 0.5 * d * LOG_2PI - log_ive
    k_small = jnp.where(small, k, 0.0)
    x = 0.25 * jnp.square(k_small)
    s_nu, s_next = _small_series(nu, x), _small_series(nu + 1, x)
    c_small = (k_small + nu * math.log(2) + math.lgamma(nu + 1) - 0.5 * d * LOG_2PI) - jnp.log(s_nu)
    a_small = k_small * s_next / ((2 * nu + 2) * s_nu)
    k_huge = jnp.where(huge, k, _HUGE_K)
    c_huge = 0.5 * (d - 1) * (jnp.where(huge, log_k, 0.0) - LOG_2PI)  # from log_k: finite at k = inf
    b_huge = 0.5 * (d - 1) / k_huge
    pick = lambda s_, m_, h_: jnp.where(small, s_, jnp.where(huge, h_, m_))  # noqa: E731
    a = pick(a_small, ratio, 1 - b_huge)
    b = pick(1 - a_small, complement, b_huge)
    return Normaliser(c=pick(c_small, c_mid, c_huge), k_a=k * a,
                      k_b=jnp.where(huge, 0.5 * (d - 1), k * b), a=a, b=b)


# -- the density ------------------------------------------------------------------------------------


# Entries above 2^64 are first scaled by 2^-64 (exact): XLA:CPU divides by the reciprocal, and
# 1/top below the smallest normal number (top > 2^126, float32 entries of 1e38) flushes to 0.
_PRESCALE = 2.0**64


def _scaled(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(w, top)`` with ``v = top w`` over the last axis and ``max |w_i| = 1`` (w = 0 for v = 0)."""
    top = jnp.max(jnp.abs(v), axis=-1, keepdims=True)
    big = top > _PRESCALE
    v = jnp.where(big, v * (1 / _PRESCALE), v)  # exact: a power of two
    top_scaled = jnp.where(big, top * (1 / _PRESCALE), top)
    return v / jnp.where(top_scaled > 0, top_scaled, 1.0), top


def _norm(v: jax.Array) -> jax.Array:
    """``|v|`` over the last axis, scaled by ``max |v_i|`` (no overflow or underflow of the squares)."""
    w, top = _scaled(v)
    return top[..., 0] * jnp.sqrt(jnp.sum(jnp.square(w), -1))


def _unit(v: jax.Array) -> jax.Array:
    """``v / |v|`` over the last axis, as ``w / |w|`` with ``w = v / max |v_i|`` (|w| in [1, sqrt(d)]):
    no overflow where ``|v|`` itself is beyond the largest float (float32 entries of 3e38)."""
    w, _ = _scaled(v)
    return w / jnp.sqrt(jnp.sum(jnp.square(w), -1, keepdims=True))


def _value_and_partials(d: int, v: jax.Array, log_k: jax.Array, x: jax.Array):
    """``log p(x)`` and its partials in ``(direction, log_concentration, x)`` (see the class)."""
    norm = _norm(v)
    mu = _unit(v)
    # 1 - mu.x = |x - mu|^2 / 2 for unit vectors: no cancellation near the mode, where 1 - mu.x
    # loses eps / (1 - mu.x) of itself (the rounding of x moves it by eps |x - mu| instead of eps).
    one_minus_cos = 0.5 * jnp.sum(jnp.square(x - mu), -1)
    cos = 1 - one_minus_cos
    n = log_normaliser_parts(d, log_k)
    k = jnp.exp(log_k)
    # k (1 - cos) at cos = 1 is 0 however large k, also at k = inf (only there: elsewhere the
    # product keeps its derivatives).
    k_one_minus_cos = jnp.where((one_minus_cos == 0) & jnp.isinf(k), 0.0, k * one_minus_cos)
    value = n.c - k_one_minus_cos
    # d log p / d log_k = k (cos - A): as k cos - k A where A < 1/2 (small k: -k + k B cancels),
    # as k B - k (1 - cos) elsewhere (large k: cos - A is a difference of numbers near 1).
    d_log_k = jnp.where(n.a < 0.5, k * cos - n.k_a, n.k_b - k_one_minus_cos)
    d_v = (k / norm)[..., None] * (x - cos[..., None] * mu)
    return value, (d_v, d_log_k, k[..., None] * mu)


# log p(x | direction, log_concentration), differentiated through its closed-form partials.
von_mises_fisher_log_pdf = closed_form(_value_and_partials, num_static=1)


def _params(outputs, family: str = _FAMILY) -> unpack.Params:
    return unpack.unpack(outputs, family=family, names=_NAMES, event_ndims=_EVENT_NDIMS)


def _unit_tolerance(y: jax.Array, p: unpack.Params) -> float:
    """How far ``|x|^2`` may be from 1 for a unit vector given in y's dtype: sqrt(eps) of the
    targets' floating dtype (of the outputs' for integer targets), far above the rounding of a
    normalised vector and far below any vector that was not normalised."""
    dtype = y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else p.dtype
    return float(np.sqrt(np.finfo(dtype).eps))


def _prepare(outputs, targets):
    p = _params(outputs)
    y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
    d = p.direction.shape[-1]
    if y.ndim < 1 or y.shape[-1] != d:
        raise ValueError(f"{_FAMILY} targets must be unit vectors [..., d] with d = {d} as in direction shape "
                         f"{p.direction.shape}; got shape {y.shape}.")
    tol = _unit_tolerance(y, p)
    p, y = unpack.with_targets(p, y, family=_FAMILY, event_ndim=1)
    valid = jnp.all(jnp.isfinite(y), -1) & (jnp.abs(jnp.sum(jnp.square(y), -1) - 1) <= tol)
    ys = jnp.where(valid[..., None], y, _unit(p.direction))  # double where
    return p, ys, valid


def _tangent_unit(mu: jax.Array) -> jax.Array:
    """A unit vector orthogonal to the unit vector mu: ``e_j - mu_j mu`` normalised, j = argmin |mu_j|."""
    d = mu.shape[-1]
    j = jnp.argmin(jnp.abs(mu), axis=-1)
    e = (jnp.arange(d).reshape((1,) * (mu.ndim - 1) + (d,)) == j[..., None]).astype(mu.dtype)
    t = e - jnp.sum(e * mu, -1, keepdims=True) * mu
    return _unit(t)


@dataclasses.dataclass(frozen=True)
class VonMisesFisher:
    r"""von Mises-Fisher distribution of a unit vector in R^d, from a direction and a log-concentration.

    outputs: ``(direction [..., d], log_concentration [...])``; the mean direction is
    ``mu = direction / |direction|`` (normalised inside; a zero direction gives NaN), the
    concentration ``k = exp(log_concentration)``. targets: unit vectors ``[..., d]`` (d >= 2);
    a target that is not finite or whose ``|x|^2`` is off 1 by more than sqrt(eps) of its dtype
    gives ``-inf`` and NaN derivatives.

    Density (scipy.stats.vonmises_fisher(mu, k)): ``log p(x) = k mu.x + log C_d(k)``,
    ``C_d(k) = k^nu / ((2 pi)^(d/2) I_nu(k))``, nu = d/2 - 1, evaluated as
    ``log p = c(k) - k |x - mu|^2 / 2`` (``1 - mu.x`` on the sphere, without its cancellation near the
    mode: a target's rounding moves it by eps ``|x - mu|`` rather than eps, so k (1 - mu.x) at k = 1e6
    keeps 13 digits instead of 10) with ``c = k + log C_d(k) = nu log k - d log(2 pi)/2 -
    log(I_nu(k) e^-k)`` (``log_normaliser_parts``: a power series below k = 0.01 sqrt(nu + 1),
    Debye's uniform expansion at order >= 25 and the downward recurrence of the ratios above, Hankel's
    limit beyond 2^60; to ~1e-14 for d = 2..1000 and k = 1e-8..1e6 against mpmath's besseli). No
    I_nu is formed, so nothing overflows.

    Gradient. ``d log C_d / dk = -A_d(k)``, ``A_d = I_{d/2}/I_{d/2-1}``, so with ``cos = mu.x``:
    ``d(-log p)/d log_concentration = k (A_d - cos)``, evaluated as ``k A - k cos`` where A < 1/2
    and as ``k (1 - cos) - k B`` (``B = 1 - A`` from the expansion, no cancellation) elsewhere;
    ``d(-log p)/d direction = -(k/|direction|) (x - cos mu)`` (the projection of x orthogonal to mu:
    the length of direction does not matter; the same for either form of ``1 - mu.x``, as ``|mu| = 1``);
    ``d(-log p)/dx = -k mu``, the gradient of ``k mu.x`` (off the sphere only its tangential part
    has a meaning, and it is the same for both forms). ``jax.grad``, ``jacfwd`` and
    ``hessian`` of ``log_prob`` run through these partials (a ``closed_form`` custom_jvp).

    Fisher information in ``(direction, log_concentration)``: ``E[x] = A mu`` and
    ``Cov(x) = (A/k)(I - mu mu^T) + A'(k) mu mu^T``, so
    ``F[direction] = (k A / |direction|^2) (I - mu mu^T)`` (rank d - 1), ``F[log k] = k^2 A'(k) =
    Var(k mu.x)``, and 0 between them. ``A' = 1 - A^2 - (d - 1) A/k`` cancels at large k, so
    ``k^2 A'`` is taken as ``d(kA)/dlog k - kA`` where A < 1/2 and ``kB - d(kB)/dlog k`` elsewhere,
    both derivatives by forward mode through the expansion. Shape ``[..., d + 1, d + 1]``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.VonMisesFisher()
      >>> x = jnp.array([0.0, 0.0, 1.0])
      >>> round(float(fam.log_prob((jnp.array([0.0, 0.0, 2.0]), jnp.array(0.0)), x)), 6)  # k = 1, d = 3
      -1.692464
    """

    def log_prob(self, outputs: VonMisesFisherOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(x)``, equal to scipy.stats.vonmises_fisher(mu, k).logpdf(x)."""
        p, x, valid = _prepare(outputs, targets)
        lp = von_mises_fisher_log_pdf(p.direction.shape[-1], p.direction, p.log_concentration, x)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: VonMisesFisherOutputs, targets: ArrayLike) -> VonMisesFisherOutputArrays:
        """Closed form ``(-(k/|v|)(x - cos mu), k (A - cos))`` (NaN for targets off the sphere)."""
        p, x, valid = _prepare(outputs, targets)
        _, (d_v, d_log_k, _) = _value_and_partials(p.direction.shape[-1], p.direction, p.log_concentration, x)
        return (jnp.where(valid[..., None], -d_v, jnp.nan).astype(p.dtype),
                jnp.where(valid, -d_log_k, jnp.nan).astype(p.dtype))

    def params(self, outputs: VonMisesFisherOutputs) -> dict[str, jax.Array]:
        """``{"direction": mu (unit), "concentration": k}``."""
        p = _params(outputs)
        mu = _unit(p.direction)
        return {"direction": mu.astype(p.dtype), "concentration": jnp.exp(p.log_concentration).astype(p.dtype)}

    def mean(self, outputs: VonMisesFisherOutputs) -> jax.Array:
        """``E[x] = A_d(k) mu``, inside the unit ball (its length is the mean resultant length)."""
        p = _params(outputs)
        n = log_normaliser_parts(p.direction.shape[-1], p.log_concentration)
        return (n.a[..., None] * _unit(p.direction)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: VonMisesFisherOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Unit vectors ``w mu + sqrt(1 - w^2) xi``, shape ``sample_shape + batch + (d,)``: ``w = mu.x``
        by Wood's (1994) rejection sampler, ``xi`` uniform on the unit sphere orthogonal to mu (a
        normal vector projected and normalised)."""
        p = _params(outputs)
        d = p.direction.shape[-1]
        shape = tuple(sample_shape) + p.batch_shape
        k = jnp.broadcast_to(jnp.exp(p.log_concentration), shape)
        mu = jnp.broadcast_to(_unit(p.direction), shape + (d,))
        key_w, key_xi = jax.random.split(key)
        one_minus_w = _wood_one_minus_w(key_w, k, d)
        w = 1 - one_minus_w
        g = jax.random.normal(key_xi, shape + (d,), mu.dtype)
        xi = g - jnp.sum(g * mu, -1, keepdims=True) * mu
        xi = _unit(xi)
        sine = jnp.sqrt(one_minus_w * (1 + w))  # sqrt(1 - w^2) without cancellation near w = 1
        x = w[..., None] * mu + sine[..., None] * xi
        return (_unit(x)).astype(p.dtype)

    def entropy(self, outputs: VonMisesFisherOutputs) -> jax.Array:
        """``-k A - log C_d(k) = k B - c(k)``."""
        p = _params(outputs)
        n = log_normaliser_parts(p.direction.shape[-1], p.log_concentration)
        return (n.k_b - n.c).astype(p.dtype)

    def kl(self, outputs_p: VonMisesFisherOutputs, outputs_q: VonMisesFisherOutputs) -> jax.Array:
        """KL(p || q) = ``c_p - c_q + k_q (1 - cos) + B_p (k_q cos - k_p)``, ``cos = mu_p.mu_q``.

        (``E_p[x] = A_p mu_p``; with ``log C = c - k`` the terms of size k cancel exactly, as in VonMises.)
        """
        p = _params(outputs_p, f"{_FAMILY}.kl outputs_p")
        q = _params(outputs_q, f"{_FAMILY}.kl outputs_q")
        d = p.direction.shape[-1]
        if q.direction.shape[-1] != d:
            raise ValueError(f"{_FAMILY}.kl: outputs_p has d = {d}, outputs_q has d = {q.direction.shape[-1]}.")
        batch = validate.broadcast_shapes(f"{_FAMILY}.kl", [("outputs_p (batch)", p.batch_shape),
                                                            ("outputs_q (batch)", q.batch_shape)])
        (v_p, lk_p, v_q, lk_q), dtype = numerics.upcast(p.direction, p.log_concentration, q.direction,
                                                        q.log_concentration)
        v_p, v_q = (jnp.broadcast_to(v, batch + (d,)) for v in (v_p, v_q))
        lk_p, lk_q = (jnp.broadcast_to(lk, batch) for lk in (lk_p, lk_q))
        mu_p, mu_q = _unit(v_p), _unit(v_q)
        one_minus_cos = 0.5 * jnp.sum(jnp.square(mu_p - mu_q), -1)  # 1 - cos for unit vectors, no cancellation
        n_p, n_q = log_normaliser_parts(d, lk_p), log_normaliser_parts(d, lk_q)
        k_p, k_q = jnp.exp(lk_p), jnp.exp(lk_q)
        kl = n_p.c - n_q.c + k_q * one_minus_cos + n_p.b * (k_q * (1 - one_minus_cos) - k_p)
        return kl.astype(dtype)

    def fisher(self, outputs: VonMisesFisherOutputs) -> jax.Array:
        """``blockdiag((k A/|v|^2)(I - mu mu^T), k^2 A'(k))``, shape ``[..., d + 1, d + 1]``."""
        p = _params(outputs)
        d = p.direction.shape[-1]
        norm = _norm(p.direction)
        mu = p.direction / norm[..., None]

        def scaled(log_k):
            n = log_normaliser_parts(d, log_k)
            return n.k_a, n.k_b

        (k_a, k_b), (dk_a, dk_b) = jax.jvp(scaled, (p.log_concentration,), (jnp.ones_like(p.log_concentration),))
        f_log_k = jnp.where(k_a < k_b, dk_a - k_a, k_b - dk_b)
        eye = jnp.eye(d, dtype=mu.dtype).reshape((1,) * len(p.batch_shape) + (d, d))
        # 1 - mu_i^2 as the sum of the other mu_j^2 (no cancellation where mu is near an axis).
        on_diagonal = eye > 0
        others = jnp.sum(jnp.where(on_diagonal, 0, jnp.square(mu)[..., None, :]), axis=-1)
        projection = jnp.where(on_diagonal, others[..., :, None], -mu[..., :, None] * mu[..., None, :])
        f_v = (k_a / jnp.square(norm))[..., None, None] * projection
        top = jnp.concatenate([f_v, jnp.zeros(p.batch_shape + (d, 1), mu.dtype)], -1)
        bottom = jnp.concatenate([jnp.zeros(p.batch_shape + (1, d), mu.dtype), f_log_k[..., None, None]], -1)
        return jnp.concatenate([top, bottom], -2).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: none (the normaliser depends on k), so 0."""
        y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
        if y.ndim < 1:
            raise ValueError(f"{_FAMILY} targets must be unit vectors [..., d]; got shape {y.shape}.")
        return jnp.zeros(y.shape[:-1], numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: VonMisesFisherOutputs) -> tuple[jax.Array, jax.Array]:
        """Two unit vectors ``A mu +- sqrt(1 - A^2) t`` (t a unit vector orthogonal to mu), weights 1/2:
        their mean is ``E[x] = A mu``, and ``log p`` is linear in x, so its Hessian in the outputs is
        too and the rule is exact for the expected Hessian."""
        p = _params(outputs)
        d = p.direction.shape[-1]
        mu = _unit(p.direction)
        n = log_normaliser_parts(d, p.log_concentration)
        sine = jnp.sqrt(n.b * (1 + n.a))[..., None]  # sqrt(1 - A^2) = sqrt(B (1 + A))
        t = _tangent_unit(mu)
        nodes = jnp.stack([n.a[..., None] * mu + sine * t, n.a[..., None] * mu - sine * t])
        return nodes, jnp.full((2,) + p.batch_shape, 0.5, mu.dtype)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: d = 3 (the sphere), concentrations e^(2 N(0, 1)) at random and
        1e-2 to 1e6 (0.1 to 30 in float32) among the extremes, directions of length 1e-3 to 1e3."""
        return (Case(_FAMILY, cls(), _random, _extreme, scipy=ScipyReference(_ScipyVonMisesFisher, per_example=True),
                     plain_log_prob=_plain_log_prob),)


def _wood_one_minus_w(key: jax.Array, k: jax.Array, d: int) -> jax.Array:
    """``1 - w`` for ``w = mu.x`` under VonMisesFisher(mu, k) in R^d, by Wood's (1994) rejection sampler.

    ``b = (d - 1) / (2k + sqrt(4k^2 + (d - 1)^2))`` (rationalised), ``x0 = (1 - b)/(1 + b)``,
    ``c = k x0 + (d - 1) log(1 - x0^2)``; propose ``z ~ Beta((d-1)/2, (d-1)/2)``,
    ``w = (1 - (1 + b) z) / (1 - (1 - b) z)``, so ``1 - w = 2 b z / (1 - (1 - b) z)`` with no
    cancellation; accept when ``k w + (d - 1) log(1 - x0 w) - c >= log u``. Rounds until all are
    accepted (at most 64; NaN where none was, a chance below 1e-20).
    """
    half = 0.5 * (d - 1)
    b = (d - 1) / (2 * k + jnp.sqrt(4 * jnp.square(k) + (d - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = k * x0 + (d - 1) * jnp.log1p(-jnp.square(x0))

    def body(state):
        key, out, done, rounds = state
        key, kz, ku = jax.random.split(key, 3)
        z = jax.random.beta(kz, half, half, k.shape, k.dtype)
        u = jax.random.uniform(ku, k.shape, k.dtype)
        one_minus_w = 2 * b * z / (1 - (1 - b) * z)
        w = 1 - one_minus_w
        accept = k * w + (d - 1) * jnp.log1p(-x0 * w) - c >= jnp.log(u)
        take = accept & ~done
        return key, jnp.where(take, one_minus_w, out), done | accept, rounds + 1

    def not_finished(state):
        return ~jnp.all(state[2]) & (state[3] < 64)

    init = (key, jnp.full_like(k, jnp.nan), jnp.zeros(k.shape, bool), 0)
    return jax.lax.while_loop(not_finished, body, init)[1]


# -- check cases: d = 3 ----------------------------------------------------------------------------

_D = 3


def _plain_log_prob(outputs, x):
    """d = 3: ``k mu.x + log k - log(4 pi sinh k)``, with ``log(2 sinh k) = k + log(1 - e^-2k)``."""
    v, log_k = outputs
    k = jnp.exp(log_k)
    mu = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return k * jnp.sum(mu * x, -1) + log_k - jnp.log(2 * jnp.pi) - k - jnp.log(-jnp.expm1(-2 * k))


class _ScipyVonMisesFisher:
    """scipy.stats.vonmises_fisher at one example's raw outputs, with the mean ``A_d(k) mu`` from
    scipy.special.ive (scipy's distribution has no ``mean``)."""

    def __init__(self, outputs):
        import scipy.stats

        v, log_k = outputs
        self.mu, self.k = v / np.linalg.norm(v), float(np.exp(log_k))
        self._dist = scipy.stats.vonmises_fisher(self.mu, self.k)

    def logpdf(self, x):
        return self._dist.logpdf(x)

    def entropy(self):
        return self._dist.entropy()

    def mean(self):
        import scipy.special

        d = self.mu.shape[-1]
        return scipy.special.ive(d / 2, self.k) / scipy.special.ive(d / 2 - 1, self.k) * self.mu


def _sphere_targets(mu, log_k, u_w, u_phi):
    """d = 3 targets from the model by the inverse CDF of w = mu.x:
    ``1 - w = -log(u + (1 - u) e^-2k) / k = -log1p((1 - u) expm1(-2k)) / k``, and a uniform angle
    about mu (the tangent basis from ``_tangent_unit``)."""
    k = jnp.exp(log_k)
    one_minus_w = -jnp.log1p((1 - u_w) * jnp.expm1(-2 * k)) / k
    w = 1 - one_minus_w
    t1 = _tangent_unit(mu)
    t2 = jnp.cross(mu, t1)
    phi = 2 * math.pi * u_phi
    sine = jnp.sqrt(one_minus_w * (1 + w))[..., None]
    x = w[..., None] * mu + sine * (jnp.cos(phi)[..., None] * t1 + jnp.sin(phi)[..., None] * t2)
    return _unit(x)


def _random(key, dtype, n):
    u = draws.uniform_rows(key, (n, 2 * _D + 2))
    z = draws.box_muller(u[:, :2 * _D])
    v = z[:, :_D]
    log_k = (1.0 if np.dtype(dtype) == np.float32 else 2.0) * z[:, _D]  # float32: k mu.x rounds by eps k
    mu = _unit(v)
    x = _sphere_targets(mu, log_k, u[:, 2 * _D], u[:, 2 * _D + 1])
    return (v.astype(dtype), log_k.astype(dtype)), x.astype(dtype)


def _extreme(dtype):
    """Concentrations 1e-2 to 1e6 in float64 (0.1 to 30 in float32), k (1 - mu.x) of a few at the
    large ones; directions of length 1e-3 and 1e3; the target at the mode and opposite it. (The
    Fisher check's oracle evaluates the Hessian at two unit-vector nodes, whose rounding moves
    k mu.x by about eps k: against k^2 A' ~ k^2/d at small k and ~ (d - 1)/2 at large k, that
    resolves these ranges; tests/test_von_mises_fisher.py takes k from 0 to e^1e4 = inf.)"""
    f64 = np.dtype(dtype) == np.float64
    big, small, middle = (1e6, 1e-2, 1e3) if f64 else (30.0, 0.1, 20.0)
    # No direction along an axis: the Fisher information is 0 along mu (the length of direction does
    # not matter), which the check's |a_ij - b_ij| / sqrt(b_ii b_jj) cannot judge on a diagonal entry.
    v = np.array([[0.3e-3, -0.5e-3, 0.8e-3], [1e3, -2e2, 3e2], [1.0, 1.0, 1.0], [0.2, 2.0, -0.4], [0.1, 0.3, 1.0],
                  [-1.0, 0.5, 0.2]])
    log_k = np.log([small, big, middle, 8.0, middle, 1.0])
    mu = v / np.linalg.norm(v, axis=-1, keepdims=True)
    angle = np.array([1.0, 2.0 / math.sqrt(big), 0.1, 0.5, 0.0, math.pi])  # the angle of x from mu
    j = np.argmin(np.abs(mu), axis=-1)  # _tangent_unit in numpy (extreme inputs are constants)
    t = np.eye(_D)[j] - mu[np.arange(len(mu)), j][:, None] * mu
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    x = np.cos(angle)[:, None] * mu + np.sin(angle)[:, None] * t
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return (jnp.asarray(v, dtype), jnp.asarray(log_k, dtype)), jnp.asarray(x, dtype)

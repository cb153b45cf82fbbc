"""Polynomial evaluation and the coefficient tables that more than one series shares.

Every series in the library is evaluated by ``horner``; the Bernoulli numbers behind Stirling's
series (log-gamma, digamma, the Student t gamma ratio) are written here once, as exact fractions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

# B_2, B_4, ..., B_20: the even Bernoulli numbers.
BERNOULLI_2K = (Fraction(1, 6), Fraction(-1, 30), Fraction(1, 42), Fraction(-1, 30), Fraction(5, 66),
                Fraction(-691, 2730), Fraction(7, 6), Fraction(-3617, 510), Fraction(43867, 798),
                Fraction(-174611, 330))

# Stirling's series of the log-gamma remainder, delta(x) = lgamma(x) - [(x - 1/2) log x - x +
# log(2 pi)/2] = sum_k B_2k / (2k (2k - 1) x^(2k - 1)), k = 1..10: at x >= 10 the first omitted
# term is 1e-21 of delta(10).
STIRLING_COEFFS = tuple(float(b / (2 * k * (2 * k - 1))) for k, b in enumerate(BERNOULLI_2K, start=1))

# Taylor coefficients 1/k! for k = 2..21 of exp(x) - 1 - x; at |x| <= 1 the first omitted term is
# below 1/22! ~ 9e-22, under float64's half-ulp.
EXPM1MX_COEFFS = tuple(1.0 / math.factorial(k) for k in range(2, 22))


def horner(coeffs: Sequence[float | Fraction], x: jax.Array) -> jax.Array:
    """``sum_i coeffs[i] x^i`` (coefficients in increasing powers), by Horner's rule.

    Written in ``lax`` operations with the coefficients as scalar literals of x's dtype: each
    ``jax.numpy`` operator is a small jit of its own whose partial evaluation under ``jax.grad``
    costs ~0.25 ms, and a coefficient broadcast to x's shape is one more equation to trace and
    lower (with the series in ``lax``, tracing a negative binomial NLL's value and grad went from
    0.215 s to 0.145 s).
    """
    x = jnp.asarray(x)
    if not coeffs:
        return jnp.zeros_like(x)
    if len(coeffs) == 1:
        return jnp.full_like(x, float(coeffs[0]))
    literal = lambda c: np.asarray(c, x.dtype)  # noqa: E731
    out = jax.lax.add(jax.lax.mul(x, literal(coeffs[-1])), literal(coeffs[-2]))
    for c in reversed(coeffs[:-2]):
        out = jax.lax.add(jax.lax.mul(out, x), literal(c))
    return out


def stirling_series(x: jax.Array) -> jax.Array:
    """``delta(x) = sum_k B_2k / (2k (2k - 1) x^(2k - 1))``, for x >= 10 only (callers clamp x)."""
    inv = 1 / x
    return horner(STIRLING_COEFFS, inv * inv) * inv


def expm1mx_series(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` for |x| <= 1 only: ``sum_{k>=2} x^k / k!`` in Horner form (terms to k = 21,
    the first omitted below 1e-19 relative). Callers clamp x into [-1, 1]."""
    return horner(EXPM1MX_COEFFS, x) * x * x

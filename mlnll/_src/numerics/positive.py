"""Positive targets read exactly, subnormal ones included.

XLA on a CPU runs with denormals-are-zero and flush-to-zero, in fused kernels and eagerly alike: a
subnormal target (1.4e-45 in float32, 4.9e-324 in float64) compares equal to 0 (``y > 0`` is
False), ``log y`` is ``-inf`` and ``0 / y`` is NaN, although ``y`` is a positive number whose
density is finite (Gamma(1, 1) at 1.4e-45 has log p = -1.4e-45). The one convention: a subnormal
target is the positive number its bits say it is. Support tests and ``log y`` read the integer
bits (an integer bitcast, which no flushing mode touches); a division by y scales the
quotient by powers of two. Normal targets take the plain ``log`` and ``/`` (same results, to the bit).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _layout(dtype) -> tuple[np.dtype, int, int, int]:
    """``(int dtype, bits of the smallest normal, bits of +inf, s)``: a subnormal is ``m 2^-s``
    (m its bits)."""
    info = jnp.finfo(dtype)
    int_dtype = np.dtype(f"int{8 * np.dtype(dtype).itemsize}")
    return int_dtype, 1 << info.nmant, ((1 << info.nexp) - 1) << info.nmant, info.nmant - info.minexp


def _bits(y: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type(y, _layout(y.dtype)[0])


def positive_and_finite(y: jax.Array) -> jax.Array:
    """``0 < y < inf`` from the bits (true for a subnormal y; false for +-0, negatives, inf, NaN).

    A float's bits as a signed integer: +0 is 0, positive floats up to +inf are 1 .. bits(inf),
    a positive NaN is above it and anything with the sign bit is negative.
    """
    _, _, inf, _ = _layout(y.dtype)
    bits = _bits(y)
    return (bits > 0) & (bits < inf)


def nonnegative_and_finite(y: jax.Array) -> jax.Array:
    """``0 <= y < inf`` from the bits: +-0 and subnormal y > 0 in, negative subnormals out."""
    int_dtype, _, inf, _ = _layout(y.dtype)
    bits = _bits(y)
    minus_zero = np.iinfo(int_dtype).min  # the sign bit alone
    return ((bits >= 0) & (bits < inf)) | (bits == minus_zero)


def _subnormal(y: jax.Array) -> tuple[jax.Array, jax.Array, int]:
    """``(subnormal, m, s)`` for y >= 0: whether y is subnormal, and m with ``y = m 2^-s`` there."""
    _, normal, _, s = _layout(y.dtype)
    bits = _bits(y)
    return bits < normal, bits.astype(y.dtype), s  # m < 2^nmant: exact in the float type


@jax.custom_jvp
def log_of_positive(y: jax.Array) -> jax.Array:
    """``log y`` for y > 0, right for subnormal y too (where ``jnp.log`` gives -inf under DAZ).

    Identity: a subnormal ``y = m 2^-s`` (m its integer bits, s = 149 or 1074) has
    ``log y = log m - s log 2``; ``m`` is a normal float, so one log serves both cases.
    """
    subnormal, m, s = _subnormal(y)
    x = jax.lax.select(subnormal, m, y)
    offset = jax.lax.select(subnormal, jnp.full_like(y, s * np.log(2.0)), jnp.zeros_like(y))
    return jnp.log(x) - offset


@log_of_positive.defjvp
def _log_of_positive_jvp(primals, tangents):
    (y,), (dy,) = primals, tangents
    return log_of_positive(y), divide_by_positive(dy, y)


@jax.custom_jvp
def divide_by_positive(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x / y`` for y > 0, right for subnormal y too (where ``0 / y`` is NaN under DAZ).

    Identity: for ``y = m 2^-s``, ``x / y = ((x 2^h) / m) 2^(s - h)`` with h = s // 2: both powers
    are normal floats, ``x 2^h / m`` overflows only where ``x / y`` does, and underflows only for a
    subnormal x. A zero x gives 0.
    """
    x, y = jnp.broadcast_arrays(x, y)
    subnormal, m, s = _subnormal(y)
    h = s // 2
    one = jnp.ones_like(y)
    up = jax.lax.select(subnormal, jnp.full_like(y, 2.0**h), one)
    rest = jax.lax.select(subnormal, jnp.full_like(y, 2.0 ** (s - h)), one)
    return (x * up) / jax.lax.select(subnormal, m, y) * rest


@divide_by_positive.defjvp
def _divide_by_positive_jvp(primals, tangents):
    (x, y), (dx, dy) = primals, tangents
    q = divide_by_positive(x, y)
    # d(x / y) = (dx - (x / y) dy) / y
    return q, divide_by_positive(dx - q * dy, y)


def nonzero_subnormal(y: jax.Array) -> jax.Array:
    """``0 < |y| < tiny`` from the bits: true for a subnormal of either sign, false for +-0.

    Under XLA:CPU's denormals-are-zero a subnormal compares equal to 0 and ``floor`` returns it as
    0, so ``y == floor(y)`` calls 1.4e-45 a whole number: a count test adds ``~nonzero_subnormal``.
    """
    int_dtype, normal, _, _ = _layout(y.dtype)
    magnitude = _bits(y) & np.asarray(np.iinfo(int_dtype).max, int_dtype)  # the sign bit cleared
    return (magnitude > 0) & (magnitude < normal)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def widen(y: jax.Array, dtype) -> jax.Array:
    """``y`` converted to the wider floating ``dtype`` exactly, subnormal y included.

    XLA:CPU's convert reads a float32 subnormal as 0 (denormals-are-zero) although float64 holds it
    as a normal number. Identity: a subnormal ``y = +-m 2^-s`` (m its integer bits) is the product
    of ``m``, exact in the wide type, and ``2^-s``, a normal number there.
    """
    wide = y.astype(dtype)
    if not (jnp.issubdtype(y.dtype, jnp.floating) and np.dtype(dtype).itemsize > np.dtype(y.dtype).itemsize):
        return wide
    int_dtype, _, _, s = _layout(y.dtype)
    magnitude = (_bits(y) & np.asarray(np.iinfo(int_dtype).max, int_dtype)).astype(dtype) * (2.0 ** -s)
    exact = jnp.where(_bits(y) < 0, -magnitude, magnitude)
    return jnp.where(nonzero_subnormal(y), exact, wide)


@widen.defjvp
def _widen_jvp(dtype, primals, tangents):
    (y,), (dy,) = primals, tangents
    return widen(y, dtype), dy.astype(dtype)  # d widen(y) / dy = 1


@jax.custom_jvp
def multiply_by_positive(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x * y`` for y > 0, right for subnormal y too (where ``x * y`` reads y as 0 under DAZ, so that
    ``inf * y`` is NaN and ``1e30 * 1.4e-45`` is 0).

    Identity: for ``y = m 2^-s``, ``x y = ((x 2^-h) m) 2^-(s - h)`` with h = s // 2: ``x 2^-h m`` is at
    most ``x 2^(nmant - h)`` (no overflow for finite x), and underflows only where x y is subnormal
    anyway; ``inf`` stays ``inf``.
    """
    x, y = jnp.broadcast_arrays(x, y)
    subnormal, m, s = _subnormal(y)
    h = s // 2
    one = jnp.ones_like(y)
    down = jax.lax.select(subnormal, jnp.full_like(y, 2.0**-h), one)
    rest = jax.lax.select(subnormal, jnp.full_like(y, 2.0 ** (h - s)), one)
    return (x * down) * jax.lax.select(subnormal, m, y) * rest


@multiply_by_positive.defjvp
def _multiply_by_positive_jvp(primals, tangents):
    (x, y), (dx, dy) = primals, tangents
    # d(x y) = y dx + x dy
    return multiply_by_positive(x, y), multiply_by_positive(dx, y) + x * dy

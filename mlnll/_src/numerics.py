"""The stable primitives every family shares.

Each primitive states the identity it relies on. None of them exponentiates and then takes a log,
and none of them puts a single ``where`` around a log (the "double where" idiom keeps gradients
finite in the branch that is not taken).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)

# Taylor coefficients 1/k! for k = 2..21 of exp(x) - 1 - x; at |x| <= 1 the first omitted term is
# below 1/22! ~ 9e-22, under float64's half-ulp.
_EXPM1MX_COEFFS = tuple(1.0 / math.factorial(k) for k in range(2, 22))
# Taylor coefficients (-1)^(k+1) / k for k = 2..30 of log(1 + u) - u.
_LOG1PMX_COEFFS = tuple((-1.0) ** (k + 1) / k for k in range(2, 31))


def float_dtype(*arrays: jax.Array) -> np.dtype:
    """The floating dtype a result is returned in: the widest floating dtype among ``arrays``.

    Two different 16-bit types (bfloat16 with float16) give float32. Non-floating arrays are
    ignored; with none floating, float32.
    """
    floats = [np.dtype(a.dtype) for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    if not floats:
        return np.dtype(jnp.float32)
    widest = max(f.itemsize for f in floats)
    kinds = {f for f in floats if f.itemsize == widest}
    if len(kinds) > 1:
        return np.dtype(jnp.float32)
    return kinds.pop()


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute and accumulate in: ``dtype``, but never narrower than float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)


def upcast(*arrays: jax.Array) -> tuple[list[jax.Array], np.dtype]:
    """``arrays`` cast to their common accumulation dtype, and the dtype to return results in."""
    dtype = float_dtype(*arrays)
    acc = accumulation_dtype(dtype)
    return [a.astype(acc) for a in arrays], dtype


def log_sigmoid(z: jax.Array) -> jax.Array:
    """``log(sigmoid(z))``, stable for all finite ``z``.

    Identity: log(sigmoid(z)) = -softplus(-z) = -(max(-z, 0) + log1p(exp(-|z|))).
    """
    return jax.nn.log_sigmoid(z)


def max_and_rest(
    logits: jax.Array, axis: int = -1
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Split ``logits`` around their largest entry, for relative accuracy near p = 1.

    Returns ``(top, shifted, rest, is_max)``, all keepdims: ``top`` the max,
    ``shifted = logits - max`` (exactly 0 at the argmax), ``rest = sum_{k != a} exp(shifted_k)``
    for one argmax a, i.e. ``sum_k exp(shifted_k) - 1`` without adding and removing that 1, and the
    boolean ``is_max`` marking the argmax when it is unique (with ties, none: every tied entry has
    p <= 1/2, so ``1 - p`` needs no special care there).

    ``top`` is ``jnp.max``, whose derivative is that of the argmax entry (the mean over ties), so
    ``rest`` differentiates as the function ``sum_{k != a} exp(z_k - z_a)`` and identities such
    as ``1 - p_a = rest / (1 + rest)`` hold for derivatives of every order, not only in value.

    Speed: one max and one pass of plain arithmetic, no argmax or compare-and-select, so XLA:CPU
    fuses both reductions into its vectorised reduce kernels. The entries at the max are marked by
    ``at_top = max(1 + shifted / tiny, 0)``: exactly 1 where shifted = 0 and exactly 0 for any
    shifted <= -tiny (the smallest normal number). Then
    ``rest = sum(exp(shifted) - at_top) + (sum(at_top) - 1)``: the maxima contribute exp(0) - 1 = 0
    to the first sum (which keeps full relative accuracy), and ties are counted by the second.
    """
    top = jnp.max(logits, axis=axis, keepdims=True)
    shifted = logits - top
    # The identity holds for any at_top (it only moves terms between the sums): no gradient needed.
    at_top = jax.lax.stop_gradient(jnp.maximum(1 + shifted * (1 / jnp.finfo(logits.dtype).tiny), 0))
    rest = jnp.sum(jnp.exp(shifted) - at_top, axis=axis, keepdims=True)
    ties = jnp.sum(at_top, axis=axis, keepdims=True) - 1
    return top, shifted, rest + ties, (shifted == 0) & (ties == 0)


def log_softmax(logits: jax.Array, axis: int = -1) -> jax.Array:
    """``log(softmax(logits))`` with relative accuracy even when one class has p close to 1.

    Identity: log p_j = (z_j - z_a) - log1p(sum_{k != a} exp(z_k - z_a)),  a = argmax z.
    The plain ``z - logsumexp(z)`` rounds a confident class's ``-log p`` (e.g. 4e-9) to 0.
    """
    _, shifted, rest, _ = max_and_rest(logits, axis)
    return shifted - jnp.log1p(rest)


def logsumexp(logits: jax.Array, axis: int = -1) -> jax.Array:
    """``log(sum(exp(logits)))`` without overflow: max + log1p(sum of the others' exp(z - max))."""
    top, _, rest, _ = max_and_rest(logits, axis)
    return jnp.squeeze(top + jnp.log1p(rest), axis)


@jax.custom_jvp
def xlogy(x: jax.Array, y: jax.Array) -> jax.Array:
    """``x * log(y)`` with ``0 * log(anything) = 0`` in value and in gradient.

    The derivative in x is log(y), kept wherever it is finite (so d/dp of ``p * log q`` at p = 0 is
    ``log q``); at x = 0 = y both partial derivatives are taken as 0 (the entropy convention).
    """
    safe_y = jnp.where(x == 0, jnp.ones_like(y), y)
    return jnp.where(x == 0, jnp.zeros_like(x), x * jnp.log(safe_y))


@xlogy.defjvp
def _xlogy_jvp(primals, tangents):
    x, y = primals
    x_dot, y_dot = tangents
    both_zero = (x == 0) & (y == 0)
    log_y = jnp.log(jnp.where(both_zero, jnp.ones_like(y), y))
    x_over_y = jnp.where(x == 0, jnp.zeros_like(x), x / jnp.where(x == 0, jnp.ones_like(y), y))
    return xlogy(x, y), x_dot * log_y + y_dot * x_over_y


def mul_nonzero(weight: jax.Array, x: jax.Array) -> jax.Array:
    """``weight * x`` taken as exactly 0 wherever ``weight == 0``, in value and in gradient.

    The inner ``where`` replaces x before the product, so an ``x`` of ``-inf`` (the log of a zero
    probability) under a zero weight sends neither NaN forward nor NaN backward.
    """
    nonzero = weight != 0
    safe_x = jnp.where(nonzero, x, jnp.zeros_like(x))
    return jnp.where(nonzero, weight * safe_x, jnp.zeros_like(safe_x))


def expm1mx(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` with full relative accuracy near 0 (where it is ~x**2 / 2).

    |x| <= 1: the Taylor series sum_{k>=2} x**k / k! in Horner form; elsewhere expm1(x) - x, which
    no longer cancels. The series branch sees a clamped x (double where), so a huge x cannot send
    an overflowing polynomial's NaN gradient through the branch that is not taken.
    """
    small = jnp.abs(x) <= 1
    xs = jnp.where(small, x, jnp.zeros_like(x))
    series = jnp.zeros_like(x)
    for c in reversed(_EXPM1MX_COEFFS):
        series = series * xs + c
    series = series * xs * xs
    xl = jnp.where(small, jnp.ones_like(x), x)
    return jnp.where(small, series, jnp.expm1(xl) - xl)


def log1pmx(u: jax.Array) -> jax.Array:
    """``log1p(u) - u`` with full relative accuracy near 0 (where it is ~ -u**2 / 2).

    |u| <= 1/4: the series sum_{k>=2} (-1)^(k+1) u**k / k in Horner form (terms to k = 30, the
    first omitted below 1e-19 relative); elsewhere log1p(u) - u, which cancels at most ~3 bits there.
    Clamped inputs in each branch (double where) keep both branches' gradients finite.
    """
    small = jnp.abs(u) <= 0.25
    us = jnp.where(small, u, jnp.zeros_like(u))
    series = jnp.zeros_like(u)
    for c in reversed(_LOG1PMX_COEFFS):
        series = series * us + c
    series = series * us * us
    ul = jnp.where(small, jnp.ones_like(u), u)
    return jnp.where(small, series, jnp.log1p(ul) - ul)


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0, with a zero (not NaN) gradient at ``den == 0``."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))

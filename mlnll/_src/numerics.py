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
    rest, unique = rest_of_max(shifted, axis)
    return top, shifted, rest, (shifted == 0) & unique


def rest_of_max(shifted: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """``(rest, unique)`` of ``max_and_rest`` from ``shifted = logits - max`` (keepdims).

    ``unique`` marks rows whose maximum is not tied (see ``max_and_rest`` for the ``at_top`` sums).
    """
    # The identity holds for any at_top (it only moves terms between the sums): no gradient needed.
    at_top = jax.lax.stop_gradient(jnp.maximum(1 + shifted * (1 / jnp.finfo(shifted.dtype).tiny), 0))
    rest = jnp.sum(jnp.exp(shifted) - at_top, axis=axis, keepdims=True)
    ties = jnp.sum(at_top, axis=axis, keepdims=True) - 1
    return rest + ties, ties == 0


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


def expm1mx_series(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` for |x| <= 1 only: the Taylor series sum_{k>=2} x**k / k! in Horner form
    (terms to k = 21, the first omitted below 1e-19 relative). Callers clamp x into [-1, 1]."""
    series = jnp.zeros_like(x)
    for c in reversed(_EXPM1MX_COEFFS):
        series = series * x + c
    return series * x * x


def expm1mx(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` with full relative accuracy near 0 (where it is ~x**2 / 2).

    |x| <= 1: ``expm1mx_series``; elsewhere expm1(x) - x, which no longer cancels. The series
    branch sees a clamped x (double where), so a huge x cannot send an overflowing polynomial's NaN
    gradient through the branch that is not taken.
    """
    small = jnp.abs(x) <= 1
    series = expm1mx_series(jnp.where(small, x, jnp.zeros_like(x)))
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


def lgamma1p(t: jax.Array) -> jax.Array:
    """``log Gamma(1 + t)`` for t > -1, with relative accuracy near its zeros t = 0 and t = 1.

    XLA's lgamma is accurate to absolute, not relative, rounding there (float32 lgamma(1) is
    4.8e-7, and at 1 + 1e-6 it is off by 13%). For |t| <= 1/2 this is the Taylor series above;
    for 1/2 < t <= 3/2, ``log Gamma(1 + t) = log t + log Gamma(1 + (t - 1))`` (t - 1 is exact
    there); elsewhere lgamma. Pass t itself (e.g. ``expm1(log_a)``), not 1 + t rounded.
    """
    near_0 = jnp.abs(t) <= 0.5
    near_1 = (t > 0.5) & (t <= 1.5)
    s = jnp.where(near_0, t, jnp.where(near_1, t - 1, jnp.zeros_like(t)))
    series = jnp.zeros_like(s)
    for c in reversed(_LGAMMA1P_COEFFS):
        series = series * s + c
    series = series * s
    far = jnp.where(near_0 | near_1, jnp.ones_like(t), t)
    return jnp.where(near_0, series, jnp.where(near_1, series + jnp.log(jnp.where(near_1, t, jnp.ones_like(t))),
                                              jax.lax.lgamma(1 + far)))


def lgamma_exp(log_x: jax.Array) -> jax.Array:
    """``log Gamma(exp(log_x))``: ``lgamma1p(expm1(log_x))`` near x = 1 and 2, lgamma elsewhere.

    (Below x = 1/2, ``1 + expm1(log_x)`` would round a tiny x away; lgamma of x itself is
    accurate there.)
    """
    t = jnp.expm1(log_x)
    near = (t >= -0.5) & (t <= 1.5)
    return jnp.where(near, lgamma1p(jnp.where(near, t, jnp.zeros_like(t))), jax.lax.lgamma(jnp.exp(log_x)))


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0, with a zero (not NaN) gradient at ``den == 0``."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))

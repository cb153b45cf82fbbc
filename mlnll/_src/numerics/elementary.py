"""The stable primitives every family shares.

Each primitive states the identity it relies on. None of them exponentiates and then takes a log,
and none of them puts a single ``where`` around a log (the "double where" idiom keeps gradients
finite in the branch that is not taken).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mlnll._src.numerics import series

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
# 1/(2k + 1), k = 1..17, of the atanh series in log1pmx_over_x: at |x| <= 1/2, |u| <= 1/3 and the
# omitted terms are below 1e-18.
_ATANH_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(1, 18))


def log_sigmoid(z: jax.Array) -> jax.Array:
    """``log(sigmoid(z))``, stable for all finite ``z``.

    Identity: log(sigmoid(z)) = -softplus(-z) = -(max(-z, 0) + log1p(exp(-|z|))).
    """
    return jax.nn.log_sigmoid(z)


def log1mexp(x: jax.Array) -> jax.Array:
    """``log(1 - exp(-x))`` for x >= 0 (-inf at 0, 0 at +inf), with relative accuracy everywhere.

    Identity (Maechler 2012): ``log(-expm1(-x))`` for x <= log 2, where 1 - e^-x is small and
    expm1 keeps its digits; ``log1p(-exp(-x))`` above, where e^-x <= 1/2 is small. Each branch
    sees a clamped x (double where).
    """
    near = x <= LOG_2
    xn = jnp.where(near, x, jnp.full_like(x, LOG_2))
    xf = jnp.where(near, jnp.full_like(x, LOG_2), x)
    return jnp.where(near, jnp.log(-jnp.expm1(-xn)), jnp.log1p(-jnp.exp(-xf)))


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
    ``at_top = clip(1 + shifted / tiny, 0, 1)``: exactly 1 where shifted = 0 and exactly 0 for any
    shifted <= -tiny (the smallest normal number). Then
    ``rest = sum(exp(shifted) - at_top) + (sum(at_top) - 1)``: the maxima contribute exp(0) - 1 = 0
    to the first sum (which keeps full relative accuracy), and ties are counted by the second.

    The upper clip matters when XLA computes the logits twice, once for the max and once for
    ``shifted``, and the two disagree by an ulp (jax 0.6.1 does this for logits drawn inside the same
    jit): a top entry of ``shifted = +ulp`` would otherwise mark itself with ``at_top ~ ulp / tiny``
    and cancel the whole sum away. Clipped, the identity still holds term by term for any such
    ``shifted``; only the relative accuracy near p = 1 falls back to that of the plain sum.
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
    at_top = jax.lax.stop_gradient(jnp.clip(1 + shifted * (1 / jnp.finfo(shifted.dtype).tiny), 0, 1))
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


def logsumexp_or_neg_inf(x: jax.Array) -> jax.Array:
    """``log sum_k exp(x_k)`` over the last axis, and ``-inf`` (not NaN) where every term is ``-inf``.

    Identity: logsumexp(x) = max + log1p(sum of the others' exp(x - max)). A row that is all
    ``-inf`` is evaluated on zeros (double where) so that neither its value nor its gradient is NaN.
    """
    empty = jnp.all(x == -jnp.inf, axis=-1)
    safe = jnp.where(empty[..., None], jnp.zeros_like(x), x)
    return jnp.where(empty, -jnp.inf, logsumexp(safe))


def expand_to(a: jax.Array, ndim: int) -> jax.Array:
    """``a`` with trailing unit axes up to rank ``ndim`` (explicit, under rank promotion "raise")."""
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


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


def where(cond: jax.Array, x, y) -> jax.Array:
    """``jnp.where(cond, x, y)`` as one ``lax.select``, for x and y of cond's shape (or scalars,
    broadcast) and one dtype.

    ``jnp.where`` wraps every call in a jit of its own; under ``jax.grad`` each of those is
    partially evaluated and lowered separately, which for the count formulas of dozens of selects
    costs more tracing time than the rest of the program (2.5x the first compile of a
    negative binomial NLL). The select itself is the same operation.
    """
    dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(y).dtype
    x, y = (jnp.broadcast_to(jnp.asarray(v, dtype), cond.shape) for v in (x, y))
    return jax.lax.select(cond, x, y)


def softplus(x: jax.Array) -> jax.Array:
    """``log(1 + e^x) = max(x, 0) + log1p(e^-|x|)`` (``jax.nn.softplus``'s value, as primitives).

    ``max`` and ``|x|`` are one select on ``x >= 0``, so the derivative at x = 0 is the x >= 0
    branch's, ``1 - sigmoid(0) = 1/2`` (``maximum`` and ``abs`` gave 0 there).
    """
    pos = x >= 0
    return where(pos, x, jnp.zeros_like(x)) + jnp.log1p(jnp.exp(where(pos, -x, x)))


def mul_nonzero(weight: jax.Array, x: jax.Array) -> jax.Array:
    """``weight * x`` taken as exactly 0 wherever ``weight == 0``, in value and in gradient.

    The inner ``where`` replaces x before the product, so an ``x`` of ``-inf`` (the log of a zero
    probability) under a zero weight sends neither NaN forward nor NaN backward.
    """
    nonzero = weight != 0
    safe_x = jnp.where(nonzero, x, jnp.zeros_like(x))
    return jnp.where(nonzero, weight * safe_x, jnp.zeros_like(safe_x))


@jax.custom_jvp
def expm1mx(x: jax.Array) -> jax.Array:
    """``exp(x) - 1 - x`` with full relative accuracy near 0 (where it is ~x**2 / 2).

    |x| <= 1: the Taylor series ``sum_{k>=2} x^k / k!`` (``series.expm1mx_series``); elsewhere
    ``expm1(x) - x``, which no longer cancels. Each branch sees a clamped x (double where). The
    derivative is stated, ``expm1(x)``, rather than traced through the polynomial.
    """
    small = jnp.abs(x) <= 1
    xs = jnp.where(small, x, jnp.zeros_like(x))
    xl = jnp.where(small, jnp.ones_like(x), x)
    return jnp.where(small, series.expm1mx_series(xs), jnp.expm1(xl) - xl)


@expm1mx.defjvp
def _expm1mx_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return expm1mx(x), jnp.expm1(x) * dx


def log1pmx_over_x(x: jax.Array) -> jax.Array:
    """``(log(1 + x) - x) / x`` for x > -1 (-> 0 at x = 0), with full relative accuracy near 0.

    |x| <= 1/2: from log1p(x) = 2 atanh(u), u = x/(2 + x), and x - 2u = x u:
    ``(log1p(x) - x)/x = -u + 2 u^2 / (2 + x) * sum_{k>=1} u^(2k-2) / (2k + 1)``; |u| <= 1/3 and
    the leading -u dominates (no cancellation), with no division by x. Elsewhere the plain
    quotient, which cancels at most a factor 5.
    """
    small = jnp.abs(x) <= 0.5
    xs = jnp.where(small, x, jnp.zeros_like(x))
    u = xs / (2 + xs)
    u2 = u * u
    near = -u + 2 * u2 / (2 + xs) * series.horner(_ATANH_COEFFS, u2)
    xl = jnp.where(small, jnp.ones_like(x), x)
    return jnp.where(small, near, (jnp.log1p(xl) - xl) / xl)


def log1pmx(x: jax.Array) -> jax.Array:
    """``log(1 + x) - x`` for x > -1, with full relative accuracy near 0 (where it is ~ -x^2/2)."""
    return x * log1pmx_over_x(x)


def safe_divide(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den != 0``, else 0, with a zero (not NaN) gradient at ``den == 0``."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


# -- stable scalar functions of the location-scale families --------------------------------------


def _split_at_one(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(small, z_small, z_large)``: ``|z| <= 1``, and z clamped into each branch (double where)."""
    small = jnp.abs(z) <= 1
    return small, jnp.where(small, z, jnp.zeros_like(z)), jnp.where(small, jnp.ones_like(z), z)


def log_cosh(z: jax.Array) -> jax.Array:
    """``log(cosh z)`` with relative accuracy at z -> 0 in value and derivative, and no overflow.

    |z| <= 1: ``log1p(2 sinh(z/2)^2)`` (cosh z - 1 = 2 sinh^2(z/2), no cancellation); its
    derivative ``2 sinh(z/2) cosh(z/2) / (1 + 2 sinh^2(z/2)) = tanh z`` keeps relative accuracy.
    Otherwise ``|z| - log 2 + log1p(exp(-2|z|))`` (cosh z = e^|z| (1 + e^-2|z|) / 2).
    """
    small, zs, zl = _split_at_one(z)
    al = jnp.abs(zl)
    near = jnp.log1p(2 * jnp.square(jnp.sinh(zs / 2)))
    far = al - LOG_2 + jnp.log1p(jnp.exp(-2 * al))
    return jnp.where(small, near, far)


def log_hypot1(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log(1 + a^2 + b^2)`` without overflow of the squares.

    With ``m = max(|a|, |b|)`` and ``n = min(|a|, |b|)``: m <= 1 gives ``log1p(a^2 + b^2)``;
    otherwise ``2 log m + log1p((n/m)^2 + (1/m)^2)`` (factor m^2 out of the sum).
    """
    m = jnp.maximum(jnp.abs(a), jnp.abs(b))
    n = jnp.minimum(jnp.abs(a), jnp.abs(b))
    small = m <= 1
    ms, ns = jnp.where(small, m, jnp.zeros_like(m)), jnp.where(small, n, jnp.zeros_like(n))
    ml = jnp.where(small, jnp.ones_like(m), m)
    nl = jnp.where(small, jnp.zeros_like(n), n)
    far = 2 * jnp.log(ml) + jnp.log1p(jnp.square(nl / ml) + jnp.square(1 / ml))
    return jnp.where(small, jnp.log1p(ms * ms + ns * ns), far)

"""Shared pieces of the real-valued location-scale families (Normal, Laplace, Cauchy, Logistic,
StudentT, LogNormal): raw outputs by name with optional fixed parameters, the pieces of their
closed forms they share, and the inputs of their check cases.

Plain functions, no base class: each family module calls what it needs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import minus_inf_off_support
from mlnll._src.unpack import free_names, pack


# -- options and raw outputs ------------------------------------------------------------------


def check_positive_option(family: str, option: str, value) -> None:
    """``ValueError`` naming the value unless ``value`` is None or a finite positive real number."""
    if value is None:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ValueError(f"{family}({option}=...) must be a finite positive number; got {value!r}.")


def describe(family: str, **options) -> str:
    """``"StudentT(df=3.0)"``: the family's name with the options that are set, for messages."""
    set_options = ", ".join(f"{k}={v!r}" for k, v in options.items() if v is not None)
    return f"{family}({set_options})" if set_options else family


LOC_LOG_SCALE = ("loc", "log_scale")


def fixed_scale(scale: float | None) -> dict[str, float]:
    """The fixed parameters of a ``(loc, log_scale)`` family built with ``scale=``: none, or log(scale)."""
    return {} if scale is None else {"log_scale": math.log(scale)}


def params(outputs, *, family: str, scale: float | None) -> unpack.Params:
    """``(loc, log_scale)`` of a location-scale family by name (``p.loc``, ``p.log_scale``,
    ``p.dtype``), validated and broadcast; a fixed ``scale`` fills in ``log_scale``."""
    return unpack.unpack(outputs, family=family, names=LOC_LOG_SCALE, fixed=fixed_scale(scale))


def params_and_targets(outputs, targets, *, family: str,
                       scale: float | None) -> tuple[unpack.Params, jax.Array]:
    """``params`` and the targets, validated and broadcast to one batch shape."""
    return unpack.with_targets(params(outputs, family=family, scale=scale), targets, family=family)


def loc_and_log_scale(outputs, *, family: str, scale: float | None) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validated ``(loc, log_scale, dtype)`` of a ``(loc, log_scale)`` family (``scale`` fixed or None)."""
    p = params(outputs, family=family, scale=scale)
    return p.loc, p.log_scale, p.dtype


def loc_log_scale_and_targets(outputs, targets, *, family: str, scale: float | None):
    """``(loc, log_scale, targets, dtype)``, validated and broadcast together."""
    p, y = params_and_targets(outputs, targets, family=family, scale=scale)
    return p.loc, p.log_scale, y, p.dtype


class FixedScaleUnpacking:
    """What a location-scale family with an optional fixed ``scale`` field shares (a mixin for its
    frozen dataclass): validating the option, the name errors use (``Laplace(scale=0.5)``), the
    fixed raw outputs, and unpacking by name with and without targets."""

    scale: float | None

    def __post_init__(self):
        check_positive_option(type(self).__name__, "scale", self.scale)

    @property
    def _name(self) -> str:
        return describe(type(self).__name__, scale=self.scale)

    @property
    def _fixed(self) -> dict[str, float]:
        return fixed_scale(self.scale)

    def _unpack(self, outputs) -> unpack.Params:
        return params(outputs, family=self._name, scale=self.scale)

    def _unpack_with(self, outputs, targets) -> tuple[unpack.Params, jax.Array]:
        return params_and_targets(outputs, targets, family=self._name, scale=self.scale)

    def _real_log_prob(self, log_pdf: Callable, outputs, targets, keep: int) -> jax.Array:
        """``log_prob`` of a real target through the closed form ``log_pdf(keep, loc, log_scale,
        y)``: the terms ``keep`` says, ``-inf`` (NaN derivatives) at an infinite target."""
        p, y = self._unpack_with(outputs, targets)
        finite, ys = finite_targets(y)
        lp = log_pdf(keep, p.loc, log_scale_argument(p, self.scale), ys)
        return minus_inf_off_support(lp, finite).astype(p.dtype)

    def _real_grad(self, value_and_partials: Callable, outputs, targets):
        """``grad()`` of a real target from the partials of ``value_and_partials(keep, loc,
        log_scale, y)`` (the closed form's own function): minus those in the free outputs, packed
        as the outputs are, NaN at an infinite target."""
        p, y = self._unpack_with(outputs, targets)
        finite, ys = finite_targets(y)
        _, (d_loc, d_log_scale, _) = value_and_partials(ALL_TERMS, p.loc, p.log_scale, ys)
        partials = {"loc": d_loc, "log_scale": d_log_scale}
        return nan_off_support(finite, neg_partials(partials, LOC_LOG_SCALE, self._fixed, p.dtype))

    def _shifted_and_scaled_sample(self, standard_draw: Callable, key: jax.Array, outputs,
                                   sample_shape: Sequence[int]) -> jax.Array:
        """``loc + s * eps`` with ``eps = standard_draw(key, shape, dtype)`` a draw of the standard
        (loc 0, scale 1) law, shape ``sample_shape + batch``."""
        p = self._unpack(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        eps = standard_draw(key, shape, p.loc.dtype)
        return shift_and_scale(p.loc, p.log_scale, eps).astype(p.dtype)


class InverseScale(NamedTuple):
    """``1/scale = exp(-log_scale)`` as ``main * power_of_two``, both normal numbers of the dtype
    where ``exp(-log_scale)`` alone would flush to 0 or overflow.

    Within ``|log_scale| <= T`` (``exp(+-T)`` normal: T = 86 in float32, 707 in float64)
    ``power_of_two = 1`` and ``main = exp(-log_scale)``. Beyond, ``exp(-log_scale) =
    2^-+K exp(-log_scale +- K log 2)`` with ``K log 2 ~ T`` (Cody-Waite: ``K log 2`` as a sum of
    two constants, the first exact, so the shifted argument rounds once: the exponent is off by at
    most an ulp of log_scale). ``main`` is clamped at the largest finite number, so a zero stays 0
    however small the scale.
    """

    main: jax.Array
    power_of_two: jax.Array

    def times(self, x: jax.Array) -> jax.Array:
        return (x * self.main) * self.power_of_two


# log 2 = HIGH + LOW (Cody and Waite): HIGH has trailing zero bits, so K * HIGH is exact for the
# K below; LOW carries the rest to beyond the dtype's precision (fdlibm's constants for float64).
_LOG2_PARTS = {4: (0.693359375, math.log(2) - 0.693359375),
               8: (6.93147180369123816490e-01, 1.90821492927058770002e-10)}


def _range_reduction(dtype) -> tuple[float, float, float, float]:
    """``(T, K log 2 high part, low part, 2^K)`` for dtype: ``exp(+-T)`` and ``2^+-K`` normal."""
    bound = float(math.floor(-math.log(float(jnp.finfo(dtype).tiny)))) - 1  # 86 or 707
    k = math.floor(bound / math.log(2))  # 124 or 1019
    high, low = _LOG2_PARTS[np.dtype(dtype).itemsize]
    return bound, k * high, k * low, 2.0 ** k


def inverse_scale(log_scale: jax.Array) -> InverseScale:
    """``exp(-log_scale)`` as an ``InverseScale``, right wherever the result or its product with a
    normal number is representable."""
    dtype = log_scale.dtype
    bound, high, low, power = _range_reduction(dtype)
    above, below = log_scale > bound, log_scale < -bound
    sign = jnp.where(above, 1, jnp.where(below, -1, 0)).astype(dtype)
    # -log_scale + sign K log 2: the first sum is exact (Sterbenz: log_scale is within a factor
    # 2 of K log 2 when shifted), then one rounding for the low part.
    argument = (sign * high - log_scale) + sign * low
    main = jnp.minimum(jnp.exp(argument), _largest(dtype))
    power_of_two = jnp.where(above, 1 / power, jnp.where(below, power, 1.0)).astype(dtype)
    return InverseScale(main, power_of_two)


def _largest(dtype) -> jax.Array:
    return jnp.asarray(jnp.finfo(dtype).max, dtype)


def standardize(loc: jax.Array, log_scale: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(r, 1/scale)`` with ``r = (y - loc) / scale`` to a few roundings for any finite loc,
    log_scale and y whose r is representable, and ``1/scale`` as the dtype holds it.

    ``r = (y - loc) exp(-log_scale)``, never ``/ exp(log_scale)``, with two guards, each an exact
    identity: the inverse scale in two factors (``InverseScale``: ``log_scale = -1e4`` at
    ``y = loc`` gives r = 0, not ``0 * inf``; ``log_scale = 88.7`` in float32 does not flush
    ``exp(-88.7)`` to 0 before it meets ``y = 3e38``), and where ``y - loc`` overflows
    (``loc = -3e38, y = 3e38``), ``y - loc = 2 (y/2 - loc/2)``, the halves exact.

    ``1/scale`` is ``exp(-log_scale)`` flushed to 0 below the normal range and clamped at the
    largest finite number (so ``0 * (1/scale) = 0`` at any scale): the partials multiply it into
    quantities of order 1, whose products are then right wherever they are normal numbers, but
    for a scale below the smallest normal number (``log_scale < -88.7`` in float32), where a
    product can be up to ``1 / (scale * largest)`` times too small.

    Both leave through a barrier: XLA then stores r and ``1/scale`` once, where it would
    otherwise recompute the selects of the guards from log_scale in every consumer (a read of
    log_scale each; Cauchy's value + grad took 1.5x as long).
    """
    inv = inverse_scale(log_scale)
    difference = y - loc
    overflowed = jnp.isinf(difference)
    # y - loc = 2 (y/2 - loc/2): the halves of finite floats whose difference overflows are exact.
    r = inv.times(jnp.where(overflowed, 0.5 * y - 0.5 * loc, difference))
    r = jnp.where(overflowed, r + r, r)
    inv_scale = jnp.minimum(inv.main * inv.power_of_two, _largest(log_scale.dtype))
    return jax.lax.optimization_barrier((r, inv_scale))


# What a location-scale log-density keeps (a static argument of its closed form): every term
# (log_prob), or none of those ``nll(..., drop_constants=True)`` drops, which are then never added
# (adding and subtracting log(2 pi)/2 would round a half squared error of 5e-9 to 0 in float32).
ALL_TERMS, NO_CONSTANT, NO_CONSTANT_NOR_LOG_SCALE = 0, 1, 2


def without_constants(scale: float | None) -> int:
    """The terms ``drop_constants`` keeps: the log-scale term too unless the scale is fixed."""
    return NO_CONSTANT if scale is None else NO_CONSTANT_NOR_LOG_SCALE


def with_terms(data: jax.Array, log_scale: jax.Array, constant: float | jax.Array, keep: int) -> jax.Array:
    """``data - log_scale - constant``, less the terms ``keep`` leaves out (see ``ALL_TERMS``)."""
    if keep == ALL_TERMS:
        return data - log_scale - constant
    return data - log_scale if keep == NO_CONSTANT else data


def log_scale_argument(p: unpack.Params, scale: float | None) -> jax.Array:
    """``p.log_scale``, or the scalar ``log(scale)`` when the scale is fixed: a constant enters a
    closed-form log-density as a scalar (whose tangent is a symbolic zero), never as an [N] array."""
    if scale is None:
        return p.log_scale
    return jnp.asarray(math.log(scale), p.log_scale.dtype)


def neg_partials(partials: Mapping[str, jax.Array], names: Sequence[str], fixed: Mapping[str, float], dtype):
    """``grad()`` from the partials of ``log p`` by name: the free ones negated (``d(-log p)``), packed
    in table order as the outputs are."""
    return pack({n: -partials[n] for n in free_names(names, fixed)}, names, fixed, dtype)


# Beyond |z| = 2^60 the 1 in ``1 + z^2`` is below 2^-120 of z^2, and z^2 itself would come close to
# float32's overflow (2^128): there ``1 + z^2`` is taken as z^2, and z^2 is never formed.
_HUGE = 2.0**60


class OnePlusSquare(NamedTuple):
    """``1 + z^2`` in the pieces that the Cauchy and Student t closed forms need, none overflowing.

    ``h = 1 / (1 + min(|z|, 2^60)^2)`` is ``1 / (1 + z^2)`` up to |z| = 2^60, and beyond it the
    ratios below are formed from z clamped to +-2^60 and ``w = 2^60 / |z|``.
    """

    log: jax.Array  # log(1 + z^2)
    weighted_log: jax.Array  # weight * log(1 + z^2)
    odd: jax.Array  # z / (1 + z^2)
    ratio: jax.Array  # z^2 / (1 + z^2)
    h: jax.Array
    huge: jax.Array  # |z| > 2^60

    def odd_over_scale(self, inv_scale: jax.Array, z_over_r: float | jax.Array, difference: jax.Array) -> jax.Array:
        """``(z / (1 + z^2)) (z / r) / s`` for ``z = r z_over_r``, ``r = difference / s``: the ratio
        in the loc gradient.

        Beyond |z| = 2^60 it is ``1 / (r s) = 1 / difference`` (to 2^-120): formed as a product
        there, ``z / (1 + z^2) ~ 1/z`` would be a subnormal (flushed to 0) before the large
        ``1/s`` multiplies it, e.g. Cauchy's loc gradient at ``r = -1.6e38``.
        """
        # The double where: 1 / difference is never formed at difference = 0 (its derivative there
        # would be inf * 0 = NaN in a Hessian).
        safe = jnp.where(self.huge, difference, jnp.ones_like(difference))
        return jnp.where(self.huge, 1 / safe, z_over_r * self.odd * inv_scale)

    def square_minus_one_over(self, a: jax.Array, scale: float | jax.Array = 1.0) -> jax.Array:
        """``(a^2 - 1) / (1 + z^2)`` for ``a = scale |z|`` (``a = |r|``, ``scale = sqrt(nu)``).

        As ``(a - 1) ((a + 1) h)`` with a clamped at ``2^60 scale`` (where z is): ``a - 1`` is exact
        near a = 1, where ``a^2 - 1`` would cancel; beyond the clamp the result is
        ``scale^2 (1 - 1/a^2) / (1 + 1/z^2)`` to a relative 2^-120 / scale^2.
        """
        a = jnp.minimum(a, _HUGE * scale)
        # (a + 1) h first: a^2 overflows float32 beyond the clamp when scale = sqrt(nu) > 2^4
        return (a - 1) * ((a + 1) * self.h)


def one_plus_square(z: jax.Array, weight: float | jax.Array = 1.0,
                    far: tuple[jax.Array, jax.Array, jax.Array] | None = None) -> OnePlusSquare:
    """``OnePlusSquare`` of z (and ``weight * log(1 + z^2)``): one ``log1p`` and two divisions,
    whatever the size of z.

    Beyond |z| = 2^60, ``log(1 + z^2) = 2 log|z| + O(z^-2) = 2 log1p(|z|) + O(1/|z|)``, an error
    below 2^-59 on a value above 83, so one ``log1p`` serves both sides (z^2 overflows only on
    the unselected side of the ``where``). The ratios use ``zc = clip(z, +-2^60)``, ``w = 2^60 /
    max(|z|, 2^60)`` (1 up to 2^60) and ``h``: ``z / (1 + z^2) = zc w h`` and
    ``z^2 / (1 + z^2) = zc^2 h`` on both sides (to 2^-120 beyond), with no where: XLA on a CPU
    then fuses them with their consumers, where a select would cost a pass over memory.

    ``far = (y, loc, log_offset)`` with ``|z| = |y - loc| exp(log_offset)`` (``log_offset =
    -log_scale``, less ``log(nu)/2`` for a Student t) gives ``log|z|`` beyond 2^60 from the bits of
    ``y - loc`` instead of from z, which overflows where the exact value is finite (float32
    ``y = 3e38`` at a scale below 1, any ``y != loc`` at ``log_scale = -1e4``): with
    ``|y - loc| = m 2^e`` (frexp, exact; the halves where the difference overflows),
    ``log|z| = log1p(m 2^62) + (e - 62) log 2 + log_offset``, since ``log1p(m 2^62) = log m + 62 log 2``
    to 2^-61. The same ``log1p``, on a selected argument: no second logarithm.
    """
    a = jnp.abs(z)
    huge = a > _HUGE
    if far is None:
        big_argument, big_offset = a, None
    else:
        y, loc, log_offset = far
        difference = y - loc
        overflowed = jnp.isinf(difference)
        # y - loc = 2 (y/2 - loc/2): the halves are exact where the difference overflows
        mantissa, exponent = jnp.frexp(jnp.where(overflowed, 0.5 * y - 0.5 * loc, difference))
        big_argument = jnp.abs(mantissa) * 2.0**62
        big_offset = (exponent + overflowed.astype(exponent.dtype) - 62).astype(z.dtype) * numerics.LOG_2 + log_offset
    log1p = jnp.log1p(jnp.where(huge, big_argument, z * z))
    half = log1p if big_offset is None else jnp.where(huge, log1p + big_offset, log1p)  # log|z| beyond 2^60
    log = jnp.where(huge, half + half, log1p)  # 2 log|z| beyond 2^60
    weighted = weight * half
    # The weight inside the where: XLA on a CPU then does not materialise it as an [N] array.
    weighted_log = jnp.where(huge, weighted + weighted, weighted)
    zc = jnp.clip(z, -_HUGE, _HUGE)
    h = 1 / (1 + zc * zc)
    w = _HUGE / jnp.maximum(a, _HUGE)
    return OnePlusSquare(log, weighted_log, zc * w * h, zc * zc * h, h, huge)


def loc_and_scale(p: unpack.Params) -> dict[str, jax.Array]:
    """``{"loc", "scale"}`` in the result dtype (``params()`` of a location-scale family)."""
    return {"loc": p.loc.astype(p.dtype), "scale": jnp.exp(p.log_scale).astype(p.dtype)}


def fisher_matrix(entries: Mapping[tuple[str, str], jax.Array], names: Sequence[str],
                  fixed: Mapping[str, float], like: jax.Array, dtype) -> jax.Array:
    """The Fisher information over the free outputs, ``[..., P, P]`` (or ``[...]`` when P = 1).

    ``entries`` maps ``(a, b)`` (either order) to the information between raw outputs a and b;
    missing pairs are 0. Fixing a parameter keeps the sub-matrix of the others (its row and
    column are dropped, not marginalised: the fixed value is known).
    """
    zero = jnp.zeros_like(like)

    def entry(a: str, b: str) -> jax.Array:
        value = entries.get((a, b), entries.get((b, a), zero))
        return jnp.broadcast_to(value, like.shape)

    free = free_names(names, fixed)
    if len(free) == 1:
        return entry(free[0], free[0]).astype(dtype)
    return jnp.stack([jnp.stack([entry(a, b) for b in free], -1) for a in free], -2).astype(dtype)


def kl_pair(family: str, p: unpack.Params, q: unpack.Params) -> tuple[unpack.Params, unpack.Params, np.dtype]:
    """The parameters of p and q broadcast to one batch shape and upcast together (the arguments
    of a KL divergence), and the dtype of the result."""
    shapes = [("outputs_p", p.batch_shape), ("outputs_q", q.batch_shape)]
    shape = validate.broadcast_shapes(f"{family}.kl", shapes)
    arrays, dtype = numerics.upcast(*(jnp.broadcast_to(a, shape) for a in (*p.values(), *q.values())))
    p_arrays, q_arrays = dict(zip(p, arrays[: len(p)])), dict(zip(q, arrays[len(p):]))
    return unpack.Params(p_arrays, dtype, shape), unpack.Params(q_arrays, dtype, shape), dtype


# Gauss-Laguerre rule: sum_k w_k f(t_k) = int_0^inf e^-t f(t) dt exactly for polynomials f of
# degree < 16.
_GL_NODES, _GL_WEIGHTS = np.polynomial.laguerre.laggauss(8)


def two_sided_exponential_nodes(p: unpack.Params, *, mass_above: float, mean_above: float,
                                mean_below: float) -> tuple[jax.Array, jax.Array]:
    """A rule for ``E_y[f(y)]`` when ``|y - loc| / s``, given its side of the kink at loc, is
    exponential (Laplace, the asymmetric Laplace): above loc with probability ``mass_above`` and
    mean ``mean_above``, below with mean ``mean_below``.

    Nodes ``loc - s mean_below t_k`` (weights ``(1 - mass_above) w_k``) and ``loc + s mean_above
    t_k`` (weights ``mass_above w_k``), ``[16, *batch]``, with ``t_k, w_k`` the 8-point
    Gauss-Laguerre rule: exact for any f that is a polynomial of degree < 16 in ``|y - loc|`` on
    each side, e.g. every entry of ``grad grad^T`` of those families.
    """
    u = numerics.batch_nodes(np.concatenate([-mean_below * _GL_NODES, mean_above * _GL_NODES]), p.loc)
    w = numerics.batch_nodes(np.concatenate([(1 - mass_above) * _GL_WEIGHTS, mass_above * _GL_WEIGHTS]), p.loc)
    nodes = p.loc[None] + jnp.exp(p.log_scale)[None] * u
    return nodes, jnp.broadcast_to(w, nodes.shape)


def shift_and_scale(loc: jax.Array, log_scale: jax.Array, eps: jax.Array) -> jax.Array:
    """``loc + exp(log_scale) * eps``, the parameters broadcast to the draws' shape ``eps.shape``."""
    return jnp.broadcast_to(loc, eps.shape) + jnp.broadcast_to(jnp.exp(log_scale), eps.shape) * eps


def constant_like(targets, value: float, *, family: str) -> jax.Array:
    """``value`` at the targets' batch shape, in their accumulation dtype (for ``constant_terms``)."""
    y = validate.numeric_targets(targets, where=f"{family} targets")
    return jnp.full(y.shape, value, numerics.accumulation_dtype(numerics.float_dtype(y)))


# -- check-case inputs shared by the location-scale rows ------------------------------------------


def open_uniforms(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Uniforms in the open interval (0, 1), from one draw: one random-bits program to compile,
    however many inputs a case transforms them into (each ``jax.random`` call and split costs
    compile time in the check's programs).

    ``jax.random.uniform`` returns multiples of eps in [0, 1 - eps]; shifted by eps/2 they lie in
    [eps/2, 1 - eps/2], symmetric about 1/2, so ``log(u)``, ``log1p(-u)`` and ``erfinv(2u - 1)`` are finite.
    """
    return jax.random.uniform(key, shape, dtype) + jnp.finfo(dtype).eps / 2


def standard_normal(u: jax.Array) -> jax.Array:
    """The standard normal inverse CDF ``sqrt(2) erfinv(2u - 1)`` (as ``jax.random.normal`` computes it)."""
    return math.sqrt(2.0) * jax.lax.erf_inv(2 * u - 1)


def random_inputs(noise):
    """A case's ``random(key, dtype, n)``: standard normal ``loc`` and ``log_scale`` (scales from
    about e^-3 to e^3) and targets ``y = loc + scale * noise(u)``, ``u`` uniform on (0, 1), i.e.
    drawn from the family itself when ``noise`` is its standard inverse CDF (closed form, no
    rejection sampler).
    """

    def random(key, dtype, n):
        u = open_uniforms(key, (3, n), dtype)
        loc, log_scale = standard_normal(u[0]), standard_normal(u[1])
        return (loc, log_scale), loc + jnp.exp(log_scale) * noise(u[2])

    return random


def extreme_inputs(dtype) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Log-scales of -80 and 80, targets 1e30 away from the location (|r| up to ~1e36, whose square
    overflows float32), and a target exactly at the location (Laplace's kink), ``[7]``."""
    loc = jnp.array([0.0, 1e4, 1e30, -5.0, 0.0, 2.0, -1e-30], dtype)
    log_scale = jnp.array([-80.0, 80.0, 60.0, 0.0, 30.0, 0.5, -60.0], dtype)
    y = jnp.array([1e-35, -1e4, -1e30, 5.0, 1e13, 2.0, 1e-30], dtype)
    return (loc, log_scale), y


def fixed_scale_extreme(dtype) -> tuple[jax.Array, jax.Array]:
    """``(loc, y)`` at a fixed scale of about 1, ``[5]``: targets 1e4 and 1e30 away, and at the location.

    ``|loc| <= 1e15``: a quadrature node ``loc + t`` must still differ from loc.
    """
    return jnp.array([1e4, -1e4, 1e15, 0.0, 3.0], dtype), jnp.array([-1e4, 1e4, -1e30, 1e-30, 3.0], dtype)


def finite_targets(y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(finite, ys)``: the real line is the support (``±inf`` and NaN are off it), and the targets
    with those replaced by 0, so the closed form sees a finite target (the double-where idiom)."""
    finite = jnp.isfinite(y)
    return finite, jnp.where(finite, y, jnp.zeros_like(y))


def nan_off_support(finite: jax.Array, grads):
    """A ``grad()`` result (one array or a tuple) with NaN for the examples off the support."""
    return jax.tree.map(lambda g: jnp.where(finite, g, jnp.full_like(g, jnp.nan)), grads)

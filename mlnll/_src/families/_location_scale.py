"""Shared pieces of the real-valued location-scale families (Laplace, Cauchy, Logistic, StudentT,
LogNormal): raw outputs with optional fixed parameters, and the stable scalar functions they share.

Plain functions, no base class: each family module calls what it needs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, validate

Params = dict[str, jax.Array]


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


def free_names(names: Sequence[str], fixed: Mapping[str, float]) -> tuple[str, ...]:
    """The raw outputs a family takes, in table order: ``names`` less the ``fixed`` ones."""
    return tuple(n for n in names if n not in fixed)


def unpack(outputs, *, family: str, names: Sequence[str],
           fixed: Mapping[str, float]) -> tuple[Params, np.dtype]:
    """Raw outputs by name, in the accumulation dtype, broadcast together, and the result dtype.

    ``names`` are all raw outputs in table order (e.g. ``("loc", "log_scale")``); those in
    ``fixed`` (name -> raw value, e.g. ``{"log_scale": log(2.0)}``) are not taken from ``outputs``
    but filled in. With one free output, ``outputs`` is that array alone; otherwise a tuple.
    """
    free = free_names(names, fixed)
    if len(free) == 1:
        if isinstance(outputs, (tuple, list)):
            raise TypeError(
                f"{family} takes {free[0]} alone as outputs (its other parameters are fixed); got a "
                f"{type(outputs).__name__} of length {len(outputs)}."
            )
        arrays = [validate.float_outputs(outputs, where=f"{family} outputs ({free[0]})")]
    else:
        arrays = list(validate.outputs_tuple(outputs, free, family=family))
    shape = validate.broadcast_shapes(family, [(n, a.shape) for n, a in zip(free, arrays)])
    arrays, dtype = numerics.upcast(*arrays)
    params = {n: jnp.broadcast_to(a, shape) for n, a in zip(free, arrays)}
    for n in names:
        if n in fixed:
            params[n] = jnp.full(shape, fixed[n], arrays[0].dtype)
    return {n: params[n] for n in names}, dtype


def with_targets(params: Params, targets, *, family: str) -> tuple[Params, jax.Array]:
    """``params`` and the targets broadcast to one batch shape; targets cast to the params' dtype."""
    y = validate.numeric_targets(targets, where=f"{family} targets")
    first = next(iter(params.values()))
    shape = validate.broadcast_shapes(family, [("outputs", first.shape), ("targets", y.shape)])
    y = jnp.broadcast_to(y.astype(first.dtype), shape)
    return {n: jnp.broadcast_to(a, shape) for n, a in params.items()}, y



LOC_LOG_SCALE = ("loc", "log_scale")


def fixed_scale(scale: float | None) -> dict[str, float]:
    """The fixed parameters of a ``(loc, log_scale)`` family built with ``scale=``: none, or log(scale)."""
    return {} if scale is None else {"log_scale": math.log(scale)}


def loc_and_log_scale(outputs, *, family: str, scale: float | None) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validated ``(loc, log_scale, dtype)`` of a ``(loc, log_scale)`` family (``scale`` fixed or None)."""
    p, dtype = unpack(outputs, family=family, names=LOC_LOG_SCALE, fixed=fixed_scale(scale))
    return p["loc"], p["log_scale"], dtype


def loc_log_scale_and_targets(outputs, targets, *, family: str, scale: float | None):
    """``(loc, log_scale, targets, dtype)``, validated and broadcast together."""
    p, dtype = unpack(outputs, family=family, names=LOC_LOG_SCALE, fixed=fixed_scale(scale))
    p, y = with_targets(p, targets, family=family)
    return p["loc"], p["log_scale"], y, dtype

def pack(values: Mapping[str, jax.Array], names: Sequence[str], fixed: Mapping[str, float], dtype):
    """The free entries of ``values`` in table order, cast to ``dtype``: a tuple, or one array."""
    free = [values[n].astype(dtype) for n in free_names(names, fixed)]
    return free[0] if len(free) == 1 else tuple(free)


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


def kl_pair(family: str, p: Sequence[jax.Array], q: Sequence[jax.Array]) -> tuple[list[jax.Array], np.dtype]:
    """The parameters of p and q (e.g. ``(loc_p, ls_p)``, ``(loc_q, ls_q)``) broadcast to one batch
    shape and upcast together, as one list ``[*p, *q]``, and the result dtype."""
    shape = validate.broadcast_shapes(f"{family}.kl", [("outputs_p", p[0].shape), ("outputs_q", q[0].shape)])
    arrays, dtype = numerics.upcast(*(jnp.broadcast_to(a, shape) for a in (*p, *q)))
    return arrays, dtype


def shift_and_scale(loc: jax.Array, log_scale: jax.Array, eps: jax.Array) -> jax.Array:
    """``loc + exp(log_scale) * eps``, the parameters broadcast to the draws' shape ``eps.shape``."""
    return jnp.broadcast_to(loc, eps.shape) + jnp.broadcast_to(jnp.exp(log_scale), eps.shape) * eps


def constant_like(targets, value: float, *, family: str) -> jax.Array:
    """``value`` at the targets' batch shape, in their accumulation dtype (for ``constant_terms``)."""
    y = validate.numeric_targets(targets, where=f"{family} targets")
    return jnp.full(y.shape, value, numerics.accumulation_dtype(numerics.float_dtype(y)))


# -- stable scalar functions --------------------------------------------------------------------


def _split_at_one(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(small, z_small, z_large)``: ``|z| <= 1``, and z clamped into each branch (double where)."""
    small = jnp.abs(z) <= 1
    return small, jnp.where(small, z, jnp.zeros_like(z)), jnp.where(small, jnp.ones_like(z), z)


def log1p_square(z: jax.Array) -> jax.Array:
    """``log(1 + z^2)`` for every z, without overflow.

    |z| <= 1: ``log1p(z^2)``. Otherwise ``2 log|z| + log1p(1/z^2)`` (log(1 + z^2) = log(z^2 (1 +
    1/z^2))), so z = 1e30 in float32 gives 138.2, not inf. Both branches have finite gradients.
    """
    small, zs, zl = _split_at_one(z)
    al = jnp.abs(zl)
    return jnp.where(small, jnp.log1p(zs * zs), 2 * jnp.log(al) + jnp.log1p(jnp.square(1 / al)))


def square_ratio(z: jax.Array) -> jax.Array:
    """``z^2 / (1 + z^2)``, as ``1 / (1 + (1/z)^2)`` for |z| > 1 (no overflow of z^2)."""
    small, zs, zl = _split_at_one(z)
    return jnp.where(small, zs * zs / (1 + zs * zs), 1 / (1 + jnp.square(1 / zl)))


def odd_ratio(z: jax.Array) -> jax.Array:
    """``z / (1 + z^2)``, as ``1 / (z + 1/z)`` for |z| > 1 (no overflow of z^2)."""
    small, zs, zl = _split_at_one(z)
    return jnp.where(small, zs / (1 + zs * zs), 1 / (zl + 1 / zl))


def one_minus_square_over(r: jax.Array, inv_nu: jax.Array) -> jax.Array:
    """``(1 - r^2) / (1 + r^2 / nu)``, with relative accuracy near |r| = 1 and no overflow of r^2.

    |r| <= 1: ``(1 - |r|)(1 + |r|) / (1 + r^2 / nu)`` (``1 - |r|`` is exact near |r| = 1, where
    ``1 - r^2`` would cancel); otherwise, dividing through by r^2,
    ``(1/|r| - 1)(1/|r| + 1) / (1/r^2 + 1/nu)``.
    """
    small, rs, rl = _split_at_one(r)
    a_s, inv_a = jnp.abs(rs), 1 / jnp.abs(rl)
    near = (1 - a_s) * (1 + a_s) / (1 + rs * rs * inv_nu)
    far = (inv_a - 1) * (inv_a + 1) / (inv_a * inv_a + inv_nu)
    return jnp.where(small, near, far)


def log_cosh(z: jax.Array) -> jax.Array:
    """``log(cosh z)`` with relative accuracy at z -> 0 in value and derivative, and no overflow.

    |z| <= 1: ``log1p(2 sinh(z/2)^2)`` (cosh z - 1 = 2 sinh^2(z/2), no cancellation); its
    derivative ``2 sinh(z/2) cosh(z/2) / (1 + 2 sinh^2(z/2)) = tanh z`` keeps relative accuracy.
    Otherwise ``|z| - log 2 + log1p(exp(-2|z|))`` (cosh z = e^|z| (1 + e^-2|z|) / 2).
    """
    small, zs, zl = _split_at_one(z)
    al = jnp.abs(zl)
    near = jnp.log1p(2 * jnp.square(jnp.sinh(zs / 2)))
    far = al - numerics.LOG_2 + jnp.log1p(jnp.exp(-2 * al))
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


# -- quadrature rules (for ``expectation_nodes``) -----------------------------------------------


def batch_nodes(values: np.ndarray, like: jax.Array) -> jax.Array:
    """A 1-D numpy rule as ``[K, 1, ..., 1]`` in ``like``'s dtype and rank, to broadcast over a batch."""
    return jnp.asarray(values, like.dtype).reshape((-1,) + (1,) * like.ndim)


def trapezoid_grid(half_width: float, step: float) -> np.ndarray:
    """The points ``k * step`` for ``|k * step| <= half_width``: a trapezoid rule on the real line.

    For a function analytic in the strip |Im t| < d and decaying fast, the trapezoid rule's error
    is O(exp(-2 pi d / step)), so a modest step gives float64 accuracy.
    """
    k = int(math.floor(half_width / step))
    return np.arange(-k, k + 1, dtype=np.float64) * step

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

from mlnll._src import numerics, unpack, validate
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


def loc_and_log_scale(outputs, *, family: str, scale: float | None) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validated ``(loc, log_scale, dtype)`` of a ``(loc, log_scale)`` family (``scale`` fixed or None)."""
    p = unpack.unpack(outputs, family=family, names=LOC_LOG_SCALE, fixed=fixed_scale(scale))
    return p.loc, p.log_scale, p.dtype


def loc_log_scale_and_targets(outputs, targets, *, family: str, scale: float | None):
    """``(loc, log_scale, targets, dtype)``, validated and broadcast together."""
    p = unpack.unpack(outputs, family=family, names=LOC_LOG_SCALE, fixed=fixed_scale(scale))
    p, y = unpack.with_targets(p, targets, family=family)
    return p.loc, p.log_scale, y, p.dtype

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

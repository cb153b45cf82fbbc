"""The reduction step every loss shares (``nll`` and the fused vocabulary losses): validated masks
and weights, and the mean, sum or per-example result, with masked examples contributing exactly 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlnll._src import numerics

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction) -> None:
    """``ValueError`` naming the choices unless ``reduction`` is one of them."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {reduction!r}.")


def fits(x, shape: tuple[int, ...], *, name: str, target: str = "the per-example loss shape") -> jax.Array:
    """``x`` broadcast to ``shape``, or a ``ValueError`` naming both shapes (trace time)."""
    x = jnp.asarray(x)
    try:
        ok = jnp.broadcast_shapes(x.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        hint = (" (a trailing axis of size 1 would make an outer product: drop it, e.g. x[..., 0])"
                if x.ndim > len(shape) or (x.ndim and x.shape[-1] == 1) else "")
        raise ValueError(f"{name} shape {x.shape} does not broadcast to {target} {tuple(shape)}{hint}.")
    return jnp.broadcast_to(x, shape)


def example_weights(shape: tuple[int, ...], dtype, *, where=None, weights=None, keep=None,
                    target: str = "the per-example loss shape") -> jax.Array:
    """Per-example weights: ``weights`` (default 1), zeroed where ``where`` or ``keep`` is False.

    ``where`` must be boolean and ``weights`` real, each broadcastable to ``shape``; a wrong dtype or
    shape raises at trace time naming the argument.
    """
    w = jnp.ones(shape, dtype)
    if weights is not None:
        weights = jnp.asarray(weights)
        if not jnp.issubdtype(weights.dtype, jnp.number) or jnp.issubdtype(weights.dtype, jnp.complexfloating):
            raise TypeError(f"weights must be a real array; got dtype {weights.dtype}.")
        w = fits(weights, shape, name="weights", target=target).astype(dtype)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"where must be a boolean mask; got dtype {where.dtype}.")
        w = jnp.where(fits(where, shape, name="where", target=target), w, jnp.zeros_like(w))
    if keep is not None:
        w = jnp.where(keep, w, jnp.zeros_like(w))
    return w


def reduce(losses: jax.Array, w: jax.Array | None, reduction: str, dtype, *,
           norm: jax.Array | None = None) -> jax.Array:
    """``"none"``: ``w l`` per example; ``"sum"``: ``sum(w l)``; ``"mean"``: ``sum(w l) / sum(w norm)``.

    A zero weight drops an example whatever its loss (``inf * 0`` would be NaN), and a batch with
    nothing kept has mean 0 and a zero gradient (not 0/0). ``w=None`` (no mask, weights or ignored
    examples) is the plain sum or mean, with no weight array for XLA to build and fold away. The
    result is cast to ``dtype``.
    """
    if w is None and norm is None:
        return _unweighted(losses, reduction).astype(dtype)
    if w is None:
        w = jnp.ones(losses.shape, losses.dtype)
    weighted = numerics.mul_nonzero(w, losses)
    if reduction == "none":
        return weighted.astype(dtype)
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total.astype(dtype)
    return numerics.safe_divide(total, jnp.sum(w if norm is None else w * norm)).astype(dtype)


def _unweighted(losses: jax.Array, reduction: str) -> jax.Array:
    """The plain per-example losses, their sum, or their mean (0 for an empty batch, not 0/0)."""
    if reduction == "none":
        return losses
    total = jnp.sum(losses)
    if reduction == "sum" or losses.size == 0:
        return total
    return total / losses.size


def gradient_scale(w: jax.Array, reduction: str, *, norm: jax.Array | None = None) -> jax.Array:
    """What each example's gradient is multiplied by: ``w`` ("sum", "none") or ``w / sum(w norm)``."""
    if reduction != "mean":
        return w
    return numerics.safe_divide(w, jnp.sum(w if norm is None else w * norm))

"""``nll(family)``: the generic likelihood -> loss step, with reductions, masks and weights."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mlnll._src import numerics
from mlnll._src.family import Family

REDUCTIONS = ("mean", "sum", "none")

Loss = Callable[..., jax.Array]


def _check_reduction(reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {reduction!r}.")


def _broadcast_to_losses(x, shape: tuple[int, ...], *, name: str) -> jax.Array:
    x = jnp.asarray(x)
    try:
        fits = jnp.broadcast_shapes(x.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} shape {x.shape} does not broadcast to the per-example loss shape {tuple(shape)}."
        )
    return jnp.broadcast_to(x, shape)


def reduce_losses(losses: jax.Array, *, where=None, weights=None, reduction: str = "mean") -> jax.Array:
    """Reduce per-example losses: ``sum(w * l) / sum(w)`` over kept examples, ``sum`` or ``none``.

    ``where`` (bool) keeps examples; masked-out ones contribute exactly 0 to the value and the
    gradient even if their loss is inf. ``weights`` (>= 0) scale examples. "mean" with nothing kept
    (or all weights 0) is 0 with a zero gradient, never NaN. Sums accumulate in float32 at least;
    the result has the losses' dtype. "none" returns the weighted, masked per-example losses.
    """
    _check_reduction(reduction)
    dtype = losses.dtype
    acc = numerics.accumulation_dtype(dtype)
    losses = losses.astype(acc)
    w = jnp.ones_like(losses)
    if weights is not None:
        weights = jnp.asarray(weights)
        if not (jnp.issubdtype(weights.dtype, jnp.number) and not jnp.issubdtype(weights.dtype, jnp.complexfloating)):
            raise TypeError(f"weights must be a real array; got dtype {weights.dtype}.")
        w = _broadcast_to_losses(weights, losses.shape, name="weights").astype(acc)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"where must be a boolean mask; got dtype {where.dtype}.")
        keep = _broadcast_to_losses(where, losses.shape, name="where")
        w = jnp.where(keep, w, jnp.zeros_like(w))
    # w = 0 drops an example whatever its loss (inf * 0 would be NaN).
    weighted = numerics.mul_nonzero(w, losses)
    if reduction == "none":
        return weighted.astype(dtype)
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total.astype(dtype)
    # An empty batch (sum w = 0) has mean 0, and its gradient is 0 rather than 0/0.
    return numerics.safe_divide(total, jnp.sum(w)).astype(dtype)


def nll(family: Family, *, reduction: str = "mean") -> Loss:
    """Turn a family's log-likelihood into a training loss.

    ``loss = nll(family, reduction="mean")`` returns
    ``loss(outputs, targets, *, where=None, weights=None)`` computing
    ``-family.log_prob(outputs, targets)`` per example, then the reduction:

    * ``"mean"``: ``sum_i w_i m_i l_i / sum_i w_i m_i`` (m = ``where``, w = ``weights``, both default
      to 1): the mean over kept examples, or the weighted mean ``sum(w l) / sum(w)``. Nothing kept
      gives 0 and a zero gradient.
    * ``"sum"``: ``sum_i w_i m_i l_i``.
    * ``"none"``: the per-example ``w_i m_i l_i`` (masked examples are 0).

    The loss is a pure function: it works under ``jit``, ``vmap``, ``grad``, ``jacfwd``, ``jacrev``
    and ``hessian`` (nothing inside uses ``custom_vjp``).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> loss = mlnll.nll(mlnll.Bernoulli())
      >>> float(loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])))  # log 2
      0.6931471...
    """
    _check_reduction(reduction)
    if not isinstance(family, Family):
        raise TypeError(f"nll needs a family such as mlnll.Categorical(); got {type(family).__name__}.")

    def loss(outputs, targets, *, where=None, weights=None) -> jax.Array:
        per_example = -family.log_prob(outputs, targets)
        return reduce_losses(per_example, where=where, weights=weights, reduction=reduction)

    loss.__name__ = f"nll_{type(family).__name__}"
    loss.__qualname__ = loss.__name__
    loss.__doc__ = f"Negative log-likelihood of {family!r}, reduction={reduction!r}: loss(outputs, targets, *, where=None, weights=None)."
    return loss

"""``nll(family)``: the generic likelihood -> loss step, with reductions, masks and weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mlnll._src import numerics, options_bernoulli, options_categorical
from mlnll._src.families.bernoulli import Bernoulli
from mlnll._src.families.categorical import Categorical
from mlnll._src.family import Family

REDUCTIONS = ("mean", "sum", "none")


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


# Family-specific loss options: the option names, their validation, and the per-example loss
# and closed-form gradient they imply.
_OPTION_HANDLERS = {
    Bernoulli: options_bernoulli,
    Categorical: options_categorical,
}


def _option_handler(family: Family, options: dict):
    handler = _OPTION_HANDLERS.get(type(family))
    accepted = handler.OPTIONS if handler is not None else ()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(accepted) if accepted else "none (only reduction and drop_constants)"
        raise TypeError(f"nll({type(family).__name__}()) got unexpected option(s) {unknown}; it accepts: {listed}.")
    return handler


def _scale_like(scale: jax.Array, leaf: jax.Array) -> jax.Array:
    """``scale`` [batch] reshaped to broadcast over ``leaf`` [batch, *event]."""
    extra = leaf.ndim - scale.ndim
    return jnp.broadcast_to(scale.reshape(scale.shape + (1,) * extra), leaf.shape)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A training loss built by ``nll``: ``loss(outputs, targets, *, where=None, weights=None)``.

    ``loss.per_example(outputs, targets)`` gives the unreduced losses, ``loss.grad(...)`` the
    closed-form gradient of the reduced loss with respect to the outputs (same tree).
    """

    family: Family
    reduction: str = "mean"
    drop_constants: bool = False
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def _options(self) -> dict:
        return dict(self.options)

    def _terms(self, outputs, targets):
        """``(loss, norm, keep)`` per example: the loss, its weight in the mean's denominator, and
        the examples an option keeps (None = all)."""
        handler = _option_handler(self.family, self._options)
        if handler is not None and self.options:
            loss, norm, keep = handler.per_example(outputs, targets, self._options)
            dtype = numerics.float_dtype(*jax.tree.leaves(outputs))
        else:
            log_prob = self.family.log_prob(outputs, targets)
            dtype = log_prob.dtype
            loss, norm, keep = -log_prob.astype(numerics.accumulation_dtype(dtype)), None, None
        if self.drop_constants:
            loss = loss + self.family.constant_terms(targets).astype(loss.dtype)
        return loss, (jnp.ones_like(loss) if norm is None else norm), keep, dtype

    def per_example(self, outputs, targets) -> jax.Array:
        """The per-example losses, before any reduction (options applied, ignored examples 0)."""
        loss, _, keep, dtype = self._terms(outputs, targets)
        if keep is not None:
            loss = jnp.where(keep, loss, jnp.zeros_like(loss))
        return loss.astype(dtype)

    def __call__(self, outputs, targets, *, where=None, weights=None) -> jax.Array:
        loss, norm, keep, dtype = self._terms(outputs, targets)
        w = _example_weights(loss, keep, where, weights)
        # w = 0 drops an example whatever its loss (inf * 0 would be NaN).
        weighted = numerics.mul_nonzero(w, loss)
        if self.reduction == "none":
            return weighted.astype(dtype)
        total = jnp.sum(weighted)
        if self.reduction == "sum":
            return total.astype(dtype)
        # An empty batch (nothing kept, or all weights 0) has mean 0 and a zero gradient.
        return numerics.safe_divide(total, jnp.sum(w * norm)).astype(dtype)

    def grad(self, outputs, targets, *, where=None, weights=None):
        """Closed-form gradient of the reduced loss with respect to ``outputs`` (same tree).

        Per example it is the family's (or the option's) closed form, scaled by ``w_i / sum(w norm)``
        for "mean", ``w_i`` for "sum" and "none" (for "none", each example's own gradient).
        """
        handler = _option_handler(self.family, self._options)
        loss, norm, keep, dtype = self._terms(outputs, targets)
        if handler is not None and self.options:
            per_example = handler.per_example_grad(outputs, targets, self._options)
        else:
            per_example = self.family.grad(outputs, targets)
        w = _example_weights(loss, keep, where, weights)
        scale = w if self.reduction != "mean" else numerics.safe_divide(w, jnp.sum(w * norm))
        kept = w != 0

        def scaled(g):
            g = g.astype(scale.dtype)
            return jnp.where(_scale_like(kept, g), g * _scale_like(scale, g), jnp.zeros_like(g)).astype(dtype)

        return jax.tree.map(scaled, per_example)


def _example_weights(loss, keep, where, weights) -> jax.Array:
    """Per-example weights: ``weights`` (default 1), zeroed where ``where`` or an option drops."""
    w = jnp.ones_like(loss)
    if weights is not None:
        weights = jnp.asarray(weights)
        if not jnp.issubdtype(weights.dtype, jnp.number) or jnp.issubdtype(weights.dtype, jnp.complexfloating):
            raise TypeError(f"weights must be a real array; got dtype {weights.dtype}.")
        w = _broadcast_to_losses(weights, loss.shape, name="weights").astype(loss.dtype)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"where must be a boolean mask; got dtype {where.dtype}.")
        w = jnp.where(_broadcast_to_losses(where, loss.shape, name="where"), w, jnp.zeros_like(w))
    if keep is not None:
        w = jnp.where(keep, w, jnp.zeros_like(w))
    return w


def nll(family: Family, *, reduction: str = "mean", drop_constants: bool = False, **options) -> Loss:
    """Turn a family's log-likelihood into a training loss.

    ``loss = nll(family, reduction="mean")`` returns a ``Loss``; calling
    ``loss(outputs, targets, *, where=None, weights=None)`` computes the per-example
    ``l_i = -family.log_prob(outputs, targets)`` and reduces it:

    * ``"mean"``: ``sum_i w_i m_i l_i / sum_i w_i m_i`` (m = ``where``, w = ``weights``, both default
      to 1): the mean over kept examples, or the weighted mean ``sum(w l) / sum(w)``. Nothing kept
      gives 0 and a zero gradient (torch gives NaN).
    * ``"sum"``: ``sum_i w_i m_i l_i``.
    * ``"none"``: the per-example ``w_i m_i l_i`` (masked examples are 0).

    ``drop_constants=True`` drops the terms of ``log_prob`` that depend on the targets only
    (``family.constant_terms``): ``0.5 log(2 pi)`` (and ``log s`` for a fixed scale) for Normal,
    ``log(y!)`` for Poisson, none for Bernoulli and Categorical. Gradients are unchanged.

    Family options (keyword-only; see ``options_categorical`` and ``options_bernoulli`` for the
    formulas and their closed-form gradients):

    * ``Categorical``: ``ignore_index`` (label value whose examples are skipped), ``label_smoothing``
      (alpha spread over all C classes), ``class_weights`` (length C; with labels the mean divides by
      ``sum_i w[y_i]`` as torch does), ``z_loss`` (coefficient on ``logsumexp(z)**2``), ``focal_gamma``.
    * ``Bernoulli``: ``pos_weight`` (torch's BCEWithLogitsLoss), ``label_smoothing`` (alpha spread
      over the two classes: ``y (1 - alpha) + alpha / 2``), ``focal_gamma``.

    The loss is a pure function: it works under ``jit``, ``vmap``, ``grad``, ``jacfwd``, ``jacrev``
    and ``hessian`` (custom derivatives inside are ``custom_jvp``, never ``custom_vjp``).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> loss = mlnll.nll(mlnll.Bernoulli())
      >>> float(loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])))  # log 2
      0.6931471...
    """
    _check_reduction(reduction)
    if not isinstance(family, Family):
        raise TypeError(f"nll needs a family such as mlnll.Categorical(); got {type(family).__name__}.")
    handler = _option_handler(family, options)
    if handler is not None:
        options = handler.validate_options(options)
    if drop_constants and not hasattr(family, "constant_terms"):
        raise TypeError(f"drop_constants=True: {type(family).__name__} does not declare its constant terms.")
    return Loss(family, reduction, bool(drop_constants), tuple(sorted(options.items())))

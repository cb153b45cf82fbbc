"""``nll(family)``: the generic likelihood -> loss step, with reductions, masks and weights."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import numerics
from mlnll._src.family import Family, LossOptions, Outputs, PerExample, Targets
from mlnll._src.losses import options as options_
from mlnll._src.losses import reduce as reduce_


def check_family(family, *, caller: str) -> None:
    """``TypeError`` unless ``family`` is a family instance (a class is the common slip)."""
    if isinstance(family, type):
        raise TypeError(f"{caller}: pass an instance: mlnll.{family.__name__}(), not the class {family.__name__}.")
    if not isinstance(family, Family):
        raise TypeError(f"{caller} needs a family such as mlnll.Categorical(); got {type(family).__name__}.")


def loss_options(family: Family, options: dict) -> LossOptions | None:
    """``family.loss_options(**options)``, or None without options; unknown options raise naming them."""
    if not options:
        return None
    build = getattr(family, "loss_options", None)
    if build is None:
        raise options_.unknown(type(family).__name__, options, "none (only reduction and drop_constants)")
    return build(**options)


def _scale_like(scale: jax.Array, leaf: jax.Array) -> jax.Array:
    """``scale`` [batch] reshaped to broadcast over ``leaf`` [batch, *event]."""
    return jnp.broadcast_to(numerics.expand_to(scale, leaf.ndim), leaf.shape)


@jax.custom_jvp
def _masked_tangent(x: jax.Array, keep: jax.Array) -> jax.Array:
    """``x``, with its tangent (and so its cotangent) selected to exactly 0 where ``keep`` is False."""
    return x


@_masked_tangent.defjvp
def _masked_tangent_jvp(primals, tangents):
    x, keep = primals
    # A select, not a multiply by 0: a NaN or inf cotangent of a masked row (its -inf log-likelihood,
    # garbage padding) becomes exactly 0 instead of 0 * NaN = NaN.
    return x, jnp.where(keep, tangents[0], jnp.zeros_like(tangents[0]))


def _isolate_dropped_rows(tree, keep: jax.Array):
    """Every leaf whose shape is the batch shape, or starts with it, gets ``_masked_tangent``.

    Masked rows then contribute exactly 0 to every derivative, whatever they hold; a leaf shared
    across the batch (a scalar scale) is broadcast to the batch first so that its cotangent is the
    sum over kept rows only. Leaves of any other shape are left alone.
    """
    batch = keep.shape

    def isolate(leaf):
        leaf = jnp.asarray(leaf)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf
        if leaf.shape[: len(batch)] != batch:
            if leaf.ndim > len(batch) or jnp.broadcast_shapes(leaf.shape, batch) != batch:
                return leaf
            leaf = jnp.broadcast_to(leaf, batch)
        return _masked_tangent(leaf, numerics.expand_to(keep, leaf.ndim))

    return jax.tree.map(isolate, tree)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A training loss built by ``nll``: ``loss(outputs, targets, *, where=None, weights=None)``.

    ``loss.per_example(outputs, targets)`` gives the unreduced losses, ``loss.grad(...)`` the
    closed-form gradient of the reduced loss with respect to the outputs (same tree). ``options``
    is the family's validated options object (``family.loss_options(...)``), or None.
    """

    family: Family
    reduction: str = "mean"
    drop_constants: bool = False
    options: LossOptions | None = None

    def _terms(self, outputs, targets) -> tuple[PerExample, jnp.dtype]:
        """The per-example terms (options applied, constants dropped) and the result dtype."""
        if self.options is not None:
            # An option that scales the whole NLL (Normal's beta) leaves the constants out itself.
            without = getattr(self.options, "per_example_without_constants", None) if self.drop_constants else None
            terms = (without or self.options.per_example)(outputs, targets)
            dtype = numerics.float_dtype(*jax.tree.leaves(outputs))
            if without is not None:  # the constants were never added
                return terms, dtype
        else:
            without = getattr(self.family, "log_prob_without_constants", None) if self.drop_constants else None
            log_prob = (without or self.family.log_prob)(outputs, targets)
            dtype = log_prob.dtype
            terms = PerExample(-log_prob.astype(numerics.accumulation_dtype(dtype)))
            if without is not None:  # the constants were never added
                return terms, dtype
        if self.drop_constants:
            terms = terms._replace(loss=terms.loss + self.family.constant_terms(targets).astype(terms.loss.dtype))  # type: ignore[attr-defined]  # optional method, checked by nll()
        return terms, dtype

    def _weights(self, terms: PerExample, where, weights) -> jax.Array:
        return reduce_.example_weights(terms.loss.shape, terms.loss.dtype, where=where, weights=weights,
                                       keep=terms.keep)

    def per_example(self, outputs: Outputs, targets: Targets) -> jax.Array:
        """The per-example losses, before any reduction (options applied, ignored examples 0)."""
        terms, dtype = self._terms(outputs, targets)
        loss = terms.loss if terms.keep is None else jnp.where(terms.keep, terms.loss, jnp.zeros_like(terms.loss))
        return loss.astype(dtype)

    def __call__(self, outputs: Outputs, targets: Targets, *, where: ArrayLike | None = None, weights: ArrayLike | None = None) -> jax.Array:
        if where is not None or weights is not None:
            outputs, targets = self._isolate_dropped(outputs, targets, where, weights)
        terms, dtype = self._terms(outputs, targets)
        plain = where is None and weights is None and terms.keep is None
        w = None if plain else self._weights(terms, where, weights)
        return reduce_.reduce(terms.loss, w, self.reduction, dtype, norm=terms.norm)

    def _isolate_dropped(self, outputs, targets, where, weights):
        """Outputs and targets whose dropped rows (``where`` False, weight 0) pass no derivative."""
        shape = jax.eval_shape(lambda o, t: self._terms(o, t)[0].loss, outputs, targets)
        keep = reduce_.example_weights(shape.shape, shape.dtype, where=where, weights=weights) != 0
        return _isolate_dropped_rows(outputs, keep), _isolate_dropped_rows(targets, keep)

    def grad(self, outputs: Outputs, targets: Targets, *, where: ArrayLike | None = None, weights: ArrayLike | None = None) -> Outputs:
        """Closed-form gradient of the reduced loss with respect to ``outputs`` (same tree).

        Per example it is the family's (or the option's) closed form, scaled by ``w_i / sum(w norm)``
        for "mean", ``w_i`` for "sum" and "none" (for "none", each example's own gradient).
        """
        terms, dtype = self._terms(outputs, targets)
        if self.options is not None:
            per_example = self.options.per_example_grad(outputs, targets)
        else:
            per_example = self.family.grad(outputs, targets)
        w = self._weights(terms, where, weights)
        scale = reduce_.gradient_scale(w, self.reduction, norm=terms.norm)
        kept = w != 0

        def scaled(g):
            g = g.astype(scale.dtype)
            return jnp.where(_scale_like(kept, g), g * _scale_like(scale, g), jnp.zeros_like(g)).astype(dtype)

        return jax.tree.map(scaled, per_example)


def nll(family: Family, *, reduction: str = "mean", drop_constants: bool = False, **options: Any) -> Loss:
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

    Other keyword options belong to the family, which validates them (``family.loss_options``; its
    docstring has the formulas and their closed-form gradients):

    * ``Categorical``: ``ignore_index`` (label value whose examples are skipped), ``label_smoothing``
      (alpha spread over all C classes), ``class_weights`` (length C; with labels the mean divides by
      ``sum_i w[y_i]`` as torch does), ``z_loss`` (coefficient on ``logsumexp(z)**2``), ``focal_gamma``.
    * ``Bernoulli``: ``pos_weight`` (torch's BCEWithLogitsLoss), ``label_smoothing`` (alpha spread
      over the two classes: ``y (1 - alpha) + alpha / 2``), ``focal_gamma``.
    * ``Normal``: ``beta`` (the beta-NLL of Seitzer et al. 2022: each example's NLL times
      ``stop_gradient(scale ** (2 beta))``; 0 is the NLL, 1 gives loc the squared error's gradient).
    * ``NormalInverseGamma``: ``evidence_regularizer`` (Amini et al.'s ``lam |y - loc| (2 nu + alpha)``).

    The loss is a pure function: it works under ``jit``, ``vmap``, ``grad``, ``jacfwd``, ``jacrev``
    and ``hessian`` (custom derivatives inside are ``custom_jvp``, never ``custom_vjp``).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> loss = mlnll.nll(mlnll.Bernoulli())
      >>> float(loss(jnp.array([0.0, 0.0]), jnp.array([1.0, 0.0])))  # log 2
      0.6931471...
    """
    reduce_.check_reduction(reduction)
    check_family(family, caller="nll")
    if drop_constants and not hasattr(family, "constant_terms"):
        raise TypeError(f"drop_constants=True: {type(family).__name__} does not declare its constant terms.")
    return Loss(family, reduction, bool(drop_constants), loss_options(family, options))

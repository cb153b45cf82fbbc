"""Categorical: a class label given logits. Its NLL is softmax cross-entropy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import info, numerics, validate
from mlnll._src.closed_form import minus_inf_off_support
from mlnll._src.families.categorical import cases, inputs, kernels, options
from mlnll._src.losses import checks
from mlnll._src.verify.case import Case


@dataclasses.dataclass(frozen=True)
class Categorical:
    r"""Categorical (multinoulli) distribution over C classes, parametrised by logits.

    outputs: logits ``z`` of shape ``[..., C]``. targets: integer labels ``[...]`` in 0..C-1, or
    probability vectors ``q`` of shape ``[..., C]`` (soft targets, a floating dtype).

    Density, with ``p = softmax(z)``: ``log p(y | z) = z_y - logsumexp(z) = log_softmax(z)_y``;
    for soft targets the log-likelihood is ``sum_c q_c log p_c`` (minus the cross-entropy).
    It is evaluated as ``log p_c = (z_c - z_a) - log1p(sum_{k != a} exp(z_k - z_a))``, a = argmax,
    which keeps relative accuracy for confident predictions: logits (20, 0, 0) with label 0 give
    ``-log p = log1p(2 exp(-20)) = 4.1223e-9`` in float32, where ``lse - z_y`` rounds to 0.
    A label outside 0..C-1, or a soft target outside [0, 1], gives ``-inf``.

    Gradient. ``d logsumexp(z)/dz_c = exp(z_c) / sum_k exp(z_k) = p_c``, so
    ``d(-log p_y)/dz_c = p_c - [c = y]``, i.e. ``softmax(z) - onehot(y)``; for soft targets
    ``d(-sum_c q_c log p_c)/dz = p sum(q) - q = softmax(z) - q`` when q sums to 1.
    It is evaluated as ``p (S - q) - q (1 - p)`` (S = sum q), with ``1 - p_a = rest / (1 + rest)`` at
    the argmax, so the target class's gradient keeps relative accuracy (-4.1223e-9 above).

    Fisher information: the Hessian of ``logsumexp`` does not depend on y, and it is
    ``diag(p) - p p^T``, shape ``[..., C, C]``.
    """

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | logits)``: scipy's multinomial logpmf with n = 1 for labels."""
        # Labels go to the label kernel with the logits in their own dtype: no one-hot row is built.
        x = inputs.prepare(outputs, targets, upcast=not inputs.is_labels(targets))
        lp = -kernels.cross_entropy_logits(x.logits, x.targets)
        return minus_inf_off_support(lp, x.valid()).astype(x.dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``softmax(z) - onehot(y)`` (or ``softmax(z) sum(q) - q``), shape [..., C].

        Rows whose target is invalid are NaN.
        """
        x = inputs.prepare(outputs, targets)
        q = x.targets if x.is_soft else kernels.one_hot(x.targets, x.num_classes, x.logits.dtype)
        _, p, one_minus_p = kernels.softmax_parts(x.logits)
        g = kernels.grad_from_parts(p, one_minus_p, q)
        return jnp.where(x.valid()[..., None], g, jnp.nan).astype(x.dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        z, dtype = inputs.logits(outputs)
        return {"logits": z.astype(dtype), "probs": jax.nn.softmax(z).astype(dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """The mean of the one-hot encoding of the label: the class probabilities, [..., C]."""
        z, dtype = inputs.logits(outputs)
        return jax.nn.softmax(z).astype(dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Integer labels (int32), shape ``sample_shape + logits.shape[:-1]``."""
        z, _ = inputs.logits(outputs)
        return jax.random.categorical(key, z, shape=tuple(sample_shape) + z.shape[:-1]).astype(jnp.int32)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """``-sum_c p_c log p_c``, with 0 log 0 = 0 for classes whose logit is -inf."""
        inputs.logits(outputs)
        return info.entropy_with_logits(outputs)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = sum_c p_c (log p_c - log q_c); classes with p_c = 0 contribute 0."""
        inputs.logits(outputs_p, family="Categorical.kl p")
        inputs.logits(outputs_q, family="Categorical.kl q")
        return info.kl_divergence_with_logits(outputs_p, outputs_q)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``diag(p) - p p^T``, shape ``[..., C, C]``; the diagonal as ``p (1 - p)`` without cancellation."""
        z, dtype = inputs.logits(outputs)
        _, p, one_minus_p = kernels.softmax_parts(z)
        diagonal = jnp.eye(z.shape[-1], dtype=bool)
        outer = -p[..., :, None] * p[..., None, :]
        return jnp.where(diagonal, (p * one_minus_p)[..., :, None], outer).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` that does not depend on the logits: none, so 0 (batch shape)."""
        y = validate.numeric_targets(targets, where="Categorical targets")
        shape = y.shape[:-1] if jnp.issubdtype(y.dtype, jnp.floating) else y.shape
        return jnp.zeros(shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over the C labels: nodes ``[C, *batch]`` (int32) and probabilities."""
        z, _ = inputs.logits(outputs)
        num_classes = z.shape[-1]
        column = jnp.arange(num_classes, dtype=jnp.int32).reshape((-1,) + (1,) * (z.ndim - 1))
        labels = jnp.broadcast_to(column, (num_classes,) + z.shape[:-1])
        return labels, jnp.moveaxis(jax.nn.softmax(z), -1, 0)

    def mle(self, targets: ArrayLike, *, axis: int = 0, num_classes: int | None = None) -> jax.Array:
        """Closed-form MLE: logits = log of the class frequencies (-inf for unseen classes).

        Integer labels need ``num_classes``; probability vectors [..., C] are averaged.
        """
        y = validate.numeric_targets(targets, where="Categorical.mle targets")
        if jnp.issubdtype(y.dtype, jnp.floating):
            freq = jnp.mean(y.astype(numerics.accumulation_dtype(y.dtype)), axis=axis)
        else:
            if num_classes is None:
                raise ValueError("Categorical.mle: integer labels need num_classes=C.")
            freq = jnp.mean(kernels.one_hot(y, num_classes, jnp.float32), axis=axis % max(y.ndim, 1))
        return jnp.log(freq)

    # -- loss options, value checks and check cases ---------------------------------------------

    def loss_options(self, **kwargs: Any) -> options.CategoricalOptions:
        """``nll(Categorical(), ...)``'s options (see ``CategoricalOptions``), validated."""
        return options.CategoricalOptions.build(**kwargs)

    def value_checks(self, outputs: ArrayLike, targets: ArrayLike,
                     loss_options: options.CategoricalOptions | None = None) -> list[checks.ValueCheck]:
        """For ``checked()``: NaN or +inf logits (a -inf logit is a class of probability 0), rows of
        logits all -inf (no class possible; an ``ignore_index`` example is exempt), labels outside
        0..C-1 (or ``ignore_index``), soft targets outside [0, 1] or not summing to 1, and targets
        with mass on a class whose logit is -inf (an infinite loss)."""
        z, _ = inputs.logits(outputs, upcast=False)
        found = checks.finite_outputs(outputs, allow_neg_inf=True)
        rows = checks.some_class_possible(z)
        ignore = None if loss_options is None else loss_options.ignore_index
        labels = jnp.asarray(targets)
        if ignore is not None and inputs.is_labels(labels):
            batch = validate.broadcast_shapes(
                "Categorical", [("outputs[..., :-1] (batch)", rows.bad.shape), ("targets (labels)", labels.shape)]
            )
            rows = rows._replace(bad=jnp.broadcast_to(rows.bad, batch) & (labels != ignore),
                                 values=jnp.broadcast_to(rows.values, batch))
        upcast_dtype = numerics.accumulation_dtype(z.dtype)
        opts = loss_options or options.CategoricalOptions()
        impossible = inputs.impossible_targets(z, labels, ignore_index=ignore,
                                               label_smoothing=opts.label_smoothing,
                                               class_weights=opts.class_weights)
        return [*found, rows, *inputs.target_checks(targets, z.shape[-1], ignore_index=ignore,
                                                     logits_dtype=upcast_dtype), impossible]

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: integer labels and soft targets, random and extreme logits."""
        return cases.check_cases(cls)

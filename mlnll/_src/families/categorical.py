"""Categorical: a class label given logits. Its NLL is softmax cross-entropy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from mlnll._src import info, numerics, validate


def _logits(outputs, where: str = "Categorical outputs (logits)", *, upcast: bool = True) -> tuple[jax.Array, jnp.dtype]:
    z = validate.float_outputs(outputs, where=where)
    if z.ndim == 0:
        raise ValueError(f"{where} need a class axis, shape [..., C]; got shape ().")
    if not upcast:
        return z, z.dtype
    (z,), dtype = numerics.upcast(z)
    return z, dtype


def _prepare(outputs, targets, *, upcast: bool = True) -> tuple[jax.Array, jax.Array, bool, jnp.dtype]:
    """Validated, broadcast ``(logits [..., C], targets, is_soft, dtype)``.

    Integer (or bool) targets are labels of shape [...]; floating targets are probability vectors
    of shape [..., C]. With ``upcast=False`` bfloat16/float16 logits stay as they are (the label
    kernel upcasts per use, so no float32 copy of the logits is stored).
    """
    z, dtype = _logits(outputs, upcast=upcast)
    y = validate.numeric_targets(targets, where="Categorical targets")
    num_classes = z.shape[-1]
    if jnp.issubdtype(y.dtype, jnp.floating):
        if y.ndim == 0 or y.shape[-1] != num_classes:
            raise ValueError(
                f"Categorical: floating targets are probability vectors [..., C] with C = {num_classes} "
                f"as in outputs shape {z.shape}; got targets shape {y.shape}. Integer class labels "
                "must have an integer dtype, e.g. targets.astype(jnp.int32)."
            )
        batch = validate.broadcast_shapes(
            "Categorical", [("outputs", z.shape), ("targets", y.shape)]
        )[:-1]
        y = jnp.broadcast_to(y.astype(z.dtype), batch + (num_classes,))
        return jnp.broadcast_to(z, batch + (num_classes,)), y, True, dtype
    batch = validate.broadcast_shapes(
        "Categorical", [("outputs[..., :-1] (batch)", z.shape[:-1]), ("targets (labels)", y.shape)]
    )
    y = jnp.broadcast_to(y.astype(jnp.int32), batch)
    return jnp.broadcast_to(z, batch + (num_classes,)), y, False, dtype


def _one_hot(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    """One-hot rows; a label outside 0..C-1 gives a row of zeros (it is flagged separately)."""
    classes = jnp.arange(num_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (num_classes,))
    return (labels[..., None] == classes).astype(dtype)


def _targets_valid(y: jax.Array, is_soft: bool, num_classes: int) -> jax.Array:
    if is_soft:
        return jnp.all((y >= 0) & (y <= 1), axis=-1)
    return (y >= 0) & (y < num_classes)


def _softmax_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log p, p, 1 - p)`` for ``p = softmax(z)``, each with relative accuracy.

    ``1 - p_a = rest / (1 + rest)`` at the argmax a (rest = sum_{k != a} exp(z_k - z_a)); elsewhere
    p_c <= 1/2, so ``1 - p_c`` does not cancel.
    """
    _, shifted, rest, is_max = numerics.max_and_rest(z)
    log_p = shifted - jnp.log1p(rest)
    p = jnp.exp(shifted) / (1 + rest)
    one_minus_p = jnp.where(is_max, rest / (1 + rest), 1 - p)
    return log_p, p, one_minus_p


def _grad_from_parts(p: jax.Array, one_minus_p: jax.Array, q: jax.Array) -> jax.Array:
    """``p sum(q) - q`` written as ``p (S - q) - q (1 - p)``: no cancellation at the target class."""
    return p * (jnp.sum(q, axis=-1, keepdims=True) - q) - q * one_minus_p


def _label_parts(z: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(top, others, z_y, y)`` for integer labels, keepdims: ``others = sum_{k != y} exp(z_k - top)``.

    Only the target's own term is left out, so nothing is added and then subtracted: if y is a
    maximum, ``S - 1 = others`` exactly (S = sum_k exp(z_k - top)); if not, ``others >= 1``.
    The target is dropped without a compare: ``|2k - 2y|`` is 0 at k = y and >= 2 elsewhere, while
    ``exp(z_k - top) <= 1``, so ``min(exp(z_k - top), |2k - 2y|)`` is that exp everywhere but at y.
    This keeps the sum in one vectorised XLA:CPU reduce kernel. ``top`` carries no gradient: every
    result below is exactly invariant to the shift. Labels outside 0..C-1 are clipped (the caller
    marks them invalid), so nothing reads out of bounds. ``z`` may be bfloat16: each use upcasts
    (the max and the gather are exact in z's dtype), so no float32 copy of z is ever stored.
    """
    num_classes = z.shape[-1]
    acc = numerics.accumulation_dtype(z.dtype)
    top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)).astype(acc)
    y = jnp.clip(labels, 0, num_classes - 1)[..., None]
    # Gathered from a barrier of z: XLA would otherwise move a bfloat16 z's upcast before the
    # gather and share it with the sum below, storing a float32 copy of z.
    z_y = jnp.take_along_axis(jax.lax.optimization_barrier(z), y, axis=-1).astype(acc)
    exps = jnp.exp(z.astype(acc) - top)
    if num_classes <= 2 ** (jnp.finfo(acc).nmant + 1):  # class indices are exact in acc
        twice_k = (2 * jnp.arange(num_classes, dtype=acc)).reshape((1,) * (z.ndim - 1) + (num_classes,))
        others = jnp.sum(jnp.minimum(exps, jnp.abs(twice_k - 2 * y.astype(acc))), axis=-1, keepdims=True)
    else:
        is_target = _one_hot(y[..., 0], num_classes, bool)
        others = jnp.sum(jnp.where(is_target, jnp.zeros_like(exps), exps), axis=-1, keepdims=True)
    return top, others, z_y, y


def _label_value(top, others, z_y) -> jax.Array:
    """``-log p_y = (top - z_y) + log(S)`` with ``S - 1 = others + expm1(z_y - top)``.

    At a confident target (z_y = top) this is ``log1p(others)`` with full relative accuracy; else
    ``others >= 1`` and ``top - z_y > 0``, so nothing cancels.
    """
    return ((top - z_y) + jnp.log1p(others + jnp.expm1(z_y - top)))[..., 0]


def _cross_entropy_labels_jvp(z, labels, dz):
    """Value and tangent for integer labels; the tangent is ``sum_k (p_k - [k = y]) dz_k``."""
    if jnp.dtype(z.dtype).itemsize < 4:
        return _labels_jvp_recomputed(z, labels, dz)
    return _labels_jvp_stored(z, labels, dz)


def _labels_jvp_stored(z, labels, dz):
    """float32/float64 logits: ``exp(z - top)`` computed once and stored (optax's layout, which is
    the fastest on XLA:CPU), with the target's entry zeroed in place. The sum of the rest is then
    ``others`` exactly, and the target's gradient comes from one gathered term, ``-(1 - p_y) dz_y``
    with ``1 - p_y = others / S``: never ``p_y - 1`` rounded to 0."""
    num_classes = z.shape[-1]
    top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    y = jnp.clip(labels, 0, num_classes - 1)[..., None]
    z_y = jnp.take_along_axis(z, y, axis=-1)
    exps = jnp.put_along_axis(jnp.exp(z - top), y, 0.0, axis=-1, inplace=False)
    others = jnp.sum(exps, axis=-1, keepdims=True)
    value = _label_value(top, others, z_y)
    if isinstance(dz, SymbolicZero):
        return value, jnp.zeros_like(value)
    total = others + jnp.exp(z_y - top)  # S = sum_k exp(z_k - top) >= 1
    dz_y = jnp.take_along_axis(dz, y, axis=-1)
    return value, jnp.sum(exps * (1 / total) * dz, axis=-1) - ((others / total) * dz_y)[..., 0]


def _labels_jvp_recomputed(z, labels, dz):
    """bfloat16/float16 logits: nothing [..., C] is stored but the gradient. The sums run in one
    reduce kernel each (``_label_parts``) and the gradient recomputes ``exp(z - top)`` in its
    single pass, upcasting z per use, so no float32 copy of z is ever written."""
    top, others, z_y, y = _label_parts(z, labels)
    value = _label_value(top, others, z_y)
    if isinstance(dz, SymbolicZero):
        return value, jnp.zeros_like(value)
    total = others + jnp.exp(z_y - top)  # S = sum_k exp(z_k - top) >= 1
    log_total = jnp.log(total)
    # 1 - p_y = others / S: a ratio of sums of positive terms, accurate even as p_y -> 1.
    target_grad = -(others / total)
    classes = jnp.arange(z.shape[-1], dtype=y.dtype).reshape((1,) * (z.ndim - 1) + (z.shape[-1],))
    # p_k = exp((z_k - top) - log S): shifting first keeps log S even when |top| ~ 3e38. The
    # barrier keeps XLA from sharing z's upcast (or z - top) with the sums above, which would
    # store that [..., C] intermediate in memory.
    z, top, log_total = jax.lax.optimization_barrier((z, top, log_total))
    grad = jnp.where(classes == y, target_grad, jnp.exp((z.astype(top.dtype) - top) - log_total))
    return value, jnp.sum(grad * dz.astype(grad.dtype), axis=-1)


def _dense_parts(z: jax.Array, q: jax.Array):
    """``(value, (top, rest, unique, total_q))`` for target weights ``q [..., C]``, keepdims.

    As ``numerics.max_and_rest``: ``rest = sum_{k != a} exp(z_k - top)`` without adding and
    removing the argmax's 1, and ``unique`` marks rows whose max is not tied. The value
    ``-sum_c q_c log p_c = sum(q) log1p(rest) + sum_c q_c (top - z_c)`` is two sums of terms >= 0
    (no cancellation), the second with ``0 (top - z) = 0`` even at z = -inf.
    """
    top = jnp.max(z, axis=-1, keepdims=True)  # differentiable: rest is sum_{k != a} exp(z_k - z_a)
    shifted = z - top
    rest, unique = numerics.rest_of_max(shifted)
    total_q = jnp.sum(q, axis=-1, keepdims=True)
    gap = jnp.sum(numerics.mul_nonzero(q, -shifted), axis=-1, keepdims=True)
    value = (total_q * jnp.log1p(rest) + gap)[..., 0]
    return value, (top, rest, unique, total_q)


def _dense_grad(z, q, top, rest, unique, total_q) -> jax.Array:
    """``p sum(q) - q`` as ``p (S - q) - q (1 - p)``, ``1 - p_a = rest / (1 + rest)`` at a unique argmax.

    Its inputs pass a barrier so that XLA recomputes ``z - top`` here instead of storing it for
    the sums of ``_dense_parts`` (each [..., C] intermediate stored is a full pass of memory).
    """
    z, q, top, rest, unique, total_q = jax.lax.optimization_barrier((z, q, top, rest, unique, total_q))
    shifted = z - top
    p = jnp.exp(shifted - jnp.log1p(rest))
    one_minus_p = jnp.where((shifted == 0) & unique, rest / (1 + rest), 1 - p)
    return p * (total_q - q) - q * one_minus_p


@jax.custom_jvp
def cross_entropy_logits(z: jax.Array, q: jax.Array) -> jax.Array:
    """``-sum_c q_c log softmax(z)_c`` over the last axis (0 log 0 = 0); ``q`` may be integer labels.

    ``q`` is either a floating array ``[..., C]`` of target weights, or integer labels ``[...]``
    (the one-hot case without building the one-hot: ``-log softmax(z)_y``, out-of-range labels
    clipped, for the caller to mask; ``z`` may then be bfloat16 or float16, upcast inside, and the
    result is float32). A ``custom_jvp`` (not vjp: ``jacfwd`` and ``hessian`` keep
    working) whose tangent is the closed form ``p sum(q) - q``: autodiff of the plain formula
    accumulates ``-1 + (1 - 4e-9)`` at a confident target class and returns 0 in float32; this
    returns -4.1223e-9.

    Speed (labels): the value alone is a max and one sum (one reduce kernel on XLA:CPU); value and
    gradient store ``exp(z - max)`` once for float32 logits (optax's layout) and nothing but the
    gradient for bfloat16 ones. Ratios to optax and to the memory floor: benchmarks/.
    """
    if not jnp.issubdtype(q.dtype, jnp.floating):
        return _label_value(*_label_parts(z, q)[:3])
    return _dense_parts(z, q)[0]


def _cross_entropy_logits_jvp(primals, tangents):
    z, q = primals
    dz, dq = tangents
    if not jnp.issubdtype(q.dtype, jnp.floating):
        return _cross_entropy_labels_jvp(z, q, dz)
    value, (top, rest, unique, total_q) = _dense_parts(z, q)
    out = jnp.zeros_like(value)
    if not isinstance(dz, SymbolicZero):
        out = out + jnp.sum(_dense_grad(z, q, top, rest, unique, total_q) * dz, axis=-1)
    if not isinstance(dq, SymbolicZero):
        # d/dq_c = -log p_c: infinite for a class of probability 0, as it truly is.
        out = out - jnp.sum(((z - top) - jnp.log1p(rest)) * dq, axis=-1)
    return value, out


cross_entropy_logits.defjvp(_cross_entropy_logits_jvp, symbolic_zeros=True)


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

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example ``log p(targets | logits)``: scipy's multinomial logpmf with n = 1 for labels."""
        labels = not jnp.issubdtype(jnp.asarray(targets).dtype, jnp.floating)
        # Labels go to the label kernel with the logits in their own dtype: no one-hot row is built.
        z, y, is_soft, dtype = _prepare(outputs, targets, upcast=not labels)
        lp = -cross_entropy_logits(z, y)
        valid = _targets_valid(y, is_soft, z.shape[-1])
        return jnp.where(valid, lp, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets) -> jax.Array:
        """Closed form ``softmax(z) - onehot(y)`` (or ``softmax(z) sum(q) - q``), shape [..., C].

        Rows whose target is invalid are NaN.
        """
        z, y, is_soft, dtype = _prepare(outputs, targets)
        q = y if is_soft else _one_hot(y, z.shape[-1], z.dtype)
        _, p, one_minus_p = _softmax_parts(z)
        g = _grad_from_parts(p, one_minus_p, q)
        valid = _targets_valid(y, is_soft, z.shape[-1])
        return jnp.where(valid[..., None], g, jnp.nan).astype(dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        z, dtype = _logits(outputs)
        return {"logits": z.astype(dtype), "probs": jax.nn.softmax(z).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        """The mean of the one-hot encoding of the label: the class probabilities, [..., C]."""
        z, dtype = _logits(outputs)
        return jax.nn.softmax(z).astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Integer labels (int32), shape ``sample_shape + logits.shape[:-1]``."""
        z, _ = _logits(outputs)
        return jax.random.categorical(key, z, shape=tuple(sample_shape) + z.shape[:-1]).astype(jnp.int32)

    def entropy(self, outputs) -> jax.Array:
        """``-sum_c p_c log p_c``, with 0 log 0 = 0 for classes whose logit is -inf."""
        _logits(outputs)
        return info.entropy_with_logits(outputs)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q) = sum_c p_c (log p_c - log q_c); classes with p_c = 0 contribute 0."""
        _logits(outputs_p, "Categorical.kl outputs_p (logits)")
        _logits(outputs_q, "Categorical.kl outputs_q (logits)")
        return info.kl_divergence_with_logits(outputs_p, outputs_q)

    def fisher(self, outputs) -> jax.Array:
        """``diag(p) - p p^T``, shape ``[..., C, C]``; the diagonal as ``p (1 - p)`` without cancellation."""
        z, dtype = _logits(outputs)
        _, p, one_minus_p = _softmax_parts(z)
        diagonal = jnp.eye(z.shape[-1], dtype=bool)
        outer = -p[..., :, None] * p[..., None, :]
        return jnp.where(diagonal, (p * one_minus_p)[..., :, None], outer).astype(dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` that does not depend on the logits: none, so 0 (batch shape)."""
        y = validate.numeric_targets(targets, where="Categorical targets")
        shape = y.shape[:-1] if jnp.issubdtype(y.dtype, jnp.floating) else y.shape
        return jnp.zeros(shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over the C labels: nodes ``[C, *batch]`` (int32) and probabilities."""
        z, _ = _logits(outputs)
        num_classes = z.shape[-1]
        column = jnp.arange(num_classes, dtype=jnp.int32).reshape((-1,) + (1,) * (z.ndim - 1))
        labels = jnp.broadcast_to(column, (num_classes,) + z.shape[:-1])
        return labels, jnp.moveaxis(jax.nn.softmax(z), -1, 0)

    def mle(self, targets, *, axis: int = 0, num_classes: int | None = None) -> jax.Array:
        """Closed-form MLE: logits = log of the class frequencies (-inf for unseen classes).

        Integer labels need ``num_classes``; probability vectors [..., C] are averaged.
        """
        y = validate.numeric_targets(targets, where="Categorical.mle targets")
        if jnp.issubdtype(y.dtype, jnp.floating):
            freq = jnp.mean(y.astype(numerics.accumulation_dtype(y.dtype)), axis=axis)
        else:
            if num_classes is None:
                raise ValueError("Categorical.mle: integer labels need num_classes=C.")
            freq = jnp.mean(_one_hot(y, num_classes, jnp.float32), axis=axis % max(y.ndim, 1))
        return jnp.log(freq)

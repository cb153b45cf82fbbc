"""The softmax cross-entropy kernels of Categorical: the value and closed-form tangent of
``-log softmax(z)_y`` for integer labels (no one-hot built) and for target weights ``q [..., C]``,
each with relative accuracy for confident predictions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from mlnll._src import numerics


def one_hot(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
    """One-hot rows; a label outside 0..C-1 gives a row of zeros (it is flagged separately)."""
    classes = jnp.arange(num_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (num_classes,))
    return (labels[..., None] == classes).astype(dtype)


def softmax_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(log p, p, 1 - p)`` for ``p = softmax(z)``, each with relative accuracy.

    ``1 - p_a = rest / (1 + rest)`` at the argmax a (rest = sum_{k != a} exp(z_k - z_a)); elsewhere
    p_c <= 1/2, so ``1 - p_c`` does not cancel.
    """
    _, shifted, rest, is_max = numerics.max_and_rest(z)
    log_p = shifted - jnp.log1p(rest)
    p = jnp.exp(shifted) / (1 + rest)
    one_minus_p = jnp.where(is_max, rest / (1 + rest), 1 - p)
    return log_p, p, one_minus_p


def grad_from_parts(p: jax.Array, one_minus_p: jax.Array, q: jax.Array) -> jax.Array:
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
        is_target = one_hot(y[..., 0], num_classes, bool)
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

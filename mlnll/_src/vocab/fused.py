r"""Fused linear + categorical NLL: the loss of ``Categorical()`` at logits ``hidden @ weight + bias``
without ever materialising the ``[N, V]`` logits.

For a language model the logits are the largest tensor of the step (2048 tokens x 50257 words in
float32 is 412 MB, and its softmax and gradient as much again). Here the vocabulary is walked in
blocks of ``block_size`` columns; each block's logits ``[N, B]`` live only inside the loop.

Forward, per row, carrying ``(top, others, z_y, sum_z)`` over the blocks (an online logsumexp):
``top`` the running max, ``others = sum_{k != y} exp(z_k - top)`` rescaled by ``exp(old - new)``
whenever ``top`` grows, ``z_y`` the target's logit and ``sum_z`` the sum of logits (for label
smoothing). Then, as in ``Categorical``:

    -log p_y = (top - z_y) + log1p(others + expm1(z_y - top))          (S - 1 without the 1)

which keeps relative accuracy for a confident prediction (logits (20, 0, 0), label 0: 4.1223e-9).
With label smoothing alpha (target ``(1 - alpha) onehot + alpha / V``) and z-loss beta:

    loss = (1 - alpha)(-log p_y) + alpha (lse - mean_c z_c) + beta lse^2,   lse = top + log S.

Gradient: ``d loss / d z_c = (1 + 2 beta lse) p_c - q_c`` with ``q = (1 - alpha) onehot + alpha/V``;
at the target it is evaluated as ``-(1 - alpha)(1 - p_y) + (alpha + 2 beta lse) p_y - alpha/V`` with
``1 - p_y = others / S`` (no cancellation). The backward pass recomputes each block's logits and
accumulates ``d hidden = sum_b G_b W_b^T``, ``d W_b = hidden^T G_b``, ``d bias_b = sum_n G_b``, so
its memory is a block too. Every block computes in float32 (bfloat16 inputs are upcast per block).
A vocabulary not divisible by the block size ends with one narrower tail block: ``weight`` is
never padded or copied.

The gradient is a ``custom_vjp`` (the reverse pass is what makes the memory saving possible), so
``jax.grad``/``jax.vjp``/``jax.value_and_grad`` work and ``jax.jacfwd``/``jax.hessian`` do not; for
those, use ``mlnll.nll(mlnll.Categorical())`` on materialised logits.

The vocab-parallel variant (``vocab_parallel_linear_categorical_nll``) runs the same blocks on each
device's slice of ``weight`` under ``shard_map``, then combines the per-row statistics with
``pmax``/``psum`` (Megatron-LM's vocab-parallel cross-entropy); see ``mlnll/_src/sharding.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.losses import options as check
from mlnll._src.losses import reduce as reduce_

# Default block: about 2**21 logits (8 MB in float32) per block, so that a block and its
# exponentials stay in a CPU's last-level cache; a multiple of 128 columns, at least 256.
_BLOCK_ELEMENTS = 2**21


@dataclasses.dataclass(frozen=True)
class Config:
    """Static options of one fused call (hashable: it is a ``custom_vjp`` non-differentiable arg)."""

    num_classes: int  # V, the whole vocabulary (all shards)
    block_size: int
    label_smoothing: float
    z_loss: float


# ----------------------------------------------------------------------------------------------
# Validation


def check_options(label_smoothing, z_loss, reduction, block_size, ignore_index) -> None:
    """Static options that cannot be right raise at call time, naming the value (the same checks,
    and messages, as ``nll(Categorical(), ...)``'s options)."""
    reduce_.check_reduction(reduction)
    check.fraction("label_smoothing", label_smoothing)
    check.nonnegative("z_loss", z_loss)
    bad_block = isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    if block_size is not None and bad_block:
        raise ValueError(f"block_size must be a positive int or None; got {block_size!r}.")
    check.label_value("ignore_index", ignore_index)


def prepare(hidden: ArrayLike, weight: ArrayLike, labels: ArrayLike, bias: ArrayLike | None, where: ArrayLike | None, *,
            name: str) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, jax.Array | None, tuple[int, ...]]:
    """Validated ``(hidden [N, D], weight [D, V], labels [N] int32, bias [V] | None, where [N] | None,
    batch_shape)``; leading batch axes of ``hidden [..., D]`` and ``labels [...]`` are flattened."""
    hidden = validate.float_outputs(hidden, where=f"{name}: hidden")
    weight = validate.float_outputs(weight, where=f"{name}: weight")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{name}: labels must be integer class indices; got dtype {labels.dtype}.")
    if hidden.ndim < 1:
        raise ValueError(f"{name}: hidden must have shape [..., D]; got shape {hidden.shape}.")
    if weight.ndim != 2 or weight.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"{name}: weight must have shape [D, V] with D = {hidden.shape[-1]} (hidden's last axis); "
            f"got shape {weight.shape}."
        )
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"{name}: labels must have shape {hidden.shape[:-1]} (hidden's batch shape); "
            f"got shape {labels.shape}."
        )
    num_classes = weight.shape[1]
    if num_classes < 1:
        raise ValueError(f"{name}: weight needs at least one class (V >= 1); got shape {weight.shape}.")
    if bias is not None:
        bias = validate.float_outputs(bias, where=f"{name}: bias")
        if bias.shape != (num_classes,):
            raise ValueError(
                f"{name}: bias must have shape ({num_classes},) (weight's V); got shape {bias.shape}."
            )
    batch_shape = labels.shape
    if where is not None:  # validated (boolean, broadcastable to the labels) as nll validates it
        where = reduce_.example_weights(batch_shape, jnp.float32, where=where, target="labels shape") > 0
        where = where.reshape(-1)
    rows = math.prod(batch_shape)
    flat_hidden = hidden.reshape(rows, hidden.shape[-1])
    return flat_hidden, weight, labels.reshape(rows).astype(jnp.int32), bias, where, batch_shape


def default_block_size(rows: int, num_classes: int) -> int:
    """About ``2**21 / rows`` columns, a multiple of 128 in [256, 16384], at most ``num_classes``."""
    size = max(256, min(16384, (_BLOCK_ELEMENTS // max(rows, 1)) // 128 * 128))
    return min(size, num_classes)


# ----------------------------------------------------------------------------------------------
# One block of logits, and the per-row statistics of the forward pass


def block_logits(hidden, weight_block, bias_block) -> jax.Array:
    """``hidden @ weight_block (+ bias_block)`` in float32 (accumulated in float32), ``[N, B]``."""
    dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight_block))
    logits = _matmul(hidden.astype(dtype), weight_block.astype(dtype), contract=(1, 0))
    if bias_block is not None:
        logits = logits + bias_block.astype(dtype)[None, :]
    return logits


def _matmul(a, b, *, contract: tuple[int, int]) -> jax.Array:
    """``a`` times ``b`` contracting axis ``contract[0]`` of a with ``contract[1]`` of b, accumulated
    in their (float32 or wider) dtype."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=a.dtype)


def _columns(x, start, size: int, axis: int):
    """``size`` entries of ``x`` from ``start`` (traced or static) along ``axis``."""
    if x is None:
        return None
    if isinstance(start, int):
        return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _is_target(labels, first_class, size: int) -> jax.Array:
    """``[N, B]`` bool: column j of this block (class ``first_class + j``) is the row's label."""
    classes = first_class + jnp.arange(size, dtype=jnp.int32)
    return labels[:, None] == classes[None, :]


def _update_stats(stats, logits, is_target, with_sum: bool):
    """Fold one block into ``(top, others, z_y, sum_z)`` (online logsumexp without the target)."""
    top, others, z_y, sum_z = stats
    new_top = jnp.maximum(top, jnp.max(logits, axis=1))
    # Rows whose logits are all -inf so far keep a shift of 0: no -inf - -inf.
    shift = jnp.where(new_top == -jnp.inf, jnp.zeros_like(new_top), new_top)
    # others is relative to the old shift; exp(old - new) rescales it (0 when the old top was -inf).
    exps = jnp.where(is_target, jnp.zeros_like(logits), jnp.exp(logits - shift[:, None]))
    others = others * jnp.exp(top - shift) + jnp.sum(exps, axis=1)
    z_y = z_y + jnp.sum(jnp.where(is_target, logits, jnp.zeros_like(logits)), axis=1)
    if with_sum:
        sum_z = sum_z + jnp.sum(logits, axis=1)
    return new_top, others, z_y, sum_z


def local_stats(hidden, weight, bias, labels, first_class, cfg: Config):
    """Per-row ``(top, others, z_y, sum_z)`` over the classes of ``weight`` [D, V_local], whose first
    column is class ``first_class`` (0, or a shard's offset). float32 (or float64), shape [N]."""
    rows, local_classes = hidden.shape[0], weight.shape[1]
    dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight))
    with_sum = cfg.label_smoothing > 0
    zeros = jnp.zeros((rows,), dtype)
    stats = (jnp.full((rows,), -jnp.inf, dtype), zeros, zeros, zeros)
    size = min(cfg.block_size, local_classes)
    full_blocks, tail = divmod(local_classes, size)

    def fold(start, size, stats):
        logits = block_logits(hidden, _columns(weight, start, size, 1), _columns(bias, start, size, 0))
        return _update_stats(stats, logits, _is_target(labels, first_class + start, size), with_sum)

    if full_blocks == 1:
        stats = fold(0, size, stats)
    elif full_blocks > 1:
        stats = jax.lax.fori_loop(0, full_blocks, lambda b, s: fold(b * size, size, s), stats)
    if tail:
        stats = fold(full_blocks * size, tail, stats)
    return stats


# ----------------------------------------------------------------------------------------------
# Per-row loss and gradient coefficients from the statistics


def row_terms(stats, labels, cfg: Config):
    """``(loss, residuals)`` per row from the combined statistics. The residuals are what the
    backward pass needs per row: ``(top, log S, coef, target gradient, valid label)``."""
    top, others, z_y, sum_z = stats
    alpha, beta, num_classes = cfg.label_smoothing, cfg.z_loss, cfg.num_classes
    # S - 1 = others + (exp(z_y - top) - 1): log S keeps relative accuracy when S -> 1.
    log_total = jnp.log1p(others + jnp.expm1(z_y - top))
    nll_target = (top - z_y) + log_total
    lse = top + log_total
    loss = nll_target
    if alpha:
        # Smoothing's share: lse - mean_c z_c = (top - mean z) + log S, both terms >= 0.
        loss = (1 - alpha) * nll_target + alpha * ((top - sum_z / num_classes) + log_total)
    if beta:
        loss = loss + beta * jnp.square(lse)
    valid = (labels >= 0) & (labels < num_classes)
    loss = jnp.where(valid, loss, jnp.inf)
    # Gradient at the target class: -(1 - alpha)(1 - p_y) + (alpha + 2 beta lse) p_y - alpha / V,
    # with 1 - p_y = others / S (a ratio of positive sums: no cancellation as p_y -> 1).
    total = others + jnp.exp(z_y - top)
    p_target = jnp.exp((z_y - top) - log_total)
    coef = 1 + 2 * beta * lse  # d loss / d z_c = coef p_c - q_c
    target_grad = -(1 - alpha) * (others / total) + (coef - 1 + alpha) * p_target - alpha / num_classes
    return loss, (top, log_total, coef, target_grad, valid)


def local_grads(hidden, weight, bias, labels, first_class, residuals, ct, cfg: Config, *,
                param_grads_wide: bool = False):
    """``(d hidden, d weight, d bias)`` of ``sum_n ct_n loss_n`` over the classes of ``weight``.

    d hidden is in float32 (or float64); d weight and d bias in the parameters' dtypes, or in
    float32 with ``param_grads_wide`` (when they are summed over batch shards afterwards).
    """
    top, log_total, coef, target_grad, valid = residuals
    ct = jnp.where(valid, ct, jnp.zeros_like(ct))  # an invalid label's row (loss inf) gets no gradient
    dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight))
    alpha, num_classes = cfg.label_smoothing, cfg.num_classes
    rows, local_classes = hidden.shape[0], weight.shape[1]
    scale = (ct * coef)[:, None]
    smooth = (ct * (alpha / num_classes))[:, None]
    at_target = (ct * target_grad)[:, None]
    hidden_acc = hidden.astype(dtype)
    size = min(cfg.block_size, local_classes)
    full_blocks, tail = divmod(local_classes, size)

    def block_grad(start, size):
        weight_block = _columns(weight, start, size, 1)
        logits = block_logits(hidden, weight_block, _columns(bias, start, size, 0))
        # p = exp((z - top) - log S): the shift first keeps log S even when |top| ~ 3e38.
        p = jnp.exp((logits - top[:, None]) - log_total[:, None])
        g = jnp.where(_is_target(labels, first_class + start, size), at_target, scale * p - smooth)
        d_hidden = _matmul(g, weight_block.astype(dtype), contract=(1, 1))  # G_b W_b^T, [N, D]
        d_weight = _matmul(hidden_acc, g, contract=(0, 0))  # hidden^T G_b, [D, B]
        return d_hidden, d_weight, jnp.sum(g, axis=0)

    # Each block writes its own columns of d weight and d bias once: they are kept in the
    # parameters' dtypes; only d hidden accumulates over blocks (in float32).
    weight_dtype = dtype if param_grads_wide else weight.dtype
    bias_dtype = dtype if (bias is None or param_grads_wide) else bias.dtype

    def put(acc, start, size):
        d_hidden, d_weight, d_bias = acc
        dh, dw, db = block_grad(start, size)
        d_weight = jax.lax.dynamic_update_slice_in_dim(d_weight, dw.astype(weight_dtype), start, axis=1)
        d_bias = jax.lax.dynamic_update_slice_in_dim(d_bias, db.astype(bias_dtype), start, axis=0)
        return d_hidden + dh, d_weight, d_bias

    acc = (
        jnp.zeros((rows, hidden.shape[1]), dtype),
        jnp.zeros((weight.shape[0], local_classes), weight_dtype),
        jnp.zeros((local_classes,), bias_dtype),
    )
    if full_blocks == 1:
        acc = put(acc, 0, size)
    elif full_blocks > 1:
        acc = jax.lax.fori_loop(0, full_blocks, lambda b, a: put(a, b * size, size), acc)
    if tail:
        acc = put(acc, full_blocks * size, tail)
    return acc


# ----------------------------------------------------------------------------------------------
# The single-device custom_vjp


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _per_example(hidden, weight, bias, labels, cfg: Config):
    stats = local_stats(hidden, weight, bias, labels, 0, cfg)
    return row_terms(stats, labels, cfg)[0]


def _per_example_fwd(hidden, weight, bias, labels, cfg: Config):
    stats = local_stats(hidden, weight, bias, labels, 0, cfg)
    loss, residuals = row_terms(stats, labels, cfg)
    return loss, (hidden, weight, bias, labels, residuals)


def _per_example_bwd(cfg: Config, saved, ct):
    hidden, weight, bias, labels, residuals = saved
    grads = local_grads(hidden, weight, bias, labels, 0, residuals, ct, cfg)
    return cotangents(hidden, weight, bias, grads)


def cotangents(hidden, weight, bias, grads):
    """The ``custom_vjp`` cotangents of ``(hidden, weight, bias, labels)``: the float32 gradients
    cast to their inputs' dtypes, None for an absent bias and for the integer labels."""
    d_hidden, d_weight, d_bias = grads
    return (d_hidden.astype(hidden.dtype), d_weight.astype(weight.dtype),
            None if bias is None else d_bias.astype(bias.dtype), None)


_per_example.defvjp(_per_example_fwd, _per_example_bwd)


def reduce(losses, labels, where, ignore_index, reduction: str, dtype, batch_shape):
    """Mask (``where``, ``ignore_index``) and reduce the per-row losses with ``nll``'s reduction step."""
    keep = None if ignore_index is None else labels != ignore_index
    w = reduce_.example_weights(losses.shape, losses.dtype, where=where, keep=keep)
    value = reduce_.reduce(losses, w, reduction, dtype)
    return value.reshape(batch_shape) if reduction == "none" else value


def linear_categorical_nll(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    block_size: int | None = None,
) -> jax.Array:
    r"""NLL of ``Categorical()`` at logits ``hidden @ weight (+ bias)``, never materialising them.

    Equal to ``mlnll.nll(mlnll.Categorical(), reduction=reduction, ignore_index=...,
    label_smoothing=..., z_loss=...)(hidden @ weight + bias, labels, where=where)``, computed
    blockwise over the vocabulary with an online logsumexp (float32 accumulation, also for
    bfloat16 inputs), so memory grows with ``N x block_size`` instead of ``N x V``.

    Per example, with ``z = hidden_n @ weight + bias``, ``lse = logsumexp(z)``:
    ``(1 - alpha)(lse - z_y) + alpha (lse - mean_c z_c) + z_loss lse^2`` (alpha =
    ``label_smoothing``, spread over all V classes as in torch and optax; z_loss as in PaLM).

    Args:
      hidden: ``[N, D]`` (or ``[..., D]``) floating features, the input of the output layer.
      weight: ``[D, V]`` output-layer weight.
      labels: ``[N]`` (or ``[...]``) integer class indices; one outside 0..V-1 (and not
        ``ignore_index``) gives an infinite loss, like ``Categorical``.
      bias: optional ``[V]``.
      where: optional boolean ``[N]`` mask of the rows to keep.
      ignore_index: a label value whose rows are skipped (e.g. -100).
      label_smoothing: alpha in [0, 1].
      z_loss: coefficient >= 0 of ``logsumexp(z)**2``.
      reduction: ``"mean"`` over kept rows (0 if none is kept), ``"sum"`` or ``"none"`` (per row,
        dropped rows 0).
      block_size: columns per block; default about ``2**21 / N`` (a multiple of 128).

    Returns:
      The reduced loss (``reduction="none"``: shape ``labels.shape``), in the inputs' floating dtype.

    Differentiable with ``jax.grad``/``jax.vjp`` in hidden, weight and bias (a ``custom_vjp`` that
    recomputes each block); ``jax.jacfwd``/``jax.hessian`` are not supported through it.

    Example:
      >>> import jax, jax.numpy as jnp, mlnll
      >>> h = jnp.ones((4, 8)); w = jnp.zeros((8, 1000)); y = jnp.array([0, 1, 2, 3])
      >>> float(mlnll.linear_categorical_nll(h, w, y))  # uniform over 1000 classes: log 1000
      6.9077...
    """
    check_options(label_smoothing, z_loss, reduction, block_size, ignore_index)
    hidden, weight, labels, bias, where, batch_shape = prepare(
        hidden, weight, labels, bias, where, name="linear_categorical_nll"
    )
    num_classes = weight.shape[1]
    size = block_size if block_size is not None else default_block_size(hidden.shape[0], num_classes)
    cfg = Config(num_classes, min(size, num_classes), float(label_smoothing), float(z_loss))
    losses = _per_example(hidden, weight, bias, labels, cfg)
    dtype = numerics.float_dtype(hidden, weight, *([] if bias is None else [bias]))
    return reduce(losses, labels, where, ignore_index, reduction, dtype, batch_shape)


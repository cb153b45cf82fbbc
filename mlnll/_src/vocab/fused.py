r"""Fused linear + categorical NLL: the loss of ``Categorical()`` at logits ``(hidden @ weight + bias) / t``
without ever materialising the ``[N, V]`` logits; the same pass also gives each row's entropy, and
``linear_categorical_logprobs`` the per-token log-probabilities that RL losses consume.

For a language model the logits are the largest tensor of the step (2048 tokens x 50257 words in
float32 is 412 MB, and its softmax and gradient as much again). Here the vocabulary is walked in
blocks of ``block_size`` columns (``blocks.py``); each block's logits ``[N, B]`` live only inside
the loop.

Statistics per row (``Stats``), each part (a block, the carry, a device's shard) relative to its
own max ``top``: ``rest = sum_k exp(z_k - top) - 1``, the sum without one of the classes at the
max (so ``S = 1 + rest`` and ``log S = log1p(rest)`` keep their relative accuracy for a confident
row, whichever its label), the target's logit ``z_y``, the sum of logits ``sum_z`` (for label
smoothing) and ``moment = sum_k exp(z_k - top)(z_k - top) <= 0`` (for the entropy). A block's
``rest`` is the sum of all its exponentials but the first max's (a tie's is exp(0) = 1 exactly:
the tempered difference ``u = (a - top) / t`` of a class at the max is exactly 0); parts merge
(``Config.merge``) at the larger top ``m``: a part whose top is ``m`` brings its ``rest``, any other
``exp(top_i - m)(1 + rest_i)``, and the parts at ``m`` beyond the first one 1 each. Then, as in
``Categorical``:

    -log p_y = (top - z_y) + log1p(rest),   1 - p_y = (rest - expm1(z_y - top)) / S

(both sums of terms >= 0: logits (20, 0, 0), label 0, give 4.1223e-9 and no cancellation). With
label smoothing alpha (target ``(1 - alpha) onehot + alpha / V``) and z-loss beta:

    loss = (1 - alpha)(-log p_y) + alpha (lse - mean_c z_c) + beta lse^2,   lse = top + log S.

Temperature t: every quantity is of the logits ``z = a / t``, ``a = hidden @ weight + bias`` (the
softmax a sampler at temperature t draws from). The statistics keep the raw maxima of ``a`` and
divide only differences, ``u = (a - top) / t`` (``blocks.tempered``), in float32: the max class's
``u`` is exactly 0, and ``z`` itself is never rounded. The formulas below are written with
``top`` and ``z_y`` in the units of z.

Entropy, from the same statistics:

    H = -sum_k p_k log p_k = lse - sum_k p_k z_k = log1p(rest) - moment / S,

a sum of two terms >= 0, so a confident row's small entropy keeps its relative accuracy. A part's
moment moves to a larger max ``m' > m`` exactly: ``exp(z - m')(z - m') = exp(m - m') exp(z - m)((z - m)
+ (m - m'))``, so it becomes ``exp(m - m') (moment + (m - m') S)`` (two terms of one sign); a
``-inf`` logit adds 0, not ``0 * -inf``.

Gradient, with respect to the tempered logits z (``q = (1 - alpha) onehot + alpha / V``):

    d loss / d z_c = (1 + 2 beta lse) p_c - q_c,
    d H / d z_c = -p_c (log p_c + H)

(from ``d p_k / d z_c = p_k (delta_kc - p_c)``: ``dH/dz_c = -sum_k (log p_k + 1) p_k (delta_kc - p_c)
= -p_c (log p_c + 1) + p_c (1 - H)``). At the target the loss's is evaluated as
``-(1 - alpha)(1 - p_y) + (alpha + 2 beta lse) p_y - alpha/V`` with ``1 - p_y`` as above. With
``G = ct_loss * dloss/dz + ct_H * dH/dz`` per block, the chain rule through
``z = (hidden @ W + b) / t`` gives ``d hidden = sum_b G_b W_b^T / t``, ``d W_b = hidden^T G_b / t``,
``d bias_b = sum_n G_b / t`` (the ``1/t`` is folded into the per-row cotangents first). The backward
pass recomputes each block's logits, so its memory is a block too. Every block computes in float32
(bfloat16 inputs are upcast per block).

The gradient is a ``custom_vjp`` (``blocks.run``; the reverse pass is what makes the memory saving
possible), so ``jax.grad``/``jax.vjp``/``jax.value_and_grad`` work and ``jax.jacfwd``/``jax.hessian``
do not; for those, use ``mlnll.nll(mlnll.Categorical())`` on materialised logits.

The vocab-parallel variants (``sharded.py``) run the same blocks on each device's slice of
``weight`` under ``shard_map`` and combine the devices' statistics with the same ``merge``, by
``pmax``/``psum`` (Megatron-LM's vocab-parallel cross-entropy).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.losses import options as check
from mlnll._src.losses import reduce as reduce_
from mlnll._src.vocab import blocks


class Stats(NamedTuple):
    """Per-row statistics of the forward pass, each ``[N]`` in float32 (or float64), relative to
    the part's own max (see the module docstring)."""

    top: jax.Array  # max of the raw logits a = z t (-inf before any class)
    rest: jax.Array  # sum_k exp(z_k - top / t) - 1, computed without the subtraction; 0 before any class
    z_y: jax.Array  # the target's raw logit (0 until its block is seen, or for a label outside 0..V-1)
    sum_z: jax.Array  # sum_k a_k, raw (only with label smoothing; else 0)
    moment: jax.Array  # sum_k exp(u_k) u_k <= 0, u_k = (a_k - top) / t (only with the entropy; else 0)


class Residuals(NamedTuple):
    """What the backward pass needs per row, each ``[N]``."""

    top: jax.Array  # raw
    log_total: jax.Array  # log S
    coef: jax.Array  # 1 + 2 beta lse: d loss / d z_c = coef p_c - q_c off the target
    target_grad: jax.Array  # d loss / d z_y
    valid: jax.Array  # the label is a class (0..V-1)
    entropy: jax.Array  # H (0 without the entropy)


def moved_moment(moment, total, old_top, new_shift, temperature: float) -> jax.Array:
    """``moment`` (against the raw max ``old_top``) against the larger ``new_shift``: with
    ``e = (m - m') / t <= 0``, ``exp(e) (moment + e S)``, two terms of one sign; 0 where nothing was seen."""
    move = blocks.tempered(old_top - new_shift, temperature)
    rescale = jnp.exp(move)  # 0 when old_top is -inf
    drift = jnp.where(rescale > 0, rescale * move, jnp.zeros_like(rescale))
    return moment * rescale + drift * total


@dataclasses.dataclass(frozen=True)
class Config:
    """Static options of one fused call, and the NLL kernel of ``blocks.run`` (hashable: it is a
    ``custom_vjp`` non-differentiable argument). Its arguments: ``(hidden, weight, bias, labels)``."""

    num_classes: int  # V, the whole vocabulary (all shards)
    block_size: int
    label_smoothing: float
    z_loss: float
    temperature: float = 1.0
    with_entropy: bool = False  # also return each row's entropy (and take its cotangent)

    # --- the kernel ---------------------------------------------------------------------------

    def specs(self, args, layout: blocks.Layout) -> tuple:
        hidden, weight, bias, labels = args
        return (*layout.model((hidden, weight, bias)), layout.rows)

    def empty(self, args) -> Stats:
        hidden, weight = args[:2]
        dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight))
        zeros = jnp.zeros((hidden.shape[0],), dtype)
        return Stats(jnp.full_like(zeros, -jnp.inf), zeros, zeros, zeros, zeros)

    def block_stats(self, args, start, size: int, first_class) -> Stats:
        hidden, weight, bias, labels = args
        logits = blocks.model_logits((hidden, weight, bias), start, size)
        top, shift, u, exps = blocks.block_exp(logits, self.temperature)
        zeros = jnp.zeros_like(top)
        # rest = sum(exps) - 1, without the subtraction: every exponential but the first max's (a
        # tie's u is exactly 0 as well, so it brings exp(0) = 1 exactly).
        first_max = jnp.argmax(logits, axis=1).astype(jnp.int32)
        at_first = jnp.arange(size, dtype=jnp.int32)[None, :] == first_max[:, None]
        rest = jnp.sum(jnp.where(at_first, jnp.zeros_like(exps), exps), axis=1)
        target = blocks.is_target(labels, first_class, size)
        z_y = jnp.sum(jnp.where(target, logits, jnp.zeros_like(logits)), axis=1)
        sum_z = jnp.sum(logits, axis=1) if self.label_smoothing > 0 else zeros
        moment = zeros
        if self.with_entropy:
            # exp(u) u -> 0 as u -> -inf: a -inf logit (or an underflowed exp) adds 0, not 0 * -inf.
            terms = jnp.where(exps > 0, exps * u, jnp.zeros_like(exps))
            moment = jnp.sum(terms, axis=1)
        return Stats(top, rest, z_y, sum_z, moment)

    def merge(self, parts, across: blocks.Across) -> Stats:
        top, shift, scales = blocks.common_top([p.top for p in parts], across, self.temperature)
        seen = top > -jnp.inf
        # One part at the max keeps its rest; the others at the max bring their 1 each (counted
        # exactly), the parts below it their whole sum exp(top_i - top) S_i.
        at_top = [(p.top == top) & seen for p in parts]
        rest = [jnp.where(first, p.rest, s * (1 + p.rest)) for p, first, s in zip(parts, at_top, scales)]
        ties = [first.astype(top.dtype) for first in at_top]
        moments = [p.moment for p in parts]
        if self.with_entropy:
            totals = [jnp.where(p.top == -jnp.inf, jnp.zeros_like(p.rest), 1 + p.rest) for p in parts]
            moments = [moved_moment(p.moment, t, p.top, shift, self.temperature) for p, t in zip(parts, totals)]
        summed = [(r, n, p.z_y, p.sum_z, m) for r, n, p, m in zip(rest, ties, parts, moments)]
        if self.label_smoothing <= 0 and not self.with_entropy:  # nothing to add but what the loss needs
            summed = [s[:3] for s in summed]
        rest, ties, z_y, *more = across.sum(summed)
        sum_z, moment = more if more else (parts[0].sum_z, parts[0].moment)
        return Stats(top, rest + jnp.maximum(ties - 1, jnp.zeros_like(ties)), z_y, sum_z, moment)

    def outputs(self, stats: Stats, args):
        """``((loss, entropy) or loss, residuals)`` per row from the statistics of the whole vocabulary."""
        labels = args[3]
        loss, entropy, residuals = row_terms(stats, labels, self)
        return ((loss, entropy) if self.with_entropy else loss), residuals

    def block_grad(self, args, start, size: int, first_class, residuals: Residuals, ct) -> jax.Array:
        hidden, weight, bias, labels = args
        top, log_total, coef, target_grad, valid, entropy = residuals
        ct_loss, ct_entropy = ct if self.with_entropy else (ct, None)
        # An invalid label's row (loss inf) gets no gradient from its loss (its entropy is finite).
        ct_loss = jnp.where(valid, ct_loss, jnp.zeros_like(ct_loss))
        alpha, inv_t = self.label_smoothing, 1.0 / self.temperature
        # z = (hidden @ W + b) / t: every logit cotangent carries the chain rule's 1/t, folded in per row.
        scale = (ct_loss * (coef * inv_t))[:, None]
        smooth = (ct_loss * (alpha / self.num_classes * inv_t))[:, None]
        at_target = (ct_loss * (target_grad * inv_t))[:, None]
        logits = blocks.model_logits((hidden, weight, bias), start, size)
        # log p = (a - top) / t - log S: the shift first keeps log S even when |top| ~ 3e38.
        log_p = blocks.tempered(logits - top[:, None], self.temperature) - log_total[:, None]
        p = jnp.exp(log_p)
        g = jnp.where(blocks.is_target(labels, first_class, size), at_target, scale * p - smooth)
        if ct_entropy is not None:
            # dH/dz_c = -p_c (log p_c + H), and 0 (not 0 * -inf) for a class of probability 0.
            ent = jnp.where(p > 0, p * (log_p + entropy[:, None]), jnp.zeros_like(p))
            g = g - (ct_entropy * inv_t)[:, None] * ent
        return g

    def cotangents(self, args, grads) -> tuple:
        hidden, weight, bias, labels = args
        return (*blocks.model_cotangents(hidden, weight, bias, grads), None)  # labels: integers


def row_terms(stats: Stats, labels, cfg: Config) -> tuple[jax.Array, jax.Array | None, Residuals]:
    """``(loss, entropy or None, residuals)`` per row from the statistics of the whole vocabulary."""
    top, rest, z_y, sum_z, moment = stats
    alpha, beta, num_classes, t = cfg.label_smoothing, cfg.z_loss, cfg.num_classes, cfg.temperature
    valid = (labels >= 0) & (labels < num_classes)
    log_total = jnp.log1p(rest)  # log S, S = 1 + rest
    nll_target = blocks.tempered(top - z_y, t) + log_total
    lse = blocks.tempered(top, t) + log_total
    loss = nll_target
    if alpha:
        # Smoothing's share: lse - mean_c z_c = (top - mean a) / t + log S, both terms >= 0.
        loss = (1 - alpha) * nll_target + alpha * (blocks.tempered(top - sum_z / num_classes, t) + log_total)
    if beta:
        loss = loss + beta * jnp.square(lse)
    loss = jnp.where(valid, loss, jnp.inf)
    # Gradient at the target class: -(1 - alpha)(1 - p_y) + (alpha + 2 beta lse) p_y - alpha / V, with
    # 1 - p_y = (S - e^{u_y}) / S = (rest - expm1(u_y)) / S, two terms >= 0 (u_y = (a_y - top) / t <= 0).
    u_y = blocks.tempered(z_y - top, t)
    total = 1 + rest
    not_target = jnp.where(valid, rest - jnp.expm1(u_y), jnp.zeros_like(rest))
    p_target = jnp.exp(u_y - log_total)
    coef = 1 + 2 * beta * lse  # d loss / d z_c = coef p_c - q_c
    target_grad = -(1 - alpha) * (not_target / total) + (coef - 1 + alpha) * p_target - alpha / num_classes
    target_grad = jnp.where(valid, target_grad, jnp.zeros_like(target_grad))
    entropy = None
    if cfg.with_entropy:
        # H = log S - moment / S: both terms >= 0, so no cancellation for a confident row.
        entropy = log_total - moment / total
    residual_entropy = jnp.zeros_like(loss) if entropy is None else entropy
    return loss, entropy, Residuals(top, log_total, coef, target_grad, valid, residual_entropy)


def _per_example(hidden, weight, bias, labels, cfg: Config):
    """The per-row outputs on one device (a ``custom_vjp``): the loss, or ``(loss, entropy)``."""
    return blocks.run(cfg, None, hidden, weight, bias, labels)


# ----------------------------------------------------------------------------------------------
# Validation


def check_options(label_smoothing, z_loss, reduction, block_size, ignore_index) -> None:
    """Static options that cannot be right raise at call time, naming the value (the same checks,
    and messages, as ``nll(Categorical(), ...)``'s options)."""
    reduce_.check_reduction(reduction)
    check.fraction("label_smoothing", label_smoothing)
    check.nonnegative("z_loss", z_loss)
    check_block_size(block_size)
    check.label_value("ignore_index", ignore_index)


def check_block_size(block_size) -> None:
    """``ValueError`` unless ``block_size`` is None or a positive int."""
    bad_block = isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1
    if block_size is not None and bad_block:
        raise ValueError(f"block_size must be a positive int or None; got {block_size!r}.")


def check_temperature(temperature) -> float:
    """A finite Python number > 0, as a float (it is static: part of the compiled program)."""
    ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not (ok and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite Python number > 0; got {temperature!r}.")
    return float(temperature)


def check_flag(name: str, value) -> bool:
    """``TypeError`` unless ``value`` is a Python bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def prepare(hidden: ArrayLike, weight: ArrayLike, labels: ArrayLike, bias: ArrayLike | None, where: ArrayLike | None, *,
            name: str) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, jax.Array | None, tuple[int, ...]]:
    """Validated ``(hidden [N, D], weight [D, V], labels [N] int32, bias [V] | None, where [N] | None,
    batch_shape)``; leading batch axes of ``hidden [..., D]`` and ``labels [...]`` are flattened."""
    hidden, weight = layer(hidden, weight, name=name)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{name}: labels must be integer class indices; got dtype {labels.dtype}.")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"{name}: labels must have shape {hidden.shape[:-1]} (hidden's batch shape); "
            f"got shape {labels.shape}."
        )
    bias = layer_bias(bias, weight.shape[1], name=name)
    batch_shape = labels.shape
    where = row_mask(where, batch_shape, target="labels shape")
    rows = math.prod(batch_shape)
    flat_hidden = hidden.reshape(rows, hidden.shape[-1])
    return flat_hidden, weight, labels.reshape(rows).astype(jnp.int32), bias, where, batch_shape


def layer(hidden: ArrayLike, weight: ArrayLike, *, name: str, prefix: str = "") -> tuple[jax.Array, jax.Array]:
    """Validated floating ``hidden [..., D]`` and ``weight [D, V]`` (V >= 1); ``prefix`` names them
    (``"student_"``, ``"teacher_"``)."""
    hidden = validate.float_outputs(hidden, where=f"{name}: {prefix}hidden")
    weight = validate.float_outputs(weight, where=f"{name}: {prefix}weight")
    if hidden.ndim < 1:
        raise ValueError(f"{name}: {prefix}hidden must have shape [..., D]; got shape {hidden.shape}.")
    if weight.ndim != 2 or weight.shape[0] != hidden.shape[-1]:
        raise ValueError(
            f"{name}: {prefix}weight must have shape [D, V] with D = {hidden.shape[-1]} ({prefix}hidden's "
            f"last axis); got shape {weight.shape}."
        )
    if weight.shape[1] < 1:
        raise ValueError(f"{name}: {prefix}weight needs at least one class (V >= 1); got shape {weight.shape}.")
    return hidden, weight


def layer_bias(bias: ArrayLike | None, num_classes: int, *, name: str, prefix: str = "") -> jax.Array | None:
    """None, or a validated floating ``[V]`` bias."""
    if bias is None:
        return None
    bias = validate.float_outputs(bias, where=f"{name}: {prefix}bias")
    if bias.shape != (num_classes,):
        raise ValueError(
            f"{name}: {prefix}bias must have shape ({num_classes},) ({prefix}weight's V); got shape {bias.shape}."
        )
    return bias


def row_mask(where: ArrayLike | None, batch_shape: tuple[int, ...], *, target: str) -> jax.Array | None:
    """``where`` validated (boolean, broadcastable to the batch shape) as ``nll`` validates it, flat [N]."""
    if where is None:
        return None
    mask = reduce_.example_weights(batch_shape, jnp.float32, where=where, target=target) > 0
    return mask.reshape(-1)


# ----------------------------------------------------------------------------------------------
# The calls (one device, or vocab-parallel with ``sharding``)


def reduce(losses, labels, where, ignore_index, reduction: str, dtype, batch_shape):
    """Mask (``where``, ``ignore_index``) and reduce the per-row losses with ``nll``'s reduction step."""
    keep = None if ignore_index is None else labels != ignore_index
    w = reduce_.example_weights(losses.shape, losses.dtype, where=where, keep=keep)
    value = reduce_.reduce(losses, w, reduction, dtype)
    return value.reshape(batch_shape) if reduction == "none" else value


def compute_nll(name: str, hidden, weight, labels, *, sharding: blocks.Sharding | None, bias, where, ignore_index,
                label_smoothing, z_loss, temperature, return_entropy, reduction: str, block_size,
                log_probs: bool = False):
    """The validated call behind ``linear_categorical_nll`` and its vocab-parallel twin (and, with
    ``log_probs``, ``-loss`` per row: the log-probabilities): the loss, or ``(loss, entropy)``, the
    entropy reduced like the loss."""
    check_options(label_smoothing, z_loss, reduction, block_size, ignore_index)
    temperature = check_temperature(temperature)
    return_entropy = check_flag("return_entropy", return_entropy)
    hidden, weight, labels, bias, where, batch_shape = prepare(hidden, weight, labels, bias, where, name=name)
    num_classes = weight.shape[1]
    layout, local_classes, rows = blocks.layout_for(name, sharding, num_classes, hidden.shape[0])
    cfg = Config(num_classes, blocks.block_size_for(block_size, rows, local_classes), float(label_smoothing),
                 float(z_loss), temperature, return_entropy)
    out = blocks.apply(cfg, layout, (hidden, weight, bias, labels))
    loss, entropy = out if return_entropy else (out, None)
    dtype = numerics.float_dtype(hidden, weight, *([] if bias is None else [bias]))
    value = reduce(-loss if log_probs else loss, labels, where, ignore_index, reduction, dtype, batch_shape)
    if entropy is None:
        return value
    return value, reduce(entropy, labels, where, ignore_index, reduction, dtype, batch_shape)


def compute_logprobs(name: str, hidden, weight, labels, *, sharding: blocks.Sharding | None, temperature, bias,
                     where, ignore_index, return_entropy, block_size):
    """The validated call behind ``linear_categorical_logprobs`` and its vocab-parallel twin."""
    return compute_nll(name, hidden, weight, labels, sharding=sharding, bias=bias, where=where,
                       ignore_index=ignore_index, label_smoothing=0.0, z_loss=0.0, temperature=temperature,
                       return_entropy=return_entropy, reduction="none", block_size=block_size, log_probs=True)


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
    temperature: float = 1.0,
    return_entropy: bool = False,
    reduction: str = "mean",
    block_size: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""NLL of ``Categorical()`` at logits ``(hidden @ weight (+ bias)) / temperature``, never materialising them.

    Equal to ``mlnll.nll(mlnll.Categorical(), reduction=reduction, ignore_index=...,
    label_smoothing=..., z_loss=...)((hidden @ weight + bias) / temperature, labels, where=where)``,
    computed blockwise over the vocabulary with an online logsumexp (float32 accumulation, also for
    bfloat16 inputs), so memory grows with ``N x block_size`` instead of ``N x V``.

    Per example, with ``z = (hidden_n @ weight + bias) / t``, ``lse = logsumexp(z)``:
    ``(1 - alpha)(lse - z_y) + alpha (lse - mean_c z_c) + z_loss lse^2`` (alpha =
    ``label_smoothing``, spread over all V classes as in torch and optax; z_loss as in PaLM).
    With ``return_entropy=True`` the same pass also gives the entropy of ``softmax(z)``,
    ``H = lse - sum_c p_c z_c``, accumulated online as ``log S - moment / S`` (two terms >= 0; see
    the module docstring for the update and for ``dH/dz_c = -p_c (log p_c + H)``), differentiable,
    so an entropy bonus costs no second pass and no ``[N, V]`` array.

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
      temperature: t > 0, a Python number: the logits are divided by it before the softmax (the
        distribution a sampler at temperature t draws from, as PPO/GRPO need); the gradients in
        hidden, weight and bias carry the chain rule's ``1/t`` exactly.
      return_entropy: also return the entropy of ``softmax(z)``, reduced like the loss (per row
        with ``reduction="none"``, the mean over the kept rows with ``"mean"``).
      reduction: ``"mean"`` over kept rows (0 if none is kept), ``"sum"`` or ``"none"`` (per row,
        dropped rows 0).
      block_size: columns per block; default about ``2**21 / N`` (a multiple of 128).

    Returns:
      The reduced loss (``reduction="none"``: shape ``labels.shape``), in the inputs' floating dtype;
      with ``return_entropy=True``, the pair ``(loss, entropy)``.

    Differentiable with ``jax.grad``/``jax.vjp`` in hidden, weight and bias (a ``custom_vjp`` that
    recomputes each block); ``jax.jacfwd``/``jax.hessian`` are not supported through it.

    Example:
      >>> import jax, jax.numpy as jnp, mlnll
      >>> h = jnp.ones((4, 8)); w = jnp.zeros((8, 1000)); y = jnp.array([0, 1, 2, 3])
      >>> float(mlnll.linear_categorical_nll(h, w, y))  # uniform over 1000 classes: log 1000
      6.9077...
      >>> loss, entropy = mlnll.linear_categorical_nll(h, w, y, temperature=0.7, return_entropy=True)
      >>> round(float(entropy), 4)  # still uniform at any temperature
      6.9078
    """
    return compute_nll("linear_categorical_nll", hidden, weight, labels, sharding=None, bias=bias, where=where,
                       ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                       temperature=temperature, return_entropy=return_entropy, reduction=reduction,
                       block_size=block_size)


def linear_categorical_logprobs(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 1.0,
    bias: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    return_entropy: bool = False,
    block_size: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Per-token log-probability of each label under ``softmax((hidden @ weight (+ bias)) / temperature)``.

    Equal to ``jnp.take_along_axis(jax.nn.log_softmax((hidden @ weight + bias) / t), labels[..., None],
    -1)[..., 0]``, computed by the blocks of ``linear_categorical_nll`` without the ``[N, V]`` logits:
    ``log p_y = -((top - a_y) / t + log1p(rest))`` (``rest = S - 1`` summed without the subtraction),
    which keeps relative accuracy as ``p_y -> 1`` (a confident token's ``log p_y`` of -4e-9 is not rounded to 0). These are what
    policy-gradient losses consume (PPO/GRPO ratios ``exp(logp - old_logp)``, ``-advantage * logp``);
    with ``temperature`` they are the log-probabilities of the distribution the tokens were sampled
    from. Differentiable: ``d log p_y / d z_c = onehot_y(c) - p_c``, times ``1/t`` through the
    division, accumulated per block like the loss's gradient.

    Args:
      hidden: ``[N, D]`` (or ``[..., D]``) floating features.
      weight: ``[D, V]`` output-layer weight.
      labels: ``[N]`` (or ``[...]``) integer token ids; one outside 0..V-1 (not masked) gives
        ``-inf``, like ``Categorical().log_prob``.
      temperature: t > 0, a Python number dividing the logits.
      bias: optional ``[V]``.
      where: optional boolean mask of the rows to keep; a dropped row gives exactly 0 (value and
        gradient), whatever its label.
      ignore_index: a label value whose rows give 0 (e.g. -100 for padding).
      return_entropy: also return each row's entropy of ``softmax(z)`` (0 on dropped rows).
      block_size: columns per block (default as in ``linear_categorical_nll``).

    Returns:
      ``log p_y``, shape ``labels.shape``, in the inputs' floating dtype; with
      ``return_entropy=True``, the pair ``(log_probs, entropy)``.

    Differentiable with ``jax.grad``/``jax.vjp`` (a ``custom_vjp``), not ``jax.jacfwd``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> h = jnp.ones((2, 4)); w = jnp.zeros((4, 100)); y = jnp.array([3, 7])  # uniform: -log 100
      >>> [round(float(v), 5) for v in mlnll.linear_categorical_logprobs(h, w, y, temperature=0.5)]
      [-4.60517, -4.60517]
    """
    return compute_logprobs("linear_categorical_logprobs", hidden, weight, labels, sharding=None,
                            temperature=temperature, bias=bias, where=where, ignore_index=ignore_index,
                            return_entropy=return_entropy, block_size=block_size)

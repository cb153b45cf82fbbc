r"""Vocab-parallel fused losses: ``weight`` sharded over the vocabulary.

Each device holds ``weight[:, shard]`` (``[D, V / devices]``) and runs the blocks of
``blocks.local_stats`` on it, which gives per-row statistics relative to its own classes; they
combine exactly with the kernel's own ``merge`` (the one that folds a block into the carry), its
maxima by ``pmax`` and its rescaled sums by ``psum``, as in Megatron-LM's vocab-parallel
cross-entropy:

* the NLL (``fused.Config``): ``top = pmax(top_s)``; the sum without one class at the max,
  ``rest = psum(rest_s if top_s = top else exp(top_s - top)(1 + rest_s)) + (shards at top - 1)``; the
  target logit, the sum of logits and the entropy's moment (moved to the global max by
  ``exp(m_s - m)(moment_s + (m_s - m) S_s)``) by ``psum``;
* the distillation KL (``distill.KLConfig``), both models' weights split over the vocabulary: each
  device's ``(top_p, total_p, top_q, total_q, K, D)`` moved to the combined tops and shift by the
  closed form of ``distill.carried`` and summed; only the student's gradients are computed.

after which every device evaluates the same per-row outputs. The backward pass again runs per
shard: ``d hidden = psum_vocab(sum over local blocks of G_b W_b^T)``, ``d W_s`` stays local (summed
over batch shards when the batch is sharded too). Only ``[N]``-sized statistics and ``[N, D]``
gradients cross devices; no device ever holds ``[N, V]`` or all of ``weight``. Each ``custom_vjp``
(``blocks.run``) sits outside ``shard_map`` (its forward and backward passes are each one
``shard_map``), so no collective is ever differentiated.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh
from jax.typing import ArrayLike

from mlnll._src.vocab import blocks, distill, fused


def vocab_parallel_linear_categorical_nll(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: str,
    batch_axis: str | None = None,
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
    r"""``linear_categorical_nll`` with ``weight`` sharded over the vocabulary on ``mesh``.

    Same value and gradients as ``mlnll.linear_categorical_nll`` (and as the materialised
    ``nll(Categorical())`` on ``(hidden @ weight + bias) / temperature``), computed with ``weight``
    split over the ``vocab_axis`` devices (``PartitionSpec(None, vocab_axis)``: each device holds
    ``[D, V / n]``) and, optionally, the rows split over ``batch_axis``. Each device walks its own
    columns in blocks; per-row maxima and sums (and, with ``return_entropy``, the entropy's moment,
    moved to the global max by ``exp(m_s - m)(moment_s + (m_s - m) S_s)``) are combined with
    ``pmax``/``psum`` (Megatron-LM's vocab-parallel cross-entropy), so no device ever holds the
    ``[N, V]`` logits or all of ``weight``. Call it inside ``jax.jit``; inputs are resharded to
    these layouts as needed.

    Every other argument (``hidden``, ``weight``, ``labels``, ``bias``, ``where``, ``ignore_index``,
    ``label_smoothing``, ``z_loss``, ``temperature``, ``return_entropy``, ``reduction``,
    ``block_size``) is as in ``linear_categorical_nll``; ``block_size`` counts columns of one shard.

    Args:
      mesh: a ``jax.sharding.Mesh``.
      vocab_axis: the mesh axis that splits the vocabulary; V must be divisible by its size.
      batch_axis: an optional mesh axis that splits the rows; N must be divisible by its size.

    Returns:
      As ``linear_categorical_nll``. Differentiable by ``jax.grad`` (a ``custom_vjp``).
    """
    return fused.compute_nll(
        "vocab_parallel_linear_categorical_nll", hidden, weight, labels,
        sharding=blocks.Sharding(mesh, vocab_axis, batch_axis), bias=bias, where=where, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, temperature=temperature, return_entropy=return_entropy,
        reduction=reduction, block_size=block_size,
    )


def vocab_parallel_linear_categorical_logprobs(
    hidden: ArrayLike,
    weight: ArrayLike,
    labels: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: str,
    batch_axis: str | None = None,
    temperature: float = 1.0,
    bias: ArrayLike | None = None,
    where: ArrayLike | None = None,
    ignore_index: int | None = None,
    return_entropy: bool = False,
    block_size: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""``linear_categorical_logprobs`` with ``weight`` sharded over the vocabulary on ``mesh``.

    Per-token ``log p_y`` of ``softmax((hidden @ weight + bias) / temperature)`` (and, with
    ``return_entropy``, each token's entropy), computed as ``vocab_parallel_linear_categorical_nll``
    computes the NLL: each device's slice of the vocabulary in blocks, the per-row statistics
    combined with ``pmax``/``psum``, ``log p_y = -((top - a_y) / t + log1p(rest))``.

    Every other argument (``hidden``, ``weight``, ``labels``, ``temperature``, ``bias``, ``where``,
    ``ignore_index``, ``return_entropy``, ``block_size``) is as in ``linear_categorical_logprobs``;
    ``block_size`` counts columns of one shard.

    Args:
      mesh, vocab_axis, batch_axis: as in ``vocab_parallel_linear_categorical_nll``.

    Returns:
      As ``linear_categorical_logprobs``. Differentiable by ``jax.grad`` (a ``custom_vjp``).
    """
    return fused.compute_logprobs(
        "vocab_parallel_linear_categorical_logprobs", hidden, weight, labels,
        sharding=blocks.Sharding(mesh, vocab_axis, batch_axis), temperature=temperature, bias=bias, where=where,
        ignore_index=ignore_index, return_entropy=return_entropy, block_size=block_size,
    )


def vocab_parallel_linear_categorical_kl(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    mesh: Mesh,
    vocab_axis: str,
    batch_axis: str | None = None,
    temperature: float = 1.0,
    direction: str = "forward",
    student_bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    block_size: int | None = None,
) -> jax.Array:
    r"""``linear_categorical_kl`` with both models' weights sharded over the vocabulary on ``mesh``.

    Same value and (student) gradients as ``mlnll.linear_categorical_kl``: each device holds
    ``[D_s, V / n]`` of the student's and ``[D_t, V / n]`` of the teacher's weight, walks its columns
    in blocks with both online logsumexps, and the per-row statistics are combined exactly: the
    maxima with ``pmax``, the sums rescaled to them with ``psum``, and each device's non-negative
    KL sum ``K`` and its slope ``D`` moved to the global shift ``c = L_p - L_q`` by the closed form
    ``K + total_p expm1mx(e) + D expm1(e)`` (see ``linear_categorical_kl``) before their ``psum``.
    Only ``[N]`` statistics and the student's ``[N, D_s]`` gradient cross devices.

    Every other argument (the student's and teacher's ``hidden``, ``weight`` and ``bias``,
    ``temperature``, ``direction``, ``where``, ``reduction``, ``block_size``) is as in
    ``linear_categorical_kl``; ``block_size`` counts columns of one shard.

    Args:
      mesh, vocab_axis, batch_axis: as in ``vocab_parallel_linear_categorical_nll``.

    Returns:
      As ``linear_categorical_kl``. Differentiable by ``jax.grad`` in the student's arguments.
    """
    return distill.compute_kl(
        "vocab_parallel_linear_categorical_kl", student_hidden, student_weight, teacher_hidden, teacher_weight,
        sharding=blocks.Sharding(mesh, vocab_axis, batch_axis), temperature=temperature, direction=direction,
        student_bias=student_bias, teacher_bias=teacher_bias, where=where, reduction=reduction,
        block_size=block_size,
    )

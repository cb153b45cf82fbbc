r"""Vocab-parallel fused linear + categorical NLL: ``weight`` sharded over the vocabulary.

Each device holds ``weight[:, shard]`` (``[D, V / devices]``) and runs the blocks of
``mlnll._src.fused`` on it, which gives per-row statistics relative to its own classes: the local
max ``top_s``, ``others_s = sum_{k in shard, k != y} exp(z_k - top_s)``, the target logit (if
the label falls in the shard, else 0) and the sum of logits. They combine exactly, as in
Megatron-LM's vocab-parallel cross-entropy:

    top = pmax(top_s),  others = psum(others_s exp(top_s - top)),  z_y = psum(z_y_s),  sum_z = psum(sum_z_s)

after which every device evaluates the same per-row loss (``fused.row_terms``). The backward pass
again runs per shard: ``d hidden = psum_vocab(sum over local blocks of G_b W_b^T)``, ``d W_s`` stays
local (summed over batch shards when the batch is sharded too). Only ``[N]``-sized statistics and
``[N, D]`` gradients cross devices; no device ever holds ``[N, V]`` or all of ``weight``.

The ``custom_vjp`` sits outside ``shard_map`` (its forward and backward passes are each one
``shard_map``), so no collective is ever differentiated.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
from jax.typing import ArrayLike

from mlnll._src import numerics
from mlnll._src.vocab import fused


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where things live: the mesh, its vocabulary axis and (optionally) its batch axis."""

    mesh: Mesh
    vocab_axis: str
    batch_axis: str | None

    @property
    def rows(self) -> PartitionSpec:
        return PartitionSpec(self.batch_axis)

    @property
    def matrix_rows(self) -> PartitionSpec:
        return PartitionSpec(self.batch_axis, None)

    def place(self, x, spec: PartitionSpec):
        """``x`` laid out as ``spec`` on the mesh (explicit meshes reshard, auto meshes constrain)."""
        if x is None:
            return None
        sharding = jax.sharding.NamedSharding(self.mesh, spec)
        if all(t == jax.sharding.AxisType.Explicit for t in self.mesh.axis_types):
            return jax.reshard(x, sharding)
        return jax.lax.with_sharding_constraint(x, sharding)

    def shard_map(self, f, in_specs, out_specs):
        # check_vma=False: the block loop's carries start replicated and become device-varying.
        return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _first_class(weight_shard, layout: _Layout):
    return jax.lax.axis_index(layout.vocab_axis) * weight_shard.shape[1]


def _combine(stats, layout: _Layout):
    """Per-shard ``(top, others, z_y, sum_z)`` -> the statistics over the whole vocabulary."""
    top, others, z_y, sum_z = stats
    global_top = jax.lax.pmax(top, layout.vocab_axis)
    shift = jnp.where(global_top == -jnp.inf, jnp.zeros_like(global_top), global_top)
    # Each shard's sum was relative to its own max: rescale by exp(top_s - top) <= 1 (0 for -inf).
    others = jax.lax.psum(others * jnp.exp(top - shift), layout.vocab_axis)
    return global_top, others, jax.lax.psum(z_y, layout.vocab_axis), jax.lax.psum(sum_z, layout.vocab_axis)


def _stats(hidden, weight, bias, labels, cfg: fused.Config, layout: _Layout):
    def local(h, w, b, y):
        return _combine(fused.local_stats(h, w, b, y, _first_class(w, layout), cfg), layout)

    bias_spec = None if bias is None else PartitionSpec(layout.vocab_axis)
    in_specs = (layout.matrix_rows, PartitionSpec(None, layout.vocab_axis), bias_spec, layout.rows)
    return layout.shard_map(local, in_specs, (layout.rows,) * 4)(hidden, weight, bias, labels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _per_example(hidden, weight, bias, labels, cfg: fused.Config, layout: _Layout):
    return fused.row_terms(_stats(hidden, weight, bias, labels, cfg, layout), labels, cfg)[0]


def _per_example_fwd(hidden, weight, bias, labels, cfg, layout):
    loss, residuals = fused.row_terms(_stats(hidden, weight, bias, labels, cfg, layout), labels, cfg)
    return loss, (hidden, weight, bias, labels, residuals)


def _per_example_bwd(cfg: fused.Config, layout: _Layout, saved, ct):
    hidden, weight, bias, labels, residuals = saved
    batch_sharded = layout.batch_axis is not None

    def local(h, w, b, y, res, c):
        d_hidden, d_weight, d_bias = fused.local_grads(
            h, w, b, y, _first_class(w, layout), res, c, cfg, param_grads_wide=batch_sharded
        )
        d_hidden = jax.lax.psum(d_hidden, layout.vocab_axis)
        if batch_sharded:
            d_weight = jax.lax.psum(d_weight, layout.batch_axis)
            d_bias = jax.lax.psum(d_bias, layout.batch_axis)
        return d_hidden, d_weight, d_bias

    vocab = PartitionSpec(layout.vocab_axis)
    bias_spec = None if bias is None else vocab
    in_specs = (
        layout.matrix_rows, PartitionSpec(None, layout.vocab_axis), bias_spec, layout.rows,
        (layout.rows,) * len(residuals), layout.rows,
    )
    out_specs = (layout.matrix_rows, PartitionSpec(None, layout.vocab_axis), vocab)
    residuals = tuple(layout.place(r, layout.rows) for r in residuals)
    grads = layout.shard_map(local, in_specs, out_specs)(
        hidden, weight, bias, labels, residuals, layout.place(ct, layout.rows)
    )
    return fused.cotangents(hidden, weight, bias, grads)


_per_example.defvjp(_per_example_fwd, _per_example_bwd)


def _axis_size(mesh: Mesh, axis: str, role: str) -> int:
    if axis not in mesh.shape:
        raise ValueError(f"{role}={axis!r} is not an axis of the mesh; its axes are {tuple(mesh.shape)}.")
    return mesh.shape[axis]


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
    reduction: str = "mean",
    block_size: int | None = None,
) -> jax.Array:
    r"""``linear_categorical_nll`` with ``weight`` sharded over the vocabulary on ``mesh``.

    Same value and gradients as ``mlnll.linear_categorical_nll`` (and as the materialised
    ``nll(Categorical())`` on ``hidden @ weight + bias``), computed with ``weight`` split over the
    ``vocab_axis`` devices (``PartitionSpec(None, vocab_axis)``: each device holds ``[D, V / n]``)
    and, optionally, the rows split over ``batch_axis``. Each device walks its own columns in
    blocks; per-row maxima and sums are combined with ``pmax``/``psum`` (Megatron-LM's
    vocab-parallel cross-entropy), so no device ever holds the ``[N, V]`` logits or all of
    ``weight``. Call it inside ``jax.jit``; inputs are resharded to these layouts as needed.

    Args:
      hidden, weight, labels, bias, where, ignore_index, label_smoothing, z_loss, reduction, block_size:
        as in ``linear_categorical_nll`` (``block_size`` counts columns of one shard).
      mesh: a ``jax.sharding.Mesh``.
      vocab_axis: the mesh axis that splits the vocabulary; V must be divisible by its size.
      batch_axis: an optional mesh axis that splits the rows; N must be divisible by its size.

    Returns:
      As ``linear_categorical_nll``. Differentiable by ``jax.grad`` (a ``custom_vjp``).
    """
    name = "vocab_parallel_linear_categorical_nll"
    fused.check_options(label_smoothing, z_loss, reduction, block_size, ignore_index)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{name}: mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    hidden, weight, labels, bias, where, batch_shape = fused.prepare(
        hidden, weight, labels, bias, where, name=name
    )
    shards = _axis_size(mesh, vocab_axis, "vocab_axis")
    num_classes = weight.shape[1]
    if num_classes % shards:
        raise ValueError(
            f"{name}: V = {num_classes} must be divisible by the {shards} devices of "
            f"vocab_axis={vocab_axis!r}."
        )
    rows = hidden.shape[0]
    if batch_axis is not None:
        if batch_axis == vocab_axis:
            raise ValueError(f"{name}: batch_axis and vocab_axis must differ; both are {vocab_axis!r}.")
        batch_shards = _axis_size(mesh, batch_axis, "batch_axis")
        if rows % batch_shards:
            raise ValueError(
                f"{name}: N = {rows} rows must be divisible by the {batch_shards} devices of "
                f"batch_axis={batch_axis!r}."
            )
        rows //= batch_shards
    local_classes = num_classes // shards
    size = block_size if block_size is not None else fused.default_block_size(rows, local_classes)
    cfg = fused.Config(num_classes, min(size, local_classes), float(label_smoothing), float(z_loss))
    layout = _Layout(mesh, vocab_axis, batch_axis)
    hidden = layout.place(hidden, layout.matrix_rows)
    weight = layout.place(weight, PartitionSpec(None, vocab_axis))
    bias = layout.place(bias, PartitionSpec(vocab_axis))
    labels = layout.place(labels, layout.rows)
    losses = _per_example(hidden, weight, bias, labels, cfg, layout)
    dtype = numerics.float_dtype(hidden, weight, *([] if bias is None else [bias]))
    return fused.reduce(losses, labels, where, ignore_index, reduction, dtype, batch_shape)

r"""What every fused vocabulary kernel shares: the walk over blocks of columns (forward and
backward), the online logsumexp's merge, the vocab-parallel layout, and the one ``custom_vjp``.

A *kernel* (the NLL's ``fused.Config``, the KL's ``distill.KLConfig``) is a frozen, hashable
dataclass of static options with these methods; ``args`` is its tuple of arrays, ``args[1]`` the
``[D, V]`` weight of the model that is differentiated:

* ``specs(args, layout)``: the ``PartitionSpec`` of each argument under ``shard_map``;
* ``block_stats(args, start, size, first_class)``: the per-row statistics of one block of columns,
  each relative to the block's own maxima;
* ``empty(args)``: the statistics of no class at all;
* ``merge(parts, across)``: the statistics of several parts (each relative to its own maxima)
  combined, the reductions over the parts done by ``across`` (``LOCAL``: the parts at hand, a
  carry and a block; ``Across(axis)``: one part per device along a mesh axis, by ``pmax``/``psum``);
* ``outputs(stats, args)``: ``(per-row outputs, residuals)`` from the statistics of the whole
  vocabulary;
* ``block_grad(args, start, size, first_class, residuals, ct)``: the ``[N, B]`` cotangent of one
  block of the differentiated model's logits (the chain rule's ``1 / temperature`` included);
* ``cotangents(args, grads)``: one cotangent per argument from ``(d hidden, d weight, d bias)``.

The forward walk (``local_stats``) folds the blocks with ``merge``, so the online logsumexp is
written once per kernel and serves both a block loop on one device and the combination of the
devices' statistics in the vocab-parallel case; the backward walk (``local_grads``) recomputes
each block and accumulates ``d hidden = sum_b G_b W_b^T``, ``d W_b = hidden^T G_b`` and
``d bias_b = sum_n G_b``. ``run`` is the ``custom_vjp`` around both, on one device or under
``shard_map`` (its forward and backward passes are each one ``shard_map``, so no collective is
ever differentiated). Memory is a block: ``weight`` is never padded or copied, and a vocabulary
not divisible by the block size ends with one narrower tail block.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from mlnll._src import numerics

# Default block: about 2**21 logits (8 MB in float32) per block, so that a block and its
# exponentials stay in a CPU's last-level cache; a multiple of 128 columns, at least 256.
_BLOCK_ELEMENTS = 2**21


def default_block_size(rows: int, num_classes: int) -> int:
    """About ``2**21 / rows`` columns, a multiple of 128 in [256, 16384], at most ``num_classes``."""
    size = max(256, min(16384, (_BLOCK_ELEMENTS // max(rows, 1)) // 128 * 128))
    return min(size, num_classes)


def block_size_for(block_size: int | None, rows: int, local_classes: int) -> int:
    """The block size of one call: the user's (at most the local vocabulary) or the default."""
    size = block_size if block_size is not None else default_block_size(rows, local_classes)
    return min(size, local_classes)


# ----------------------------------------------------------------------------------------------
# One block of logits


def block_logits(hidden, weight_block, bias_block) -> jax.Array:
    """``hidden @ weight_block (+ bias_block)`` in float32 (or wider), ``[N, B]``: the raw logits, before
    any temperature (see ``tempered``)."""
    dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight_block))
    logits = matmul(hidden.astype(dtype), weight_block.astype(dtype), contract=(1, 0))
    if bias_block is not None:
        logits = logits + bias_block.astype(dtype)[None, :]
    return logits


def tempered(difference, temperature: float) -> jax.Array:
    """A difference of raw logits in the units of the tempered logits ``z = a / t``: ``difference / t``.

    The kernels keep raw maxima and divide only differences (``(a - top) / t``, ``(a_y - a_x) / t``),
    never the logits themselves: the max class's ``(a - top) / t`` is then exactly 0 (XLA computes
    ``a / t - top`` as one fma in a consumer's fusion, leaving the rounding error of ``a / t``, 1e-6
    for ``|a / t| ~ 20``, where ``max`` saw the rounded quotient: a confident row's entropy was off
    by 3e-5 of itself), and two models' nearly equal logits keep the relative accuracy of their
    difference (``a_y / t - a_x / t`` would round each to 6e-8 of its size first: a KL of 1e-9 from
    differences of 1e-4 would keep two digits).
    """
    return difference if temperature == 1.0 else difference / temperature


def model_logits(model, start, size: int) -> jax.Array:
    """The block of raw logits of ``model = (hidden, weight, bias | None)`` at columns ``[start, start + size)``."""
    hidden, weight, bias = model
    return block_logits(hidden, columns(weight, start, size, 1), columns(bias, start, size, 0))


def matmul(a, b, *, contract: tuple[int, int]) -> jax.Array:
    """``a`` times ``b`` contracting axis ``contract[0]`` of a with ``contract[1]`` of b, accumulated
    in their (float32 or wider) dtype."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=a.dtype)


def columns(x, start, size: int, axis: int):
    """``size`` entries of ``x`` from ``start`` (traced or static) along ``axis``; None stays None."""
    if x is None:
        return None
    if isinstance(start, int):
        return jax.lax.slice_in_dim(x, start, start + size, axis=axis)
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def is_target(labels, first_class, size: int) -> jax.Array:
    """``[N, B]`` bool: column j of this block (class ``first_class + j``) is the row's label."""
    classes = first_class + jnp.arange(size, dtype=jnp.int32)
    return labels[:, None] == classes[None, :]


# ----------------------------------------------------------------------------------------------
# The online logsumexp


def shift_of(top: jax.Array) -> jax.Array:
    """The shift a row's exponentials are taken against: its max, or 0 while the max is ``-inf``
    (no ``-inf - -inf``)."""
    return jnp.where(top == -jnp.inf, jnp.zeros_like(top), top)


def block_exp(logits, temperature: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(top, shift, u, exps)`` of a block of raw logits: the row maxima ``[N]`` (raw), their shifts,
    the tempered ``u = (logits - shift) / t <= 0`` (exactly 0 at the max) and ``exp(u)``."""
    top = jnp.max(logits, axis=1)
    shift = shift_of(top)
    u = tempered(logits - shift[:, None], temperature)
    return top, shift, u, jnp.exp(u)


def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def _tree_max(a, b):
    return jax.tree.map(jnp.maximum, a, b)


@dataclasses.dataclass(frozen=True)
class Across:
    """How a merge reduces over its parts: ``axis=None``, the parts given (a carry and a block);
    else one part per device along the mesh axis ``axis`` (``pmax``/``psum``, one collective per
    call however many quantities the pytree holds)."""

    axis: str | None = None

    def max(self, parts: Sequence[Any]):
        if self.axis is None:
            return functools.reduce(_tree_max, parts)
        (part,) = parts
        return jax.lax.pmax(part, self.axis)

    def sum(self, parts: Sequence[Any]):
        if self.axis is None:
            return functools.reduce(_tree_add, parts)
        (part,) = parts
        return jax.lax.psum(part, self.axis)


LOCAL = Across()


def common_top(tops: Sequence[jax.Array], across: Across,
               temperature: float) -> tuple[jax.Array, jax.Array, list[jax.Array]]:
    """``(top, shift, scales)``: the max over the parts' (raw) maxima, its shift, and each part's
    ``exp((top_i - shift) / t)`` (<= 1; 0 for a part that has seen only ``-inf``), which carries a sum
    of ``exp((a - top_i) / t)`` over to ``exp((a - top) / t)``."""
    top = across.max(list(tops))
    shift = shift_of(top)
    return top, shift, [jnp.exp(tempered(t - shift, temperature)) for t in tops]


# ----------------------------------------------------------------------------------------------
# The block walks


def over_blocks(num_columns: int, block_size: int, step: Callable, carry):
    """``carry`` folded by ``step(start, size, carry)`` over ``[0, num_columns)`` in blocks: the full
    blocks in a ``fori_loop`` (one compiled body), then the narrower tail block, if any."""
    size = min(block_size, num_columns)
    full_blocks, tail = divmod(num_columns, size)
    if full_blocks == 1:
        carry = step(0, size, carry)
    elif full_blocks > 1:
        carry = jax.lax.fori_loop(0, full_blocks, lambda b, c: step(b * size, size, c), carry)
    if tail:
        carry = step(full_blocks * size, tail, carry)
    return carry


def local_stats(kernel, args, first_class):
    """The kernel's statistics over the (local) columns of ``args[1]``, whose first column is class
    ``first_class``: each block's statistics merged into the carry."""
    def fold(start, size, carry):
        return kernel.merge((carry, kernel.block_stats(args, start, size, first_class + start)), LOCAL)

    return over_blocks(args[1].shape[1], kernel.block_size, fold, kernel.empty(args))


def local_grads(kernel, args, first_class, residuals, ct, *, param_grads_wide: bool = False):
    """``(d hidden, d weight, d bias)`` of the differentiated model ``args[:3]`` over its (local)
    columns, from the blocks' logit cotangents ``G_b`` (``kernel.block_grad``).

    d hidden is in float32 (or float64); d weight and d bias in the parameters' dtypes, or in
    float32 with ``param_grads_wide`` (when they are summed over batch shards afterwards).
    """
    hidden, weight, bias = args[:3]
    dtype = numerics.accumulation_dtype(numerics.float_dtype(hidden, weight))
    rows, local_classes = hidden.shape[0], weight.shape[1]
    hidden_acc = hidden.astype(dtype)
    # Each block writes its own columns of d weight and d bias once: they are kept in the
    # parameters' dtypes; only d hidden accumulates over blocks (in float32).
    weight_dtype = dtype if param_grads_wide else weight.dtype
    bias_dtype = dtype if (bias is None or param_grads_wide) else bias.dtype

    def put(start, size, acc):
        d_hidden, d_weight, d_bias = acc
        g = kernel.block_grad(args, start, size, first_class + start, residuals, ct)
        weight_block = columns(weight, start, size, 1)
        dh = matmul(g, weight_block.astype(dtype), contract=(1, 1))  # G_b W_b^T, [N, D]
        dw = matmul(hidden_acc, g, contract=(0, 0))  # hidden^T G_b, [D, B]
        d_weight = jax.lax.dynamic_update_slice_in_dim(d_weight, dw.astype(weight_dtype), start, axis=1)
        d_bias = jax.lax.dynamic_update_slice_in_dim(d_bias, jnp.sum(g, axis=0).astype(bias_dtype), start, axis=0)
        return d_hidden + dh, d_weight, d_bias

    acc = (
        jnp.zeros((rows, hidden.shape[1]), dtype),
        jnp.zeros((weight.shape[0], local_classes), weight_dtype),
        jnp.zeros((local_classes,), bias_dtype),
    )
    return over_blocks(local_classes, kernel.block_size, put, acc)


def model_cotangents(hidden, weight, bias, grads) -> tuple:
    """The cotangents of one model's ``(hidden, weight, bias)``: the float32 gradients cast to their
    inputs' dtypes, None for an absent bias."""
    d_hidden, d_weight, d_bias = grads
    return (d_hidden.astype(hidden.dtype), d_weight.astype(weight.dtype),
            None if bias is None else d_bias.astype(bias.dtype))


# ----------------------------------------------------------------------------------------------
# Where things live when the vocabulary is sharded


@dataclasses.dataclass(frozen=True)
class Sharding:
    """What a vocab-parallel call asked for (validated by ``layout_for``)."""

    mesh: Any
    vocab_axis: Any
    batch_axis: Any = None


@dataclasses.dataclass(frozen=True)
class Layout:
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

    @property
    def columns(self) -> PartitionSpec:
        return PartitionSpec(None, self.vocab_axis)

    def vector(self, x) -> PartitionSpec | None:
        """The spec of a ``[V]`` bias (None for an absent one)."""
        return None if x is None else PartitionSpec(self.vocab_axis)

    def model(self, model) -> tuple:
        """The specs of one model's ``(hidden, weight, bias)``: rows, vocabulary columns, vocabulary."""
        return (self.matrix_rows, self.columns, self.vector(model[2]))

    def place(self, x, spec: PartitionSpec | None):
        """``x`` laid out as ``spec`` on the mesh (explicit meshes reshard, auto meshes constrain)."""
        if x is None or spec is None:  # an absent bias (its spec is None too)
            return x
        sharding = jax.sharding.NamedSharding(self.mesh, spec)
        if all(t == jax.sharding.AxisType.Explicit for t in self.mesh.axis_types):
            return jax.reshard(x, sharding)
        return jax.lax.with_sharding_constraint(x, sharding)

    def place_rows(self, tree):
        return jax.tree.map(lambda x: self.place(x, self.rows), tree)

    def shard_map(self, f, in_specs, out_specs):
        # check_vma=False: the block loop's carries start replicated and become device-varying.
        return jax.shard_map(f, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)

    def first_class(self, args):
        """The global index of this device's first class (inside ``shard_map``)."""
        return jax.lax.axis_index(self.vocab_axis) * args[1].shape[1]

    def sum_params(self, d_weight, d_bias):
        """Parameter gradients summed over batch shards (each shard saw only its rows)."""
        if self.batch_axis is None:
            return d_weight, d_bias
        return jax.lax.psum(d_weight, self.batch_axis), jax.lax.psum(d_bias, self.batch_axis)


def _shards(name: str, mesh: Mesh, axis, role: str, count: int, what: str) -> int:
    """The number of devices along ``axis``, which must divide ``count`` (V or N, named by ``what``)."""
    if axis not in mesh.shape:
        raise ValueError(f"{role}={axis!r} is not an axis of the mesh; its axes are {tuple(mesh.shape)}.")
    if count % mesh.shape[axis]:
        raise ValueError(f"{name}: {what} must be divisible by the {mesh.shape[axis]} devices of {role}={axis!r}.")
    return mesh.shape[axis]


def layout_for(name: str, sharding: Sharding | None, num_classes: int, rows: int) -> tuple[Layout | None, int, int]:
    """``(layout, local classes, local rows)``: ``(None, V, N)`` on one device, else the validated
    layout, or the error naming what does not divide."""
    if sharding is None:
        return None, num_classes, rows
    mesh, vocab_axis, batch_axis = sharding.mesh, sharding.vocab_axis, sharding.batch_axis
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{name}: mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    local_classes = num_classes // _shards(name, mesh, vocab_axis, "vocab_axis", num_classes, f"V = {num_classes}")
    if batch_axis is not None:
        if batch_axis == vocab_axis:
            raise ValueError(f"{name}: batch_axis and vocab_axis must differ; both are {vocab_axis!r}.")
        rows //= _shards(name, mesh, batch_axis, "batch_axis", rows, f"N = {rows} rows")
    return Layout(mesh, vocab_axis, batch_axis), local_classes, rows


# ----------------------------------------------------------------------------------------------
# The custom_vjp


def apply(kernel, layout: Layout | None, args: tuple):
    """The kernel's per-row outputs of ``args``, its arguments first laid out on the mesh."""
    if layout is not None:
        args = tuple(layout.place(x, spec) for x, spec in zip(args, kernel.specs(args, layout)))
    return run(kernel, layout, *args)


def _statistics(kernel, layout: Layout | None, args: tuple):
    if layout is None:
        return local_stats(kernel, args, 0)
    across = Across(layout.vocab_axis)

    def local(*a):
        return kernel.merge((local_stats(kernel, a, layout.first_class(a)),), across)

    return layout.shard_map(local, kernel.specs(args, layout), layout.rows)(*args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def run(kernel, layout: Layout | None, *args):
    """The kernel's per-row outputs: on one device (``layout=None``) or vocab-parallel."""
    return kernel.outputs(_statistics(kernel, layout, args), args)[0]


def _run_fwd(kernel, layout, *args):
    out, residuals = kernel.outputs(_statistics(kernel, layout, args), args)
    return out, (args, residuals)


def _run_bwd(kernel, layout: Layout | None, saved, ct):
    args, residuals = saved
    if layout is None:
        grads = local_grads(kernel, args, 0, residuals, ct)
    else:
        wide = layout.batch_axis is not None

        def local(a, res, c):
            d_hidden, d_weight, d_bias = local_grads(kernel, a, layout.first_class(a), res, c, param_grads_wide=wide)
            return (jax.lax.psum(d_hidden, layout.vocab_axis), *layout.sum_params(d_weight, d_bias))

        in_specs = (kernel.specs(args, layout), layout.rows, layout.rows)
        out_specs = (layout.matrix_rows, layout.columns, PartitionSpec(layout.vocab_axis))
        grads = layout.shard_map(local, in_specs, out_specs)(args, layout.place_rows(residuals), layout.place_rows(ct))
    return tuple(kernel.cotangents(args, grads))


run.defvjp(_run_fwd, _run_bwd)

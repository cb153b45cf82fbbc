"""Trace-time checks shared by the families and ``nll``: each error names the argument, what was
expected and what was received."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def float_outputs(x, *, where: str) -> jax.Array:
    """``x`` as an array, which must be floating: raw outputs are logits or locations, never ints."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{where} must be a floating array (raw network outputs); got dtype {x.dtype}. "
            "Cast it, e.g. x.astype(jnp.float32)."
        )
    return x


def numeric_targets(y, *, where: str) -> jax.Array:
    """``y`` as an array of a numeric (bool, integer or floating) dtype."""
    y = jnp.asarray(y)
    if not (jnp.issubdtype(y.dtype, jnp.number) or y.dtype == jnp.bool_):
        raise TypeError(f"{where} must be numeric; got dtype {y.dtype}.")
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{where} must be real; got dtype {y.dtype}.")
    return y


def broadcast_shapes(family: str, named_shapes: Sequence[tuple[str, tuple[int, ...]]]) -> tuple[int, ...]:
    """The broadcast of the named shapes, which must be one of them; else a ``ValueError`` naming
    every shape given.

    Broadcasting that keeps one side's shape (a scalar target, a shared scale, [N] against [N]) is
    what losses need. A broadcast equal to none of the shapes is an outer product of batch axes:
    outputs [N, 1] against targets [N] would give [N, N] losses and a plausible, wrong mean, the
    commonest shape slip in regression code (optax raises there too). It is refused at trace time.
    """
    shapes = [tuple(shape) for _, shape in named_shapes]
    listed = ", ".join(f"{name} shape {shape}" for (name, _), shape in zip(named_shapes, shapes))
    try:
        shape = tuple(jnp.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"{family}: shapes do not broadcast: {listed}.") from None
    if shape not in shapes:
        raise ValueError(
            f"{family}: {listed} would broadcast to {shape}, which is none of them: an outer product of the "
            "batch axes, most often a trailing axis of size 1 (outputs [N, 1] against targets [N]). Drop "
            "that axis (x[..., 0] or x.reshape(-1)), or jnp.broadcast_to both to one shape if the outer "
            "product is meant."
        )
    return shape


def outputs_tuple(outputs, names: Sequence[str], *, family: str) -> tuple[jax.Array, ...]:
    """Unpack a family's tuple of raw outputs, checking its length and each entry's dtype."""
    if not isinstance(outputs, (tuple, list)) or len(outputs) != len(names):
        got = f"a {type(outputs).__name__} of length {len(outputs)}" if isinstance(outputs, (tuple, list)) else f"a single {type(outputs).__name__}"
        raise TypeError(f"{family} outputs must be a tuple ({', '.join(names)}); got {got}.")
    return tuple(float_outputs(x, where=f"{family} outputs[{i}] ({name})") for i, (x, name) in enumerate(zip(outputs, names)))

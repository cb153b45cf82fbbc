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
    """The broadcast of the named shapes, or a ``ValueError`` naming every shape given."""
    try:
        return jnp.broadcast_shapes(*(shape for _, shape in named_shapes))
    except ValueError:
        listed = ", ".join(f"{name} shape {tuple(shape)}" for name, shape in named_shapes)
        raise ValueError(f"{family}: shapes do not broadcast: {listed}.") from None


def outputs_tuple(outputs, names: Sequence[str], *, family: str) -> tuple[jax.Array, ...]:
    """Unpack a family's tuple of raw outputs, checking its length and each entry's dtype."""
    if not isinstance(outputs, (tuple, list)) or len(outputs) != len(names):
        got = f"a {type(outputs).__name__} of length {len(outputs)}" if isinstance(outputs, (tuple, list)) else f"a single {type(outputs).__name__}"
        raise TypeError(f"{family} outputs must be a tuple ({', '.join(names)}); got {got}.")
    return tuple(float_outputs(x, where=f"{family} outputs[{i}] ({name})") for i, (x, name) in enumerate(zip(outputs, names)))

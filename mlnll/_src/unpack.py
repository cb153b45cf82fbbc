"""The one parameter-unpacking layer: raw outputs by name, validated, upcast and broadcast.

Every family turns its raw outputs into named arrays here (``p = unpack(...)``; ``p.loc``,
``p.log_scale``, ``p.dtype``), never by tuple position, and broadcasts them against the targets
with ``with_targets``. Errors name the family, the argument, what was expected and what came.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, validate


class Params(Mapping):
    """Named raw outputs (a read-only mapping, also by attribute: ``p.log_rate``).

    Every array is in the accumulation dtype and broadcast to one batch shape (``p.batch_shape``)
    plus its own event axes; ``p.dtype`` is the dtype results are returned in.
    """

    __slots__ = ("_arrays", "dtype", "batch_shape")
    _arrays: dict[str, jax.Array]
    dtype: np.dtype
    batch_shape: tuple[int, ...]

    def __init__(self, arrays: Mapping[str, jax.Array], dtype, batch_shape: tuple[int, ...]):
        object.__setattr__(self, "_arrays", dict(arrays))
        object.__setattr__(self, "dtype", np.dtype(dtype))
        object.__setattr__(self, "batch_shape", tuple(batch_shape))

    def __getitem__(self, name: str) -> jax.Array:
        return self._arrays[name]

    def __getattr__(self, name: str) -> jax.Array:
        try:
            return self._arrays[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def replace(self, **arrays: jax.Array) -> Params:
        """A copy with some arrays replaced (same dtype and batch shape)."""
        return Params({**self._arrays, **arrays}, self.dtype, self.batch_shape)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self._arrays.items())
        return f"Params({shapes}; dtype {self.dtype})"


def free_names(names: Sequence[str], fixed: Mapping[str, float]) -> tuple[str, ...]:
    """The raw outputs a family takes, in table order: ``names`` less the ``fixed`` ones."""
    return tuple(n for n in names if n not in fixed)


def _leaves(outputs, free: Sequence[str], family: str, fixed: Sequence[str]) -> list[jax.Array]:
    if len(free) == 1:
        if isinstance(outputs, (tuple, list)):
            fixes = f"fixes {', '.join(fixed)} and " if fixed else ""
            # A list is a container of outputs everywhere in mlnll (as a tuple is), never an array.
            hint = " (a list of numbers as one array: jnp.asarray(...))" if isinstance(outputs, list) else ""
            raise TypeError(
                f"{family} {fixes}takes {free[0]} alone as outputs; got a "
                f"{type(outputs).__name__} of length {len(outputs)}{hint}."
            )
        return [validate.float_outputs(outputs, where=f"{family} outputs ({free[0]})")]
    return list(validate.outputs_tuple(outputs, free, family=family))


def unpack(outputs, *, family: str, names: Sequence[str], fixed: Mapping[str, float] | None = None,
           event_ndims: Mapping[str, int] | None = None, upcast: bool = True) -> Params:
    """Raw outputs by name, in the accumulation dtype, broadcast together, and the result dtype.

    ``names`` are all raw outputs in table order (e.g. ``("loc", "log_scale")``); those in
    ``fixed`` (name -> raw value, e.g. ``{"log_scale": log(2.0)}``) are not taken from ``outputs``
    but filled in. With one free output, ``outputs`` is that array alone; otherwise a tuple.
    ``event_ndims`` gives the trailing event axes of an output (e.g. ``{"logits": 1}`` for a class
    axis), which do not broadcast; ``upcast=False`` keeps a 16-bit dtype as it is.
    """
    fixed = fixed or {}
    event_ndims = event_ndims or {}
    free = free_names(names, fixed)
    arrays = _leaves(outputs, free, family, [n for n in names if n in fixed])
    for name, a in zip(free, arrays):
        need = event_ndims.get(name, 0)
        if a.ndim < need:
            axes = "a class axis, shape [..., C]" if need == 1 else f"{need} event axes"
            raise ValueError(f"{family} outputs ({name}) need {axes}; got shape {a.shape}.")
        if need and 0 in a.shape[a.ndim - need:]:
            raise ValueError(f"{family} outputs ({name}): an event axis of size 0 (shape {a.shape}); "
                             "a distribution needs at least one class or dimension.")
    # An output with event axes is named by its batch part, "loc[..., :-1] (batch)", in an error.
    batches = [(f"{n}[..., :-{k}] (batch)" if (k := event_ndims.get(n, 0)) else n, a.shape[: a.ndim - k])
               for n, a in zip(free, arrays)]
    batch = validate.broadcast_shapes(family, batches) if len(batches) > 1 else batches[0][1]
    dtype = numerics.float_dtype(*arrays)
    if upcast:
        arrays, dtype = numerics.upcast(*arrays)
    params = {}
    for n, a in zip(free, arrays):
        event = a.shape[a.ndim - event_ndims.get(n, 0):]
        params[n] = jnp.broadcast_to(a, batch + event)
    for n in names:
        if n in fixed:
            params[n] = jnp.full(batch, fixed[n], arrays[0].dtype)
    return Params({n: params[n] for n in names}, dtype, batch)


def with_targets(params: Params, targets, *, family: str, event_ndim: int = 0,
                 cast: bool = True) -> tuple[Params, jax.Array]:
    """``params`` and the targets broadcast to one batch shape.

    The targets' last ``event_ndim`` axes are their event (a vector target); ``cast`` converts them
    to the parameters' dtype (counts and reals), otherwise they keep theirs (integer labels).

    Targets are never rounded into (or out of) the support: floating targets wider than the
    parameters (float64 targets of float32 outputs, under x64) make the whole computation run in
    their dtype (the result keeps the outputs' dtype), and an integer target that the working
    dtype cannot hold exactly (beyond 2^24 in float32) becomes NaN, i.e. outside every support
    (``-inf``), instead of a neighbouring count.
    """
    y = validate.numeric_targets(targets, where=f"{family} targets")
    if y.ndim < event_ndim:
        raise ValueError(f"{family} targets need {event_ndim} event axes; got shape {y.shape}.")
    y_batch = y.shape[: y.ndim - event_ndim]
    batch = validate.broadcast_shapes(family, [("outputs", params.batch_shape), ("targets", y_batch)])
    if cast:
        params, y = _targets_in_working_dtype(params, y)
    y = jnp.broadcast_to(y, batch + y.shape[y.ndim - event_ndim:])
    arrays = {}
    for n, a in params.items():
        event = a.shape[len(params.batch_shape):]
        arrays[n] = jnp.broadcast_to(a, batch + event)
    return Params(arrays, params.dtype, batch), y


def _targets_in_working_dtype(params: Params, y: jax.Array) -> tuple[Params, jax.Array]:
    """``(params, y)`` in one floating dtype that holds the targets as given (see ``with_targets``)."""
    working = np.dtype(next(iter(params.values())).dtype)
    if jnp.issubdtype(y.dtype, jnp.floating):
        # numerics.widen, not astype: XLA:CPU's convert reads a float32 subnormal as 0.
        if np.dtype(y.dtype).itemsize > working.itemsize:
            widened = {n: numerics.widen(a, y.dtype) for n, a in params.items()}
            return Params(widened, params.dtype, params.batch_shape), y
        narrower = np.dtype(y.dtype).itemsize < working.itemsize
        return params, numerics.widen(y, working) if narrower else y.astype(working)
    exact_limit = 2 ** (jnp.finfo(working).nmant + 1)  # every integer up to here is exact
    if jnp.issubdtype(y.dtype, jnp.integer) and jnp.iinfo(y.dtype).max > exact_limit:
        # Exact when it converts back to itself (1e9 is a float32; 10**9 + 1 is not), the float
        # below 2^(bits-1), where converting back would saturate (int32 2^31 - 1 -> 2^31).
        as_float = y.astype(working)
        bound = float(2 ** (8 * np.dtype(y.dtype).itemsize - 1))
        exact = (as_float.astype(y.dtype) == y) & (jnp.abs(as_float) < bound)
        return params, jnp.where(exact, as_float, jnp.full(y.shape, jnp.nan, working))
    return params, y.astype(working)


def pack(values: Mapping[str, jax.Array], names: Sequence[str], fixed: Mapping[str, float], dtype):
    """The free entries of ``values`` in table order, cast to ``dtype``: a tuple, or one array
    (the same layout as the outputs, e.g. for a gradient or ``mle``)."""
    free = [values[n].astype(dtype) for n in free_names(names, fixed)]
    return free[0] if len(free) == 1 else tuple(free)

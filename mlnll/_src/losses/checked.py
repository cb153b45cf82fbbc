"""``checked(loss)``: a loss that refuses bad values with an error naming the argument, the
problem, the first offending flat index and its value, wherever the loss runs: eagerly, inside a
user's ``jax.jit``, under ``grad``, ``vmap``, ``lax.scan`` or ``jax.checkpoint``, on sharded inputs.

Shapes and dtypes are checked at trace time by every loss already; this adds the checks that need
values (the family's ``value_checks``: labels out of range, non-finite outputs, soft targets off
the simplex, targets outside the support; and negative weights). Each check reduces its mask to
three numbers (any bad, the first bad flat index, its value) and hands them to a host callback
(``jax.debug.callback``, an effect XLA keeps) that raises for the first check that found one. The user writes
no ``checkify``: the error stops the computation that contains the loss.
"""

from __future__ import annotations

import functools
import re
from typing import Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src.losses import checks
from mlnll._src.losses import reduce as reduce_
from mlnll._src.family import Outputs, Targets
from mlnll._src.losses.nll import Loss


class CheckError(ValueError):
    """A bad value found by ``mlnll.checked``; the message names the argument, the problem, the
    first offending flat index and its value. Inside a jit-compiled function it reaches the caller
    wrapped in a ``jax.errors.JaxRuntimeError`` whose message contains this one."""


# The host callback runs on one of XLA's threads, so its message is read back from the runtime
# error's text (a thread-local set there was invisible to the caller, now and then).
_CHECK_ERROR_LINE = re.compile(r"CheckError: (.+)")


class CheckedLoss(Protocol):
    """What ``checked(loss)`` returns: called like the loss; ``.loss`` is the unchecked one."""

    loss: Loss

    def __call__(self, outputs: Outputs, targets: Targets, *, where: ArrayLike | None = None,
                 weights: ArrayLike | None = None) -> jax.Array: ...


def _first(bad: jax.Array, values: jax.Array):
    """Whether nothing is bad, the flat index of the first bad entry, and its value.

    The common case costs one ``any`` (a reduction XLA can fuse with the loss's own passes over the
    same array); the ``argmax`` that finds the index runs only when something is bad.
    """
    flat, flat_values = jnp.reshape(bad, (-1,)), jnp.reshape(values, (-1,))
    any_bad = jnp.any(flat)

    def locate(flat, flat_values):
        index = jnp.argmax(flat)
        return index, flat_values[index]

    def nowhere(flat, flat_values):
        return jnp.zeros((), jax.dtypes.canonicalize_dtype(jnp.int_)), jnp.zeros((), flat_values.dtype)

    index, value = jax.lax.cond(any_bad, locate, nowhere, flat, flat_values)
    return ~any_bad, index, value


def _show(value) -> str:
    """A value as its own dtype prints it (float32 1.3 as 1.3, not 1.2999999523162842)."""
    return str(np.asarray(value)[()])


def _raise_first_bad(found, *, messages: tuple[str, ...]) -> None:
    """The host side of the checks: raise for the first check (in list order) that found a bad
    value. Under ``vmap`` each check's three numbers arrive batched: the first bad example is shown."""
    for (ok, index, value), message in zip(found, messages):
        ok, index, value = (np.asarray(a).reshape(-1) for a in (ok, index, value))
        if np.all(ok):
            continue
        first = int(np.argmin(ok))
        text = message.format(i=int(index[first]), v=_show(value[first]))
        raise CheckError(text)


def value_checks(loss: Loss, outputs, targets, weights, where=None) -> list[checks.ValueCheck]:
    """The family's own checks (``value_checks``) or the default ones, with the checks every family
    gets: NaN targets (after the family's checks of the outputs, before its checks of the targets;
    unless a family check flags them already) and the weights' sign. Examples dropped by ``where``
    or a zero weight are exempt: the loss ignores whatever they hold."""
    family_checks = getattr(loss.family, "value_checks", None)
    if family_checks is None:
        found = checks.default_checks(loss.family, outputs, targets)
    else:
        found = list(family_checks(outputs, targets, loss.options))
    if not any(c.nan_targets for c in found):
        is_output = [c.message.startswith("outputs") for c in found]
        first_other = is_output.index(False) if False in is_output else len(found)
        found[first_other:first_other] = checks.not_nan_targets(targets)
    found += checks.nonnegative_weights(weights)
    if where is None and weights is None:
        return found
    batch = jax.eval_shape(lambda o, t: loss.per_example(o, t), outputs, targets)
    keep = reduce_.example_weights(batch.shape, batch.dtype, where=where, weights=weights) != 0
    return [c._replace(bad=_kept(c.bad, keep)) for c in found]


def _kept(bad: jax.Array, keep: jax.Array) -> jax.Array:
    """``bad`` cleared in dropped examples, where its leading axes are the batch's (a leaf shared
    across the batch, a scalar scale, stays as it is), as the loss isolates dropped rows."""
    if bad.shape[: keep.ndim] != keep.shape:
        return bad
    return bad & jnp.reshape(keep, keep.shape + (1,) * (bad.ndim - keep.ndim))


def _checked_body(loss: Loss, outputs, targets, where, weights):
    found = value_checks(loss, outputs, targets, weights, where)
    # One callback for all the checks, so the first problem in list order is the one reported
    # (outputs before targets before weights), whatever order XLA runs things in.
    summaries = [_first(jax.lax.stop_gradient(c.bad), jax.lax.stop_gradient(c.values)) for c in found]
    jax.debug.callback(functools.partial(_raise_first_bad, messages=tuple(c.message for c in found)), summaries)
    return loss(outputs, targets, where=where, weights=weights)


@functools.lru_cache(maxsize=64)
def _compiled(loss: Loss):
    return jax.jit(functools.partial(_checked_body, loss))


def _traced(*args) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))


def checked(loss: Loss) -> CheckedLoss:
    """A version of ``loss`` that raises on bad values instead of returning a number.

    It composes with everything the loss does: call it eagerly, or inside your own ``jax.jit``,
    ``jax.grad``/``value_and_grad``, ``vmap``, ``lax.scan`` (a training loop), ``jax.checkpoint``,
    with sharded inputs. A bad value stops the computation with the argument, the problem, the
    first offending flat index and its value: "targets: label out of range at flat index 3: got 7,
    expected 0..4", "outputs (leaf 0): non-finite at flat index 5: got nan", "targets: soft targets
    do not sum to 1 ...", "weights: negative ...", "targets: outside the support ...". Called
    eagerly it raises ``mlnll.CheckError``; inside a compiled function the error reaches the caller
    as a ``jax.errors.JaxRuntimeError`` whose message contains the same text. Nothing to wrap: no
    ``checkify`` is needed. The unchecked ``loss`` is unchanged (and pays nothing).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> safe = mlnll.checked(mlnll.nll(mlnll.Categorical()))
      >>> safe(jnp.zeros((2, 3)), jnp.array([0, 5]))
      Traceback (most recent call last):
      ...
      mlnll._src.losses.checked.CheckError: targets: label out of range at flat index 1: got 5, expected 0..2
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"checked needs a loss made by mlnll.nll(...); got {type(loss).__name__}.")

    def checked_loss(outputs: Outputs, targets: Targets, *, where: ArrayLike | None = None,
                     weights: ArrayLike | None = None) -> jax.Array:
        if _traced(outputs, targets, where, weights):
            return _checked_body(loss, outputs, targets, where, weights)
        try:
            return jax.block_until_ready(_compiled(loss)(outputs, targets, where, weights))
        except jax.errors.JaxRuntimeError as error:
            found = _CHECK_ERROR_LINE.findall(str(error))
            if found:
                raise CheckError(found[-1].strip()) from None
            raise

    checked_loss.__doc__ = f"{loss!r}, with value checks (mlnll.checked)."
    checked_loss.loss = loss  # type: ignore[attr-defined]  # a function attribute, which mypy does not model
    return cast(CheckedLoss, checked_loss)

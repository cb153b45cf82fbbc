"""``checked(loss)``: a loss that refuses bad values with an error naming the problem, the first
offending index and its value, including when it runs jit-compiled (``jax.experimental.checkify``).

Shapes and dtypes are checked at trace time by every loss already; this adds the checks that need
values: labels out of range, non-finite outputs, soft targets that do not sum to 1, negative
weights, and targets outside the family's support.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from mlnll._src.losses import checks
from mlnll._src.losses.nll import Loss


def _first(bad: jax.Array, values: jax.Array):
    """Whether nothing is bad, the flat index of the first bad entry, and its value."""
    flat = bad.reshape(-1)
    index = jnp.argmax(flat)
    return ~jnp.any(flat), index, values.reshape(-1)[index]


def value_checks(loss: Loss, outputs, targets, weights) -> list[checks.ValueCheck]:
    """The family's own checks (``value_checks``) or the default ones, and the weights' sign."""
    family_checks = getattr(loss.family, "value_checks", None)
    if family_checks is None:
        found = checks.default_checks(loss.family, outputs, targets)
    else:
        found = list(family_checks(outputs, targets, loss.options))
    return found + checks.nonnegative_weights(weights)


def _checked_body(loss: Loss, outputs, targets, where, weights):
    for check in value_checks(loss, outputs, targets, weights):
        ok, index, value = _first(check.bad, check.values)
        checkify.check(ok, check.message, i=index, v=value)
    return loss(outputs, targets, where=where, weights=weights)


@functools.lru_cache(maxsize=64)
def _compiled(loss: Loss):
    return jax.jit(checkify.checkify(functools.partial(_checked_body, loss)))


def _traced(*args) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(args))


def checked(loss: Loss):
    """A version of ``loss`` that raises on bad values instead of returning a number.

    Called on concrete arrays, it runs the checks and the loss jit-compiled (checkify underneath)
    and raises ``checkify.JaxRuntimeError`` naming the first problem: "label out of range at flat
    index 3: got 7, expected 0..4", "non-finite outputs (leaf 0) at flat index 5: got nan",
    "soft targets do not sum to 1 ...", "weights negative ...", "target outside the support ...".
    Called inside your own ``jit``/``grad``, its checks are ``checkify.check`` calls: wrap the
    outer function with ``jax.experimental.checkify.checkify`` and call ``err.throw()``, as usual.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> safe = mlnll.checked(mlnll.nll(mlnll.Categorical()))
      >>> safe(jnp.zeros((2, 3)), jnp.array([0, 5]))
      Traceback (most recent call last):
      ...
      jax._src.checkify.JaxRuntimeError: label out of range at flat index 1: got 5, expected 0..2...
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"checked needs a loss made by mlnll.nll(...); got {type(loss).__name__}.")

    def checked_loss(outputs, targets, *, where=None, weights=None):
        if _traced(outputs, targets, where, weights):
            return _checked_body(loss, outputs, targets, where, weights)
        err, value = _compiled(loss)(outputs, targets, where, weights)
        err.throw()
        return value

    checked_loss.__doc__ = f"{loss!r}, with value checks (mlnll.checked)."
    return checked_loss

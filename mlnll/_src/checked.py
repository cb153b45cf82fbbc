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
import numpy as np
from jax.experimental import checkify

from mlnll._src import numerics
from mlnll._src.families.bernoulli import Bernoulli
from mlnll._src.families.categorical import Categorical
from mlnll._src.nll import Loss

# Logit families: a -inf logit is a legitimate probability of 0 (e.g. a masked class).
_LOGIT_FAMILIES = (Bernoulli, Categorical)


def _first(bad: jax.Array, values: jax.Array):
    """Whether nothing is bad, the flat index of the first bad entry, and its value."""
    flat = bad.reshape(-1)
    index = jnp.argmax(flat)
    return ~jnp.any(flat), index, values.reshape(-1)[index]


def _check_outputs(loss: Loss, outputs) -> None:
    allow_neg_inf = isinstance(loss.family, _LOGIT_FAMILIES)
    for number, leaf in enumerate(jax.tree.leaves(outputs)):
        leaf = jnp.asarray(leaf)
        bad = jnp.isnan(leaf) | jnp.isposinf(leaf)
        if not allow_neg_inf:
            bad = bad | jnp.isneginf(leaf)
        ok, index, value = _first(bad, leaf)
        checkify.check(ok, f"non-finite outputs (leaf {number}) at flat index {{i}}: got {{v}}", i=index, v=value)


def _check_categorical_targets(loss: Loss, outputs, targets) -> None:
    targets = jnp.asarray(targets)
    num_classes = jnp.shape(outputs)[-1]
    if jnp.issubdtype(targets.dtype, jnp.floating):
        total = jnp.sum(targets.astype(numerics.accumulation_dtype(targets.dtype)), axis=-1)
        tol = float(np.sqrt(np.finfo(targets.dtype).eps)) * max(1.0, num_classes / 8)
        ok, index, value = _first(jnp.abs(total - 1) > tol, total)
        checkify.check(ok, "soft targets do not sum to 1 at flat index {i}: the sum is {v}", i=index, v=value)
        return
    ignore = dict(loss.options).get("ignore_index")
    in_range = (targets >= 0) & (targets < num_classes)
    if ignore is not None:
        in_range = in_range | (targets == ignore)
    ok, index, value = _first(~in_range, targets)
    expected = f"0..{num_classes - 1}" + (f" or ignore_index={ignore}" if ignore is not None else "")
    checkify.check(ok, f"label out of range at flat index {{i}}: got {{v}}, expected {expected}", i=index, v=value)


def _check_support(loss: Loss, outputs, targets) -> None:
    """Any target whose log-likelihood is -inf at finite outputs is outside the support."""
    log_prob = loss.family.log_prob(outputs, targets)
    bad = jnp.isneginf(log_prob)
    if isinstance(loss.family, Categorical):
        return  # labels and soft targets were checked above, with -inf logits allowed
    targets = jnp.broadcast_to(jnp.asarray(targets), bad.shape + jnp.shape(targets)[bad.ndim:])
    shown = targets if targets.shape == bad.shape else jnp.zeros(bad.shape, log_prob.dtype)
    ok, index, value = _first(bad, shown)
    checkify.check(ok, "target outside the support at flat index {i}: got {v}", i=index, v=value)


def _check_weights(weights) -> None:
    if weights is None:
        return
    weights = jnp.asarray(weights)
    ok, index, value = _first(weights < 0, weights)
    checkify.check(ok, "weights negative at flat index {i}: got {v}", i=index, v=value)


def _checked_body(loss: Loss, outputs, targets, where, weights):
    _check_outputs(loss, outputs)
    if isinstance(loss.family, Categorical):
        _check_categorical_targets(loss, outputs, targets)
    _check_support(loss, outputs, targets)
    _check_weights(weights)
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

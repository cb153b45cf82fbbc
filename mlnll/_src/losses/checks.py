"""The value checks ``checked()`` runs, as data: a family's ``value_checks`` returns a list of
``ValueCheck`` built from the shared pieces below (or its own), and ``checked`` decides how to
raise. Each check names the problem, and the message shows the first offending flat index and value.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ValueCheck(NamedTuple):
    """``bad``: a boolean array marking offending entries; ``values``: what to show for them (same
    shape); ``message``: the problem, with ``{i}`` (flat index) and ``{v}`` (value) placeholders;
    ``nan_targets``: whether this check already flags every NaN target (at its flat index, showing
    it), so that ``checked`` need not add ``not_nan_targets`` (one pass over the targets fewer)."""

    bad: jax.Array
    values: jax.Array
    message: str
    nan_targets: bool = False


def finite_outputs(outputs, *, allow_neg_inf: bool = False) -> list[ValueCheck]:
    """NaN or infinite raw outputs, leaf by leaf; ``allow_neg_inf`` for logits (a probability of 0)."""
    checks = []
    for number, leaf in enumerate(jax.tree.leaves(outputs)):
        leaf = jnp.asarray(leaf)
        bad = jnp.isnan(leaf) | jnp.isposinf(leaf)
        if not allow_neg_inf:
            bad = bad | jnp.isneginf(leaf)
        checks.append(ValueCheck(bad, leaf, f"outputs (leaf {number}): non-finite at flat index {{i}}: got {{v}}"))
    return checks


def in_support(family, outputs, targets) -> ValueCheck:
    """Targets whose log-likelihood is ``-inf`` (outside the family's support) or NaN (a NaN
    target) at these outputs."""
    log_prob = family.log_prob(outputs, targets)
    bad = jnp.isneginf(log_prob) | jnp.isnan(log_prob)
    targets = jnp.asarray(targets)
    scalar_targets = targets.ndim <= bad.ndim and jnp.broadcast_shapes(targets.shape, bad.shape) == bad.shape
    if scalar_targets:
        # A NaN target has a NaN (or -inf) log-likelihood: this check reports it, showing the NaN.
        shown = jnp.broadcast_to(targets, bad.shape)
        return ValueCheck(bad, shown, "targets: outside the support at flat index {i}: got {v}",
                          nan_targets=targets.shape == bad.shape)
    # Vector targets (an event axis) have no single value to show: the index is the example's, a
    # flat index into the batch shape, and the value its log-likelihood.
    message = "targets: outside the support at flat index {i} (an example of vector targets): log_prob is {v}"
    return ValueCheck(bad, log_prob, message)


def not_nan_targets(targets) -> list[ValueCheck]:
    """NaN targets, leaf by leaf, for every family: ``checked`` adds it to the family's own checks
    (after the outputs' ones) unless one of them says it flags NaN targets already (``nan_targets``).
    A NaN target has no likelihood whatever the support, and a density may map it to a number or to
    -inf. Integer and bool leaves cannot be NaN: no check."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(targets)]
    found = []
    for number, leaf in enumerate(leaves):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            name = "targets" if len(leaves) == 1 else f"targets (leaf {number})"
            found.append(ValueCheck(jnp.isnan(leaf), leaf, f"{name}: NaN at flat index {{i}}: got {{v}}"))
    return found


def some_class_possible(logits, *, leaf: int = 0) -> ValueCheck:
    """Rows of logits ``[..., C]`` whose every entry is ``-inf``: no class has a probability > 0, so
    the softmax is 0/0 (NaN). ``bad`` has the batch shape ``[...]``; the value shown is the row's max."""
    logits = jnp.asarray(logits)
    row_max = jnp.max(logits, axis=-1)
    message = (f"outputs (leaf {leaf}): every logit is -inf (no class possible) at flat index {{i}}: "
               "the max is {v}")
    return ValueCheck(jnp.isneginf(row_max), row_max, message)


def nonnegative_weights(weights) -> list[ValueCheck]:
    """Negative, infinite or NaN per-example weights (none to check when ``weights`` is None)."""
    if weights is None:
        return []
    weights = jnp.asarray(weights)
    bad = ~((weights >= 0) & jnp.isfinite(weights))
    return [ValueCheck(bad, weights, "weights: negative or not finite at flat index {i}: got {v}")]


def default_checks(family, outputs, targets, options=None) -> list[ValueCheck]:
    """What ``checked`` tests for a family without ``value_checks``: finite outputs, targets in the
    support (``checked`` adds ``not_nan_targets`` before the latter, for every family)."""
    return [*finite_outputs(outputs), in_support(family, outputs, targets)]

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
    shape); ``message``: the problem, with ``{i}`` (flat index) and ``{v}`` (value) placeholders."""

    bad: jax.Array
    values: jax.Array
    message: str


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
    # Vector targets (an event axis) have no single value to show: the index says which example.
    shown = jnp.broadcast_to(targets, bad.shape) if scalar_targets else jnp.zeros(bad.shape, log_prob.dtype)
    return ValueCheck(bad, shown, "targets: outside the support at flat index {i}: got {v}")


def nonnegative_weights(weights) -> list[ValueCheck]:
    """Negative, infinite or NaN per-example weights (none to check when ``weights`` is None)."""
    if weights is None:
        return []
    weights = jnp.asarray(weights)
    bad = ~((weights >= 0) & jnp.isfinite(weights))
    return [ValueCheck(bad, weights, "weights: negative or not finite at flat index {i}: got {v}")]


def default_checks(family, outputs, targets, options=None) -> list[ValueCheck]:
    """What ``checked`` tests for a family without ``value_checks``: finite outputs, targets in the support."""
    return [*finite_outputs(outputs), in_support(family, outputs, targets)]

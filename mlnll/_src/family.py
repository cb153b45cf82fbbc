"""The protocol every output distribution ("family") conforms to, and the one its loss options do.

A family is a frozen, hashable dataclass that holds only static options; all of its methods are
pure functions of arrays, so a family can be closed over or passed as a static argument to ``jit``.
There is no base class: shared behaviour lives in plain functions (``numerics``, ``validate``,
``unpack``). ``nll``, ``checked``, ``check_grad`` and ``python -m mlnll check`` ask a family only
through this protocol, so a family written by a user works wherever a built-in one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax

# An array, or a tuple of arrays in the order of the family's table row. The protocol leaves it open
# (any family, a user's included, must conform); each built-in family annotates its own layout
# (``mlnll._src.types``: ``NormalOutputs`` is ``(loc, log_scale)`` or ``loc``, ...).
Outputs = Any
Targets = Any


@runtime_checkable
class Family(Protocol):
    """What ``nll``, ``check_grad`` and ``python -m mlnll check`` rely on.

    * ``log_prob(outputs, targets)``: per-example log-likelihood, every constant included; shape =
      the broadcast batch shape. Targets outside the support give ``-inf``.
    * ``grad(outputs, targets)``: closed form of d(-log_prob)/d(outputs), per example, same tree as
      ``outputs`` (each leaf broadcast to the batch shape, plus its event axes).
    * ``params(outputs)``: the conventional parameters, e.g. ``{"loc": ..., "scale": ...}``.
    * ``mean(outputs)``, ``sample(key, outputs, *, sample_shape=())``, ``entropy(outputs)``,
      ``kl(outputs_p, outputs_q)`` (KL(p || q)).
    * ``fisher(outputs)``: the Fisher information with respect to the raw outputs. Per example,
      flatten the outputs (tuple entries in order, event axes row-major) into P numbers; the
      result has shape ``batch + (P, P)``, or ``batch`` when P = 1.

    A method without a closed form raises ``NotImplementedError`` saying so. Optional methods,
    used where a family has them:

    * ``expectation_nodes(outputs) -> (nodes, weights)``: an exact (or quadrature) rule for
      ``E_y[f(y)]``: nodes ``[K, *batch, *event]`` of targets and weights ``[K, *batch]``. The check
      uses it to compare ``fisher`` with the expected Hessian (``score_nodes``, the same rule, for a
      family whose Hessian autodiff cannot see, compares it with ``E[grad grad^T]``).
    * ``constant_terms(targets)``: the terms of ``log_prob`` that depend on the targets (and static
      options) only, e.g. ``-log(2 pi)/2`` for Normal or ``-log(y!)`` for Poisson; shape = targets'
      batch shape. ``nll(..., drop_constants=True)`` leaves them out; gradients are unchanged.
    * ``log_prob_without_constants(outputs, targets)``: ``log_prob - constant_terms`` with the
      constants never added (so a small half squared error is not lost in ``+ log(2 pi)/2 - log(2
      pi)/2``); ``drop_constants=True`` uses it where a family has it.
    * ``mle(targets, *, axis=0)``: the outputs at the closed-form maximum-likelihood estimate.
    * ``loss_options(**options) -> LossOptions``: the family's own ``nll`` options (validated,
      frozen); ``nll(family, **options)`` calls it. A family without it takes no options.
    * ``value_checks(outputs, targets, options) -> Sequence[ValueCheck]``: what ``checked()`` tests
      before computing the loss (``losses.checks`` has the shared pieces); without it, non-finite
      outputs and targets outside the support.
    * ``check_cases()`` (a classmethod): the family's rows of the check table, a tuple of
      ``verify.case.Case``.
    """

    def log_prob(self, outputs: Outputs, targets: Targets) -> jax.Array:
        """Per-example ``log p(targets | outputs)``, every constant included (scipy's logpdf/logpmf).

        Shape: the broadcast batch shape. A target outside the support gives ``-inf``.
        """

    def grad(self, outputs: Outputs, targets: Targets) -> Outputs:
        """Closed-form ``d(-log_prob)/d(outputs)`` per example, in the same tree as ``outputs``."""

    def params(self, outputs: Outputs) -> dict[str, jax.Array]:
        """The conventional parameters as a dict, e.g. ``{"loc": ..., "scale": ...}``."""

    def mean(self, outputs: Outputs) -> jax.Array:
        """The mean of the target under the distribution the outputs give."""

    def sample(self, key: jax.Array, outputs: Outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Targets drawn with ``key``, shape ``sample_shape + batch + event``."""

    def entropy(self, outputs: Outputs) -> jax.Array:
        """The entropy (differential for continuous targets) per example, in nats."""

    def kl(self, outputs_p: Outputs, outputs_q: Outputs) -> jax.Array:
        """``KL(p || q)`` per example, p given by ``outputs_p`` and q by ``outputs_q``."""

    def fisher(self, outputs: Outputs) -> jax.Array:
        """The Fisher information with respect to the raw outputs, ``batch + (P, P)`` (``batch`` if P = 1)."""


class PerExample(NamedTuple):
    """A loss option's per-example terms.

    ``loss``: the per-example loss in the accumulation dtype, ``inf`` where the target is outside
    the support. ``norm``: each example's weight in the denominator of the mean (None: 1).
    ``keep``: the examples the option keeps (None: all), e.g. not ``ignore_index``.
    """

    loss: jax.Array
    norm: jax.Array | None = None
    keep: jax.Array | None = None


@runtime_checkable
class LossOptions(Protocol):
    """A family's ``nll`` options, as returned by ``family.loss_options(**options)``.

    Frozen and hashable (a ``Loss`` holds it and may be a static argument of ``jit``), validated
    when built (a wrong value raises naming it). ``per_example`` gives the loss terms and
    ``per_example_grad`` their closed-form gradient with respect to the outputs (same tree).
    Optionally ``per_example_without_constants``: the terms with the family's ``constant_terms``
    never added, which ``drop_constants=True`` then uses (an option that scales the whole NLL, as
    Normal's ``beta`` does, must leave the constants out itself; otherwise ``nll`` adds
    ``constant_terms`` to ``per_example``).
    """

    def per_example(self, outputs: Outputs, targets: Targets) -> PerExample: ...

    def per_example_grad(self, outputs: Outputs, targets: Targets) -> Outputs: ...

"""``Case``: one row of the check table, a family with its inputs and the references the tests use.

A family publishes its rows through the optional protocol method ``check_cases()`` (a classmethod
returning a tuple of ``Case``); ``python -m mlnll check`` and the conformance tests collect them
from the public names of ``mlnll`` (``registry.builtin_cases``), so a family added there is
checked everywhere, and a user's family that defines ``check_cases`` can be checked the same way.

The references are oracles written by no one here (scipy.stats) or written to be read (the
textbook formula, differentiated by ``jax.grad`` in the tests): the library never calls them, and
scipy is imported only when a test asks for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from mlnll._src.family import Family

Inputs = tuple[Any, Any]  # (outputs, targets)


def _identity(x):
    return x


def _call(attribute, *args):
    """A frozen distribution's method called, or its attribute as is (scipy's frozen
    ``multivariate_normal`` has ``mean`` and ``cov`` as arrays, not methods)."""
    return attribute(*args) if callable(attribute) else attribute


def _numpy(tree) -> Any:
    return jax.tree.map(lambda x: np.asarray(x, np.float64) if np.issubdtype(np.asarray(x).dtype, np.floating)
                        else np.asarray(x), tree)


@dataclasses.dataclass(frozen=True)
class ScipyReference:
    """scipy.stats as the oracle for ``log_prob``, ``entropy``, ``mean`` and the variance.

    ``dist(outputs)`` returns the frozen scipy distribution at raw outputs given as float64 numpy
    arrays (map ``log_scale`` to ``scale`` and so on inside); ``targets(y)`` maps targets to scipy's
    convention (e.g. labels to one-hot rows for ``multinomial``). scipy's multivariate
    distributions take one parameter set at a time: ``per_example=True`` evaluates example by
    example along the leading batch axis (outputs at the full batch shape, as every case draws).
    ``discrete`` picks ``logpmf`` over ``logpdf``.
    """

    dist: Callable[[Any], Any]
    targets: Callable[[Any], Any] = _identity
    per_example: bool = False
    discrete: bool = False

    def _dists(self, outputs):
        outputs = _numpy(outputs)
        if not self.per_example:
            return self.dist(outputs), None
        n = jax.tree.leaves(outputs)[0].shape[0]
        return None, [self.dist(jax.tree.map(lambda x: x[i], outputs)) for i in range(n)]

    def _apply(self, outputs, method: str, *args) -> np.ndarray:
        whole, each = self._dists(outputs)
        if whole is not None:
            return np.asarray(getattr(whole, method)(*args), np.float64)
        rows = [_call(getattr(d, method), *(a[i] for a in args)) for i, d in enumerate(each)]
        return np.asarray(rows, np.float64)

    def log_prob(self, outputs, targets) -> np.ndarray:
        y = self.targets(_numpy(targets))
        return self._apply(outputs, "logpmf" if self.discrete else "logpdf", y)

    def entropy(self, outputs) -> np.ndarray:
        return self._apply(outputs, "entropy")

    def mean(self, outputs) -> np.ndarray:
        return self._apply(outputs, "mean")

    def variance(self, outputs) -> np.ndarray:
        whole, each = self._dists(outputs)
        if whole is not None:
            return np.asarray(whole.var() if hasattr(whole, "var") else whole.cov(), np.float64)
        return np.asarray([d.var() if hasattr(d, "var") else _call(d.cov) for d in each], np.float64)


@dataclasses.dataclass(frozen=True)
class Case:
    """A family with an input generator ``random(key, dtype, n)`` and fixed ``extreme(dtype)``.

    Both return ``(outputs, targets)`` at the full batch shape (every leaf's leading axis is the
    batch), in the requested floating dtype; ``random`` and ``extreme`` share event shapes, so the
    check command runs them as one batch. ``random`` must be traceable (the check jit-compiles it).

    References for the tests (None where none exists):

    * ``scipy``: a ``ScipyReference`` (log-likelihood, entropy, mean, variance);
    * ``plain_log_prob(outputs, targets)``: the textbook formula in ``jax.numpy``, per example,
      whose ``jax.grad`` and ``jax.hessian`` are the oracle for the closed forms.

    ``continuous_targets``: whether the targets are real values a user may differentiate (the
    tests then check ``jax.grad`` in the targets too); by default, whether ``scipy`` is a density
    (``logpdf``) reference.
    """

    name: str
    family: Family
    random: Callable[[jax.Array, np.dtype, int], Inputs]
    extreme: Callable[[np.dtype], Inputs]
    scipy: ScipyReference | None = None
    plain_log_prob: Callable[[Any, Any], jax.Array] | None = None
    continuous_targets: bool | None = None

    @property
    def differentiable_targets(self) -> bool:
        if self.continuous_targets is not None:
            return self.continuous_targets
        return self.scipy is not None and not self.scipy.discrete

    def __repr__(self) -> str:
        return f"Case({self.name!r})"

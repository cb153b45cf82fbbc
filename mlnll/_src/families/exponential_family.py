r"""ExponentialFamily: a family built from its natural parameters, statistic and log-partition.

An exponential family has the density ``p(y) = h(y) exp(<eta, T(y)> - A(eta))``. Given four
functions (raw outputs -> ``eta``, ``T``, ``A``, ``log h``) ``ExponentialFamily`` provides every
method of the family protocol from one set of formulas, and the ready-made builders below rebuild
the common families through it.

Why ``softmax - onehot``, ``sigmoid - y`` and ``exp(eta) - y`` are one formula. The density
integrates to 1 for every eta: ``exp(A(eta)) = integral h(y) exp(<eta, T(y)>) dy``. Differentiating
in eta, ``grad A(eta) exp(A) = integral T h exp(<eta, T>)``, i.e. ``grad A(eta) = E[T(y)]``: the
gradient of the log-partition is the mean of the statistic (the "mean parameter", ``mean(eta)``).
Then ``-log p = A(eta) - <eta, T(y)> - log h(y)`` has

    ``d(-log p)/d eta = grad A(eta) - T(y) = mean(eta) - T(y)``.

Bernoulli: ``eta = logit``, ``T(y) = y``, ``A = log(1 + e^eta) = softplus`` and ``grad A = sigmoid``:
``sigmoid(z) - y``. Categorical: ``eta = logits``, ``T(y) = onehot(y)``, ``A = logsumexp`` and
``grad A = softmax``: ``softmax(z) - onehot(y)``. Poisson: ``eta = log_rate``, ``T(y) = y``,
``A = e^eta``: ``exp(eta) - y``. When the raw outputs ``theta`` are not eta itself, the chain rule
gives ``J^T (mean(eta) - T(y))`` with ``J = d eta / d theta``.

``jax.grad`` runs through this formula. ``log_prob`` is a ``custom_jvp`` of ``(eta, T(y), log h(y))``
whose partials are ``T - mean(eta)``, ``eta`` and 1 (the density is linear in the last two); the
chain rule from the raw outputs to eta is autodiff of ``natural_params``, so ``jax.grad`` of the NLL
is ``J^T (mean(eta) - T(y))`` and its second derivative has ``J^T Hessian(A) J`` from autodiff of
``mean``. In the targets the derivative is ``<eta, dT/dy> + d log h/dy``: autodiff of the user's
``sufficient_statistic`` and ``log_base_measure`` through the partials eta and 1. The builder cannot
tell a continuous target from a count, and these two functions are all it knows of y, so it does
not write a derivative of its own there: for a density it is exact (``(a - 1)/y - b`` for
``gamma()``), for counts it is autodiff of the formula as written (hand-written count families
ignore the targets' tangent instead).

Differentiating once more, ``Hessian A(eta) = Cov[T(y)]``, free of y: the Fisher information in eta
is ``Hessian A``, and in theta ``J^T Hessian(A) J`` (the extra term ``(mean - T) d^2 eta/d theta^2``
has expectation 0). The KL divergence is the Bregman divergence of A,
``KL(p || q) = A(eta_q) - A(eta_p) - <eta_q - eta_p, mean(eta_p)>``, and the entropy is
``-E[log p] = A(eta) - <eta, mean(eta)> - E[log h(y)]``.

Accuracy. ``log_prob`` is the sum ``<eta, T> - A + log h`` and ``grad`` the difference ``mean - T``;
each keeps an absolute error of a few ulps of its largest term, not relative accuracy when the
terms cancel (a confident, correct prediction). The hand-written families (``Bernoulli()``,
``Poisson()``, ...) are evaluated in cancellation-free forms and are the ones to train with at
extreme inputs; the builder is for families that have no hand-written module, and for teaching.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy import special

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.types import ExponentialFamilyOutputArrays, ExponentialFamilyOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

__all__ = ["ExponentialFamily", "bernoulli", "categorical", "exponential", "gamma", "normal", "poisson"]


class _Prepared(NamedTuple):
    """Outputs, natural parameter and statistics at the full batch shape (``ExponentialFamily._prepare``)."""

    outputs: Any  # the raw outputs, each leaf broadcast per example
    eta: jax.Array  # [*batch, *E]
    statistic: jax.Array  # T(y), [*batch, *E], 0 outside the support
    log_base: jax.Array  # log h(y), [*batch], 0 outside the support
    valid: jax.Array  # y in the support, [*batch]
    event_ndim: int  # len(E)
    dtype: np.dtype  # the result dtype


# Natural parameters of at most this many entries are contracted entry by entry (``_inner``).
_UNROLLED_EVENT = 8


@dataclasses.dataclass(frozen=True, init=False, repr=False)
class ExponentialFamily:
    r"""A family ``p(y) = h(y) exp(<eta, T(y)> - A(eta))`` from four functions.

    Every function acts on the trailing (event) axes only, so that it applies alike to one example
    and to a batch:

    * ``natural_params(outputs) -> eta``: raw outputs (an array or a tuple of arrays) to the natural
      parameter ``eta``, shape ``[..., *E]`` with E = () for a scalar natural parameter or (m,).
    * ``sufficient_statistic(y) -> T(y)``, shape ``[..., *E]``; ``y`` arrives in the computation
      dtype (floating, labels included).
    * ``log_partition(eta) -> A(eta)``, shape ``[...]``: it fixes E as the axes it reduces.
    * ``log_base_measure(y) -> log h(y)``, shape ``[...]``; ``-inf`` outside the support, where
      ``log_prob`` is ``-inf`` and ``grad`` NaN (as in the hand-written families).
    * ``mean(eta) -> E[T(y)]`` (optional): the closed form of ``grad A``; else ``jax.grad`` of A.
    * ``expected_log_base_measure(eta) -> E[log h(y)]`` (optional): needed by ``entropy`` only.
    * ``sampler(key, eta, shape) -> y`` (optional): draws of shape ``shape + event of y`` at the natural
      parameter ``eta`` (broadcast to ``shape + E``); needed by ``sample`` only.
    * ``output_names`` (optional): the names of the raw outputs, in order (``("log_rate",)``). With
      names, the outputs go through the one unpacking layer: one name takes an array alone (a tuple
      is a ``TypeError``), several take a tuple of arrays broadcast to one batch shape, and errors
      name the output. Without, any pytree of floating arrays is taken as it is.
    * ``name``: shown by ``repr``.

    Methods (the derivations are in the module docstring):
    ``log_prob = <eta, T(y)> - A(eta) + log h(y)``, which ``jax.grad`` differentiates through the
    closed form; ``grad = J^T (mean(eta) - T(y))`` (J the Jacobian of ``natural_params``; with the
    identity exactly ``mean - T``);
    ``fisher = J^T Hessian(A) J`` (``Hessian(A)`` as the Jacobian of ``mean`` when given);
    ``kl`` the Bregman divergence of A; ``entropy = A - <eta, mean> - E[log h]``;
    ``mean(outputs)`` and ``params(outputs)["mean_params"]`` are the mean parameter ``E[T(y)]``
    (the mean of y when ``T(y) = y``). ``constant_terms(y)`` is ``log h(y)``. There is no generic
    sampler: ``sample`` calls ``sampler`` and raises ``NotImplementedError`` without one (every
    builder below has one).

    Output leaves are taken as ``[*batch, *event]``; a leaf with fewer axes than the batch of
    ``A(eta)`` has no event axes (a parameter shared by every example).

    The functions are compared by identity, so a family is hashable and two families built by the
    same builder call are equal (the builders are cached).

    Example:
      >>> import jax, jax.numpy as jnp, mlnll
      >>> fam = mlnll.exponential_family.poisson()
      >>> log_rate, y = jnp.array([0.5]), jnp.array([2.0])
      >>> bool(jnp.allclose(fam.grad(log_rate, y), jnp.exp(log_rate) - y))
      True
    """

    natural_params: Callable
    sufficient_statistic: Callable
    log_partition: Callable
    log_base_measure: Callable
    mean_params: Callable | None
    expected_log_base_measure: Callable | None
    sampler: Callable | None
    output_names: tuple[str, ...] | None
    name: str

    def __init__(self, *, natural_params: Callable, sufficient_statistic: Callable, log_partition: Callable,
                 log_base_measure: Callable, mean: Callable | None = None,
                 expected_log_base_measure: Callable | None = None, sampler: Callable | None = None,
                 output_names: Sequence[str] | None = None, name: str = "ExponentialFamily",
                 mean_params: Callable | None = None):
        # ``mean_params`` is the field's name, so that ``dataclasses.replace`` (which passes every
        # field by name) works; ``mean`` is the same argument, as documented.
        if mean is not None and mean_params is not None:
            raise TypeError("ExponentialFamily: pass mean=... or mean_params=..., not both.")
        mean = mean if mean is not None else mean_params
        required = {"natural_params": natural_params, "sufficient_statistic": sufficient_statistic,
                    "log_partition": log_partition, "log_base_measure": log_base_measure}
        optional = {"mean": mean, "expected_log_base_measure": expected_log_base_measure, "sampler": sampler}
        for arg, fn in required.items():
            if not callable(fn):
                raise TypeError(f"ExponentialFamily({arg}=...) must be callable; got {fn!r}.")
        for arg, fn in optional.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"ExponentialFamily({arg}=...) must be callable or None; got {fn!r}.")
        if output_names is not None:
            output_names = tuple(output_names)
            if not output_names or not all(isinstance(n, str) for n in output_names):
                raise TypeError("ExponentialFamily(output_names=...) must be a non-empty sequence of "
                                f"strings or None; got {output_names!r}.")
        if not isinstance(name, str):
            raise TypeError(f"ExponentialFamily(name=...) must be a string; got {name!r}.")
        for field, value in [*required.items(), ("mean_params", mean),
                             ("expected_log_base_measure", expected_log_base_measure), ("sampler", sampler),
                             ("output_names", output_names), ("name", name)]:
            object.__setattr__(self, field, value)

    def __repr__(self) -> str:
        return f"ExponentialFamily(name={self.name!r})"

    # -- the pieces --------------------------------------------------------------------------

    def _outputs(self, outputs, where: str = "outputs"):
        """Outputs validated as floating and cast to the accumulation dtype; and the result dtype.

        With ``output_names``, through the unpacking layer (by name, broadcast to one batch shape),
        returned in the layout ``natural_params`` takes: the array alone for one name, else a tuple.
        """
        if self.output_names is not None:
            family = repr(self) if where == "outputs" else f"{self!r}.{where}"
            p = unpack.unpack(outputs, family=family, names=self.output_names)
            arrays = tuple(p[n] for n in self.output_names)
            return (arrays[0] if len(arrays) == 1 else arrays), p.dtype
        leaves, treedef = jax.tree.flatten(outputs)
        if not leaves:
            raise TypeError(f"{self!r} {where} must contain at least one array; got {outputs!r}.")
        leaves = [validate.float_outputs(x, where=f"{self!r} {where}") for x in leaves]
        leaves, dtype = numerics.upcast(*leaves)
        return jax.tree.unflatten(treedef, leaves), dtype

    def _eta(self, outputs) -> tuple[jax.Array, tuple[int, ...]]:
        """``(eta, batch)``: the natural parameter and the batch shape of ``A(eta)``."""
        eta = jnp.asarray(self.natural_params(outputs))
        batch = jax.eval_shape(self.log_partition, eta).shape
        if eta.shape[:len(batch)] != batch:
            raise ValueError(
                f"{self!r}: log_partition must reduce trailing event axes of eta only; eta has shape "
                f"{eta.shape}, A(eta) shape {batch}."
            )
        return eta, batch

    def _mean(self, eta: jax.Array) -> jax.Array:
        """``E[T(y)] = grad A(eta)``: the closed form when given, else autodiff of A (per example)."""
        if self.mean_params is not None:
            return jnp.asarray(self.mean_params(eta)).astype(eta.dtype)
        return jax.grad(lambda e: jnp.sum(self.log_partition(e)))(eta)

    def _broadcast_outputs(self, outputs, batch_of_outputs: tuple[int, ...], batch: tuple[int, ...]):
        """Each output leaf ``[*leaf batch, *event]`` broadcast to ``[*batch, *event]``."""
        def leaf(x):
            event = x.shape[len(batch_of_outputs):] if x.ndim > len(batch_of_outputs) else ()
            return jnp.broadcast_to(x, batch + event)
        return jax.tree.map(leaf, outputs)

    def _statistics(self, targets, dtype, event: tuple[int, ...]):
        """``(T(y), log h(y), valid)`` with ``T`` and ``log h`` zeroed outside the support (double where)."""
        y = validate.numeric_targets(targets, where=f"{self!r} targets")
        narrower = jnp.issubdtype(y.dtype, jnp.floating) and np.dtype(y.dtype).itemsize < np.dtype(dtype).itemsize
        y = numerics.widen(y, dtype) if narrower else y.astype(dtype)  # widen: exact for subnormal y
        stat = jnp.asarray(self.sufficient_statistic(y)).astype(dtype)
        log_h = jnp.asarray(self.log_base_measure(y)).astype(dtype)
        if stat.shape[stat.ndim - len(event):] != event or stat.shape[:stat.ndim - len(event)] != log_h.shape:
            raise ValueError(
                f"{self!r}: sufficient_statistic(y) must have shape [..., *{event}] (the event shape of eta) "
                f"and log_base_measure(y) shape [...]; got {stat.shape} and {log_h.shape}."
            )
        valid = log_h > -jnp.inf
        stat = jnp.where(numerics.expand_to(valid, stat.ndim), stat, jnp.zeros_like(stat))
        return stat, jnp.where(valid, log_h, jnp.zeros_like(log_h)), valid

    def _prepare(self, outputs, targets) -> _Prepared:
        """Everything at the full batch shape (see ``_Prepared``)."""
        outputs, dtype = self._outputs(outputs)
        eta, batch_o = self._eta(outputs)
        event = eta.shape[len(batch_o):]
        stat, log_h, valid = self._statistics(targets, eta.dtype, event)
        batch = validate.broadcast_shapes(repr(self), [("outputs (batch)", batch_o),
                                                       ("targets (batch)", log_h.shape)])
        # Per-example outputs: a leaf shared across examples gets its own copy per example.
        outputs = self._broadcast_outputs(outputs, batch_o, batch)
        eta = jnp.asarray(self.natural_params(outputs))
        b = lambda a, extra=(): jnp.broadcast_to(a, batch + extra)  # noqa: E731
        return _Prepared(outputs, eta, b(stat, event), b(log_h), b(valid), len(event), dtype)

    @staticmethod
    def _inner(a: jax.Array, b: jax.Array, event_ndim: int) -> jax.Array:
        """``<a, b>`` over the trailing ``event_ndim`` axes. A few entries (``eta = (a, -b)``) are
        added one by one: XLA then reads them from the stacked parts, never storing an [N, m] array.
        ``a`` is eta and ``b`` the statistic: a term of zero statistic is 0 even at ``eta = -inf``
        (a logit or log-rate of -inf with y = 0: log p = 0, where -inf * 0 gave NaN)."""
        a, b = jnp.broadcast_arrays(a, b)
        if event_ndim == 1 and a.shape[-1] <= _UNROLLED_EVENT:
            return functools.reduce(jnp.add, [numerics.mul_nonzero(b[..., i], a[..., i]) for i in range(a.shape[-1])])
        return jnp.sum(numerics.mul_nonzero(b, a), axis=tuple(range(a.ndim - event_ndim, a.ndim)))

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: ExponentialFamilyOutputs, targets: Any) -> jax.Array:
        """``<eta, T(y)> - A(eta) + log h(y)`` per example; ``-inf`` outside the support.

        Differentiated through the closed form: ``d log p/d eta = T(y) - mean(eta)``, chained by
        autodiff of ``natural_params`` (``J^T (T - mean)``); in the targets, ``eta`` and 1 chained by
        autodiff of ``sufficient_statistic`` and ``log_base_measure`` (see the module docstring).
        """
        x = self._prepare(outputs, targets)
        lp = _log_density(self, x.event_ndim, x.eta, x.statistic, x.log_base)
        return minus_inf_off_support(lp, x.valid).astype(x.dtype)

    def grad(self, outputs: ExponentialFamilyOutputs, targets: Any) -> ExponentialFamilyOutputArrays:
        """``J^T (mean(eta) - T(y))`` per example, same tree as the outputs (NaN outside the support)."""
        x = self._prepare(outputs, targets)
        eta, pullback = jax.vjp(lambda o: jnp.asarray(self.natural_params(o)), x.outputs)
        _, (d_eta, _, _) = _value_and_partials(self, x.event_ndim, eta, x.statistic, x.log_base)
        (g,) = pullback((-d_eta).astype(eta.dtype))  # J^T (mean - T)
        nan_outside = lambda a: jnp.where(numerics.expand_to(x.valid, a.ndim), a, jnp.nan)  # noqa: E731
        return jax.tree.map(lambda a: nan_outside(a).astype(x.dtype), g)

    def params(self, outputs: ExponentialFamilyOutputs) -> dict[str, jax.Array]:
        """``{"natural_params": eta, "mean_params": E[T(y)]}``."""
        outputs, dtype = self._outputs(outputs)
        eta, _ = self._eta(outputs)
        return {"natural_params": eta.astype(dtype), "mean_params": self._mean(eta).astype(dtype)}

    def mean(self, outputs: ExponentialFamilyOutputs) -> jax.Array:
        """The mean parameter ``E[T(y)] = grad A(eta)`` (the mean of y when ``T(y) = y``)."""
        outputs, dtype = self._outputs(outputs)
        eta, _ = self._eta(outputs)
        return self._mean(eta).astype(dtype)

    def sample(self, key: jax.Array, outputs: ExponentialFamilyOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``sampler(key, eta, sample_shape + batch)``, floating draws in the outputs' dtype."""
        if self.sampler is None:
            raise NotImplementedError(f"{self!r} has no generic sampler: pass sampler=... or draw from the "
                                      "hand-written family.")
        outputs, dtype = self._outputs(outputs)
        eta, batch = self._eta(outputs)
        shape = tuple(sample_shape) + batch
        eta = jnp.broadcast_to(eta, shape + eta.shape[len(batch):])
        y = jnp.asarray(self.sampler(key, eta, shape))
        return y.astype(dtype) if jnp.issubdtype(y.dtype, jnp.floating) else y

    def entropy(self, outputs: ExponentialFamilyOutputs) -> jax.Array:
        """``A(eta) - <eta, mean(eta)> - E[log h(y)]``; needs ``expected_log_base_measure``."""
        if self.expected_log_base_measure is None:
            raise NotImplementedError(
                f"{self!r}: entropy needs expected_log_base_measure=E[log h(y)] as a function of eta.")
        outputs, dtype = self._outputs(outputs)
        eta, batch = self._eta(outputs)
        k = eta.ndim - len(batch)
        expected_log_h = self.expected_log_base_measure(eta)
        h = self.log_partition(eta) - self._inner(eta, self._mean(eta), k) - expected_log_h
        return h.astype(dtype)

    def kl(self, outputs_p: ExponentialFamilyOutputs, outputs_q: ExponentialFamilyOutputs) -> jax.Array:
        """The Bregman divergence of A: ``A(eta_q) - A(eta_p) - <eta_q - eta_p, mean(eta_p)>``."""
        dtype = numerics.float_dtype(*(jnp.asarray(x) for x in jax.tree.leaves((outputs_p, outputs_q))))
        outputs_p, _ = self._outputs(outputs_p, "kl outputs_p")
        outputs_q, _ = self._outputs(outputs_q, "kl outputs_q")
        eta_p, batch_p = self._eta(outputs_p)
        eta_q, batch_q = self._eta(outputs_q)
        event = eta_p.shape[len(batch_p):]
        if eta_q.shape[len(batch_q):] != event:
            raise ValueError(f"{self!r}.kl: eta shapes {eta_p.shape} and {eta_q.shape} differ in their event "
                             "axes.")
        batch = validate.broadcast_shapes(f"{self!r}.kl", [("outputs_p", batch_p), ("outputs_q", batch_q)])
        (eta_p, eta_q), _ = numerics.upcast(jnp.broadcast_to(eta_p, batch + event),
                                            jnp.broadcast_to(eta_q, batch + event))
        gap = self._inner(eta_q - eta_p, self._mean(eta_p), len(event))
        kl = self.log_partition(eta_q) - self.log_partition(eta_p) - gap
        return kl.astype(dtype)

    def fisher(self, outputs: ExponentialFamilyOutputs) -> jax.Array:
        """``J^T Hessian(A)(eta) J`` per example: ``[..., P, P]`` over the flattened outputs (``[...]`` if
        P = 1); ``Hessian(A)`` is the Jacobian of ``mean`` when it is given."""
        outputs, dtype = self._outputs(outputs)
        _, batch = self._eta(outputs)
        leaves, treedef = jax.tree.flatten(self._broadcast_outputs(outputs, batch, batch))
        n = math.prod(batch)
        flat = [x.reshape((n,) + x.shape[len(batch):]) for x in leaves]

        def one_example(*xs):
            theta, unravel = ravel_pytree(list(xs))
            def eta_of(t):
                return jnp.asarray(self.natural_params(jax.tree.unflatten(treedef, unravel(t)))).reshape(-1)

            jac = jax.jacfwd(eta_of)(theta)  # [m, P]
            eta = jnp.asarray(self.natural_params(jax.tree.unflatten(treedef, list(xs))))
            m = jac.shape[0]
            if self.mean_params is not None:
                cov = jax.jacfwd(lambda e: jnp.asarray(self.mean_params(e)))(eta).reshape(m, m)  # type: ignore[misc]  # not None (checked above)
            else:
                cov = jax.hessian(self.log_partition)(eta).reshape(m, m)
            return jac.T @ cov @ jac

        fisher = jax.vmap(one_example)(*flat)
        num_params = fisher.shape[-1]
        fisher = fisher.reshape(batch + (num_params, num_params))
        return (fisher[..., 0, 0] if num_params == 1 else fisher).astype(dtype)

    def constant_terms(self, targets: Any) -> jax.Array:
        """``log h(y)``: the part of ``log_prob`` free of the outputs (0 outside the support)."""
        y = validate.numeric_targets(targets, where=f"{self!r} targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        log_h = jnp.asarray(self.log_base_measure(y)).astype(y.dtype)
        return jnp.where(log_h > -jnp.inf, log_h, jnp.zeros_like(log_h))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: the ``poisson()`` builder, log-rates 2 N(0, 1) at random, ±80
        and counts up to 4.85e8 among the extremes, against scipy and the textbook formula."""
        return (
            Case("ExpFamily(poisson)", poisson(), _poisson_random, _poisson_extreme,
                 scipy=ScipyReference(_scipy_poisson, discrete=True), plain_log_prob=_plain_poisson),
        )


def _value_and_partials(family: ExponentialFamily, event_ndim: int, eta: jax.Array, statistic: jax.Array,
                        log_base: jax.Array):
    """``<eta, T> - A(eta) + log h`` and its partials ``(T - mean(eta), eta, 1)`` in
    ``(eta, T, log h)``: ``grad A = mean`` (the module docstring), the rest is linear."""
    value = family._inner(eta, statistic, event_ndim) - family.log_partition(eta) + log_base
    return value, (statistic - family._mean(eta), eta, 1.0)


# The log-density in (eta, T(y), log h(y)), differentiated by the closed form above; the chain rule
# through natural_params (J^T), sufficient_statistic and log_base_measure is autodiff of the user's
# functions.
_log_density = closed_form(_value_and_partials, num_static=2)


# -- ready-made builders ---------------------------------------------------------------------------
# Each is cached, so repeated calls return the same (equal, hashable) family, and jit caches hit.


def _identity(x):
    return x


def _zeros_like_batch(eta):
    return jnp.zeros(eta.shape, eta.dtype)


def _in_unit_interval_log_h(y):
    # The sign from the bits: under denormals-are-zero -1.4e-45 compares as -0 >= 0.
    return jnp.where(numerics.nonnegative_and_finite(y) & (y <= 1), jnp.zeros_like(y), -jnp.inf)


def _bernoulli_draws(key, eta, shape):
    return jax.random.bernoulli(key, jax.nn.sigmoid(eta), shape).astype(eta.dtype)


@functools.cache
def bernoulli() -> ExponentialFamily:
    """Bernoulli in its logit: ``eta = z``, ``T(y) = y``, ``A = softplus(eta)``, ``mean = sigmoid``;
    targets in [0, 1] (soft labels included)."""
    return ExponentialFamily(
        natural_params=_identity, sufficient_statistic=_identity, log_partition=jax.nn.softplus,
        log_base_measure=_in_unit_interval_log_h, mean=jax.nn.sigmoid,
        expected_log_base_measure=_zeros_like_batch, sampler=_bernoulli_draws, output_names=("logits",),
        name="bernoulli")


def _categorical_draws(key, eta, shape):
    return jax.random.categorical(key, eta, axis=-1, shape=shape)


@functools.cache
def categorical(num_classes: int) -> ExponentialFamily:
    """Categorical in its logits ``[..., C]``: ``T(y) = onehot(y)``, ``A = logsumexp``, ``mean = softmax``;
    integer labels 0..C-1 (the overparametrised form: Fisher ``diag(p) - p p^T``, singular)."""
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"categorical(num_classes=...) must be an integer >= 1; got {num_classes!r}.")

    def one_hot(y):
        classes = jnp.arange(num_classes, dtype=y.dtype).reshape((1,) * y.ndim + (num_classes,))
        return (y[..., None] == classes).astype(y.dtype)

    def log_h(y):
        valid = (y >= 0) & (y < num_classes) & (y == jnp.floor(y)) & ~numerics.nonzero_subnormal(y)
        return jnp.where(valid, jnp.zeros_like(y), -jnp.inf)

    return ExponentialFamily(
        natural_params=_identity, sufficient_statistic=one_hot, log_partition=numerics.logsumexp,
        log_base_measure=log_h, mean=lambda eta: jax.nn.softmax(eta, axis=-1),
        expected_log_base_measure=lambda eta: jnp.zeros(eta.shape[:-1], eta.dtype),
        sampler=_categorical_draws, output_names=("logits",), name=f"categorical({num_classes})")


def _count_log_h(y):
    """``-log(y!)`` for counts 0, 1, 2, ...; ``-inf`` for negative, fractional or infinite y.

    The gammaln sees 0 outside the support (double where): no NaN in the branch not taken."""
    # A subnormal y is no whole number, but denormals-are-zero floors it to 0 == y.
    valid = numerics.nonnegative_and_finite(y) & (y == jnp.floor(y)) & ~numerics.nonzero_subnormal(y)
    safe = jnp.where(valid, y, jnp.zeros_like(y))
    return jnp.where(valid, -numerics.log_factorial(safe), -jnp.inf)


def _poisson_draws(key, eta, shape):
    return jax.random.poisson(key, jnp.exp(eta), shape).astype(eta.dtype)


@functools.cache
def poisson() -> ExponentialFamily:
    """Poisson in its log-rate: ``eta = log_rate``, ``T(y) = y``, ``A = e^eta``, ``h(y) = 1/y!``.

    ``E[log y!]`` has no closed form, so ``entropy`` raises ``NotImplementedError``.
    """
    return ExponentialFamily(
        natural_params=_identity, sufficient_statistic=_identity, log_partition=jnp.exp,
        log_base_measure=_count_log_h, mean=jnp.exp, sampler=_poisson_draws, output_names=("log_rate",),
        name="poisson")


def _minus_rate(log_rate):
    return -jnp.exp(log_rate)


def _non_negative_log_h(y):
    return jnp.where(y >= 0, jnp.zeros_like(y), -jnp.inf)


def _exponential_draws(key, eta, shape):
    return jax.random.exponential(key, shape, eta.dtype) / -eta  # eta = -rate


@functools.cache
def exponential() -> ExponentialFamily:
    """Exponential from its log-rate: ``eta = -rate`` (J = -rate), ``T(y) = y``, ``A = -log(-eta)``,
    ``mean = -1/eta``; so ``grad = -rate (1/rate - y) = rate y - 1`` and ``fisher = rate^2 / rate^2 = 1``."""
    return ExponentialFamily(
        natural_params=_minus_rate, sufficient_statistic=_identity, log_partition=lambda eta: -jnp.log(-eta),
        log_base_measure=_non_negative_log_h, mean=lambda eta: -1 / eta,
        expected_log_base_measure=_zeros_like_batch, sampler=_exponential_draws, output_names=("log_rate",),
        name="exponential")


def _gamma_natural(outputs):
    log_concentration, log_rate = jnp.broadcast_arrays(*outputs)
    return jnp.stack([jnp.exp(log_concentration), -jnp.exp(log_rate)], axis=-1)


def _gamma_statistic(y):
    positive = (y > 0) & jnp.isfinite(y)
    safe = jnp.where(positive, y, jnp.ones_like(y))
    return jnp.stack([jnp.log(safe), y], axis=-1)


def _gamma_log_partition(eta):
    """``gammaln(a) - a log(b)`` with ``a = eta_0``, ``b = -eta_1``."""
    return special.gammaln(eta[..., 0]) - eta[..., 0] * jnp.log(-eta[..., 1])


def _gamma_mean(eta):
    """``(E[log y], E[y]) = (digamma(a) - log b, a / b)``."""
    a, b = eta[..., 0], -eta[..., 1]
    return jnp.stack([special.digamma(a) - jnp.log(b), a / b], axis=-1)


def _gamma_log_h(y):
    positive = (y > 0) & jnp.isfinite(y)
    return jnp.where(positive, -jnp.log(jnp.where(positive, y, jnp.ones_like(y))), -jnp.inf)


def _gamma_draws(key, eta, shape):
    """``Gamma(a) / b`` with ``(a, b) = (eta_0, -eta_1)``."""
    return jax.random.gamma(key, eta[..., 0], shape, eta.dtype) / -eta[..., 1]


@functools.cache
def gamma() -> ExponentialFamily:
    """Gamma from ``(log_concentration, log_rate)``: ``eta = (a, -b)``, ``T(y) = (log y, y)``,
    ``A = gammaln(a) - a log b``, ``h(y) = 1/y``, ``E[log h] = -(digamma(a) - log b)``."""
    return ExponentialFamily(
        natural_params=_gamma_natural, sufficient_statistic=_gamma_statistic,
        log_partition=_gamma_log_partition,
        log_base_measure=_gamma_log_h, mean=_gamma_mean,
        expected_log_base_measure=lambda eta: -_gamma_mean(eta)[..., 0], sampler=_gamma_draws,
        output_names=("log_concentration", "log_rate"), name="gamma")


def _normal_natural(outputs):
    loc, log_scale = jnp.broadcast_arrays(*outputs)
    precision = jnp.exp(-2 * log_scale)
    return jnp.stack([loc * precision, -0.5 * precision], axis=-1)


def _normal_statistic(y):
    return jnp.stack([y, jnp.square(y)], axis=-1)


def _normal_log_partition(eta):
    """``-eta_0^2 / (4 eta_1) - log(-2 eta_1) / 2``, i.e. ``loc^2 / (2 scale^2) + log(scale)``."""
    return -jnp.square(eta[..., 0]) / (4 * eta[..., 1]) - 0.5 * jnp.log(-2 * eta[..., 1])


def _normal_mean(eta):
    """``(E[y], E[y^2]) = (loc, loc^2 + scale^2)``, ``loc = -eta_0 / (2 eta_1)``, ``scale^2 = -1/(2 eta_1)``.
    """
    loc = -eta[..., 0] / (2 * eta[..., 1])
    return jnp.stack([loc, jnp.square(loc) - 1 / (2 * eta[..., 1])], axis=-1)


def _normal_log_h(y):
    return jnp.full(y.shape, -numerics.HALF_LOG_2PI, y.dtype)


def _normal_draws(key, eta, shape):
    """``loc + scale N(0, 1)`` with ``loc = -eta_0 / (2 eta_1)``, ``scale^2 = -1 / (2 eta_1)``."""
    loc = -eta[..., 0] / (2 * eta[..., 1])
    return loc + jnp.sqrt(-0.5 / eta[..., 1]) * jax.random.normal(key, shape, eta.dtype)


@functools.cache
def normal() -> ExponentialFamily:
    """Normal from ``(loc, log_scale)``: ``eta = (loc / scale^2, -1 / (2 scale^2))``, ``T(y) = (y, y^2)``,
    ``log h = -log(2 pi)/2``."""
    return ExponentialFamily(
        natural_params=_normal_natural, sufficient_statistic=_normal_statistic,
        log_partition=_normal_log_partition,
        log_base_measure=_normal_log_h, mean=_normal_mean,
        expected_log_base_measure=lambda eta: jnp.full(eta.shape[:-1], -numerics.HALF_LOG_2PI, eta.dtype),
        sampler=_normal_draws, output_names=("loc", "log_scale"), name="normal")


# -- check cases: the poisson() builder -------------------------------------------------------------


def _plain_poisson(log_rate, y):
    """``y log_rate - exp(log_rate) - log(y!)``: the textbook formula."""
    return y * log_rate - jnp.exp(log_rate) - special.gammaln(y + 1)


def _scipy_poisson(log_rate):
    import scipy.stats

    return scipy.stats.poisson(np.exp(log_rate))


def _poisson_random(key, dtype, n):
    """Log-rates 2 N(0, 1); counts a discretised normal, ``round(rate + sqrt(rate) N(0, 1))`` clipped at 0:
    the Poisson's mean and standard deviation without a rejection sampler in the program."""
    z = draws.box_muller(draws.uniform_rows(key, (n, 2))).astype(dtype)
    log_rate = 2 * z[:, 0]
    rate = jnp.exp(log_rate)
    return log_rate, jnp.maximum(jnp.round(rate + jnp.sqrt(rate) * z[:, 1]), 0)


def _poisson_extreme(dtype):
    log_rate = jnp.array([-80.0, 80.0, 0.0, 20.0, -20.0, 13.8], dtype)
    y = jnp.array([0.0, 0.0, 7.0, 4.85e8, 1.0, 1e6], dtype)
    return log_rate, y

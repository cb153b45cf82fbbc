"""Normal: a real target given a location and a log-scale. Its NLL is (scaled) squared error."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.family import PerExample
from mlnll._src.losses import options as check
from mlnll._src.types import NormalOutputArrays, NormalOutputs
from mlnll._src.verify.case import Case, ScipyReference

# Gauss-Hermite rule: exact for polynomials of degree < 16 under exp(-x^2), so exact for the
# expected Hessian of the Normal NLL, which is quadratic in y.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(8)


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -r^2/2 - log_scale - log(2 pi)/2``, ``r = (y - loc) / scale``, and its partials.

    ``d log p / d loc = r / scale``, ``d log p / d log_scale = r^2 - 1`` and
    ``d log p / d y = -r / scale`` (the derivation is in the class docstring).
    """
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    d_loc = r * inv_scale
    value = ls_.with_terms(-0.5 * jnp.square(r), log_scale, numerics.HALF_LOG_2PI, keep)
    return value, (d_loc, jnp.square(r) - 1, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through these closed-form partials (closed_form.py):
# one multiply per argument in the backward pass.
normal_log_pdf = closed_form(_value_and_partials, num_static=1)


def _beta_nll_and_partials(beta: float, keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``w (-log p)`` with the weight ``w = scale^(2 beta)`` held constant, and its partials
    ``w d(-log p)``: ``-r scale^(2 beta - 1)`` in loc (and its negative in y), ``w (1 - r^2)`` in
    log_scale (``NormalOptions``).

    The loc partial is ``-r exp((2 beta - 1) log_scale)``, one exponential, never ``w`` times
    ``1/scale`` (at beta = 1 it is ``-r scale = loc - y`` also where ``scale^2`` overflows). The
    weight's log_scale is under ``stop_gradient`` (in that exponent too, whose ``-log_scale`` part
    stays differentiable): second derivatives (``jax.hessian``) of the loss hold the weight constant,
    as they would in ``stop_gradient(scale ** (2 beta)) * nll`` written out.
    """
    value, (_, d_log_scale, _) = _value_and_partials(keep, loc, log_scale, y)
    r, _ = ls_.standardize(loc, log_scale, y)  # the same r (XLA computes it once)
    held = (2 * beta) * jax.lax.stop_gradient(log_scale)  # log w, a constant to every derivative
    weight = jnp.exp(held)
    per_scale = jnp.exp(held - log_scale)  # w / scale = scale^(2 beta - 1) in one exp, 1/scale differentiable
    d_loc_weighted = -r * per_scale
    return weight * -value, (d_loc_weighted, weight * -d_log_scale, -d_loc_weighted)


# NormalOptions' loss, differentiated by its partials (jax.grad, jacfwd and hessian run the closed form).
_beta_nll = closed_form(_beta_nll_and_partials, num_static=2)


@dataclasses.dataclass(frozen=True)
class Normal(_tails.SymmetricTails):
    r"""Normal distribution of a real target.

    outputs: ``(loc, log_scale)``; with ``Normal(scale=s)`` the scale is fixed and outputs is
    ``loc`` alone. targets: reals, broadcastable with the outputs.

    Density, with ``scale = exp(log_scale)`` and ``r = (y - loc) / scale``:
    ``log p(y) = -r^2 / 2 - log_scale - log(2 pi) / 2``.
    With the scale fixed at 1, ``-log p = (y - loc)^2 / 2 + log(2 pi) / 2``: half the squared
    error plus a constant, which is why least squares is maximum likelihood under Gaussian noise.

    Gradient. Write ``-log p = r^2/2 + log_scale + c``; then ``dr/dloc = -1/scale`` and
    ``dr/dlog_scale = -r``, so
    ``d(-log p)/dloc = r dr/dloc = -r/scale = (loc - y) / scale^2`` and
    ``d(-log p)/dlog_scale = r dr/dlog_scale + 1 = 1 - r^2``.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form, not
    through autodiff of the density; the targets are differentiable too (``d log p/dy = -r/scale``).

    Fisher information in ``(loc, log_scale)``: ``E[r^2] = 1`` and ``E[r] = E[r^3] = 0`` give
    ``diag(1/scale^2, 2)``; with the scale fixed it is ``1/scale^2``.
    """

    _standard_tail = _tails.NORMAL  # log_cdf and log_survival (_tails.SymmetricTails)

    scale: float | None = None

    def __post_init__(self):
        ls_.check_positive_option("Normal", "scale", self.scale)

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return ls_.describe("Normal", scale=self.scale)

    def _loc_log_scale(self, outputs) -> tuple[jax.Array, jax.Array, np.dtype]:
        """``(loc, log_scale, dtype)`` in the accumulation dtype, broadcast together."""
        return ls_.loc_and_log_scale(outputs, family=self._name, scale=self.scale)

    def _prepare(self, outputs, targets) -> tuple[jax.Array, jax.Array, jax.Array, np.dtype]:
        return ls_.loc_log_scale_and_targets(outputs, targets, family=self._name, scale=self.scale)

    def _pack(self, d_loc: jax.Array, d_log_scale: jax.Array):
        return d_loc if self.scale is not None else (d_loc, d_log_scale)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: NormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log N(y; loc, scale)``, equal to scipy.stats.norm.logpdf."""
        return self._log_prob(outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: NormalOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-r^2/2 - log_scale``, and
        exactly ``-(y - loc)^2 / 2`` for ``Normal(scale=1)`` (what ``drop_constants=True`` uses)."""
        return self._log_prob(outputs, targets, ls_.without_constants(self.scale))

    def _log_prob(self, outputs, targets, keep: int) -> jax.Array:
        loc, log_scale, y, dtype = self._prepare(outputs, targets)
        if self.scale is not None:  # a fixed scale enters as a scalar, never as an [N] array
            log_scale = jnp.asarray(math.log(self.scale), loc.dtype)
        finite, ys = ls_.finite_targets(y)
        return minus_inf_off_support(normal_log_pdf(keep, loc, log_scale, ys), finite).astype(dtype)

    def grad(self, outputs: NormalOutputs, targets: ArrayLike) -> NormalOutputArrays:
        """Closed form ``((loc - y) / scale^2, 1 - r^2)``; with a fixed scale, the first alone."""
        loc, log_scale, y, dtype = self._prepare(outputs, targets)
        # -r * inv_scale instead of (loc - y) / scale^2: scale^2 overflows long before the product.
        finite, ys = ls_.finite_targets(y)
        _, (d_loc, d_log_scale, _) = _value_and_partials(ls_.ALL_TERMS, loc, log_scale, ys)
        return ls_.nan_off_support(finite, self._pack((-d_loc).astype(dtype), (-d_log_scale).astype(dtype)))

    def params(self, outputs: NormalOutputs) -> dict[str, jax.Array]:
        loc, log_scale, dtype = self._loc_log_scale(outputs)
        return {"loc": loc.astype(dtype), "scale": jnp.exp(log_scale).astype(dtype)}

    def mean(self, outputs: NormalOutputs) -> jax.Array:
        loc, _, dtype = self._loc_log_scale(outputs)
        return loc.astype(dtype)

    def sample(self, key: jax.Array, outputs: NormalOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        loc, log_scale, dtype = self._loc_log_scale(outputs)
        shape = tuple(sample_shape) + loc.shape
        eps = jax.random.normal(key, shape, dtype=loc.dtype)
        return (jnp.broadcast_to(loc, shape) + jnp.broadcast_to(jnp.exp(log_scale), shape) * eps).astype(dtype)

    def entropy(self, outputs: NormalOutputs) -> jax.Array:
        """``log_scale + (1 + log(2 pi)) / 2``."""
        _, log_scale, dtype = self._loc_log_scale(outputs)
        return (log_scale + 0.5 + numerics.HALF_LOG_2PI).astype(dtype)

    def kl(self, outputs_p: NormalOutputs, outputs_q: NormalOutputs) -> jax.Array:
        """KL(p || q) in the form that stays accurate when the two scales are close.

        With ``d = log_scale_p - log_scale_q``::

            KL = log(s_q/s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2
               = (exp(2d) - 1 - 2d) / 2 + ((mu_p - mu_q) / s_q)^2 / 2

        and ``exp(x) - 1 - x`` is evaluated by ``expm1mx`` (a series near 0), so a KL of 1e-12
        between nearly equal scales is not lost to cancellation.
        """
        loc_p, ls_p, _ = self._loc_log_scale(outputs_p)
        loc_q, ls_q, _ = self._loc_log_scale(outputs_q)
        validate.broadcast_shapes("Normal.kl", [("outputs_p", loc_p.shape), ("outputs_q", loc_q.shape)])
        (loc_p, ls_p, loc_q, ls_q), dtype = numerics.upcast(loc_p, ls_p, loc_q, ls_q)
        gap = (loc_p - loc_q) * jnp.exp(-ls_q)
        return (0.5 * numerics.expm1mx(2 * (ls_p - ls_q)) + 0.5 * jnp.square(gap)).astype(dtype)

    def fisher(self, outputs: NormalOutputs) -> jax.Array:
        """``diag(1/scale^2, 2)`` per example (shape [..., 2, 2]); ``1/scale^2`` with a fixed scale."""
        _, log_scale, dtype = self._loc_log_scale(outputs)
        inv_var = jnp.exp(-2 * log_scale)
        if self.scale is not None:
            return inv_var.astype(dtype)
        zero = jnp.zeros_like(inv_var)
        rows = [jnp.stack([inv_var, zero], -1), jnp.stack([zero, jnp.full_like(inv_var, 2.0)], -1)]
        return jnp.stack(rows, -2).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log(2 pi)/2``, and ``-log(scale)`` if fixed.

        Dropping it from ``Normal(scale=1)`` leaves exactly half the squared error.
        """
        y = validate.numeric_targets(targets, where="Normal targets")
        const = -numerics.HALF_LOG_2PI - (math.log(self.scale) if self.scale is not None else 0.0)
        return jnp.full(y.shape, const, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: NormalOutputs) -> tuple[jax.Array, jax.Array]:
        """Gauss-Hermite nodes ``loc + sqrt(2) scale x_k`` and weights ``w_k / sqrt(pi)``, ``[8, *batch]``."""
        loc, log_scale, _ = self._loc_log_scale(outputs)
        x = jnp.asarray(_GH_NODES, loc.dtype).reshape((-1,) + (1,) * loc.ndim)
        w = jnp.asarray(_GH_WEIGHTS / math.sqrt(math.pi), loc.dtype).reshape((-1,) + (1,) * loc.ndim)
        nodes = loc[None] + math.sqrt(2.0) * jnp.exp(log_scale)[None] * x
        return nodes, jnp.broadcast_to(w, nodes.shape)

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> NormalOutputArrays:
        """Closed-form MLE: loc = sample mean, log_scale = log of the (biased, 1/n) sample std."""
        y = validate.numeric_targets(targets, where="Normal.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        loc = jnp.mean(y, axis=axis)
        if self.scale is not None:
            return loc
        var = jnp.mean(jnp.square(y - jnp.expand_dims(loc, axis)), axis=axis)
        return loc, 0.5 * jnp.log(var)

    def loss_options(self, **kwargs: Any) -> NormalOptions:
        """``nll(Normal(), beta=b)``: the beta-NLL (see ``NormalOptions``), validated."""
        return check.build(NormalOptions, "Normal", kwargs, scale=self.scale)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: free and fixed scale, log-scales of ±80, targets 1e30 away."""
        fixed = cls(scale=2.0)
        return (
            Case("Normal", cls(), _random, _extreme,
                 scipy=ScipyReference(lambda o: _scipy_norm(o[0], np.exp(o[1]))), plain_log_prob=_plain_log_prob),
            Case("Normal(scale=2.0)", fixed, _fixed_random, _fixed_extreme,
                 scipy=ScipyReference(lambda loc: _scipy_norm(loc, 2.0)),
                 plain_log_prob=lambda loc, y: _plain_log_prob((loc, jnp.full_like(loc, math.log(2.0))), y)),
        )


@dataclasses.dataclass(frozen=True)
class NormalOptions:
    r"""The option of ``nll(Normal(), ...)``: ``beta``, the beta-NLL of Seitzer et al. (ICLR 2022).

    ``beta`` in [0, 1] (default 0, the plain NLL). Per example the loss is the NLL times a weight
    that is held constant, ``stop_gradient(scale ** (2 beta))``:

        L_beta = stop_gradient(s^(2 beta)) * (r^2 / 2 + log_scale + log(2 pi) / 2),  r = (y - loc) / s.

    Why. The plain NLL's gradients are ``(loc - y) / s^2`` in loc and ``1 - r^2`` in log_scale: the
    squared error's gradient ``loc - y`` divided by the predicted variance. Where the model fits
    badly, the NLL can also be lowered by raising s instead of moving loc, and once s is large the
    loc gradient there is small (at ``s^2 = (y - loc)^2`` it is ``-1 / (y - loc)``: the worse the
    fit, the weaker the pull). The badly fit points are explained away as noise, training spends its
    gradient on the points already fit well, and the mean converges slowly or early to a poor fit
    (Seitzer et al. show it on toy curves, dynamics models and UCI regression).

    Derivation. The weight ``w = s^(2 beta)`` is a constant for differentiation, so the gradient is
    ``w`` times the NLL's:
    ``dL_beta/dloc = (loc - y) / s^(2 - 2 beta) = -r s^(2 beta - 1)`` and
    ``dL_beta/dlog_scale = s^(2 beta) (1 - r^2)``. At ``beta = 0`` it is the NLL; at ``beta = 1`` the loc
    gradient is ``loc - y``, exactly the gradient of the squared error ``(y - loc)^2 / 2``, whatever
    the scale; in between, ``beta = 0.5`` (the paper's recommendation) divides it by s instead of
    s^2. Each example's weight is positive and does not move its stationary point (``loc = E[y]``,
    ``s^2 = E[(y - loc)^2]`` given the inputs), so the fit targets the same mean and variance; only
    how the gradient is shared among the examples changes. The weighted loss is not the gradient of
    an objective one can compare across training steps: report the plain NLL
    (``nll(Normal())``) as the likelihood.

    ``jax.grad`` (and ``jacfwd``, ``hessian``, whose second derivatives also hold the weight
    constant) of the loss run through these partials (a ``closed_form`` custom_jvp), the same as
    ``per_example_grad``; the loc partial is one exponential, ``-r exp((2 beta - 1) log_scale)``,
    so it is ``loc - y`` at ``beta = 1`` even where ``s^2`` overflows. With ``Normal(scale=s)`` the
    weight is the constant ``s^(2 beta)``: the loss is the NLL times it. ``drop_constants=True``
    drops ``log(2 pi) / 2`` (and ``log s`` for a fixed scale) inside the weighted term. Only the
    Normal has it: the weight is built for the Gaussian's ``1 / s^2`` (another family given
    ``beta`` raises saying so).
    """

    beta: float = 0.0
    scale: float | None = None  # the family's fixed scale, set by Normal.loss_options (not an option)

    def __post_init__(self):
        object.__setattr__(self, "beta", check.fraction("beta", self.beta))

    def _terms(self, outputs, targets, keep: int) -> PerExample:
        family = Normal(self.scale)
        loc, log_scale, y, _ = family._prepare(outputs, targets)
        if self.scale is not None:  # a fixed scale enters as a scalar, never as an [N] array
            log_scale = jnp.asarray(math.log(self.scale), loc.dtype)
        finite, ys = ls_.finite_targets(y)
        loss = _beta_nll(self.beta, keep, loc, log_scale, ys)
        return PerExample(-minus_inf_off_support(-loss, finite))

    def per_example(self, outputs: NormalOutputs, targets: ArrayLike) -> PerExample:
        """``stop_gradient(s^(2 beta))`` times the per-example NLL; inf where the target is not finite
        (NaN derivatives there)."""
        return self._terms(outputs, targets, ls_.ALL_TERMS)

    def per_example_without_constants(self, outputs: NormalOutputs, targets: ArrayLike) -> PerExample:
        """The same with the NLL's output-free terms never added (what ``drop_constants=True`` uses)."""
        return self._terms(outputs, targets, ls_.without_constants(self.scale))

    def per_example_grad(self, outputs: NormalOutputs, targets: ArrayLike) -> NormalOutputArrays:
        """Closed form ``(-r s^(2 beta - 1), s^(2 beta) (1 - r^2))`` per example (the first alone with
        a fixed scale; NaN where the target is not finite)."""
        family = Normal(self.scale)
        loc, log_scale, y, dtype = family._prepare(outputs, targets)
        finite, ys = ls_.finite_targets(y)
        _, (d_loc, d_log_scale, _) = _beta_nll_and_partials(self.beta, ls_.ALL_TERMS, loc, log_scale, ys)
        return ls_.nan_off_support(finite, family._pack(d_loc.astype(dtype), d_log_scale.astype(dtype)))


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-((y - loc) / scale)^2 / 2 - log(scale) - log(2 pi) / 2``: the textbook formula."""
    loc, log_scale = outputs
    return -0.5 * ((y - loc) / jnp.exp(log_scale)) ** 2 - log_scale - 0.5 * jnp.log(2 * jnp.pi)


def _scipy_norm(loc, scale):
    import scipy.stats

    return scipy.stats.norm(loc, scale)


def _random(key, dtype, n):
    kl, ks, ky = jax.random.split(key, 3)
    loc = jax.random.normal(kl, (n,), dtype)
    log_scale = jax.random.normal(ks, (n,), dtype)
    return (loc, log_scale), loc + jnp.exp(log_scale) * jax.random.normal(ky, (n,), dtype)


def _extreme(dtype):
    loc = jnp.array([0.0, 1e4, 1e30, -5.0, 0.0], dtype)
    log_scale = jnp.array([-80.0, 80.0, 60.0, 0.0, 30.0], dtype)
    y = jnp.array([1e-35, -1e4, -1e30, 5.0, 1e13], dtype)
    return (loc, log_scale), y


def _fixed_random(key, dtype, n):
    (loc, _), y = _random(key, dtype, n)
    return loc, y


def _fixed_extreme(dtype):
    return jnp.array([1e4, -1e4, 1e30, 0.0], dtype), jnp.array([-1e4, 1e4, -1e30, 1e-30], dtype)

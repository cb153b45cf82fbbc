"""Weibull: a positive target (a lifetime, a wind speed) given a log-scale and a log-concentration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.families import gumbel as gumbel_
from mlnll._src.types import LocScaleOutputArrays, LocScaleOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("log_scale", "log_concentration")


def _log_pdf_and_partials(log_scale: jax.Array, log_k: jax.Array, y: jax.Array):
    """``log p = log k - log_scale + (k - 1) L - e^t``, ``L = log y - log_scale``, ``t = k L``, and
    its partials ``(k expm1(t), 1 - t expm1(t), (k - 1)/y - k e^t / y)`` in ``(log_scale,
    log_concentration, y)`` (the derivation is in the class docstring).

    ``k - 1 = expm1(log k)`` is exactly 0 at k = 1 (the Exponential), where ``(k - 1) L`` is then 0
    for any target, a subnormal one too (``log_of_positive``), and ``-e^t`` keeps its digits far
    below the scale (y = 1e-30 at lam = 1). The target partial's second term is
    ``exp(log k - log_scale + (k - 1) L)``: ``e^t / y`` formed as a quotient would be 0/0 at a
    subnormal y whose ``e^t`` flushes to 0 (k = 1, y = 1e-45: the exact value is -1/scale).
    """
    k = jnp.exp(log_k)
    k_minus_1 = jnp.expm1(log_k)
    big_l = numerics.log_of_positive(y) - log_scale  # exact log y for subnormal y too
    # At y = lam (L = 0) the products with L are 0 also where k overflowed (log k > 88.7 in float32:
    # the exact value is then the finite log k - log_scale - 1), never inf * 0. The select is
    # taken only there, so that the derivatives at L = 0 with a finite k (a quadrature node) stay.
    at_scale_of_inf = (big_l == 0) & (k == jnp.inf)
    t = jnp.where(at_scale_of_inf, jnp.zeros_like(big_l), k * big_l)
    k_minus_1_l = jnp.where(at_scale_of_inf, jnp.zeros_like(big_l), k_minus_1 * big_l)
    m = jnp.expm1(t)  # (y/lam)^k - 1, accurate near the mode t = 0
    power = jnp.exp(t)
    log_density_but_power = (log_k - log_scale) + k_minus_1_l
    # Where (y/lam)^k overflows the value is below every float: -inf, also where (k - 1) L is +inf
    # too (huge k above the scale), whose difference would be NaN.
    value = jnp.where(power == jnp.inf, -jnp.inf, log_density_but_power - power)
    # k m is 0 at L = 0 (m = 0), also where k overflowed: k is clamped at the largest float there.
    d_log_scale = jnp.minimum(k, jnp.finfo(k.dtype).max) * m

    def d_y():
        return numerics.divide_by_positive(k_minus_1, y) - jnp.exp(log_density_but_power)

    return value, (d_log_scale, 1 - t * m, d_y)


# log p, differentiated by its partials: jax.grad, jacfwd and hessian of log_prob run the closed form
# of the class docstring (closed_form.py).
weibull_log_pdf = closed_form(_log_pdf_and_partials)


def _log_tail_and_partials(upper: bool, log_scale: jax.Array, log_k: jax.Array, y: jax.Array):
    """``log S = -e^t`` or ``log F = log(1 - exp(-e^t))``, ``t = k log(y / lam)``, and their partials
    in ``(log_scale, log_concentration, y)``, for valid targets 0 < y < inf.

    ``F = 1 - exp(-(y/lam)^k)``. With ``x = e^t`` and the slope ``g = d value / dt`` (``-x`` for
    log S; ``x / expm1(x)`` for log F, from ``_tails.log1mexp_of_exp``, which takes ``log F = t``
    below t = -40, where x underflows), the chain rule through ``dt/dlog_scale = -k``,
    ``dt/dlog_concentration = t`` and ``dt/dy = k/y`` gives ``(-k g, t g, k g / y)``. In y: ``k x / y``
    is ``exp(log k - log y + t)``, and ``k / y`` is ``exp(log k - log y)``, one exp each (exact
    ``log y`` at subnormal y). Where g is 0 (x = 0 or inf: a concentration that overflows) the
    partials are 0, never ``inf * 0``.
    """
    k = jnp.exp(log_k)
    log_y = numerics.log_of_positive(y)  # exact log y for subnormal y too
    big_l = log_y - log_scale
    # t = 0 at y = lam also where k overflowed (as in log_prob): (y/lam)^k = 1 there.
    t = jnp.where((big_l == 0) & (k == jnp.inf), jnp.zeros_like(big_l), k * big_l)
    if upper:
        x = jnp.exp(t)
        value, slope = -x, -x
        d_y = -jnp.exp(log_k - log_y + t)  # -k x / y
    else:
        value, slope = _tails.log1mexp_of_exp(t)
        d_y = jnp.exp(log_k - log_y) * slope  # k g / y
    flat = slope == 0
    d_log_scale = jnp.where(flat, jnp.zeros_like(t), -jnp.minimum(k, jnp.finfo(k.dtype).max) * slope)
    d_log_k = jnp.where(flat, jnp.zeros_like(t), t * slope)
    return value, (d_log_scale, d_log_k, jnp.where(flat, jnp.zeros_like(t), d_y))


# log F and log S, differentiated by their partials (closed_form.py).
weibull_log_tail = closed_form(_log_tail_and_partials, num_static=1)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together; targets outside the support replaced by 1 (double where)."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # 0 < y < inf


@dataclasses.dataclass(frozen=True)
class Weibull:
    r"""Weibull distribution of a positive target, parametrised by log-scale and log-concentration.

    outputs: ``(log_scale, log_concentration)``; with ``Weibull(concentration=k)`` the
    concentration (shape) is fixed and outputs is ``log_scale`` alone. targets: ``y > 0``,
    broadcastable with the outputs; ``y <= 0`` or infinite gives ``-inf`` (and NaN derivatives).
    k = 1 is the Exponential with rate ``1/scale``, k = 2 the Rayleigh; k < 1 gives a falling hazard
    (infant mortality), k > 1 a rising one (wear-out).

    Density (scipy.stats.weibull_min(c=k, scale=lam)), with ``lam = exp(log_scale)``,
    ``k = exp(log_concentration)``, ``L = log y - log_scale`` and ``t = k L``, so that
    ``(y/lam)^k = e^t``:
    ``log p(y) = log k - log_scale + (k - 1) L - e^t``.
    ``(y/lam)^k`` is ``exp(k (log y - log_scale))``, never a power of a quotient: no overflow of
    ``y/lam`` (y = 1e30 at lam = e^-80), ``log y`` exact at subnormal y, ``k - 1 = expm1(log k)``
    exactly 0 at k = 1. For huge k the value is ``-inf`` only where ``e^t`` overflows (the exact
    value is then below minus the largest float too); below the scale (t -> -inf) it stays the
    finite ``log k - log_scale + (k - 1) L``, and at y = lam it is ``log k - log_scale - 1`` even
    where k itself overflows (log k = 100 in float32: k is clamped at the largest float). For tiny
    k (k flushed to 0 at log k = -100) it is the limit ``log k - log y - 1``.

    Gradient. ``dk/dlog_concentration = k``, ``dL/dlog_scale = -1`` and ``d e^t = e^t dt``, with
    ``dt/dlog_scale = -k`` and ``dt/dlog_concentration = t``:
    ``d(-log p)/dlog_scale = 1 + (k - 1) - k e^t = -k expm1(t)`` (``k ((y/lam)^k - 1)``, zero where
    y is at the scale's quantile),
    ``d(-log p)/dlog_concentration = -1 - t + t e^t = t expm1(t) - 1``, and in the target
    ``d log p/dy = (k - 1)/y - k e^t/y``. ``jax.grad`` (and ``jacfwd``, ``hessian``) of
    ``log_prob`` run through these partials (a ``closed_form`` custom_jvp, the same partials
    ``grad`` returns), in the outputs and in the targets.

    Fisher information in ``(log_scale, log_concentration)``: ``E = e^t`` is standard exponential
    (``E[E^j log E] = Gamma(1 + j) digamma(1 + j)``), so the scores ``k (E - 1)`` and
    ``1 - (E - 1) log E`` give ``[[k^2, -k (1 - gamma)], [-k (1 - gamma), pi^2/6 + (1 - gamma)^2]]``
    (gamma: Euler's constant); ``k^2`` with the concentration fixed. It is the Gumbel's: ``log y``
    is a Gumbel of the minimum with location log_scale and scale 1/k.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.Weibull(concentration=1.0)  # the Exponential: log p = -log_scale - y/scale
      >>> float(fam.log_prob(jnp.array(0.0), jnp.array(2.0)))
      -2.0
    """

    concentration: float | None = None

    def __post_init__(self):
        ls_.check_positive_option("Weibull", "concentration", self.concentration)

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return ls_.describe("Weibull", concentration=self.concentration)

    @property
    def _fixed(self) -> dict[str, float]:
        return {} if self.concentration is None else {"log_concentration": math.log(self.concentration)}

    def _params(self, outputs, family: str | None = None, upcast: bool = True) -> unpack.Params:
        """The raw outputs by name (``p.log_scale``, ``p.log_concentration``, ``p.dtype``), broadcast."""
        return unpack.unpack(outputs, family=family or self._name, names=_NAMES, fixed=self._fixed, upcast=upcast)

    def _prepare(self, outputs, targets) -> _Inputs:
        p, y = unpack.with_targets(self._params(outputs), targets, family=self._name)
        valid = numerics.positive_and_finite(y)  # from the bits: a subnormal y is positive (numerics/positive.py)
        return _Inputs(p, jnp.where(valid, y, jnp.ones_like(y)), valid)

    def _log_concentration(self, p: unpack.Params) -> jax.Array:
        """``p.log_concentration``, or the scalar ``log k`` when it is fixed: a constant enters the
        closed form as a scalar (its tangent a symbolic zero), never as an [N] array."""
        if self.concentration is None:
            return p.log_concentration
        return jnp.asarray(math.log(self.concentration), p.log_scale.dtype)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example log-density, equal to scipy.stats.weibull_min.logpdf(y, k, scale=lam)."""
        p, y, valid = self._prepare(outputs, targets)
        lp = weibull_log_pdf(p.log_scale, self._log_concentration(p), y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: LocScaleOutputs, targets: ArrayLike) -> LocScaleOutputArrays:
        """Closed form ``(-k expm1(t), t expm1(t) - 1)`` (NaN where the target is invalid);
        log_scale's alone if the concentration is fixed."""
        p, y, valid = self._prepare(outputs, targets)
        _, (d_log_scale, d_log_k, _) = _log_pdf_and_partials(p.log_scale, p.log_concentration, y)
        grads = ls_.neg_partials({"log_scale": d_log_scale, "log_concentration": d_log_k}, _NAMES, self._fixed, p.dtype)
        return ls_.nan_off_support(valid, grads)

    def log_cdf(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y) = log(1 - exp(-(y/lam)^k)) = log1mexp(e^t)``, t = k log(y/lam)
        (scipy.stats.weibull_min.logcdf), accurate at tiny y (``t`` itself below t = -40: log F of
        y = 1e-300 at k = 2, lam = 1 is -1381.6, where (y/lam)^k underflows) and where F is near 1; ``-inf``
        for y <= 0, 0 at y = inf. ``jax.grad`` runs its closed form: ``d log F/dt = x / expm1(x)``
        (x = e^t) times ``dt/dlog_scale = -k``, ``dt/dlog_concentration = t``, ``dt/dy = k/y``."""
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = -(y/lam)^k = -e^t`` (exact to the rounding of one exp in both
        tails), 0 for y <= 0; ``d log S/dt = -e^t``, so ``d log S/dlog_scale = k e^t`` and
        ``d log S/dlog_concentration = -t e^t``."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        p, y = unpack.with_targets(self._params(outputs), targets, family=self._name)
        valid = numerics.positive_and_finite(y)  # from the bits: a subnormal y is positive
        ys = jnp.where(valid, y, jnp.ones_like(y))  # double where: the closed form sees a valid y
        value = weibull_log_tail(upper, p.log_scale, self._log_concentration(p), ys)
        return _tails.at_the_ends(value, y, valid, upper).astype(p.dtype)

    def params(self, outputs: LocScaleOutputs) -> dict[str, jax.Array]:
        """``{"scale": exp(log_scale), "concentration": exp(log_concentration)}``."""
        p = self._params(outputs)
        return {"scale": jnp.exp(p.log_scale).astype(p.dtype),
                "concentration": jnp.exp(p.log_concentration).astype(p.dtype)}

    def mean(self, outputs: LocScaleOutputs) -> jax.Array:
        """``lam Gamma(1 + 1/k) = exp(log_scale + lgamma1p(1/k))`` (``lgamma1p`` keeps the digits of
        ``-gamma/k`` at large k)."""
        p = self._params(outputs)
        return jnp.exp(p.log_scale + numerics.lgamma1p(jnp.exp(-p.log_concentration))).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LocScaleOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``lam E^(1/k) = exp(log_scale - g / k)``, E standard exponential and ``g = -log E``
        standard Gumbel; shape ``sample_shape + batch``.

        In log space, so no power of a tiny E underflows before the scale multiplies it; a draw
        beyond the dtype's range (k = 0.01 puts draws at e^-300 and e^460) is clamped to the
        smallest normal or the largest float, which are inside the support (0 and inf are not).
        """
        p = self._params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        g = jax.random.gumbel(key, shape, dtype=p.log_scale.dtype)
        log_y = jnp.broadcast_to(p.log_scale, shape) - g * jnp.broadcast_to(jnp.exp(-p.log_concentration), shape)
        info = jnp.finfo(p.dtype)
        return jnp.clip(jnp.exp(log_y), float(info.tiny), float(info.max)).astype(p.dtype)

    def entropy(self, outputs: LocScaleOutputs) -> jax.Array:
        """``gamma (1 - 1/k) + log_scale - log_concentration + 1``."""
        p = self._params(outputs)
        h = gumbel_.EULER_GAMMA * -jnp.expm1(-p.log_concentration) + p.log_scale - p.log_concentration + 1
        return h.astype(p.dtype)

    def kl(self, outputs_p: LocScaleOutputs, outputs_q: LocScaleOutputs) -> jax.Array:
        """KL(p || q) in closed form (Bauckhage 2013), as two non-negative terms.

        ``log y`` is a Gumbel of the minimum with location log_scale and scale 1/k, and KL is
        invariant under ``y -> -log y``: with ``rho = k_q / k_p`` and
        ``shift = k_q (log_scale_p - log_scale_q)``,
        ``KL = lgamma(rho) + gamma (rho - 1) + expm1mx(shift + lgamma(1 + rho))``
        (``gumbel.extreme_value_kl``), i.e. the textbook
        ``log(k_p/k_q) + k_q log(lam_q/lam_p) + gamma (k_q/k_p - 1) + (lam_p/lam_q)^k_q Gamma(1 + k_q/k_p) - 1``.
        """
        p = self._params(outputs_p, f"{self._name}.kl p", upcast=False)
        q = self._params(outputs_q, f"{self._name}.kl q", upcast=False)
        shape = validate.broadcast_shapes(f"{self._name}.kl", [("outputs_p", p.batch_shape),
                                                              ("outputs_q", q.batch_shape)])
        pairs = (p.log_scale, p.log_concentration, q.log_scale, q.log_concentration)
        (ls_p, lk_p, ls_q, lk_q), dtype = numerics.upcast(*(jnp.broadcast_to(x, shape) for x in pairs))
        shift = jnp.exp(lk_q) * (ls_p - ls_q)
        return gumbel_.extreme_value_kl(lk_q - lk_p, shift).astype(dtype)

    def fisher(self, outputs: LocScaleOutputs) -> jax.Array:
        """``[[k^2, -k (1 - gamma)], [-k (1 - gamma), pi^2/6 + (1 - gamma)^2]]`` per example
        ([..., 2, 2]); ``k^2`` with a fixed concentration."""
        p = self._params(outputs)
        k = jnp.exp(p.log_concentration)
        entries = {("log_scale", "log_scale"): k * k,
                   ("log_scale", "log_concentration"): -(1 - gumbel_.EULER_GAMMA) * k,
                   ("log_concentration", "log_concentration"): jnp.full_like(k, gumbel_.SHAPE_INFORMATION)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, k, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs (0 outside the support): ``-log y`` (of
        ``(k - 1) log y``), or ``log k + (k - 1) log y`` with the concentration fixed."""
        y = validate.numeric_targets(targets, where=f"{self._name} targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = numerics.positive_and_finite(y)
        log_y = numerics.log_of_positive(jnp.where(valid, y, jnp.ones_like(y)))
        if self.concentration is None:
            const = -log_y
        else:
            const = math.log(self.concentration) + math.expm1(math.log(self.concentration)) * log_y
        return jnp.where(valid, const, jnp.zeros_like(y))

    def expectation_nodes(self, outputs: LocScaleOutputs) -> tuple[jax.Array, jax.Array]:
        """A rule for ``E_y[f(y)]``: nodes ``exp(log_scale + t_k / k)`` ``[221, *batch]``, weights
        summing to 1.

        ``t = k (log y - log_scale) = log E`` with E standard exponential has the density
        ``exp(t - e^t)``; ``t_k`` and the weights are the Gumbel's trapezoid rule (``gumbel.T_NODES``),
        exact to ~1e-15 for every Hessian entry of the NLL. A node beyond the dtype's range (k below
        ~0.1 with the float64 range, t/k = -42/k) gets weight 0 and the rule degrades there.
        """
        p = self._params(outputs)
        t = numerics.batch_nodes(gumbel_.T_NODES, p.log_scale)
        y = jnp.exp(p.log_scale[None] + t * jnp.exp(-p.log_concentration)[None])
        w = jnp.where(numerics.positive_and_finite(y), numerics.batch_nodes(gumbel_.T_WEIGHTS, p.log_scale), 0.0)
        return y, w / jnp.sum(w, axis=0, keepdims=True)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: free concentration (0.2 to 5 at random, 0.1 to e^5 among the
        extremes, with log-scales of ±80 and targets 1e-35 to 1e30), and ``concentration=2.0``."""
        return (
            Case("Weibull", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_weibull), plain_log_prob=_textbook_log_prob),
            Case("Weibull(concentration=2.0)", cls(concentration=2.0), _fixed_random, _fixed_extreme,
                 scipy=ScipyReference(lambda log_scale: _scipy_weibull((log_scale, np.full_like(log_scale, _LOG_2)))),
                 plain_log_prob=lambda log_scale, y: _textbook_log_prob((log_scale, jnp.full_like(log_scale, _LOG_2)), y)),
        )


# -- check cases ------------------------------------------------------------------------------------

_LOG_2 = math.log(2.0)  # the fixed concentration's log


def _textbook_log_prob(outputs, y):
    """``log k - log lam + (k - 1) log(y / lam) - (y / lam)^k``: the textbook formula."""
    log_scale, log_k = outputs
    k, z = jnp.exp(log_k), y / jnp.exp(log_scale)
    return log_k - log_scale + (k - 1) * jnp.log(z) - z**k


def _scipy_weibull(outputs):
    import scipy.stats

    return scipy.stats.weibull_min(np.exp(outputs[1]), scale=np.exp(outputs[0]))


def _draw(u_scale, u_y, log_k):
    """Log-scales ``2 N(0, 1)`` and targets from the family, ``lam (-log u)^(1/k)`` (its inverse CDF)."""
    log_scale = 2 * draws.standard_normal(u_scale)
    y = jnp.exp(log_scale + jnp.log(-jnp.log(u_y)) * jnp.exp(-log_k))
    return log_scale, y


def _random(key, dtype, n):
    """Concentrations log-uniform on [0.2, 5], log-scales ``2 N(0, 1)``, targets from the family."""
    u = draws.uniform_rows(key, (3, n))
    log_k = math.log(0.2) + (math.log(5.0) - math.log(0.2)) * u[1]
    log_scale, y = _draw(u[0], u[2], log_k)
    return (log_scale.astype(dtype), log_k.astype(dtype)), draws.positive(y, dtype)


def _fixed_random(key, dtype, n):
    u = draws.uniform_rows(key, (2, n))
    log_scale, y = _draw(u[0], u[1], _LOG_2)
    return log_scale.astype(dtype), draws.positive(y, dtype)


def _extreme(dtype):
    """``[7]``: log-scales of ±80 with targets e^±80 and far from them (t from -1e3 to 300),
    concentrations of 0.1 and e^5, targets of 1e-35 and 1e30, and y at the scale (t = 0).

    Concentrations stay where the float64 expectation rule resolves t (``expectation_nodes``);
    tests/test_tails_families.py takes k from e^-10 to e^20 against mpmath.
    """
    log_scale = [80.0, -80.0, 0.0, 0.0, -80.0, 3.0, 69.0]
    log_k = [0.0, math.log(0.1), 5.0, math.log(0.1), 1.0, 0.0, 0.5]
    y = [1e30, 1e-35, 1.01, 1e-30, 1e-30, math.exp(3.0), 1e30]
    log_scale, log_k, y = (jnp.asarray(np.asarray(x, np.float64), dtype) for x in (log_scale, log_k, y))
    return (log_scale, log_k), y


def _fixed_extreme(dtype):
    """``(log_scale, y)`` at k = 2, ``[5]``: log-scales of ±80, targets 1e-35 to 1e30 (t = 2 log(y/lam))."""
    log_scale = jnp.asarray(np.array([80.0, -80.0, 0.0, 60.0, 0.0]), dtype)
    y = jnp.asarray(np.array([1e30, 1e-35, 1e-30, 1e27, 1.0]), dtype)
    return log_scale, y

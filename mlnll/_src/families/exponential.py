"""Exponential: a non-negative target (a waiting time) given a log-rate."""

from __future__ import annotations

import dataclasses
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
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

# Gauss-Laguerre rule (weight e^-x on [0, inf)): exact for polynomials of degree < 16, so exact for
# the expected Hessian of the Exponential NLL, which is linear in y.
_GL_NODES, _GL_WEIGHTS = np.polynomial.laguerre.laggauss(8)
_NAMES = ("log_rate",)


def _params(outputs, family: str = "Exponential", upcast: bool = True) -> unpack.Params:
    """The raw output by name (``p.log_rate``, ``p.dtype``), validated."""
    return unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together; targets outside the support replaced by 1."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # 0 <= y < inf
    raw: jax.Array  # the targets as given (broadcast), for the limits of log_cdf and log_survival


def _prepare(outputs, targets) -> _Inputs:
    p, y = unpack.with_targets(_params(outputs), targets, family="Exponential")
    # y = inf has density 0: outside the support. From the bits: a negative subnormal y is outside
    # it (DAZ would read it as 0), a positive one inside.
    valid = numerics.nonnegative_and_finite(y)
    return _Inputs(p, jnp.where(valid, y, jnp.ones_like(y)), valid, y)


def _rate_and_product(log_rate: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(rate, rate y)`` for valid targets y >= 0, the product as right as the dtype allows."""
    # e^log_rate range-reduced (InverseScale of -log_rate: main 2^k, one exp as before): the same
    # bits within |log_rate| <= 86 (float32), 0 and inf beyond the range as exp gives them.
    inv = ls_.inverse_scale(-log_rate)
    rate = inv.main * inv.power_of_two
    # rate y = (y main) 2^k: right wherever the product is a number of the dtype, also where rate
    # alone is not (log_rate = -88.7 in float32 flushed rate to 0 against y = 3e38, for a product of
    # 0.9); a subnormal y read from its bits (log_rate = 88.7 at y = 5.9e-39: 1.95, not 0). Exactly 0
    # at y = +-0 whatever the rate (log_rate = 1e4: inf * 0 would be NaN).
    rate_y = jnp.where(numerics.positive_and_finite(y), numerics.multiply_by_positive(inv.main, y) * inv.power_of_two,
                       jnp.zeros_like(y))
    return rate, rate_y


def _log_pdf_and_partials(log_rate, y):
    """``log p = log_rate - rate y`` and its partials ``(1 - rate y, -rate)`` in ``(log_rate, y)``."""
    # e^log_rate range-reduced (InverseScale of -log_rate: main 2^k, one exp as before): the same
    # bits within |log_rate| <= 86 (float32), 0 and inf beyond the range as exp gives them.
    rate, rate_y = _rate_and_product(log_rate, y)
    return log_rate - rate_y, (1 - rate_y, -rate)


# log p, differentiated by its partials: jax.grad, jacfwd and hessian of log_prob run the closed form
# of the class docstring (closed_form.py).
exponential_log_pdf = closed_form(_log_pdf_and_partials)


def _log_tail_and_partials(upper: bool, log_rate, y):
    """``log S = -x``, x = rate y, with partials ``(-x, -rate)``, or ``log F = log(1 - e^-x)`` with
    partials ``(x / expm1(x), rate / expm1(x))`` (``d log F / dx = e^-x / (1 - e^-x) = 1 / expm1(x)``,
    ``dx/dlog_rate = x``, ``dx/dy = rate``), for valid targets y >= 0.

    ``log(1 - e^-x)`` is ``numerics.log1mexp`` (relative accuracy at tiny x and where F is near 1).
    Below x = e^-40 it is ``log x = log_rate + log y`` (the next term, -x/2, is below 1e-17 of it),
    taken from the logs: the product itself is subnormal or 0 in float32 at ``log_rate = -20, y = 1e-30``.
    """
    rate, x = _rate_and_product(log_rate, y)
    if upper:
        return -x, (-x, -rate)
    log_x = log_rate + numerics.log_of_positive(jnp.where(y == 0, jnp.ones_like(y), y))
    tiny = (log_x < -40) | (y == 0)
    value = jnp.where(tiny, jnp.where(y == 0, jnp.full_like(y, -jnp.inf), log_x), numerics.log1mexp(x))
    # x / expm1(x): 1 as x -> 0, 0 as x -> inf (the double where keeps 0/0 and inf/inf out)
    xs = jnp.where(tiny | jnp.isinf(x), jnp.ones_like(x), x)
    slope = jnp.where(tiny, jnp.ones_like(x), jnp.where(jnp.isinf(x), jnp.zeros_like(x), xs / jnp.expm1(xs)))
    return value, (slope, numerics.divide_by_positive(slope, y))  # rate / expm1(x) = slope / y


# log F and log S, differentiated by their partials (closed_form.py).
exponential_log_tail = closed_form(_log_tail_and_partials, num_static=1)


@dataclasses.dataclass(frozen=True)
class Exponential:
    r"""Exponential distribution of a non-negative target, parametrised by its log-rate.

    outputs: ``log_rate`` (any shape). targets: ``y >= 0``, broadcastable with the outputs.

    Density, with ``rate = exp(log_rate)``:
    ``log p(y) = log_rate - rate y`` for y >= 0 (scipy.stats.expon with scale = 1/rate);
    a negative or infinite target gives ``-inf`` (and NaN derivatives).

    Gradient. ``-log p = rate y - log_rate`` and ``d rate / d log_rate = rate``, so
    ``d(-log p)/d log_rate = rate y - 1``; in the target, ``d log p / d y = -rate``. ``jax.grad``
    (and ``jacfwd``, ``hessian``) of ``log_prob`` run through these partials (a ``closed_form``
    custom_jvp, the same partials ``grad`` returns), in the outputs and in the targets.

    Fisher information: ``d^2(-log p)/d log_rate^2 = rate y`` and ``E[y] = 1/rate``, so it is 1
    for every rate (the log-rate is the variance-stabilising parameter).
    """

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log_rate - rate y``, equal to scipy.stats.expon.logpdf(y, scale=1/rate)."""
        p, y, valid, _ = _prepare(outputs, targets)
        lp = exponential_log_pdf(p.log_rate, y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``rate y - 1`` of d(-log_prob)/d log_rate (NaN where the target is invalid)."""
        p, y, valid, _ = _prepare(outputs, targets)
        _, (d_log_rate, _) = _log_pdf_and_partials(p.log_rate, y)
        return jnp.where(valid, -d_log_rate, jnp.nan).astype(p.dtype)

    def log_cdf(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y) = log(1 - e^(-rate y))`` (scipy.stats.expon.logcdf), accurate at
        tiny and at large ``rate y`` (``_log_tail_and_partials``); ``-inf`` for y <= 0."""
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = -rate y`` (0 for y <= 0), differentiated in closed form."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        inputs = _prepare(outputs, targets)
        value = exponential_log_tail(upper, inputs.params.log_rate, inputs.y)
        return _tails.at_the_ends(value, inputs.raw, inputs.valid, upper).astype(inputs.params.dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"rate": jnp.exp(p.log_rate).astype(p.dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """``1 / rate = exp(-log_rate)``."""
        p = _params(outputs)
        return jnp.exp(-p.log_rate).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``E / rate`` with E a standard exponential; shape ``sample_shape + log_rate.shape``."""
        p = _params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        e = jax.random.exponential(key, shape, dtype=p.log_rate.dtype)
        return (e * jnp.broadcast_to(jnp.exp(-p.log_rate), shape)).astype(p.dtype)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """``1 - log_rate``."""
        p = _params(outputs)
        return (1 - p.log_rate).astype(p.dtype)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = ``log(r_p / r_q) + r_q / r_p - 1 = exp(d) - 1 - d``, d = log_rate_q - log_rate_p.

        ``exp(d) - 1 - d`` is ``expm1mx(d)``, a series near 0, so a KL of 1e-14 keeps its digits.
        """
        eta_p = _params(outputs_p, "Exponential.kl p", upcast=False).log_rate
        eta_q = _params(outputs_q, "Exponential.kl q", upcast=False).log_rate
        shape = validate.broadcast_shapes("Exponential.kl", [("outputs_p", eta_p.shape), ("outputs_q", eta_q.shape)])
        (eta_p, eta_q), dtype = numerics.upcast(jnp.broadcast_to(eta_p, shape), jnp.broadcast_to(eta_q, shape))
        return numerics.expm1mx(eta_q - eta_p).astype(dtype)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """1 per example (shape = batch): ``E[rate y] = 1``."""
        p = _params(outputs)
        return jnp.ones_like(p.log_rate).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: none, so 0."""
        y = validate.numeric_targets(targets, where="Exponential targets")
        return jnp.zeros(y.shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Gauss-Laguerre nodes ``x_k / rate`` and weights ``w_k``, shape ``[8, *batch]``; exact for
        polynomials in y of degree < 16."""
        eta = _params(outputs).log_rate
        x = jnp.asarray(_GL_NODES, eta.dtype).reshape((-1,) + (1,) * eta.ndim)
        w = jnp.asarray(_GL_WEIGHTS, eta.dtype).reshape((-1,) + (1,) * eta.ndim)
        nodes = x * jnp.exp(-eta)[None]
        return nodes, jnp.broadcast_to(w, nodes.shape)

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: ``log_rate = -log(mean(y))`` (the rate is 1 / sample mean).

        Setting ``sum_i (rate y_i - 1) = 0`` gives rate = n / sum(y). All-zero data give +inf.
        """
        y = validate.numeric_targets(targets, where="Exponential.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return -jnp.log(jnp.mean(y, axis=axis))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: rates e^(2 N(0, 1)) with targets drawn from the family,
        rates of e^±80 and e^±30, and a target of 0 (in the support) among the extremes."""
        return (
            Case("Exponential", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_expon), plain_log_prob=_textbook_log_prob),
        )


# -- check cases: rate y from 0 to 1e7, log-rates of ±80 ----------------------------------------------


def _textbook_log_prob(log_rate, y):
    """``log(rate) - rate y``: the textbook formula."""
    rate = jnp.exp(log_rate)
    return jnp.log(rate) - rate * y


def _scipy_expon(log_rate):
    import scipy.stats

    return scipy.stats.expon(scale=np.exp(-log_rate))


def _random(key, dtype, n):
    """Log-rates ``2 N(0, 1)`` and targets from the family, ``-log(u) / rate`` (its inverse CDF).

    Every target is kept, also where the score ``rate y - 1`` crosses 0: the check judges it
    against its natural scale ``sqrt(F) = 1``.
    """
    u = draws.uniform_rows(key, (2, n))
    log_rate = 2 * draws.standard_normal(u[0])
    y = -jnp.log(u[1]) * jnp.exp(-log_rate)
    return log_rate.astype(dtype), y.astype(dtype)


def _extreme(dtype):
    # rate * y = 0.55, 1.8e-5, 0 (y = 0 is in the support), 1.07e-0, 1e7.
    log_rate = np.array([80.0, -80.0, 0.0, 30.0, -30.0])
    y = np.array([1e-35, 1e30, 0.0, 1e-13, 1e20])
    return jnp.asarray(log_rate, dtype), jnp.asarray(y, dtype)

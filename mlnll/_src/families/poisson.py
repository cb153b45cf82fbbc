"""Poisson: a count given a log-rate. Its NLL is the Poisson deviance / 2 plus log(y!)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.numerics import counts
from mlnll._src.verify.case import Case, ScipyReference

# Truncated support for expectation_nodes: 2048 consecutive counts from max(0, floor(rate - 10 sd)).
# They hold all but < 1e-16 of the mass for rate <= 1e4 (tests/test_counts.py checks it with scipy).
NUM_NODES = 2048


_NAMES = ("log_rate",)


def _log_rate(outputs, family: str = "Poisson", upcast: bool = True) -> tuple[jax.Array, np.dtype]:
    """Validated log-rates (in the accumulation dtype unless ``upcast=False``), and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)
    return p.log_rate, p.dtype


def _prepare(outputs, targets) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validated ``(log_rate, counts)`` in the accumulation dtype, broadcast, and the result dtype."""
    p, y = unpack.with_targets(unpack.unpack(outputs, family="Poisson", names=_NAMES), targets,
                               family="Poisson")
    return p.log_rate, y, p.dtype


def _log_pmf_and_partials(log_rate: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[jax.Array, None]]:
    """``log p(y)`` for valid counts y in Loader's form, and its partials ``(y - rate, None)``.

    ``t = log(y / rate)`` is ``log y - log_rate`` away from y ~ rate and the log of the ratio near
    it (``numerics.log_ratio``'s accuracy); the series stop at the dtype's precision
    (``counts.bd0_in_dtype``, ``counts.stirlerr_in_dtype``). y = 0 gives ``-rate``.
    """
    ys = jnp.maximum(y, jnp.ones_like(y))  # double where: y = 0 takes the y = 0 branch below
    rate = jnp.exp(log_rate)
    log_y = jnp.log(ys)
    far = log_y - log_rate
    # log(y / rate) as the log of the ratio near 1 (a few ulps), as log y - log_rate elsewhere.
    # The ratio is (y/2) / (rate/2), exact powers of two: XLA rewrites y / exp(log_rate) to
    # y * exp(-log_rate), whose factor flushes to 0 once rate > 1/tiny (log_rate > 87.3 in float32).
    t = numerics.where(jnp.abs(far) < 0.5, jnp.log((0.5 * ys) / (0.5 * rate)), far)
    spread = -counts.log_factorial_part_in_dtype(ys, log_y) - counts.bd0_in_dtype(ys, t, rate)
    # y = 0: log p = -rate; and -rate = -inf wherever the rate overflows (log_rate = 3e38), where
    # bd0's m - x (1 - t) is inf - inf: y log_rate - rate is -inf there for every count
    value = numerics.where((y > 0) & ~jnp.isinf(rate), spread, -rate)
    return value, (y - rate, None)  # counts are not differentiable


# y log(rate) - rate - log(y!), differentiated by its partial (jax.grad runs the closed form).
poisson_log_pmf = closed_form(_log_pmf_and_partials)


@dataclasses.dataclass(frozen=True)
class Poisson:
    r"""Poisson distribution of a count, parametrised by its log-rate.

    outputs: ``log_rate`` (any shape). targets: counts 0, 1, 2, ... (integer or floating dtype),
    broadcastable with the outputs. Negative, non-integer or non-finite targets give ``-inf``.

    Density, with ``rate = exp(log_rate)``:
    ``log p(y) = y log_rate - rate - log(y!)``.
    Evaluated in Loader's saddle-point form,
    ``log p(y) = -[stirlerr(y) + log(2 pi y)/2] - bd0(y, rate)``, ``bd0(y, m) = y log(y/m) + m - y``
    (the first bracket is 0 at y = 0), whose terms are all <= 0: at y = 1e6 the textbook form adds
    terms of size 1.4e7 to get -7.8 and keeps ~10 digits (as scipy does); this keeps ~15.

    Gradient. ``d(-log p)/d log_rate = rate - y``: the derivative of ``rate = exp(log_rate)`` is
    ``rate`` and that of ``y log_rate`` is ``y``. ``log_prob`` differentiates through exactly this
    partial (a ``closed_form`` custom_jvp, also what ``grad`` returns; the counts are not
    differentiable): ``jax.grad``, ``jacfwd`` and ``hessian`` run the derivation, one multiply-add
    in the backward pass, not the derivative of every branch of Loader's form.

    Fisher information: the second derivative of ``-log p`` is ``rate`` whatever y is, so the
    Fisher information in ``log_rate`` is ``rate``.

    torch.nn.PoissonNLLLoss(log_input=True): ``full=False`` is ``rate - y log_rate``, this NLL with
    ``drop_constants=True``. ``full=True`` adds Stirling's approximation of ``log(y!)``,
    ``y log y - y + log(2 pi y)/2`` for y > 1 and 0 otherwise; mlnll adds the exact ``log(y!)``, so
    the two differ deliberately by Stirling's remainder (~1/(12 y); 0.0413 at y = 2) — pinned by a test.
    """

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | log_rate)``, equal to scipy.stats.poisson.logpmf."""
        lr, y, dtype = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)  # double where: the closed form sees a count
        lp = poisson_log_pmf(lr, ys)
        return minus_inf_off_support(lp, valid).astype(dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``exp(log_rate) - y`` of d(-log_prob)/d log_rate (NaN where y is invalid)."""
        lr, y, dtype = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)
        _, (score, _) = _log_pmf_and_partials(lr, ys)
        return jnp.where(valid, -score, jnp.nan).astype(dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        lr, dtype = _log_rate(outputs)
        return {"log_rate": lr.astype(dtype), "rate": jnp.exp(lr).astype(dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        lr, dtype = _log_rate(outputs)
        return jnp.exp(lr).astype(dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Counts in the outputs' dtype, shape ``sample_shape + log_rate.shape``.

        Drawn by ``jax.random.poisson`` (which works in float32 internally, and whose integer
        result is int64 under x64, else int32: rates beyond 2^31 then overflow).
        """
        lr, dtype = _log_rate(outputs)
        shape = tuple(sample_shape) + lr.shape
        return jax.random.poisson(key, jnp.exp(lr), shape).astype(dtype)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """Not implemented: the Poisson entropy ``rate (1 - log rate) + E[log y!]`` has no closed form."""
        raise NotImplementedError(
            "Poisson.entropy: rate * (1 - log rate) + E[log(y!)] has no closed form (E[log(y!)] is an "
            "infinite series), so it is not provided."
        )

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = ``rate_p log(rate_p / rate_q) - rate_p + rate_q = bd0(rate_p, rate_q)``.

        With d = log_rate_p - log_rate_q it is ``rate_p (e^(-d) - 1 + d)``, evaluated by ``bd0``
        (an ``expm1mx`` series near d = 0), so two nearly equal rates give a KL of d^2 rate / 2
        rather than 0.
        """
        lp, _ = _log_rate(outputs_p, "Poisson.kl p", upcast=False)
        lq, _ = _log_rate(outputs_q, "Poisson.kl q", upcast=False)
        shape = validate.broadcast_shapes("Poisson.kl", [("outputs_p", lp.shape), ("outputs_q", lq.shape)])
        (lp, lq), dtype = numerics.upcast(jnp.broadcast_to(lp, shape), jnp.broadcast_to(lq, shape))
        return numerics.bd0(jnp.exp(lp), lp - lq, jnp.exp(lq)).astype(dtype)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``rate = exp(log_rate)``, per example."""
        lr, dtype = _log_rate(outputs)
        return jnp.exp(lr).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``-log(y!)``, the part of ``log_prob`` free of the outputs (0 for an invalid count, whose
        ``log_prob`` is already -inf: ``nll(..., drop_constants=True)`` then gives inf, not NaN)."""
        y = validate.numeric_targets(targets, where="Poisson targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = numerics.is_count(y)
        ys = jnp.where(valid, y, jnp.zeros_like(y))
        return jnp.where(valid, -numerics.log_factorial(ys), jnp.zeros_like(y))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """A truncated support: ``NUM_NODES`` (2048) consecutive counts and their probabilities.

        The counts start at ``max(0, floor(rate - 10 sqrt(rate)))``; for rate <= 1e4 they hold all
        but less than 1e-16 of the mass (the weights are not renormalised, so a larger rate shows
        up as weights summing to less than 1).
        """
        lr, _ = _log_rate(outputs)
        rate = jnp.exp(lr)
        nodes = numerics.window_nodes(rate, jnp.sqrt(rate), NUM_NODES)
        weights = jnp.exp(poisson_log_pmf(jnp.broadcast_to(lr[None], nodes.shape), nodes))
        return nodes, weights

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: ``log_rate = log(mean(y))`` (-inf when every count is 0)."""
        y = validate.numeric_targets(targets, where="Poisson.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return jnp.log(jnp.mean(y, axis=axis))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: rates e^(1.5 N(0, 1)) at random with counts near and far from
        them, log-rates of ±80 and counts of 1e6 among the extremes."""
        return (
            Case("Poisson", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_poisson, discrete=True), plain_log_prob=_plain_log_prob),
        )


# -- check cases: log-rates of ±80, counts up to 1e6 -------------------------------------------------


def _plain_log_prob(log_rate, y):
    """``y log_rate - exp(log_rate) - log(y!)``: the textbook formula."""
    return y * log_rate - jnp.exp(log_rate) - jax.scipy.special.gammaln(y + 1)


def _scipy_poisson(log_rate):
    import scipy.stats

    return scipy.stats.poisson(np.exp(log_rate))


def _random(key, dtype, n):
    """Log-rates ``1.5 N(0, 1)``; even examples count near the rate, odd ones uniformly in 0..49.

    The counts near the rate are a discretised normal, ``round(rate + sqrt(rate) N(0, 1))`` clipped
    at 0: the Poisson's mean and standard deviation without a rejection sampler in the program.
    """
    u = jax.random.uniform(key, (3, n), dtype)
    # Box-Muller: with r = sqrt(-2 log(1 - u0)) and theta = 2 pi u1, r cos(theta) and r sin(theta)
    # are independent standard normals.
    radius, angle = jnp.sqrt(-2 * jnp.log1p(-u[0])), 2 * jnp.pi * u[1]
    log_rate = 1.5 * radius * jnp.cos(angle)
    rate = jnp.exp(log_rate)
    near = jnp.maximum(jnp.round(rate + jnp.sqrt(rate) * radius * jnp.sin(angle)), 0)
    uniform = jnp.floor(50 * u[2])
    return log_rate, jnp.where(jnp.arange(n) % 2 == 0, near, uniform)


def _extreme(dtype):
    log_rate = jnp.array([-80.0, -80.0, -30.0, 0.0, 9.2, 9.2, 2.0], dtype)
    y = jnp.array([0.0, 3.0, 1.0, 1e6, 9500.0, 0.0, 1e6], dtype)
    return log_rate, y

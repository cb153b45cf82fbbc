"""Binomial: the number of successes in ``total_count`` trials, given the logit of one success."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.numerics import counts
from mlnll._src.numerics.logit_kl import logistic_parts
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("logits",)


def _logits(outputs, family: str = "Binomial", upcast: bool = True) -> tuple[jax.Array, np.dtype]:
    """Validated logits (in the accumulation dtype unless ``upcast=False``), and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)
    return p.logits, p.dtype


def _log_pmf_and_partials(n: int, z: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[jax.Array, None]]:
    """``log p(y | z)`` for valid counts 0 <= y <= n and its partials ``(y - n p, None)`` (see the class)."""
    log_p, log_q, p, q = logistic_parts(z)
    value = counts.binomial_log_pmf_in_dtype(y, n, log_p, log_q, p, q)
    # y - n p as y q - (n - y) p: relative accuracy near p = 1 (as Bernoulli's).
    return value, (y * q - (n - y) * p, None)  # counts are not differentiable


# Loader's form of log C(n, y) + y log p + (n - y) log q, differentiated by its partial.
_binomial_log_pmf = closed_form(_log_pmf_and_partials, num_static=1)


def binomial_log_pmf(z: jax.Array, y: jax.Array, n: int) -> jax.Array:
    """``log C(n, y) + y log_sigmoid(z) + (n - y) log_sigmoid(-z)`` for valid counts 0 <= y <= n.

    A ``closed_form`` custom_jvp (``jax.grad``, ``jacfwd`` and ``hessian`` run the closed-form
    score ``y sigmoid(-z) - (n - y) sigmoid(z)``, not autodiff of Loader's branches); the counts
    ``y`` are not differentiable (their tangent is ignored).
    """
    return _binomial_log_pmf(n, z, y)


def _log_binomial_coefficient(y: jax.Array, n: int) -> jax.Array:
    """``log C(n, y)`` for valid counts, without lgamma's cancellation at large n.

    ``log C(n, y) = [stirlerr(n) + log(2 pi n)/2] - sum_{k in (y, n-y)} [stirlerr(k) + log(2 pi k)/2]
    + y log(n/y) + (n - y) log(n/(n - y))``, the last two terms >= 0 (0 log 0 = 0).
    """
    if n == 0:
        return jnp.zeros_like(y)
    counts = jnp.stack([y, n - y], axis=-1)
    positive = counts > 0
    shares = numerics.log_share(jnp.where(positive, counts, jnp.full_like(counts, n)), n)
    entropy_part = -jnp.sum(numerics.mul_nonzero(counts, shares), axis=-1)  # -sum y log(y/n), 0 log 0 = 0
    head = numerics.stirlerr_static(n) + 0.5 * (numerics.LOG_2PI + math.log(n))
    coefficient = head - jnp.sum(numerics.log_factorial_part(counts), axis=-1) + entropy_part
    # y = 0 or n: C(n, y) = 1 exactly, not a rounding of head - log_factorial_part(n).
    return jnp.where((y == 0) | (y == n), jnp.zeros_like(coefficient), coefficient)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Binomial:
    r"""Binomial distribution: successes in ``total_count`` independent trials, from a logit.

    ``Binomial(total_count=n)``, n a whole number >= 0 (static). outputs: logits ``z`` of the
    success probability (any shape). targets: counts 0..n (integer or floating dtype),
    broadcastable with ``z``. A count that is negative, non-integer or above n gives ``-inf``.

    Density, with ``p = sigmoid(z)``:
    ``log p(y) = log C(n, y) + y log_sigmoid(z) + (n - y) log_sigmoid(-z)``.
    It is evaluated in Loader's saddle-point form (``counts.binomial_log_pmf_in_dtype``: the
    log-pmf at p = y/n minus two deviances ``bd0``), whose terms share one sign; the textbook form
    loses 5 digits at n = 1e6 (scipy's logpmf is off by ~1e-10 relative there).

    Gradient. ``d/dz log_sigmoid(z) = sigmoid(-z)`` and ``d/dz log_sigmoid(-z) = -sigmoid(z)``, so
    ``d(-log p)/dz = -y sigmoid(-z) + (n - y) sigmoid(z) = n sigmoid(z) - y``.
    It is evaluated as ``(n - y) sigmoid(z) - y sigmoid(-z)`` (as Bernoulli's), which keeps its
    relative accuracy near p = 1: z = 20, y = n gives ``-n sigmoid(-20)``, not 0. ``log_prob``
    differentiates through exactly this partial (a ``closed_form`` custom_jvp, also what ``grad``
    returns; the counts are not differentiable): ``jax.grad``, ``jacfwd`` and ``hessian`` run the
    derivation. The logistic pieces come from one exp, one log1p and one division.

    Fisher information: the second derivative ``n sigmoid(z) sigmoid(-z) = n p (1 - p)`` does not
    depend on y, so it is the Fisher information in z.
    """

    total_count: int

    def __post_init__(self):
        object.__setattr__(self, "total_count", numerics.check_total_count("Binomial", self.total_count))

    def _prepare(self, outputs, targets) -> tuple[jax.Array, jax.Array, np.dtype]:
        """Validated ``(logits, counts)`` in the accumulation dtype, broadcast, and the result dtype."""
        p, y = unpack.with_targets(unpack.unpack(outputs, family="Binomial", names=_NAMES), targets,
                                   family="Binomial")
        return p.logits, y, p.dtype

    def _valid(self, y: jax.Array) -> jax.Array:
        return numerics.is_count(y) & (y <= self.total_count)

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | logits)``, equal to scipy.stats.binom.logpmf."""
        z, y, dtype = self._prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y, self.total_count)  # double where: a count in 0..n
        lp = binomial_log_pmf(z, ys, self.total_count)
        return minus_inf_off_support(lp, valid).astype(dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``n sigmoid(z) - y`` of d(-log_prob)/dz (NaN where the target is invalid)."""
        z, y, dtype = self._prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y, self.total_count)
        _, (score, _) = _log_pmf_and_partials(self.total_count, z, ys)
        return jnp.where(valid, -score, jnp.nan).astype(dtype)  # (n - y) sigmoid(z) - y sigmoid(-z)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        z, dtype = _logits(outputs)
        return {
            "total_count": jnp.full(z.shape, self.total_count, dtype),
            "logits": z.astype(dtype),
            "probs": jax.nn.sigmoid(z).astype(dtype),
        }

    def mean(self, outputs: ArrayLike) -> jax.Array:
        z, dtype = _logits(outputs)
        return (self.total_count * jax.nn.sigmoid(z)).astype(dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Counts in the logits' dtype, shape ``sample_shape + logits.shape`` (jax.random.binomial)."""
        z, dtype = _logits(outputs)
        shape = tuple(sample_shape) + z.shape
        n = jnp.full(shape, self.total_count, z.dtype)
        p = jnp.broadcast_to(jax.nn.sigmoid(z), shape)
        return jax.random.binomial(key, n, p, shape, z.dtype).astype(dtype)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """``-sum_{y=0}^{n} p(y) log p(y)``: an exact finite sum (no closed form exists).

        O(n) work per example, summed in chunks of 1024 counts so memory stays O(1024) per example.
        """
        z, dtype = _logits(outputs)

        def terms(y):
            ys = y.reshape(y.shape + (1,) * z.ndim)
            shape = y.shape + z.shape
            zs = jnp.broadcast_to(z[None], shape)
            lp = binomial_log_pmf(zs, jnp.broadcast_to(ys, shape), self.total_count)
            # 0 log 0 = 0: a count of probability 0 (underflow) adds nothing.
            return -numerics.mul_nonzero(jnp.exp(lp), lp)

        return numerics.sum_over_counts(terms, self.total_count, z.dtype).astype(dtype)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = ``n KL_Bernoulli(p || q)``, accurate when the two logits are close."""
        zp, _ = _logits(outputs_p, "Binomial.kl p", upcast=False)
        zq, _ = _logits(outputs_q, "Binomial.kl q", upcast=False)
        shape = validate.broadcast_shapes("Binomial.kl", [("outputs_p", zp.shape), ("outputs_q", zq.shape)])
        (zp, zq), dtype = numerics.upcast(jnp.broadcast_to(zp, shape), jnp.broadcast_to(zq, shape))
        kl = numerics.bernoulli_kl(zp, zq)
        return (self.total_count * kl).astype(dtype)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``n p (1 - p)``, computed as ``n sigmoid(z) sigmoid(-z)`` (no cancellation near p = 1)."""
        z, dtype = _logits(outputs)
        return (self.total_count * jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``log C(n, y)``, the part of ``log_prob`` free of the logits (0 for an invalid count, whose
        ``log_prob`` is already -inf: ``nll(..., drop_constants=True)`` then gives inf, not NaN)."""
        y = validate.numeric_targets(targets, where="Binomial targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = self._valid(y)
        ys = jnp.where(valid, y, jnp.zeros_like(y))
        return jnp.where(valid, _log_binomial_coefficient(ys, self.total_count), jnp.zeros_like(y))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over all n + 1 outcomes: nodes ``[n + 1, *batch]`` and probabilities."""
        z, _ = _logits(outputs)
        n = self.total_count
        column = jnp.arange(n + 1, dtype=z.dtype).reshape((n + 1,) + (1,) * z.ndim)
        nodes = jnp.broadcast_to(column, (n + 1,) + z.shape)
        weights = jnp.exp(binomial_log_pmf(jnp.broadcast_to(z[None], nodes.shape), nodes, n))
        return nodes, weights

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: the logit of ``mean(y) / n``, ``log(sum y) - log(sum (n - y))``.

        All-zero or all-n data give -inf or +inf (the MLE is on the boundary).
        """
        y = validate.numeric_targets(targets, where="Binomial.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return jnp.log(jnp.sum(y, axis=axis)) - jnp.log(jnp.sum(self.total_count - y, axis=axis))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: n = 10 (the Fisher check enumerates all n + 1 outcomes),
        logits up to ±3e38, counts at and away from the mode."""
        n = _CHECK_TOTAL_COUNT
        return (
            Case(f"Binomial(n={n})", cls(total_count=n), _random, _extreme,
                 scipy=ScipyReference(lambda z: _scipy_binom(n, z), discrete=True),
                 plain_log_prob=lambda z, y: _plain_log_prob(n, z, y)),
        )


# -- check cases: every count 0..n, logits up to ±3e38 -----------------------------------------------

_CHECK_TOTAL_COUNT = 10


def _plain_log_prob(n: int, z, y):
    """``log C(n, y) + y log p + (n - y) log(1 - p)``, ``p = 1 / (1 + exp(-z))``: the textbook formula."""
    p = 1 / (1 + jnp.exp(-z))
    lgamma = jax.scipy.special.gammaln
    return lgamma(n + 1.0) - lgamma(y + 1) - lgamma(n - y + 1) + y * jnp.log(p) + (n - y) * jnp.log(1 - p)


def _scipy_binom(n: int, z):
    import scipy.special
    import scipy.stats

    return scipy.stats.binom(n, scipy.special.expit(z))


def _random(key, dtype, n):
    """Logits ``3 N(0, 1)`` and counts uniform on 0..n, from one draw of uniforms."""
    u = jax.random.uniform(key, (3, n), dtype)
    # Box-Muller: sqrt(-2 log(1 - u0)) cos(2 pi u1) is a standard normal.
    z = 3 * jnp.sqrt(-2 * jnp.log1p(-u[0])) * jnp.cos(2 * jnp.pi * u[1])
    return z, jnp.floor((_CHECK_TOTAL_COUNT + 1) * u[2])


def _extreme(dtype):
    z = jnp.array([20.0, -20.0, 80.0, -80.0, 1e4, -1e4, 3e38, -3e38, 0.0, 30.0], dtype)
    y = jnp.array([10.0, 0.0, 10.0, 3.0, 3.0, 10.0, 10.0, 0.0, 5.0, 0.0], dtype)
    return z, y

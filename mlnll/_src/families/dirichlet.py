"""Dirichlet: a probability vector (a point of the simplex) given log-concentrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, validate

# A target is on the simplex when |sum(y) - 1| <= _SUM_ULPS * K * eps of the targets' float type:
# a vector normalised in that type (y / sum(y)) is within ~K/2 ulp of summing to 1.
_SUM_ULPS = 2


def _log_concentration(outputs, where: str = "Dirichlet outputs (log_concentration)") -> tuple[jax.Array, jnp.dtype]:
    x = validate.float_outputs(outputs, where=where)
    if x.ndim == 0 or x.shape[-1] < 2:
        raise ValueError(f"{where} need a category axis of size K >= 2, shape [..., K]; got shape {x.shape}.")
    (x,), dtype = numerics.upcast(x)
    return x, dtype


def _prepare(outputs, targets):
    """``(log_a, y, valid, dtype)`` broadcast to ``batch + (K,)``; invalid rows replaced by 1/K."""
    log_a, dtype = _log_concentration(outputs)
    y = validate.numeric_targets(targets, where="Dirichlet targets")
    k = log_a.shape[-1]
    if y.ndim == 0 or y.shape[-1] != k:
        raise ValueError(
            f"Dirichlet: targets are probability vectors [..., K] with K = {k} as in outputs shape "
            f"{log_a.shape}; got targets shape {y.shape}."
        )
    shape = validate.broadcast_shapes("Dirichlet", [("outputs", log_a.shape), ("targets", y.shape)])
    eps = np.finfo(y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else log_a.dtype).eps
    y = jnp.broadcast_to(y.astype(log_a.dtype), shape)
    gap = jnp.sum(y, axis=-1) - 1
    valid = jnp.all((y > 0) & jnp.isfinite(y), axis=-1) & (jnp.abs(gap) <= _SUM_ULPS * k * float(eps))
    y = jnp.where(valid[..., None], y, jnp.full_like(y, 1.0 / k))
    return jnp.broadcast_to(log_a, shape), y, valid, dtype


def _gap_from_one(y: jax.Array) -> jax.Array:
    """``sum(y) - 1`` over the last axis, compensated (Neumaier): exact to ~eps |sum - 1|.

    It multiplies n = sum(a) in ``log_prob``, so the plain sum's K-ulp rounding would cost
    n K eps (3e-10 at n = 3e6) where the compensated one costs nothing.
    """
    def add(carry, x):
        total, comp = carry
        t = total + x
        comp = comp + jnp.where(jnp.abs(total) >= jnp.abs(x), (total - t) + x, (x - t) + total)
        return (t, comp), None

    start = (-jnp.ones(y.shape[:-1], y.dtype), jnp.zeros(y.shape[:-1], y.dtype))
    (total, comp), _ = jax.lax.scan(add, start, jnp.moveaxis(y, -1, 0))
    return total + comp


def _saddle_terms(log_a: jax.Array, log_y: jax.Array):
    """``(a, n, log_n, log_p, u)``: n = sum(a), the mean ``p = a/n`` (log-softmax) and ``u = log(y/p)``."""
    a = jnp.exp(log_a)
    log_n = numerics.logsumexp(log_a, axis=-1)
    log_p = numerics.log_softmax(log_a, axis=-1)
    return a, jnp.exp(log_n), log_n, log_p, log_y - log_p


@dataclasses.dataclass(frozen=True)
class Dirichlet:
    r"""Dirichlet distribution of a probability vector, parametrised by log-concentrations.

    outputs: ``log_concentration`` of shape ``[..., K]`` (K >= 2). targets: points of the open
    simplex, shape ``[..., K]``: every entry > 0 and ``|sum - 1| <= 2 K eps`` of the targets'
    float type. Any other target (a zero or negative entry, a sum off 1) gives ``-inf``.

    Density, with ``a = exp(log_concentration)`` and ``n = sum_k a_k``:
    ``log p(y) = sum_k (a_k - 1) log y_k - log B(a)``,
    ``log B(a) = sum_k gammaln(a_k) - gammaln(n)`` (scipy.stats.dirichlet).
    It is evaluated in the saddle-point form: with the mean ``p = a/n``, ``u_k = log(y_k / p_k)``,
    ``s = sum(y) - 1`` and Stirling's remainder ``delta``,
    ``log p = -sum_k a_k (e^u_k - 1 - u_k) + n s - sum_k log y_k + sum_k log(a_k)/2 - log(n)/2
              - (K - 1) log(2 pi)/2 - sum_k delta(a_k) + delta(n)``,
    every term O(1) near the mode where the plain form subtracts numbers of size ``n log n``.

    Gradient. ``d(-log p)/d log a_j = a_j (digamma(a_j) - digamma(n) - log y_j)``; with
    ``digamma(x) = log x - 1/(2x) + delta'(x)`` this is
    ``-a_j u_j - (1 - p_j)/2 + a_j (delta'(a_j) - delta'(n))``.

    Fisher information in ``log a`` (K x K): the Hessian of ``-log p`` is
    ``diag(a_j (digamma(a_j) - digamma(n) - log y_j) + a_j^2 trigamma(a_j)) - a a^T trigamma(n)``,
    and ``E[log y_j] = digamma(a_j) - digamma(n)``, so
    ``F = diag(a_j^2 trigamma(a_j)) - a a^T trigamma(n)``. There is no expectation rule: the check
    cannot place K-dimensional quadrature nodes cheaply; the tests compare F with the Hessian of the
    log-partition function ``log B(a)`` in the natural parameters instead.
    """

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example log-density (shape = batch), equal to scipy.stats.dirichlet.logpdf."""
        log_a, y, valid, dtype = _prepare(outputs, targets)
        log_y = jnp.log(y)
        a, n, log_n, _, u = _saddle_terms(log_a, log_y)
        deviance = jnp.sum(numerics.scaled_expm1mx(a, u, n[..., None] * y), axis=-1)
        # n s restores the textbook value when y sums to 1 only up to rounding (the deviance form
        # assumes sum(y) = 1 exactly).
        gap = _gap_from_one(y)
        k = log_a.shape[-1]
        stirling = jnp.sum(numerics.stirling_remainder(a), axis=-1) - numerics.stirling_remainder(n)
        lp = (-deviance + n * gap - jnp.sum(log_y, axis=-1) + 0.5 * jnp.sum(log_a, axis=-1) - 0.5 * log_n
              - (k - 1) * numerics.HALF_LOG_2PI - stirling)
        return jnp.where(valid, lp, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets) -> jax.Array:
        """Closed form ``-a u - (1 - p)/2 + a (delta'(a) - delta'(n))``, shape [..., K] (NaN rows if invalid)."""
        log_a, y, valid, dtype = _prepare(outputs, targets)
        a, n, _, log_p, u = _saddle_terms(log_a, jnp.log(y))
        dn = numerics.stirling_remainder_grad(n)[..., None]
        g = -a * u - 0.5 * (1 - jnp.exp(log_p)) + a * (numerics.stirling_remainder_grad(a) - dn)
        return jnp.where(valid[..., None], g, jnp.nan).astype(dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        log_a, dtype = _log_concentration(outputs)
        return {"concentration": jnp.exp(log_a).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        """``a / sum(a) = softmax(log_concentration)``, shape [..., K]."""
        log_a, dtype = _log_concentration(outputs)
        return jax.nn.softmax(log_a, axis=-1).astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``softmax(log G)`` with ``G_k ~ Gamma(a_k, 1)`` drawn in log space; shape
        ``sample_shape + log_concentration.shape``. Entries below the float type's range are 0."""
        log_a, dtype = _log_concentration(outputs)
        shape = tuple(sample_shape) + log_a.shape
        log_g = jax.random.loggamma(key, jnp.broadcast_to(jnp.exp(log_a), shape), shape, dtype=log_a.dtype)
        return jax.nn.softmax(log_g, axis=-1).astype(dtype)

    def entropy(self, outputs) -> jax.Array:
        """``log B(a) + (n - K) digamma(n) - sum_j (a_j - 1) digamma(a_j)``, in the Stirling form.

        The ``x log x`` terms cancel exactly, leaving
        ``H = (K-1) log(2 pi)/2 + sum_j log(a_j)/2 + (1/2 - K) log n + (K - 1)/2 + K/(2n)
             - sum_j 1/(2 a_j) + sum_j delta(a_j) - delta(n) + (n - K) delta'(n) - sum_j (a_j - 1) delta'(a_j)``.
        """
        log_a, dtype = _log_concentration(outputs)
        k = log_a.shape[-1]
        a = jnp.exp(log_a)
        log_n = numerics.logsumexp(log_a, axis=-1)
        n = jnp.exp(log_n)
        s, ds = numerics.stirling_remainder, numerics.stirling_remainder_grad
        per_category = 0.5 * log_a - 0.5 / a + s(a) - (a - 1) * ds(a)
        h = ((k - 1) * numerics.HALF_LOG_2PI + (0.5 - k) * log_n + 0.5 * (k - 1) + 0.5 * k / n
             + jnp.sum(per_category, axis=-1) - s(n) + (n - k) * ds(n))
        return h.astype(dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q): the Bregman divergence of log B, ``sum_j B_G(a_j) - B_G(n)`` with G = gammaln.

        ``KL = log B(a_q) - log B(a_p) + sum_j (a_pj - a_qj) (digamma(a_pj) - digamma(n_p))``,
        each Bregman term from ``gammaln_bregman`` (no term of the size of gammaln itself).
        """
        la_p, _ = _log_concentration(outputs_p, "Dirichlet.kl outputs_p (log_concentration)")
        la_q, _ = _log_concentration(outputs_q, "Dirichlet.kl outputs_q (log_concentration)")
        shape = validate.broadcast_shapes("Dirichlet.kl", [("outputs_p", la_p.shape), ("outputs_q", la_q.shape)])
        (la_p, la_q), dtype = numerics.upcast(jnp.broadcast_to(la_p, shape), jnp.broadcast_to(la_q, shape))
        breg = numerics.gammaln_bregman
        log_n_p, log_n_q = numerics.logsumexp(la_p, axis=-1), numerics.logsumexp(la_q, axis=-1)
        kl = jnp.sum(breg(la_q, la_p), axis=-1) - breg(log_n_q, log_n_p)
        return kl.astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """``diag(a^2 trigamma(a)) - a a^T trigamma(n)``, shape [..., K, K].

        Diagonal ``a_j^2 (trigamma(a_j) - trigamma(n))`` from ``scaled_trigamma_difference`` (no
        cancellation when one concentration dominates); off-diagonal ``-p_i p_j n^2 trigamma(n)``.
        """
        log_a, dtype = _log_concentration(outputs)
        a = jnp.exp(log_a)
        n = jnp.exp(numerics.logsumexp(log_a, axis=-1))
        p = jax.nn.softmax(log_a, axis=-1)
        outer = -p[..., :, None] * p[..., None, :] * numerics.scaled_trigamma(n)[..., None, None]
        eye = jnp.eye(a.shape[-1], dtype=bool)
        # n - a_j as the sum of the other concentrations: no cancellation when a_j dominates.
        rest = jnp.sum(jnp.where(eye, jnp.zeros_like(outer), a[..., None, :]), axis=-1)
        diagonal = numerics.scaled_trigamma_difference(a, rest)
        return jnp.where(eye, diagonal[..., :, None], outer).astype(dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-sum_k log y_k`` (0 where a row has an
        entry <= 0); shape = batch."""
        y = validate.numeric_targets(targets, where="Dirichlet targets")
        if y.ndim == 0:
            raise ValueError(f"Dirichlet targets need a category axis, shape [..., K]; got shape {y.shape}.")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = jnp.all(y > 0, axis=-1, keepdims=True)
        logs = jnp.log(jnp.where(valid, y, jnp.ones_like(y)))
        return -jnp.sum(logs, axis=-1)

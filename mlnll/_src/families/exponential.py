"""Exponential: a non-negative target (a waiting time) given a log-rate."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, validate

# Gauss-Laguerre rule (weight e^-x on [0, inf)): exact for polynomials of degree < 16, so exact for
# the expected Hessian of the Exponential NLL, which is linear in y.
_GL_NODES, _GL_WEIGHTS = np.polynomial.laguerre.laggauss(8)


def _log_rate(outputs, where: str = "Exponential outputs (log_rate)") -> tuple[jax.Array, jnp.dtype]:
    eta = validate.float_outputs(outputs, where=where)
    (eta,), dtype = numerics.upcast(eta)
    return eta, dtype


def _prepare(outputs, targets) -> tuple[jax.Array, jax.Array, jax.Array, jnp.dtype]:
    """``(log_rate, y, valid, dtype)``: broadcast, in the accumulation dtype; invalid y replaced by 1."""
    eta, dtype = _log_rate(outputs)
    y = validate.numeric_targets(targets, where="Exponential targets")
    shape = validate.broadcast_shapes("Exponential", [("outputs", eta.shape), ("targets", y.shape)])
    y = jnp.broadcast_to(y.astype(eta.dtype), shape)
    valid = y >= 0
    return jnp.broadcast_to(eta, shape), jnp.where(valid, y, jnp.ones_like(y)), valid, dtype


@dataclasses.dataclass(frozen=True)
class Exponential:
    r"""Exponential distribution of a non-negative target, parametrised by its log-rate.

    outputs: ``log_rate`` (any shape). targets: ``y >= 0``, broadcastable with the outputs.

    Density, with ``rate = exp(log_rate)``:
    ``log p(y) = log_rate - rate y`` for y >= 0 (scipy.stats.expon with scale = 1/rate);
    a negative target gives ``-inf``.

    Gradient. ``-log p = rate y - log_rate`` and ``d rate / d log_rate = rate``, so
    ``d(-log p)/d log_rate = rate y - 1``.

    Fisher information: ``d^2(-log p)/d log_rate^2 = rate y`` and ``E[y] = 1/rate``, so it is 1
    for every rate (the log-rate is the variance-stabilising parameter).
    """

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example ``log_rate - rate y``, equal to scipy.stats.expon.logpdf(y, scale=1/rate)."""
        eta, y, valid, dtype = _prepare(outputs, targets)
        return jnp.where(valid, eta - jnp.exp(eta) * y, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets) -> jax.Array:
        """Closed form ``rate y - 1`` of d(-log_prob)/d log_rate (NaN where the target is invalid)."""
        eta, y, valid, dtype = _prepare(outputs, targets)
        return jnp.where(valid, jnp.exp(eta) * y - 1, jnp.nan).astype(dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        eta, dtype = _log_rate(outputs)
        return {"rate": jnp.exp(eta).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        """``1 / rate = exp(-log_rate)``."""
        eta, dtype = _log_rate(outputs)
        return jnp.exp(-eta).astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``E / rate`` with E a standard exponential; shape ``sample_shape + log_rate.shape``."""
        eta, dtype = _log_rate(outputs)
        shape = tuple(sample_shape) + eta.shape
        e = jax.random.exponential(key, shape, dtype=eta.dtype)
        return (e * jnp.broadcast_to(jnp.exp(-eta), shape)).astype(dtype)

    def entropy(self, outputs) -> jax.Array:
        """``1 - log_rate``."""
        eta, dtype = _log_rate(outputs)
        return (1 - eta).astype(dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q) = ``log(r_p / r_q) + r_q / r_p - 1 = exp(d) - 1 - d``, d = log_rate_q - log_rate_p.

        ``exp(d) - 1 - d`` is ``expm1mx(d)``, a series near 0, so a KL of 1e-14 keeps its digits.
        """
        eta_p, _ = _log_rate(outputs_p, "Exponential.kl outputs_p (log_rate)")
        eta_q, _ = _log_rate(outputs_q, "Exponential.kl outputs_q (log_rate)")
        shape = validate.broadcast_shapes("Exponential.kl", [("outputs_p", eta_p.shape), ("outputs_q", eta_q.shape)])
        (eta_p, eta_q), dtype = numerics.upcast(jnp.broadcast_to(eta_p, shape), jnp.broadcast_to(eta_q, shape))
        return numerics.expm1mx(eta_q - eta_p).astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """1 per example (shape = batch): ``E[rate y] = 1``."""
        eta, dtype = _log_rate(outputs)
        return jnp.ones_like(eta).astype(dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: none, so 0."""
        y = validate.numeric_targets(targets, where="Exponential targets")
        return jnp.zeros(y.shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs) -> tuple[jax.Array, jax.Array]:
        """Gauss-Laguerre nodes ``x_k / rate`` and weights ``w_k``, shape [8, *batch]; exact for
        polynomials in y of degree < 16."""
        eta, _ = _log_rate(outputs)
        x = jnp.asarray(_GL_NODES, eta.dtype).reshape((-1,) + (1,) * eta.ndim)
        w = jnp.asarray(_GL_WEIGHTS, eta.dtype).reshape((-1,) + (1,) * eta.ndim)
        nodes = x * jnp.exp(-eta)[None]
        return nodes, jnp.broadcast_to(w, nodes.shape)

    def mle(self, targets, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: ``log_rate = -log(mean(y))`` (the rate is 1 / sample mean).

        Setting ``sum_i (rate y_i - 1) = 0`` gives rate = n / sum(y). All-zero data give +inf.
        """
        y = validate.numeric_targets(targets, where="Exponential.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return -jnp.log(jnp.mean(y, axis=axis))

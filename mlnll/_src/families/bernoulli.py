"""Bernoulli: a binary target given a logit. Its NLL is binary cross-entropy."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mlnll._src import numerics, validate


def _prepare(outputs, targets) -> tuple[jax.Array, jax.Array, jnp.dtype]:
    """Validated ``(logits, targets)`` in the accumulation dtype, broadcast, and the result dtype."""
    z = validate.float_outputs(outputs, where="Bernoulli outputs (logits)")
    y = validate.numeric_targets(targets, where="Bernoulli targets")
    shape = validate.broadcast_shapes("Bernoulli", [("outputs", z.shape), ("targets", y.shape)])
    (z,), dtype = numerics.upcast(z)
    return jnp.broadcast_to(z, shape), jnp.broadcast_to(y.astype(z.dtype), shape), dtype


def _logits(outputs) -> tuple[jax.Array, jnp.dtype]:
    z = validate.float_outputs(outputs, where="Bernoulli outputs (logits)")
    (z,), dtype = numerics.upcast(z)
    return z, dtype


def _in_support(y: jax.Array) -> jax.Array:
    return (y >= 0) & (y <= 1)


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    r"""Bernoulli distribution of a binary target, parametrised by a logit.

    outputs: logits ``z`` (any shape). targets: 0/1 labels, or probabilities ``y`` in [0, 1]
    (soft labels), broadcastable with ``z``.

    Density, with ``p = sigmoid(z)``:
    ``log p(y | z) = y log p + (1 - y) log(1 - p) = y log_sigmoid(z) + (1 - y) log_sigmoid(-z)``.
    Its negative is binary cross-entropy with logits. Targets outside [0, 1] give ``-inf``.

    Gradient. ``d/dz log_sigmoid(z) = 1 - sigmoid(z)`` and ``d/dz log_sigmoid(-z) = -sigmoid(z)``, so
    ``d(-log p)/dz = -y (1 - p) + (1 - y) p = p - y = sigmoid(z) - y``.
    It is evaluated as ``(1 - y) sigmoid(z) - y sigmoid(-z)``, which equals ``p - y`` and keeps its
    relative accuracy for a confident, correct prediction (z = 20, y = 1 gives -2.06e-9, not 0).

    Fisher information: ``E[(p - y)^2] = p (1 - p) = sigmoid(z) sigmoid(-z)``, which is also the
    second derivative of ``-log p`` in z (Bernoulli is an exponential family in z).
    """

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example ``log p(targets | logits)``, every constant included (scipy's logpmf)."""
        z, y, dtype = _prepare(outputs, targets)
        # 0 * log 0 = 0: each term is dropped where its weight is exactly 0, so a logit of -inf or
        # 3e38 against a label it agrees with gives 0, not NaN.
        pos = numerics.mul_nonzero(y, numerics.log_sigmoid(z))
        neg = numerics.mul_nonzero(1 - y, numerics.log_sigmoid(-z))
        return jnp.where(_in_support(y), pos + neg, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets) -> jax.Array:
        """Closed form ``sigmoid(z) - y`` of d(-log_prob)/dz (NaN where the target is invalid)."""
        z, y, dtype = _prepare(outputs, targets)
        g = (1 - y) * jax.nn.sigmoid(z) - y * jax.nn.sigmoid(-z)
        return jnp.where(_in_support(y), g, jnp.nan).astype(dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        z, dtype = _logits(outputs)
        return {"logits": z.astype(dtype), "probs": jax.nn.sigmoid(z).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        z, dtype = _logits(outputs)
        return jax.nn.sigmoid(z).astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """0/1 draws in the logits' dtype, shape ``sample_shape + logits.shape``."""
        z, dtype = _logits(outputs)
        shape = tuple(sample_shape) + z.shape
        # u < sigmoid(z)  <=>  log(u) < log_sigmoid(z): no rounding of p near 1.
        u = jax.random.uniform(key, shape, dtype=z.dtype)
        return (jnp.log(u) < jnp.broadcast_to(numerics.log_sigmoid(z), shape)).astype(dtype)

    def entropy(self, outputs) -> jax.Array:
        """``-p log p - (1-p) log(1-p)`` as ``sigmoid(z) softplus(-z) + sigmoid(-z) softplus(z)``."""
        z, dtype = _logits(outputs)
        h = jax.nn.sigmoid(z) * jax.nn.softplus(-z) + jax.nn.sigmoid(-z) * jax.nn.softplus(z)
        return h.astype(dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q) = p (log p - log q) + (1 - p)(log(1 - p) - log(1 - q)), from logits.

        With d = z_p - z_q this equals ``p d - softplus(z_p) + softplus(z_q)`` (the Bregman
        divergence of softplus). For |d| < 1 it is evaluated as
        ``p expm1mx(-d) + log1pmx(p expm1(-d))`` (softplus(z_q) - softplus(z_p) =
        log1p(p expm1(-d))), both terms O(d^2), so a tiny KL keeps its relative accuracy; by the
        symmetry KL(p || q) = KL(1 - p || 1 - q) the logits are flipped so that p <= 1/2 there.
        """
        zp = validate.float_outputs(outputs_p, where="Bernoulli.kl outputs_p (logits)")
        zq = validate.float_outputs(outputs_q, where="Bernoulli.kl outputs_q (logits)")
        shape = validate.broadcast_shapes("Bernoulli.kl", [("outputs_p", zp.shape), ("outputs_q", zq.shape)])
        (zp, zq), dtype = numerics.upcast(jnp.broadcast_to(zp, shape), jnp.broadcast_to(zq, shape))
        log_p, log_1mp = numerics.log_sigmoid(zp), numerics.log_sigmoid(-zp)
        log_q, log_1mq = numerics.log_sigmoid(zq), numerics.log_sigmoid(-zq)
        direct = jax.nn.sigmoid(zp) * (log_p - log_q) + jax.nn.sigmoid(-zp) * (log_1mp - log_1mq)
        # Near d = 0: flip so that p <= 1/2, then the cancellation-free O(d^2) form.
        flip = jnp.where(zp > 0, -jnp.ones_like(zp), jnp.ones_like(zp))
        close = jnp.abs(zp - zq) < 1
        d = jnp.where(close, (zp - zq) * flip, jnp.zeros_like(zp))
        p_small = jax.nn.sigmoid(zp * flip)
        near = p_small * numerics.expm1mx(-d) + numerics.log1pmx(p_small * jnp.expm1(-d))
        return jnp.where(close, near, direct).astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """``p (1 - p)``, computed as ``sigmoid(z) sigmoid(-z)`` (no cancellation near p = 1)."""
        z, dtype = _logits(outputs)
        return (jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)).astype(dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` that does not depend on the outputs: none, so 0."""
        y = validate.numeric_targets(targets, where="Bernoulli targets")
        return jnp.zeros(y.shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over y in {0, 1}: nodes ``[2, *batch]`` and their probabilities."""
        z, _ = _logits(outputs)
        nodes = jnp.stack([jnp.zeros_like(z), jnp.ones_like(z)])
        weights = jnp.stack([jax.nn.sigmoid(-z), jax.nn.sigmoid(z)])
        return nodes, weights

    def mle(self, targets, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: the logit of the mean target, ``log(sum y) - log(sum (1 - y))``.

        All-zero or all-one data give a logit of -inf or +inf (the MLE is on the boundary).
        """
        y = validate.numeric_targets(targets, where="Bernoulli.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return jnp.log(jnp.sum(y, axis=axis)) - jnp.log(jnp.sum(1 - y, axis=axis))

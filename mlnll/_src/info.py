"""Information theory on arrays of probabilities (or logits): information content, entropy,
cross-entropy and KL divergence, in nats or in any base.

All of them use ``0 log 0 = 0`` in values and gradients, and accumulate in float32 at least.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import numerics, validate


def _units(base) -> float:
    """The divisor that turns nats into the requested unit: log(base), or 1 for nats."""
    if base is None:
        return 1.0
    if not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0 and base != 1):
        raise ValueError(f"base must be a positive number other than 1 (2 for bits), or None for nats; got {base!r}.")
    return math.log(base)


def _probs(x, name: str) -> jax.Array:
    return validate.float_outputs(x, where=name)


def _pair(p, q, names: tuple[str, str]) -> tuple[jax.Array, jax.Array, jnp.dtype]:
    p, q = _probs(p, names[0]), _probs(q, names[1])
    shape = validate.broadcast_shapes("information", [(names[0], p.shape), (names[1], q.shape)])
    (p, q), dtype = numerics.upcast(p, q)
    return jnp.broadcast_to(p, shape), jnp.broadcast_to(q, shape), dtype


def information_content(p: ArrayLike, *, base: float | None = None) -> jax.Array:
    """Self-information ``-log p`` of an event of probability ``p`` (an event of 1/8 is 3 bits)."""
    p = _probs(p, "p")
    (p,), dtype = numerics.upcast(p)
    return (-jnp.log(p) / _units(base)).astype(dtype)


def entropy(p: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """``H(p) = -sum_i p_i log p_i`` along ``axis``; a fair coin has 1 bit (``base=2``)."""
    p = _probs(p, "p")
    (p,), dtype = numerics.upcast(p)
    return (-jnp.sum(numerics.xlogy(p, p), axis=axis) / _units(base)).astype(dtype)


def cross_entropy(p: ArrayLike, q: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """``H(p, q) = -sum_i p_i log q_i`` along ``axis``: the cost of coding p with a code built for q."""
    p, q, dtype = _pair(p, q, ("p", "q"))
    return (-jnp.sum(numerics.xlogy(p, q), axis=axis) / _units(base)).astype(dtype)


def kl_divergence(p: ArrayLike, q: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """``KL(p || q) = sum_i p_i log(p_i / q_i) = H(p, q) - H(p)``, >= 0 (Gibbs' inequality).

    Terms with p_i = 0 are 0; a p_i > 0 with q_i = 0 makes it inf.
    """
    p, q, dtype = _pair(p, q, ("p", "q"))
    # where p = 0 the term is 0 whatever q is: q is replaced there so p/q is never 0/0.
    safe_q = jnp.where(p == 0, jnp.ones_like(q), q)
    return (jnp.sum(numerics.xlogy(p, p / safe_q), axis=axis) / _units(base)).astype(dtype)


def _logits(x, name: str) -> tuple[jax.Array, jnp.dtype]:
    x = validate.float_outputs(x, where=name)
    (x,), dtype = numerics.upcast(x)
    return x, dtype


def entropy_with_logits(logits: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """Entropy of ``softmax(logits)`` along ``axis``, from the logits (``-inf`` logits allowed)."""
    z, dtype = _logits(logits, "logits")
    log_p = numerics.log_softmax(z, axis)
    return (-jnp.sum(numerics.mul_nonzero(jnp.exp(log_p), log_p), axis=axis) / _units(base)).astype(dtype)


def cross_entropy_with_logits(p: ArrayLike, logits: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """``-sum_i p_i log softmax(logits)_i``: cross-entropy of target probabilities ``p`` against logits."""
    p = _probs(p, "p")
    z = validate.float_outputs(logits, where="logits")
    validate.broadcast_shapes("cross_entropy_with_logits", [("p", p.shape), ("logits", z.shape)])
    (p, z), dtype = numerics.upcast(p, z)
    log_q = numerics.log_softmax(z, axis)
    return (-jnp.sum(numerics.mul_nonzero(p, log_q), axis=axis) / _units(base)).astype(dtype)


def kl_divergence_with_logits(logits_p: ArrayLike, logits_q: ArrayLike, *, axis: int = -1, base: float | None = None) -> jax.Array:
    """``KL(softmax(logits_p) || softmax(logits_q))`` along ``axis``, from the logits."""
    zp = validate.float_outputs(logits_p, where="logits_p")
    zq = validate.float_outputs(logits_q, where="logits_q")
    validate.broadcast_shapes("kl_divergence_with_logits", [("logits_p", zp.shape), ("logits_q", zq.shape)])
    (zp, zq), dtype = numerics.upcast(zp, zq)
    log_p, log_q = numerics.log_softmax(zp, axis), numerics.log_softmax(zq, axis)
    kl = jnp.sum(numerics.mul_nonzero(jnp.exp(log_p), log_p - log_q), axis=axis)
    return (kl / _units(base)).astype(dtype)

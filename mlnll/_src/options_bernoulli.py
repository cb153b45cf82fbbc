r"""Loss options for ``nll(Bernoulli(), ...)``: pos_weight, label_smoothing and focal_gamma.

One formula covers every combination. With ``p = sigmoid(z)``, the smoothed target
``y' = (1 - alpha) y + alpha / 2`` (alpha spread over the two classes), ``a = pos_weight * y'``,
``b = 1 - y'`` and gamma = ``focal_gamma``:

    L = -a (1 - p)^gamma log p  -  b p^gamma log(1 - p)

which is torch's ``BCEWithLogitsLoss(pos_weight=...)`` at gamma = alpha = 0, and the focal loss of
Lin et al. (2017) without its alpha balancing (pos_weight plays that role) at 0/1 targets.

Gradient. ``dp/dz = p (1 - p)``, ``d log p/dz = 1 - p``, ``d log(1 - p)/dz = -p``, so
``d[(1-p)^gamma log p]/dz = (1-p)^gamma [(1 - p) - gamma p log p]`` and
``d[p^gamma log(1-p)]/dz = p^gamma [gamma (1 - p) log(1 - p) - p]``, giving

    dL/dz = b p^gamma [p - gamma (1 - p) log(1 - p)] - a (1 - p)^gamma [(1 - p) - gamma p log p],

which is ``(1 - y') p - pos_weight y' (1 - p)`` at gamma = 0 (``sigmoid(z) - y`` when pos_weight = 1).
``(1 - p)^gamma`` is computed as ``exp(gamma log_sigmoid(-z))``: its derivative stays finite where
1 - p underflows to 0, unlike ``pow``'s ``gamma x^(gamma - 1)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mlnll._src import numerics
from mlnll._src.families import bernoulli as bern

OPTIONS = ("pos_weight", "label_smoothing", "focal_gamma")


def validate_options(options: dict) -> dict:
    """Check option values at ``nll(...)`` time; returns them normalised (hashable)."""
    out = dict(options)
    alpha = out.get("label_smoothing", 0.0)
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"label_smoothing must be a number in [0, 1]; got {alpha!r}.")
    gamma = out.get("focal_gamma", 0.0)
    if not (isinstance(gamma, (int, float)) and 0 <= gamma < math.inf):
        raise ValueError(f"focal_gamma must be a finite number >= 0; got {gamma!r}.")
    if out.get("pos_weight") is not None:
        weight = jnp.asarray(out["pos_weight"])
        if weight.ndim > 1:
            raise ValueError(f"pos_weight must be a number or a 1-D array over the last axis; got shape {weight.shape}.")
        values = tuple(float(w) for w in weight.reshape(-1))
        if any(not (0 <= w < math.inf) for w in values):
            raise ValueError(f"pos_weight must be finite and >= 0; got {values}.")
        out["pos_weight"] = values[0] if weight.ndim == 0 else values
    return out


def _pos_weight(options: dict, shape: tuple[int, ...], dtype) -> jax.Array:
    weight = options.get("pos_weight")
    if weight is None:
        return jnp.ones(shape, dtype)
    if isinstance(weight, tuple):
        if not shape or shape[-1] != len(weight):
            raise ValueError(
                f"pos_weight has length {len(weight)}; it must match the last axis of the outputs "
                f"(shape {shape})."
            )
    return jnp.broadcast_to(jnp.asarray(weight, dtype), shape)


def _coefficients(outputs, targets, options: dict):
    """``(z, a, b, valid)``: logits and the weights of log p and log(1 - p)."""
    z, y, _ = bern._prepare(outputs, targets)
    valid = bern._in_support(y)
    alpha = options.get("label_smoothing", 0.0)
    y_smooth = (1 - alpha) * y + alpha / 2 if alpha else y
    return z, _pos_weight(options, z.shape, z.dtype) * y_smooth, 1 - y_smooth, valid


def per_example(outputs, targets, options: dict):
    """``(loss, norm, keep)``; ``loss`` is inf where the target is outside [0, 1]."""
    z, a, b, valid = _coefficients(outputs, targets, options)
    gamma = float(options.get("focal_gamma", 0.0))
    log_p, log_1mp = numerics.log_sigmoid(z), numerics.log_sigmoid(-z)
    # (1 - p)^gamma = exp(gamma log(1 - p)) and p^gamma = exp(gamma log p): finite derivatives.
    pos = a * jnp.exp(gamma * log_1mp) if gamma else a
    neg = b * jnp.exp(gamma * log_p) if gamma else b
    loss = -(numerics.mul_nonzero(pos, log_p) + numerics.mul_nonzero(neg, log_1mp))
    return jnp.where(valid, loss, jnp.inf), jnp.ones_like(loss), None


def per_example_grad(outputs, targets, options: dict):
    """Closed-form dL/dz per example (NaN where the target is invalid)."""
    z, a, b, valid = _coefficients(outputs, targets, options)
    gamma = float(options.get("focal_gamma", 0.0))
    p, one_minus_p = jax.nn.sigmoid(z), jax.nn.sigmoid(-z)
    if gamma:
        log_p, log_1mp = numerics.log_sigmoid(z), numerics.log_sigmoid(-z)
        neg = b * jnp.exp(gamma * log_p) * (p - gamma * one_minus_p * log_1mp)
        pos = a * jnp.exp(gamma * log_1mp) * (one_minus_p - gamma * p * log_p)
    else:
        neg, pos = b * p, a * one_minus_p
    return jnp.where(valid, neg - pos, jnp.nan)

r"""Loss options for ``nll(Categorical(), ...)``: ignore_index, label_smoothing, class_weights,
z_loss and focal_gamma, each with its closed-form gradient.

Every combination is one formula. With ``p = softmax(z)``, the (smoothed) target distribution
``q' = (1 - alpha) q + alpha / C`` (q = onehot(y) for labels), class weights ``w`` and
``v = w * q'`` (elementwise), the per-example loss is

    L = -sum_c v_c (1 - p_c)^gamma log p_c  +  beta * logsumexp(z)^2

(gamma = ``focal_gamma``, beta = ``z_loss``). Its gradient: with ``f_c = (1 - p_c)^gamma`` and
``d log p_c / dz_k = [c = k] - p_k``, ``d f_c / dz_k = -gamma p_c (1 - p_c)^(gamma - 1) ([c = k] - p_k)``, so

    dL/dz_k = p_k G - g_k + 2 beta lse p_k,   g_c = v_c (f_c - gamma p_c (1 - p_c)^(gamma - 1) log p_c),

G = sum_c g_c. With gamma = 0, g = v and the first part is the familiar ``p sum(v) - v``; every
term is >= 0 since log p <= 0. ``(1 - p_c)^(gamma - 1) log p_c`` is evaluated as
``(1 - p_c)^gamma * (log p_c / (1 - p_c))``, and ``log p / (1 - p) -> -1`` as p -> 1, so gamma < 1
stays finite at a confident prediction.

The mean's denominator follows torch.nn.CrossEntropyLoss: with class weights and integer labels it
is ``sum_i w[y_i]`` over kept examples; with soft targets it is the number of kept examples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from mlnll._src import numerics
from mlnll._src.families import categorical as cat

OPTIONS = ("ignore_index", "label_smoothing", "class_weights", "z_loss", "focal_gamma")


def validate_options(options: dict) -> dict:
    """Check option values at ``nll(...)`` time; returns them normalised (hashable)."""
    out = dict(options)
    alpha = out.get("label_smoothing", 0.0)
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"label_smoothing must be a number in [0, 1]; got {alpha!r}.")
    for name in ("z_loss", "focal_gamma"):
        value = out.get(name, 0.0)
        if not (isinstance(value, (int, float)) and value >= 0 and value == value and value != float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    index = out.get("ignore_index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise TypeError(f"ignore_index must be an int label value (e.g. -100); got {index!r}.")
    if out.get("class_weights") is not None:
        weights = jnp.asarray(out["class_weights"])
        if weights.ndim != 1:
            raise ValueError(f"class_weights must be a 1-D array of C weights; got shape {weights.shape}.")
        values = tuple(float(w) for w in weights)
        if any(not (w >= 0 and w != float("inf")) for w in values):
            raise ValueError(f"class_weights must be finite and >= 0; got {values}.")
        out["class_weights"] = values
    return out


def _class_weights(options: dict, num_classes: int, dtype) -> jax.Array | None:
    weights = options.get("class_weights")
    if weights is None:
        return None
    if len(weights) != num_classes:
        raise ValueError(
            f"class_weights has length {len(weights)}; expected C = {num_classes}, the size of the "
            "outputs' class axis."
        )
    return jnp.asarray(weights, dtype)


def _target_weights(z: jax.Array, y: jax.Array, is_soft: bool, options: dict):
    """``(v, norm, keep, valid)``: per-class loss weights, the mean's denominator terms, the
    kept examples (not ``ignore_index``) and those whose target is in the support."""
    num_classes = z.shape[-1]
    index = options.get("ignore_index")
    keep = jnp.ones(z.shape[:-1], bool) if (is_soft or index is None) else y != index
    if is_soft:
        q = y
        valid = jnp.all((y >= 0) & (y <= 1), axis=-1)
    else:
        safe = jnp.where(keep, y, jnp.zeros_like(y))  # an ignored label never indexes anything
        valid = ~keep | ((safe >= 0) & (safe < num_classes))
        q = cat._one_hot(safe, num_classes, z.dtype)
    alpha = options.get("label_smoothing", 0.0)
    if alpha:
        q = (1 - alpha) * q + alpha / num_classes  # spread alpha over all C classes (torch, optax)
    weights = _class_weights(options, num_classes, z.dtype)
    if weights is None:
        return q, jnp.ones(z.shape[:-1], z.dtype), keep, valid
    broadcast_weights = jnp.broadcast_to(weights, z.shape)
    v = q * broadcast_weights
    if is_soft:
        norm = jnp.ones(z.shape[:-1], z.dtype)
    else:
        norm = jnp.sum(jnp.where(cat._one_hot(y, num_classes, bool), broadcast_weights, jnp.zeros_like(z)), axis=-1)
    return v, norm, keep, valid


def _focal_factor_parts(log_p, p, one_minus_p, gamma: float):
    """``(f, h)`` with ``f = (1 - p)^gamma`` and ``h = gamma p (1 - p)^(gamma - 1) log p``."""
    if gamma == 0:
        return jnp.ones_like(p), jnp.zeros_like(p)
    # (1 - p)^gamma as exp(gamma log(1 - p)); log(1 - p) = -inf at p = 1 gives exactly 0.
    f = jnp.exp(gamma * jnp.log(one_minus_p))
    # log p / (1 - p) -> -1 as p -> 1 (log p = log1p(-(1 - p)) ~ -(1 - p)).
    positive = one_minus_p > 0
    ratio = jnp.where(positive, log_p / jnp.where(positive, one_minus_p, jnp.ones_like(p)), -jnp.ones_like(p))
    h = gamma * numerics.mul_nonzero(p, f * ratio)
    return f, h


def _parts(z, v, gamma, beta):
    log_p, p, one_minus_p = cat._softmax_parts(z)
    f, h = _focal_factor_parts(log_p, p, one_minus_p, gamma)
    value = -jnp.sum(numerics.mul_nonzero(v * f, log_p), axis=-1)
    lse = None
    if beta:
        lse = numerics.logsumexp(z)
        value = value + beta * jnp.square(lse)
    return value, (p, one_minus_p, v * (f - h), lse)


def _grad_from(p, one_minus_p, g, lse, beta):
    grad = cat._grad_from_parts(p, one_minus_p, g)
    if beta:
        grad = grad + (2 * beta * lse)[..., None] * p  # d(beta lse^2)/dz = 2 beta lse p
    return grad


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _focal_z_loss(z, v, gamma: float, beta: float):
    """The per-example loss with a closed-form tangent (``jax.grad`` then equals ``per_example_grad``)."""
    return _parts(z, v, gamma, beta)[0]


def _focal_z_loss_jvp(gamma, beta, primals, tangents):
    z, v = primals
    dz, dv = tangents
    value, (p, one_minus_p, g, lse) = _parts(z, v, gamma, beta)
    out = jnp.zeros_like(value)
    if not isinstance(dz, SymbolicZero):
        out = out + jnp.sum(_grad_from(p, one_minus_p, g, lse, beta) * dz, axis=-1)
    if not isinstance(dv, SymbolicZero):
        log_p, _, _ = cat._softmax_parts(z)
        f, _ = _focal_factor_parts(log_p, p, one_minus_p, gamma)
        out = out - jnp.sum(f * log_p * dv, axis=-1)
    return value, out


_focal_z_loss.defjvp(_focal_z_loss_jvp, symbolic_zeros=True)


def per_example(outputs, targets, options: dict):
    """``(loss, norm, keep)`` for each example; ``loss`` is inf where the target is invalid."""
    z, y, is_soft, _ = cat._prepare(outputs, targets)
    v, norm, keep, valid = _target_weights(z, y, is_soft, options)
    gamma, beta = float(options.get("focal_gamma", 0.0)), float(options.get("z_loss", 0.0))
    if gamma == 0 and beta == 0:
        loss = cat.cross_entropy_logits(z, v)
    else:
        loss = _focal_z_loss(z, v, gamma, beta)
    return jnp.where(valid, loss, jnp.inf), norm, keep


def per_example_grad(outputs, targets, options: dict):
    """Closed-form d(loss)/d(logits) per example (NaN rows where the target is invalid)."""
    z, y, is_soft, _ = cat._prepare(outputs, targets)
    v, _, _, valid = _target_weights(z, y, is_soft, options)
    gamma, beta = float(options.get("focal_gamma", 0.0)), float(options.get("z_loss", 0.0))
    _, (p, one_minus_p, g, lse) = _parts(z, v, gamma, beta)
    return jnp.where(valid[..., None], _grad_from(p, one_minus_p, g, lse, beta), jnp.nan)

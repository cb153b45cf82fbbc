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

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from mlnll._src import numerics
from mlnll._src.family import PerExample
from mlnll._src.families.categorical import inputs, kernels
from mlnll._src.losses import options as check


@dataclasses.dataclass(frozen=True)
class CategoricalOptions:
    """The options of ``nll(Categorical(), ...)``, validated when built (see the module docstring).

    ``ignore_index``: a label value whose examples are skipped; ``label_smoothing``: alpha in [0, 1];
    ``class_weights``: C finite weights >= 0 (a tuple); ``z_loss``: beta >= 0; ``focal_gamma``:
    gamma >= 0.
    """

    ignore_index: int | None = None
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None
    z_loss: float = 0.0
    focal_gamma: float = 0.0

    def __post_init__(self):
        set_ = functools.partial(object.__setattr__, self)
        set_("ignore_index", check.label_value("ignore_index", self.ignore_index))
        set_("label_smoothing", check.fraction("label_smoothing", self.label_smoothing))
        set_("class_weights", check.nonnegative_weights("class_weights", self.class_weights, scalar_ok=False,
                                                        shape_rule="a 1-D array of C weights"))
        set_("z_loss", check.nonnegative("z_loss", self.z_loss))
        set_("focal_gamma", check.nonnegative("focal_gamma", self.focal_gamma))

    @classmethod
    def build(cls, **options) -> CategoricalOptions:
        """From ``nll``'s keyword options; an unknown name raises listing the accepted ones."""
        return check.build(cls, "Categorical", options)

    def per_example(self, outputs, targets) -> PerExample:
        """``(loss, norm, keep)`` for each example; ``loss`` is inf where the target is invalid."""
        x = inputs.prepare(outputs, targets)
        v, norm, keep = _target_weights(x, self)
        if self.focal_gamma == 0 and self.z_loss == 0:
            loss = kernels.cross_entropy_logits(x.logits, v)
        else:
            loss = _focal_z_loss(x.logits, v, self.focal_gamma, self.z_loss)
        return PerExample(jnp.where(_valid(x, keep), loss, jnp.inf), norm, keep)

    def per_example_grad(self, outputs, targets) -> jax.Array:
        """Closed-form d(loss)/d(logits) per example (NaN rows where the target is invalid)."""
        x = inputs.prepare(outputs, targets)
        v, _, keep = _target_weights(x, self)
        _, (p, one_minus_p, g, lse) = _parts(x.logits, v, self.focal_gamma, self.z_loss)
        grad = _grad_from(p, one_minus_p, g, lse, self.z_loss)
        return jnp.where(_valid(x, keep)[..., None], grad, jnp.nan)


def _valid(x: inputs.Inputs, keep: jax.Array) -> jax.Array:
    """Targets in the support; an ignored label counts as valid (its example is dropped anyway)."""
    return x.valid() | ~keep


def _target_weights(x: inputs.Inputs, options: CategoricalOptions):
    """``(v, norm, keep)``: per-class loss weights ``v = w * q'``, the mean's denominator terms and
    the kept examples (not ``ignore_index``)."""
    z, y, num_classes = x.logits, x.targets, x.num_classes
    index = options.ignore_index
    keep = jnp.ones(z.shape[:-1], bool) if (x.is_soft or index is None) else y != index
    if x.is_soft:
        q = y
    else:
        safe = jnp.where(keep, y, jnp.zeros_like(y))  # an ignored label never indexes anything
        q = kernels.one_hot(safe, num_classes, z.dtype)
    alpha = options.label_smoothing
    if alpha:
        q = (1 - alpha) * q + alpha / num_classes  # spread alpha over all C classes (torch, optax)
    if options.class_weights is None:
        return q, jnp.ones(z.shape[:-1], z.dtype), keep
    if len(options.class_weights) != num_classes:
        raise ValueError(
            f"class_weights has length {len(options.class_weights)}; expected C = {num_classes}, the size "
            "of the outputs' class axis."
        )
    broadcast_weights = jnp.broadcast_to(jnp.asarray(options.class_weights, z.dtype), z.shape)
    if x.is_soft:
        norm = jnp.ones(z.shape[:-1], z.dtype)
    else:
        is_label = kernels.one_hot(y, num_classes, bool)
        norm = jnp.sum(jnp.where(is_label, broadcast_weights, jnp.zeros_like(z)), axis=-1)
    return q * broadcast_weights, norm, keep


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
    log_p, p, one_minus_p = kernels.softmax_parts(z)
    f, h = _focal_factor_parts(log_p, p, one_minus_p, gamma)
    value = -jnp.sum(numerics.mul_nonzero(v * f, log_p), axis=-1)
    lse = None
    if beta:
        lse = numerics.logsumexp(z)
        value = value + beta * jnp.square(lse)
    return value, (p, one_minus_p, v * (f - h), lse)


def _grad_from(p, one_minus_p, g, lse, beta):
    grad = kernels.grad_from_parts(p, one_minus_p, g)
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
        log_p, _, _ = kernels.softmax_parts(z)
        f, _ = _focal_factor_parts(log_p, p, one_minus_p, gamma)
        out = out - jnp.sum(f * log_p * dv, axis=-1)
    return value, out


_focal_z_loss.defjvp(_focal_z_loss_jvp, symbolic_zeros=True)

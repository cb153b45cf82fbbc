"""Geometric: the number of failures before the first success, given the logit of success."""

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

# Truncated support for expectation_nodes: the counts 0..2047. They hold all but
# (1 - p)^2048 <= 1e-16 of the mass when p >= 0.0180, i.e. logits >= -4.0.
NUM_NODES = 2048


_NAMES = ("logits",)


def _logits(outputs, family: str = "Geometric", upcast: bool = True) -> tuple[jax.Array, np.dtype]:
    """Validated logits (in the accumulation dtype unless ``upcast=False``), and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)
    return p.logits, p.dtype


def _prepare(outputs, targets) -> tuple[jax.Array, jax.Array, np.dtype]:
    """Validated ``(logits, counts)`` in the accumulation dtype, broadcast, and the result dtype."""
    p, y = unpack.with_targets(unpack.unpack(outputs, family="Geometric", names=_NAMES), targets,
                               family="Geometric")
    return p.logits, y, p.dtype


def _log_pmf_and_partials(z: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple[jax.Array, None]]:
    """``log p(y | z)`` for valid counts y and its partials ``((1 - p) - y p, None)`` (see the class).

    With ``e = exp(-|z|)`` and ``L = log1p(e)``: ``log p = min(z, 0) - L`` and
    ``log(1 - p) = min(-z, 0) - L``, so ``log p(y) = y min(-z, 0) + min(z, 0) - (1 + y) L``, a sum
    of terms <= 0 (no cancellation). With ``r = 1/(1 + e)``, ``p = r`` and ``1 - p = e r`` for
    z >= 0 (swapped for z < 0), so the score ``(1 - p) - y p`` is one division and two selects.
    """
    pos = z >= 0
    zero, one = jnp.zeros_like(z), jnp.ones_like(z)
    e = jnp.exp(numerics.where(pos, -z, z))  # exp(-|z|) <= 1
    # y * min(-z, 0) taken as 0 at y = 0 even for z = +inf (where min(-z, 0) = -inf).
    value = numerics.mul_nonzero(y, numerics.where(pos, -z, zero)) + numerics.where(pos, zero, z) - (1 + y) * jnp.log1p(e)
    r = 1 / (1 + e)
    score = r * (numerics.where(pos, e, one) - y * numerics.where(pos, one, e))
    return value, (score, None)  # counts are not differentiable


# y log(1 - p) + log p, differentiated by its partials (jax.grad runs the closed form).
geometric_log_pmf = closed_form(_log_pmf_and_partials)


@dataclasses.dataclass(frozen=True)
class Geometric:
    r"""Geometric distribution: failures before the first success, from the logit of success.

    outputs: logits ``z`` of the success probability ``p = sigmoid(z)`` (any shape). targets:
    counts 0, 1, 2, ... (integer or floating dtype), broadcastable with ``z``. Negative,
    non-integer or non-finite targets give ``-inf``. (scipy.stats.geom counts trials instead:
    ``geom.logpmf(y + 1, p)``.)

    Density: ``log p(y) = y log(1 - p) + log p = y log_sigmoid(-z) + log_sigmoid(z)``; both terms
    are <= 0, so the sum keeps its relative accuracy.

    Gradient. ``d/dz log_sigmoid(-z) = -sigmoid(z)`` and ``d/dz log_sigmoid(z) = sigmoid(-z)``, so
    ``d(-log p)/dz = y sigmoid(z) - sigmoid(-z) = y p - (1 - p)``. ``log_prob`` differentiates
    through exactly this partial (a ``closed_form`` custom_jvp, also what ``grad`` returns; the
    counts are not differentiable), so ``jax.grad``, ``jacfwd`` and ``hessian`` run the derivation.
    Value and score come from one exp, one log1p and one division.

    Fisher information: the second derivative is ``(y + 1) sigmoid(z) sigmoid(-z)``, and
    ``E[y + 1] = 1/p``, so the Fisher information in z is ``sigmoid(-z) = 1 - p``.
    """

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | logits)``, equal to scipy.stats.geom.logpmf(y + 1, p)."""
        z, y, dtype = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)  # double where: the closed form sees a count
        lp = geometric_log_pmf(z, ys)
        return minus_inf_off_support(lp, valid).astype(dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``y sigmoid(z) - sigmoid(-z)`` of d(-log_prob)/dz (NaN where y is invalid)."""
        z, y, dtype = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)
        _, (score, _) = _log_pmf_and_partials(z, ys)
        return jnp.where(valid, -score, jnp.nan).astype(dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        z, dtype = _logits(outputs)
        return {"logits": z.astype(dtype), "probs": jax.nn.sigmoid(z).astype(dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """``(1 - p) / p = exp(-z)``."""
        z, dtype = _logits(outputs)
        return jnp.exp(-z).astype(dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Counts in the logits' dtype, shape ``sample_shape + logits.shape``, by inversion.

        ``y = floor(log(u) / log(1 - p))`` with u uniform on (0, 1] has P(y >= k) = (1 - p)^k;
        ``log(1 - p) = log_sigmoid(-z)`` keeps small p exact.
        """
        z, dtype = _logits(outputs)
        shape = tuple(sample_shape) + z.shape
        log_u = jnp.log1p(-jax.random.uniform(key, shape, dtype=z.dtype))  # log of a uniform on (0, 1]
        y = jnp.floor(log_u / jnp.broadcast_to(numerics.log_sigmoid(-z), shape))
        return jnp.maximum(y, jnp.zeros_like(y)).astype(dtype)  # -0.0 (from 0 / -inf) becomes 0

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """``-log p - (1 - p)/p log(1 - p) = softplus(-z) + exp(-z) softplus(z)``.

        For z < 0 the second term is ``log1p(u)/u`` with u = e^z in (0, 1) (-> 1 as p -> 0), so
        nothing overflows; the entropy then grows like ``1 - log p``.
        """
        z, dtype = _logits(outputs)
        neg = z < 0
        zn = jnp.where(neg, z, jnp.zeros_like(z))
        zp = jnp.where(neg, jnp.zeros_like(z), z)
        second = jnp.where(neg, 1 + numerics.log1pmx_over_x(jnp.exp(zn)), jnp.exp(-zp) * jax.nn.softplus(zp))
        return (jax.nn.softplus(-z) + second).astype(dtype)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = ``log(p/q) + (1 - p)/p log((1 - p)/(1 - q)) = KL_Bernoulli(p || q) / p``.

        Evaluated by ``numerics.geometric_kl``: accurate for nearly equal logits, and finite
        as p -> 0 (where it tends to ``exp(d) - 1 - d``, d = zq - zp).
        """
        zp, _ = _logits(outputs_p, "Geometric.kl p", upcast=False)
        zq, _ = _logits(outputs_q, "Geometric.kl q", upcast=False)
        shape = validate.broadcast_shapes("Geometric.kl", [("outputs_p", zp.shape), ("outputs_q", zq.shape)])
        (zp, zq), dtype = numerics.upcast(jnp.broadcast_to(zp, shape), jnp.broadcast_to(zq, shape))
        return numerics.geometric_kl(zp, zq).astype(dtype)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``1 - p = sigmoid(-z)``, per example."""
        z, dtype = _logits(outputs)
        return jax.nn.sigmoid(-z).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the logits: none, so 0."""
        y = validate.numeric_targets(targets, where="Geometric targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return jnp.zeros_like(y)

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """A truncated support: the counts 0..2047 (``NUM_NODES``) and their probabilities.

        They hold all but ``(1 - p)^2048`` of the mass: less than 1e-16 for p >= 0.0180 (logits
        >= -4.0). The weights are not renormalised.
        """
        z, _ = _logits(outputs)
        nodes = numerics.window_nodes(jnp.zeros_like(z), jnp.zeros_like(z), NUM_NODES)
        return nodes, jnp.exp(geometric_log_pmf(jnp.broadcast_to(z[None], nodes.shape), nodes))

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: ``p = 1 / (1 + mean(y))``, i.e. logits ``-log(mean(y))`` (+inf if all 0)."""
        y = validate.numeric_targets(targets, where="Geometric.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        return -jnp.log(jnp.mean(y, axis=axis))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: logits >= -4 at random (where the Fisher check's 2048 nodes
        hold all the mass), up to 3e38 among the extremes, counts of 1e6."""
        return (
            Case("Geometric", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_geom, discrete=True), plain_log_prob=_plain_log_prob),
        )


# -- check cases: logits from -4 to 3e38, counts up to 1e6 -------------------------------------------


def _plain_log_prob(z, y):
    """``y log(1 - p) + log p``, ``p = 1 / (1 + exp(-z))``: the textbook formula."""
    p = 1 / (1 + jnp.exp(-z))
    return y * jnp.log(1 - p) + jnp.log(p)


def _scipy_geom(z):
    """scipy's geom counts trials (1, 2, ...); ``loc=-1`` makes it count failures (0, 1, ...)."""
    import scipy.special
    import scipy.stats

    return scipy.stats.geom(scipy.special.expit(z), loc=-1)


def _random(key, dtype, n):
    """Logits uniform on [-4, 6) and counts uniform on 0..29, from one draw of uniforms."""
    u = jax.random.uniform(key, (2, n), dtype)
    return -4 + 10 * u[0], jnp.floor(30 * u[1])


def _extreme(dtype):
    z = jnp.array([80.0, 30.0, 1e4, 3e38, -4.0, 20.0, 0.0], dtype)
    y = jnp.array([0.0, 5.0, 0.0, 0.0, 2000.0, 1e6, 1e6], dtype)
    return z, y

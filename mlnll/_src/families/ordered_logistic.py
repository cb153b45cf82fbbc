"""OrderedLogistic: an ordinal label 0..K-1 from a location and K - 1 ordered cutpoints (the
proportional-odds, or cumulative logit, model)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _tails
from mlnll._src.types import OrderedLogisticOutputArrays, OrderedLogisticOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("eta", "raw_cutpoints")
_FAMILY = "OrderedLogistic"


def _params(outputs, family: str = _FAMILY, upcast: bool = True) -> unpack.Params:
    """Validated ``eta [...]`` and ``raw_cutpoints [..., K-1]``, broadcast, in the accumulation dtype."""
    return unpack.unpack(outputs, family=family, names=_NAMES, event_ndims={"raw_cutpoints": 1}, upcast=upcast)


def cutpoints(raw: jax.Array) -> jax.Array:
    """``c_0 = raw_0``, ``c_k = c_{k-1} + exp(raw_k)``: strictly increasing for any real ``raw``."""
    return jnp.cumsum(jnp.concatenate([raw[..., :1], jnp.exp(raw[..., 1:])], axis=-1), axis=-1)


def _cutpoint_index(raw: jax.Array) -> jax.Array:
    """``0..K-2`` along the last axis, with unit batch axes (explicit under rank promotion "raise")."""
    n = raw.shape[-1]
    return jnp.arange(n, dtype=jnp.int32).reshape((1,) * (raw.ndim - 1) + (n,))


# x e^-x is below float64's smallest subnormal (4.9e-324 = e^-744.4) for x >= 800.
_FAR_GAP = 800.0


def _x_over_expm1(x: jax.Array) -> jax.Array:
    """``x / expm1(x)`` for x >= 0 (1 at x = 0), in value and derivative without overflow.

    x <= 1: ``x / expm1(x)`` (0/0 only at x = 0, taken as its limit 1); above, the same ratio as
    ``x e^-x / (-expm1(-x))``, where nothing overflows (``expm1(x)`` would be inf at x > 709, and
    the derivative ``inf / inf``). Each branch sees a clamped x (double where); the far one at most
    ``_FAR_GAP``, where ``x e^-x`` is already 0 in float64 (a gap of ``exp(1e4) = inf`` gave
    ``inf * 0``; its derivative beyond the clamp, 0, is the exact one rounded).
    """
    near = x <= 1
    positive = x > 0
    xn = numerics.where(near & positive, x, jnp.ones_like(x))
    xf = numerics.where(near, jnp.full_like(x, 2.0), jnp.minimum(x, _FAR_GAP))
    near_value = numerics.where(positive, xn / jnp.expm1(xn), jnp.ones_like(x))
    return numerics.where(near, near_value, xf * jnp.exp(-xf) / -jnp.expm1(-xf))


def _value_and_partials(eta: jax.Array, raw: jax.Array, k: jax.Array):
    """``log p(k)`` for valid labels k (int32) and its partials in ``eta`` and ``raw`` (see the class).

    With ``u = c_k - eta`` and ``l = c_{k-1} - eta`` (the class's upper and lower cutpoint, absent
    at the top and bottom class) and the gap ``d = c_k - c_{k-1} = exp(raw_k)``:
    ``log p = log_sigmoid(u) + log_sigmoid(-l) + log1mexp(d)``, each term <= 0.

    A NaN cutpoint makes every label's value NaN, also the labels that do not read it (the
    distribution is undefined; the last cumulative cutpoint is NaN exactly when some raw one is,
    or when the raw ones hold both -inf and +inf).
    """
    last = raw.shape[-1]  # K - 1: the top class, which has no upper cutpoint
    c = cutpoints(raw)
    w = jnp.exp(raw)
    upper = jnp.minimum(k, last - 1)[..., None]
    lower = jnp.maximum(k - 1, 0)[..., None]
    u = jnp.take_along_axis(c, upper, axis=-1)[..., 0] - eta
    l = jnp.take_along_axis(c, lower, axis=-1)[..., 0] - eta  # noqa: E741
    log_gap = jnp.take_along_axis(raw, upper, axis=-1)[..., 0]
    gap = jnp.take_along_axis(w, upper, axis=-1)[..., 0]  # exp(raw_k) = c_k - c_{k-1}, never a difference
    has_upper, has_lower = k < last, k > 0
    middle = has_upper & has_lower
    zero = jnp.zeros_like(eta)
    undefined = jnp.isnan(c[..., -1])
    value = (numerics.where(has_upper, numerics.log_sigmoid(u), zero)
             + numerics.where(has_lower, numerics.log_sigmoid(-l), zero)
             + numerics.where(middle, _tails.log1mexp_of_exp(log_gap)[0], zero))  # from raw_k: exp(-88.7) flushes
    value = jnp.where(undefined, jnp.full_like(value, jnp.nan), value)
    above = numerics.where(has_upper, jax.nn.sigmoid(-u), zero)  # 1 - F(u) = d log_sigmoid(u)/du
    below = numerics.where(has_lower, jax.nn.sigmoid(l), zero)  # F(l) = -d log_sigmoid(-l)/dl
    gap_term = numerics.where(middle, _x_over_expm1(gap), zero)  # d/d raw_k of log1mexp(exp(raw_k))
    i = _cutpoint_index(raw)
    scale = jnp.where(i == 0, jnp.ones_like(w), w)  # dc_j / d raw_i = scale_i for j >= i
    kk = k[..., None]
    # s_k A at i = k: A = sigmoid(eta - c_k) ~ e^-s_k where s_k = exp(raw_k) overflows (raw_k = 1e4),
    # and the product is 0 there (inf * 0 otherwise)
    upper_term = numerics.mul_nonzero(above[..., None], scale)
    d_raw = (jnp.where(i < kk, scale * (above - below)[..., None], jnp.zeros_like(w))
             + jnp.where(i == kk, upper_term + gap_term[..., None], jnp.zeros_like(w)))
    d_eta = jnp.where(undefined, jnp.full_like(value, jnp.nan), below - above)
    return value, (d_eta, d_raw, None)  # labels are not differentiable


# log p(k | eta, raw_cutpoints), differentiated by its closed-form partials (jax.grad, jacfwd, hessian).
ordered_logistic_log_pmf = closed_form(_value_and_partials)


def _every_class(eta: jax.Array, raw: jax.Array):
    """``_value_and_partials`` at every label: class axis first, ``[K, *batch]`` (raw's ``[K, *batch, K-1]``)."""
    num_classes = raw.shape[-1] + 1
    labels = jnp.arange(num_classes, dtype=jnp.int32).reshape((num_classes,) + (1,) * eta.ndim)
    labels = jnp.broadcast_to(labels, (num_classes,) + eta.shape)
    return _value_and_partials(jnp.broadcast_to(eta[None], labels.shape),
                               jnp.broadcast_to(raw[None], (num_classes,) + raw.shape), labels)


@dataclasses.dataclass(frozen=True)
class OrderedLogistic:
    r"""Ordered logistic (proportional odds) distribution over K ordered classes 0..K-1.

    outputs: ``(eta, raw_cutpoints)``, ``eta [...]`` the location (a linear predictor) and
    ``raw_cutpoints [..., K-1]`` with ``c_0 = raw_0`` and ``c_k = c_{k-1} + exp(raw_k)``, so any
    real vector gives increasing cutpoints (statsmodels' ``OrderedModel`` thresholds, parametrised
    the same way). targets: labels 0..K-1 (integer, or floating whole numbers), broadcastable with
    ``eta``; anything else gives ``-inf``.

    Density: ``P(y <= k) = sigmoid(c_k - eta)`` for k < K - 1, so
    ``p_k = sigmoid(c_k - eta) - sigmoid(c_{k-1} - eta)`` (the first term 1 at the top class, the
    second 0 at the bottom one). The difference is never formed: with ``u = c_k - eta``,
    ``l = c_{k-1} - eta`` and ``d = u - l = exp(raw_k)``,

        sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - e^-d)

    (put both over ``(1 + e^-u)(1 + e^-l)``: the numerator is ``e^-l - e^-u = e^-l (1 - e^-d)``,
    and ``e^-l / (1 + e^-l) = sigmoid(-l)``), so
    ``log p_k = log_sigmoid(u) + log_sigmoid(-l) + log1mexp(d)``: three terms <= 0, no cancellation
    in either tail (eta = ±1e4), and the gap d comes from ``raw_k`` itself, so nearly equal
    cutpoints (``raw_k = -30``) keep their digits; ``log1mexp(d) = raw_k`` to within d/2 below
    raw_k = -40, taken from ``raw_k`` (a gap of exp(-88.7) is subnormal in float32, and XLA:CPU
    flushes it to 0: -inf where the exact value is finite). The bottom class is ``log_sigmoid(u)`` and the
    top one ``log_sigmoid(-l)``.

    Gradient. ``d log_sigmoid(u)/du = sigmoid(-u)``, ``d log_sigmoid(-l)/dl = -sigmoid(l)`` and
    ``d log1mexp(d)/dd = 1/expm1(d)``. With ``A = sigmoid(-u)`` (0 at the top class) and
    ``B = sigmoid(l)`` (0 at the bottom one): ``d log p/d eta = B - A``; in the cutpoints,
    ``d log p/dc_k = A + 1/expm1(d)`` and ``d log p/dc_{k-1} = -B - 1/expm1(d)``. The raw -> cutpoint
    map has Jacobian ``dc_j/d raw_i = [j >= i] s_i`` (``s_0 = 1``, ``s_i = exp(raw_i)``): a reverse
    cumulative sum times exp. So ``d log p/d raw_i = s_i (A - B)`` for i < k (both cutpoints move
    together), ``s_k A + d/expm1(d)`` at i = k (``s_k/expm1(d) = d/expm1(d)``, -> 1 as d -> 0; just
    ``A`` at k = 0), and 0 for i > k. ``grad`` returns the negatives; ``log_prob`` differentiates
    through exactly these partials (a ``closed_form`` custom_jvp), so ``jax.grad``, ``jacfwd`` and
    ``hessian`` run the derivation.

    Fisher information: an exact sum over the K classes, ``sum_k p_k s_k s_k^T`` with ``s_k`` the
    score at label k in the flattened outputs ``(eta, raw_0, ..., raw_{K-2})``, ``[..., K, K]``.
    """

    def _prepare(self, outputs, targets) -> tuple[unpack.Params, jax.Array, jax.Array]:
        """Validated outputs and targets broadcast to one batch shape; the labels (int32, invalid
        ones replaced by 0) and whether each was valid."""
        p = _params(outputs)
        p, y = unpack.with_targets(p, targets, family=_FAMILY, cast=False)
        labels, valid = numerics.labels_or_zero(y, p.raw_cutpoints.shape[-1] + 1)
        return p, labels, valid

    def log_prob(self, outputs: OrderedLogisticOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | eta, raw_cutpoints)``, equal to statsmodels' OrderedModel
        (distr="logit") log-likelihood term."""
        p, labels, valid = self._prepare(outputs, targets)
        lp = ordered_logistic_log_pmf(p.eta, p.raw_cutpoints, labels)  # double where: a valid label
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: OrderedLogisticOutputs, targets: ArrayLike) -> OrderedLogisticOutputArrays:
        """Closed form ``(A - B, ...)`` of d(-log_prob)/d(eta, raw_cutpoints) (see the class); NaN
        where the label is invalid."""
        p, labels, valid = self._prepare(outputs, targets)
        _, (d_eta, d_raw, _) = _value_and_partials(p.eta, p.raw_cutpoints, labels)
        g_eta = jnp.where(valid, -d_eta, jnp.nan)
        g_raw = jnp.where(valid[..., None], -d_raw, jnp.nan)
        return g_eta.astype(p.dtype), g_raw.astype(p.dtype)

    def params(self, outputs: OrderedLogisticOutputs) -> dict[str, jax.Array]:
        p = _params(outputs)
        lp, _ = _every_class(p.eta, p.raw_cutpoints)
        return {"eta": p.eta.astype(p.dtype), "cutpoints": cutpoints(p.raw_cutpoints).astype(p.dtype),
                "probs": jnp.exp(jnp.moveaxis(lp, 0, -1)).astype(p.dtype)}

    def mean(self, outputs: OrderedLogisticOutputs) -> jax.Array:
        """The expected label ``sum_k k p_k = sum_{k < K-1} P(y > k) = sum_k sigmoid(eta - c_k)``."""
        p = _params(outputs)
        return jnp.sum(jax.nn.sigmoid(p.eta[..., None] - cutpoints(p.raw_cutpoints)), axis=-1).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: OrderedLogisticOutputs, *,
               sample_shape: Sequence[int] = ()) -> jax.Array:
        """Labels (int32), shape ``sample_shape + batch``, from the latent variable: with
        ``y* = eta + L``, L standard logistic, ``y = #{k : c_k < y*}`` has ``P(y <= k) = P(y* <= c_k)
        = sigmoid(c_k - eta)``."""
        p = _params(outputs)
        shape = tuple(sample_shape) + p.eta.shape
        latent = jnp.broadcast_to(p.eta, shape) + jax.random.logistic(key, shape, p.eta.dtype)
        c = jnp.broadcast_to(cutpoints(p.raw_cutpoints), shape + p.raw_cutpoints.shape[-1:])
        below = c < latent[..., None]
        return jnp.sum(below.astype(jnp.int32), axis=-1)

    def entropy(self, outputs: OrderedLogisticOutputs) -> jax.Array:
        """``-sum_k p_k log p_k`` over the K classes (0 log 0 = 0)."""
        p = _params(outputs)
        lp, _ = _every_class(p.eta, p.raw_cutpoints)
        return -jnp.sum(numerics.mul_nonzero(jnp.exp(lp), lp), axis=0).astype(p.dtype)

    def kl(self, outputs_p: OrderedLogisticOutputs, outputs_q: OrderedLogisticOutputs) -> jax.Array:
        """KL(p || q) = ``sum_k p_k (log p_k - log q_k)`` over the K classes (classes with p_k = 0 add 0)."""
        a, b = _params(outputs_p, f"{_FAMILY}.kl p"), _params(outputs_q, f"{_FAMILY}.kl q")
        if a.raw_cutpoints.shape[-1] != b.raw_cutpoints.shape[-1]:
            raise ValueError(f"{_FAMILY}.kl: p has {a.raw_cutpoints.shape[-1] + 1} classes and q "
                             f"{b.raw_cutpoints.shape[-1] + 1}; they must have the same K.")
        shape = validate.broadcast_shapes(f"{_FAMILY}.kl", [("outputs_p", a.batch_shape), ("outputs_q", b.batch_shape)])
        lp = [_every_class(jnp.broadcast_to(x.eta, shape), jnp.broadcast_to(x.raw_cutpoints, shape + x.raw_cutpoints.shape[-1:]))[0]
              for x in (a, b)]
        dtype = numerics.float_dtype(a, b)
        return jnp.sum(numerics.mul_nonzero(jnp.exp(lp[0]), lp[0] - lp[1]), axis=0).astype(dtype)

    def fisher(self, outputs: OrderedLogisticOutputs) -> jax.Array:
        """``sum_k p_k s_k s_k^T``, ``[..., K, K]`` over ``(eta, raw_0, ..., raw_{K-2})`` (see the class)."""
        p = _params(outputs)
        lp, (d_eta, d_raw, _) = _every_class(p.eta, p.raw_cutpoints)
        score = jnp.concatenate([d_eta[..., None], d_raw], axis=-1)  # [K, *batch, K]
        outer = score[..., :, None] * score[..., None, :]
        weight = numerics.expand_to(jnp.exp(lp), outer.ndim)
        # A class of probability 0 adds nothing, even where its score is infinite.
        return jnp.sum(numerics.mul_nonzero(jnp.broadcast_to(weight, outer.shape), outer), axis=0).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: none, so 0 (targets' shape)."""
        y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
        return jnp.zeros(y.shape, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: OrderedLogisticOutputs) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over the K labels: nodes ``[K, *batch]`` (int32) and their probabilities."""
        p = _params(outputs)
        lp, _ = _every_class(p.eta, p.raw_cutpoints)
        num_classes = lp.shape[0]
        labels = jnp.arange(num_classes, dtype=jnp.int32).reshape((num_classes,) + (1,) * p.eta.ndim)
        return jnp.broadcast_to(labels, lp.shape), jnp.exp(lp)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: K = 4 classes, eta and cutpoints at random (labels drawn from
        the model), and eta = ±1e4, cutpoints 1e4 apart or exp(-30) apart among the extremes."""
        return (
            Case(_FAMILY, cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_ordered, targets=_int_labels, per_example=True, discrete=True),
                 plain_log_prob=_plain_log_prob),
        )


# -- check cases: K = 4, eta up to ±1e4, cutpoint gaps from exp(-30) to 1e4 -------------------------

NUM_CLASSES = 4


def _plain_log_prob(outputs, y):
    """``log(sigmoid(c_k - eta) - sigmoid(c_{k-1} - eta))``, cutpoints by cumsum: the textbook formula."""
    eta, raw = outputs
    c = jnp.cumsum(jnp.concatenate([raw[..., :1], jnp.exp(raw[..., 1:])], axis=-1), axis=-1)
    cdf = 1 / (1 + jnp.exp(-(c - eta[..., None])))
    ones = jnp.ones_like(cdf[..., :1])
    probs = jnp.concatenate([cdf, ones], axis=-1) - jnp.concatenate([jnp.zeros_like(ones), cdf], axis=-1)
    return jnp.log(jnp.take_along_axis(probs, y.astype(jnp.int32)[..., None], axis=-1)[..., 0])


def _int_labels(y):
    return np.asarray(y).astype(np.int64)


def _scipy_ordered(outputs):
    """The class probabilities from statsmodels' OrderedModel (its threshold transform and its
    logistic ``prob``) as a scipy ``rv_discrete`` on 0..K-1 (one example's outputs)."""
    import scipy.stats
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    eta, raw = (np.asarray(x, np.float64) for x in outputs)
    k = raw.shape[-1] + 1
    model = OrderedModel(np.arange(k), np.zeros((k, 1)), distr="logit")
    thresholds = model.transform_threshold_params(np.concatenate([[0.0], raw]))  # [-inf, c_0.., inf]
    probs = model.prob(thresholds[:-1] - eta, thresholds[1:] - eta)
    return scipy.stats.rv_discrete(values=(np.arange(k), probs / probs.sum()))


def _random(key, dtype, n):
    """eta ``2 N(0, 1)``, raw_0 ``N(0, 1)``, the other raw ``N(0, 1) / 2``, and labels drawn from
    the model by its latent logistic variable, all from one draw of uniforms."""
    u = draws.uniform_rows(key, (n, NUM_CLASSES + 1))
    z = draws.box_muller(u[:, :NUM_CLASSES])
    eta = 2 * z[:, 0]
    raw = jnp.concatenate([z[:, 1:2], 0.5 * z[:, 2:]], axis=-1)
    v = u[:, NUM_CLASSES]
    latent = eta + jnp.log(v) - jnp.log1p(-v)  # logit of a uniform: a standard logistic draw
    labels = jnp.sum((cutpoints(raw) < latent[:, None]).astype(jnp.int32), axis=-1)
    return (eta.astype(dtype), raw.astype(dtype)), labels


def _extreme(dtype):
    eta = jnp.array([1e4, -1e4, 1e4, 0.0, 0.0, 0.0, 30.0, -1e4], dtype)
    raw = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1e4, 9.0, 9.0], [-1.0, -30.0, 0.0],
                     [-1.0, -30.0, 0.0], [0.0, 9.2, 9.2], [0.0, 0.0, -30.0], [1e4, -30.0, 5.0]], dtype)
    labels = jnp.array([0, 3, 1, 1, 2, 1, 2, 3], jnp.int32)
    return (eta, raw), labels

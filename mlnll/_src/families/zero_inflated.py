"""ZeroInflated and Hurdle: a count family with extra zeros, two ways.

Count data often have more zeros than a Poisson or negative binomial allows (clicks, species
counts, insurance claims, days of absence). Two models add them:

* ``ZeroInflated(family)``: with probability ``g = sigmoid(gate_logit)`` the count is a structural
  zero, otherwise a draw from ``family`` (which may itself be 0). ``P(0) = g + (1 - g) p(0)``,
  ``P(y) = (1 - g) p(y)`` for y > 0.
* ``Hurdle(family)``: ``P(0) = sigmoid(zero_logit)``; a positive count comes from ``family``
  truncated to y > 0: ``P(y) = (1 - P(0)) p(y) / (1 - p(0))``.

Both take the component's outputs nested as ``MixtureSameFamily`` nests them:
``(gate_logit, component_outputs)``, ``component_outputs`` exactly what ``family`` takes. Both are
families in their own right (``nll``, ``checked``, ``check_grad``, the check command, ``jit``/
``vmap``/``grad``/``hessian``) whose derivatives are closed forms built from the component's
own (``log_prob``, ``grad``): a ``closed_form`` custom_jvp, so the backward pass reuses the
component's score rather than differentiating its saddle-point series.

The information-theoretic quantities decompose by the chain rule over the split "zero or not":
``KL = KL_Bernoulli(zero split) + P(y > 0) KL(truncated parts)`` and the same for the entropy, with
the component's truncated part ``p(y)/(1 - p(0))``, whose KL is ``(KL_c - KL_Bernoulli(p0_p ||
p0_q)) / (1 - p0_p)``. So the entropy, the KL and the Fisher information have closed forms exactly
where the component's do (Poisson: KL and Fisher, no entropy; NegativeBinomial: none; Binomial
and Geometric: all three).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families.binomial import Binomial
from mlnll._src.families.geometric import Geometric
from mlnll._src.families.poisson import Poisson
from mlnll._src.family import Family
from mlnll._src.types import ZeroInflatedOutputArrays, ZeroInflatedOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NEEDED = ("log_prob", "grad", "params", "mean", "sample")


class _Outputs(NamedTuple):
    """Validated outputs: the gate (or zero) logit and the component's outputs, both in the
    accumulation dtype, and the dtype results are returned in."""

    logit: jax.Array
    component_outputs: Any
    dtype: np.dtype



def _zero_count(y: jax.Array) -> jax.Array:
    """``y == 0`` as a count: a subnormal target compares equal to 0 under XLA:CPU's
    denormals-are-zero (jitted), but it is no count (its bits are not zero)."""
    if not jnp.issubdtype(y.dtype, jnp.floating):
        return y == 0
    return (y == 0) & ~numerics.nonzero_subnormal(y)

def _check_component(wrapper: str, family) -> None:
    if isinstance(family, type):
        raise TypeError(f"{wrapper}: pass a family instance, e.g. mlnll.{wrapper}(mlnll.{family.__name__}()); "
                        "got the class")
    missing = [m for m in _NEEDED if not callable(getattr(family, m, None))]
    if missing:
        raise TypeError(f"{wrapper}(family=...) needs an mlnll count family; {family!r} lacks {', '.join(missing)}.")


def _split(wrapper: str, logit_name: str, outputs) -> _Outputs:
    """``(logit, component_outputs)``: the logit through the unpacking layer, every floating leaf of
    the component's outputs cast to the accumulation dtype (the component validates its own)."""
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        kind = type(outputs).__name__
        got = f"a {kind} of length {len(outputs)}" if isinstance(outputs, (tuple, list)) else f"a single {kind}"
        raise TypeError(f"{wrapper} outputs must be a tuple ({logit_name}, component_outputs); got {got}.")
    p = unpack.unpack(outputs[0], family=wrapper, names=(logit_name,), upcast=False)
    leaves, treedef = jax.tree.flatten(outputs[1])
    leaves = [jnp.asarray(x) for x in leaves]
    dtype = numerics.float_dtype(p[logit_name], *leaves)
    acc = numerics.accumulation_dtype(dtype)
    cast = lambda x: x.astype(acc) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    return _Outputs(p[logit_name].astype(acc), jax.tree.unflatten(treedef, [cast(x) for x in leaves]), dtype)


def _broadcast(wrapper: str, logit: jax.Array, lp: jax.Array) -> tuple[int, ...]:
    return validate.broadcast_shapes(wrapper, [("logit", logit.shape), ("component log_prob", lp.shape)])


def _component_scores(component, component_outputs, y, shape) -> list[jax.Array]:
    """``d log p(y)/d theta`` of the component, one leaf per component output, at ``shape``."""
    return [jnp.broadcast_to(-g, shape) for g in jax.tree.leaves(component.grad(component_outputs, y))]


def _binary_entropy(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``-p log p - q log q`` from ``log p`` and ``log q = log(1 - p)`` (0 log 0 = 0)."""
    return -numerics.mul_nonzero(jnp.exp(log_p), log_p) - numerics.mul_nonzero(jnp.exp(log_q), log_q)


def _log_softplus(x: jax.Array) -> jax.Array:
    """``log(softplus(x)) = log(log1p(e^x))``: ``x - e^x/2`` once e^x < 1e-8 (the next term is
    ``5 e^(2x)/24``), where ``softplus`` would underflow before its log is taken."""
    small = x < -18.5
    xs = numerics.where(small, jnp.zeros_like(x), x)
    xt = numerics.where(small, x, jnp.zeros_like(x))
    return numerics.where(small, xt - 0.5 * jnp.exp(xt), jnp.log(numerics.softplus(xs)))


def _log_minus_log_p0(component, comp, lp0: jax.Array, shape) -> jax.Array:
    """``log(-log p(0))`` of the component, from its outputs where it is a built-in count family
    (``log_rate`` for Poisson, ``log n + log softplus(z)`` for Binomial, ``log softplus(-z)`` for
    Geometric, ``b + log softplus(a - b)`` for NegativeBinomial), so it stays exact where
    ``p(0)`` rounds to 1 (a rate of e^-1e4); from ``log p(0)`` for any other family."""
    from mlnll._src.families.negative_binomial import NegativeBinomial

    b = lambda x: jnp.broadcast_to(jnp.asarray(x), shape).astype(lp0.dtype)  # noqa: E731
    if isinstance(component, Poisson):
        return b(comp)
    if isinstance(component, Binomial) and component.total_count > 0:
        return float(np.log(component.total_count)) + _log_softplus(b(comp))
    if isinstance(component, Geometric):
        return _log_softplus(-b(comp))
    if isinstance(component, NegativeBinomial) and isinstance(comp, (tuple, list)) and len(comp) == 2:
        a, c = b(comp[0]), b(comp[1])
        return c + _log_softplus(a - c)
    return jnp.log(-lp0)


@jax.custom_jvp
def _log_share_of_exp(log_x: jax.Array) -> jax.Array:
    """``log((1 - e^-x) / x)`` at ``x = exp(log_x)`` (<= 0; 0 where x underflows): the log of the
    ratio for x <= log 2, ``log1p(-e^-x) - log_x`` above. Its derivative in ``log_x`` is stated,
    ``x / expm1(x) - 1`` (autodiff of the ratio would cancel as x -> 0)."""
    x = jnp.exp(log_x)
    near = x <= numerics.LOG_2
    xs = numerics.where(near & (x > 0), x, jnp.ones_like(x))
    ratio = numerics.where(x > 0, -jnp.expm1(-xs) / xs, jnp.ones_like(x))
    xf = numerics.where(near, jnp.ones_like(x), x)
    return numerics.where(near, jnp.log(ratio), jnp.log1p(-jnp.exp(-xf)) - log_x)


def _log_one_minus_exp_of(log_x: jax.Array) -> jax.Array:
    """``log(1 - e^-x)`` at ``x = exp(log_x)``: ``log_x + log((1 - e^-x)/x)``, exact where x underflows."""
    return log_x + _log_share_of_exp(log_x)


def _x_over_expm1(log_x: jax.Array) -> jax.Array:
    """``x / expm1(x)`` at ``x = exp(log_x)`` (1 at x = 0, 0 at x = inf)."""
    x = jnp.exp(log_x)
    small = x <= 1
    xs = numerics.where(small & (x > 0), x, jnp.ones_like(x))
    xl = numerics.where(small, jnp.full_like(x, 2.0), x)
    near = numerics.where(x > 0, xs / jnp.expm1(xs), jnp.ones_like(x))
    return numerics.where(small, near, numerics.mul_nonzero(jnp.exp(-xl), xl) / -jnp.expm1(-xl))


@_log_share_of_exp.defjvp
def _log_share_of_exp_jvp(primals, tangents):
    (log_x,), (t,) = primals, tangents
    x = jnp.exp(log_x)
    small = x <= 1
    xs = numerics.where(small & (x > 0), x, jnp.ones_like(x))
    # x / expm1(x) - 1 = -expm1mx(x) / expm1(x): no cancellation as x -> 0 (where it is ~ -x/2)
    near = numerics.where(x > 0, -numerics.expm1mx(xs) / jnp.expm1(xs), jnp.zeros_like(x))
    return _log_share_of_exp(log_x), numerics.where(small, near, _x_over_expm1(log_x) - 1) * t


class _Zero(NamedTuple):
    """The component at y = 0: ``log p0``, ``log(1 - p0)``, ``p0/(1 - p0)`` and the score ``u0``."""

    lp0: jax.Array
    log_pos: jax.Array
    odds: jax.Array
    u0: list


def _zero_pieces(component, comp, shape, dtype) -> _Zero:
    """``_Zero`` at the batch ``shape``: ``log(1 - p0)`` from ``log(-log p0)`` (see
    ``_log_minus_log_p0``) without cancellation as p0 -> 1."""
    zeros = jnp.zeros(shape, dtype)
    lp0 = jnp.broadcast_to(jnp.asarray(component.log_prob(comp, zeros)), shape)
    log_pos = _log_one_minus_exp_of(_log_minus_log_p0(component, comp, lp0, shape))
    return _Zero(lp0, log_pos, jnp.exp(lp0 - log_pos), _component_scores(component, comp, zeros, shape))


def _flat(leaves: list[jax.Array]) -> jax.Array:
    """Scalar-event leaves ``[*batch]`` stacked on a last axis ``[*batch, P]``."""
    return jnp.stack(leaves, axis=-1)


def _component_fisher(component, component_outputs, shape, size: int) -> jax.Array:
    """The component's Fisher information as ``[*shape, P, P]`` (a scalar for a one-output family)."""
    fisher = jnp.asarray(component.fisher(component_outputs))
    if size == 1:
        fisher = fisher[..., None, None]
    return jnp.broadcast_to(fisher, shape + (size, size))


def _assemble(f_zz: jax.Array, f_zt: jax.Array, f_tt: jax.Array) -> jax.Array:
    """``[[f_zz, f_zt^T], [f_zt, f_tt]]`` per example: the logit first, then the component's outputs."""
    top = jnp.concatenate([f_zz[..., None, None], f_zt[..., None, :]], axis=-1)
    bottom = jnp.concatenate([f_zt[..., :, None], f_tt], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def _with_component_zero_nodes(component, component_outputs, shape):
    """The component's ``expectation_nodes`` with the count 0 put first (its weight returned apart):
    ``(nodes [1 + K, *shape], component weights [K, *shape] with node 0 masked out)``."""
    method = getattr(component, "expectation_nodes", None)
    if method is None:
        raise NotImplementedError(f"{component!r} has no expectation_nodes.")
    nodes, weights = method(component_outputs)
    k = nodes.shape[0]
    nodes = jnp.broadcast_to(nodes, (k,) + shape)
    weights = jnp.broadcast_to(weights, (k,) + shape)
    weights = jnp.where(nodes == 0, jnp.zeros_like(weights), weights)  # 0 is counted once, first
    return jnp.concatenate([jnp.zeros((1,) + shape, nodes.dtype), nodes], axis=0), weights


def _batch(wrapper: str, component, o: _Outputs):
    """``(batch shape, component outputs broadcast to it)``: the broadcast of the logit's shape and
    the component's batch shape (each scalar-event leaf broadcast, so draws are independent)."""
    like = jnp.asarray(component.mean(o.component_outputs))
    shape = validate.broadcast_shapes(wrapper, [("logit", o.logit.shape), ("component", like.shape)])
    comp = jax.tree.map(lambda x: jnp.broadcast_to(x, shape), o.component_outputs)
    return shape, comp


# -- ZeroInflated ----------------------------------------------------------------------------------


def _zi_value_and_partials(family: ZeroInflated, treedef, z: jax.Array, y: jax.Array, *leaves):
    """``log P(y)`` and its partials in ``(gate_logit, targets, *component output leaves)``.

    y = 0: ``log P = logaddexp(log g, log(1 - g) + l0)``, with the posterior probability of a
    structural zero ``w = g / P(0)``: ``d/dz = w (1 - g)(1 - p0)`` (a product, where the textbook
    ``w - g`` cancels) and ``d/dtheta = (1 - w) d l0/dtheta``. y > 0: ``log P = log(1 - g) + l``,
    ``d/dz = -g``, ``d/dtheta = d l/dtheta``. The counts are not differentiable.
    """
    comp = jax.tree.unflatten(treedef, leaves)
    component = family.family
    lp = jnp.asarray(component.log_prob(comp, y))
    shape = _broadcast("ZeroInflated", z, lp)
    lp, z = jnp.broadcast_to(lp, shape), jnp.broadcast_to(z, shape)
    zero = jnp.broadcast_to(_zero_count(y), shape)
    log_g, log_not_g = numerics.log_sigmoid(z), numerics.log_sigmoid(-z)
    component_part = log_not_g + lp
    at_zero = jnp.logaddexp(log_g, component_part)
    value = jnp.where(zero, at_zero, component_part)
    # w = g / P(0) and 1 - w = (1 - g) p0 / P(0), each from its own log (no 1 - w rounding).
    w = jnp.exp(log_g - at_zero)
    d_z = jnp.where(zero, w * jax.nn.sigmoid(-z) * -jnp.expm1(lp), -jax.nn.sigmoid(z))
    share = jnp.where(zero, jnp.exp(component_part - at_zero), jnp.ones_like(z))
    d_leaves = [numerics.mul_nonzero(share, s) for s in _component_scores(component, comp, y, shape)]
    return value, (d_z, None, *d_leaves)


_zi_log_prob = closed_form(_zi_value_and_partials, num_static=2)


def _closed_grad(value_and_partials, wrapper, o: _Outputs, targets):
    """``(d(-log P)/d logit, d(-log P)/d component_outputs)`` from a wrapper's closed form, NaN for the
    examples off its support (the component's -inf, except at a zero count, which both wrappers hold)."""
    y = validate.numeric_targets(targets, where=f"{type(wrapper).__name__} targets")
    leaves, treedef = jax.tree.flatten(o.component_outputs)
    value, (d_z, _, *d_leaves) = value_and_partials(wrapper, treedef, o.logit, y, *leaves)
    valid = (value > -jnp.inf) | jnp.broadcast_to(_zero_count(y), value.shape)
    out = lambda d: jnp.where(valid, -d, jnp.nan).astype(o.dtype)  # noqa: E731
    return out(d_z), jax.tree.unflatten(treedef, [out(d) for d in d_leaves])


def _params(family, o: _Outputs, prefix: str) -> dict[str, jax.Array]:
    """``{prefix}_logit``, ``{prefix}_probs`` (its sigmoid) and the component's, prefixed ``component_``."""
    out = {f"{prefix}_logit": o.logit, f"{prefix}_probs": jax.nn.sigmoid(o.logit)}
    out.update({f"component_{k}": v for k, v in family.params(o.component_outputs).items()})
    return {k: jnp.asarray(v).astype(o.dtype) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class ZeroInflated:
    r"""A count family with structural zeros: ``y = 0`` with probability ``g``, else a draw from it.

    outputs: ``(gate_logit, component_outputs)``: ``gate_logit`` of the structural-zero probability
    ``g = sigmoid(gate_logit)`` and ``component_outputs`` exactly what ``family`` takes (``log_rate``
    for ``Poisson()``, ``(log_mean, log_concentration)`` for ``NegativeBinomial()``, logits for
    ``Binomial(total_count=n)`` and ``Geometric()``), nested as ``MixtureSameFamily`` nests its
    component's. targets: counts, as the component's (scalar events). This is statsmodels'
    ``ZeroInflatedPoisson`` / ``ZeroInflatedNegativeBinomialP`` with ``inflation="logit"``.

    Density, with ``l = log p(y)`` the component's: ``log P(0) = logaddexp(log_sigmoid(gate_logit),
    log_sigmoid(-gate_logit) + l(0))`` (never ``log(g + (1 - g) e^l)``, which rounds ``1 - g`` to 0
    at a confident gate and underflows ``e^l`` at a large rate) and ``log P(y) = log_sigmoid(
    -gate_logit) + l(y)`` for y > 0.

    Gradient. With ``w = g / P(0)`` the posterior probability that a zero is structural:
    y = 0: ``d(-log P)/d gate_logit = -w (1 - g)(1 - p(0))`` and ``d(-log P)/d theta = (1 - w)
    component.grad(theta, 0)``; y > 0: ``g`` and ``component.grad(theta, y)``. ``w (1 - g)(1 - p0)``
    is ``w - g`` written as a product (no cancellation), ``1 - p0 = -expm1(l(0))``, ``1 - w`` from
    its own log. ``log_prob``'s derivatives (``jax.grad``, ``jacfwd``, ``hessian``) are these closed
    forms (a ``custom_jvp``), built on the component's own closed-form score.

    Fisher information in ``(gate_logit, theta)``, from ``E[s s^T]`` with the component's Fisher
    ``I_c`` and its score at zero ``u0 = d l(0)/d theta`` (``E_c[u] = 0`` and ``E_c[u u^T] = I_c``
    fold the sum over y > 0): ``F_zz = g^2 (1 - g)(1 - p0) / P0``, ``F_z theta = g (1 - g) p0 u0 / P0``,
    ``F_theta theta = (1 - g) (I_c - g p0 u0 u0^T / P0)``; it exists where the component's does
    (not for NegativeBinomial). Entropy ``H_Bernoulli(P0) + (1 - g)(H_c - H_Bernoulli(p0))`` and
    ``KL = KL_Bernoulli(P0_p || P0_q) + (1 - g_p)(KL_c - KL_Bernoulli(p0_p || p0_q))`` (the chain rule
    over "zero or not"; each Bernoulli term from logits) where the component has them. KL needs the
    same component family on both sides. ``H_c - H_Bernoulli(p0)`` and ``KL_c - KL_Bernoulli`` are
    differences of non-negative terms: they lose relative accuracy where the component is almost
    all zeros.
    """

    family: Family

    def __post_init__(self):
        _check_component("ZeroInflated", self.family)

    @property
    def _name(self) -> str:
        return f"ZeroInflated({self.family!r})"

    def _split(self, outputs) -> _Outputs:
        return _split("ZeroInflated", "gate_logit", outputs)

    def _log_prob_and_valid(self, o: _Outputs, targets) -> tuple[jax.Array, jax.Array]:
        y = validate.numeric_targets(targets, where="ZeroInflated targets")
        leaves, treedef = jax.tree.flatten(o.component_outputs)
        lp = _zi_log_prob(self, treedef, o.logit, y, *leaves)
        # A target the component puts outside its support (-inf) is outside this one's (0 is in).
        valid = (lp > -jnp.inf) | jnp.broadcast_to(_zero_count(y), lp.shape)
        return lp, valid

    def log_prob(self, outputs: ZeroInflatedOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log P(y)``; ``-inf`` (NaN derivatives) off the component's support."""
        o = self._split(outputs)
        lp, valid = self._log_prob_and_valid(o, targets)
        return minus_inf_off_support(lp, valid).astype(o.dtype)

    def grad(self, outputs: ZeroInflatedOutputs, targets: ArrayLike) -> ZeroInflatedOutputArrays:
        """Closed form ``(d(-log P)/d gate_logit, d(-log P)/d component_outputs)`` (NaN off the support)."""
        return _closed_grad(_zi_value_and_partials, self, self._split(outputs), targets)

    def params(self, outputs: ZeroInflatedOutputs) -> dict[str, jax.Array]:
        """``gate_logit``, ``gate_probs`` (P(structural zero)) and the component's, prefixed ``component_``."""
        return _params(self.family, self._split(outputs), "gate")

    def mean(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``(1 - g) mean_c``."""
        o = self._split(outputs)
        return (jax.nn.sigmoid(-o.logit) * jnp.asarray(self.family.mean(o.component_outputs))).astype(o.dtype)

    def sample(self, key: jax.Array, outputs: ZeroInflatedOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """A component draw, set to 0 with probability ``g``; shape ``sample_shape + batch``."""
        o = self._split(outputs)
        shape, comp = _batch(self._name, self.family, o)
        key_gate, key_draw = jax.random.split(key)
        drawn = jnp.asarray(self.family.sample(key_draw, comp, sample_shape=sample_shape))
        structural = jax.random.bernoulli(key_gate, jnp.broadcast_to(jax.nn.sigmoid(o.logit), drawn.shape), drawn.shape)
        return jnp.where(structural, jnp.zeros_like(drawn), drawn).astype(o.dtype)

    def _pieces(self, o: _Outputs):
        """``(shape, log g, log(1 - g), _Zero)`` at the batch shape."""
        shape, comp = _batch(self._name, self.family, o)
        zero = _zero_pieces(self.family, comp, shape, o.logit.dtype)
        z = jnp.broadcast_to(o.logit, shape)
        return shape, numerics.log_sigmoid(z), numerics.log_sigmoid(-z), zero

    def entropy(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``H_Bernoulli(P0) + (1 - g)(H_c - H_Bernoulli(p0))``, where the component has an entropy."""
        o = self._split(outputs)
        h_c = jnp.asarray(self.family.entropy(o.component_outputs))
        shape, log_g, log_not_g, c = self._pieces(o)
        log_p0 = jnp.logaddexp(log_g, log_not_g + c.lp0)
        h_split = _binary_entropy(log_p0, log_not_g + c.log_pos)
        rest = jnp.broadcast_to(h_c, shape) - _binary_entropy(c.lp0, c.log_pos)
        return (h_split + numerics.mul_nonzero(jnp.exp(log_not_g), rest)).astype(o.dtype)

    def kl(self, outputs_p: ZeroInflatedOutputs, outputs_q: ZeroInflatedOutputs) -> jax.Array:
        """``KL_Bernoulli(P0_p || P0_q) + (1 - g_p)(KL_c - KL_Bernoulli(p0_p || p0_q))`` (same component)."""
        p, q = self._split(outputs_p), self._split(outputs_q)
        kl_c = jnp.asarray(self.family.kl(p.component_outputs, q.component_outputs))
        sp, log_g_p, log_not_g_p, cp = self._pieces(p)
        sq, log_g_q, log_not_g_q, cq = self._pieces(q)
        shape = validate.broadcast_shapes(f"{self._name}.kl", [("outputs_p", sp), ("outputs_q", sq)])
        b = lambda x: jnp.broadcast_to(x, shape)  # noqa: E731

        def split_logit(log_g, log_not_g, c):  # logit of P(0) = log P0 - log(1 - P0)
            return jnp.logaddexp(log_g, log_not_g + c.lp0) - (log_not_g + c.log_pos)

        kl_split = numerics.bernoulli_kl(b(split_logit(log_g_p, log_not_g_p, cp)),
                                         b(split_logit(log_g_q, log_not_g_q, cq)))
        kl_zero = numerics.bernoulli_kl(b(cp.lp0 - cp.log_pos), b(cq.lp0 - cq.log_pos))
        rest = b(kl_c) - kl_zero
        return (kl_split + numerics.mul_nonzero(b(jnp.exp(log_not_g_p)), rest)).astype(p.dtype)

    def fisher(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``[[F_zz, F_z theta], [F_theta z, F_theta theta]]`` (see the class), ``batch + (P, P)``."""
        o = self._split(outputs)
        shape, log_g, log_not_g, c = self._pieces(o)
        size = len(c.u0)
        i_c = _component_fisher(self.family, _batch(self._name, self.family, o)[1], shape, size)
        u = _flat(c.u0)
        log_p0 = jnp.logaddexp(log_g, log_not_g + c.lp0)
        f_zz = jnp.exp(2 * log_g + log_not_g + c.log_pos - log_p0)
        f_zt = jnp.exp(log_g + log_not_g + c.lp0 - log_p0)[..., None] * u
        shrink = jnp.exp(log_g + c.lp0 - log_p0)[..., None, None]  # g p0 / P0
        f_tt = jnp.exp(log_not_g)[..., None, None] * (i_c - shrink * u[..., :, None] * u[..., None, :])
        return _assemble(f_zz, f_zt, f_tt).astype(o.dtype)

    def expectation_nodes(self, outputs: ZeroInflatedOutputs) -> tuple[jax.Array, jax.Array]:
        """The component's nodes with 0 first: weight ``P(0)`` there, ``(1 - g) p(y)`` elsewhere."""
        o = self._split(outputs)
        shape, log_g, log_not_g, c = self._pieces(o)
        nodes, weights = _with_component_zero_nodes(self.family, _batch(self._name, self.family, o)[1], shape)
        p0 = jnp.exp(jnp.logaddexp(log_g, log_not_g + c.lp0))
        return nodes, jnp.concatenate([p0[None], jnp.exp(log_not_g)[None] * weights], axis=0)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The component's constant terms at y > 0 (there ``log P`` is additive in them), 0 at y = 0."""
        method = getattr(self.family, "constant_terms", None)
        if method is None:
            raise NotImplementedError(f"{self.family!r} has no constant_terms.")
        y = validate.numeric_targets(targets, where="ZeroInflated targets")
        c = jnp.asarray(method(y))
        return jnp.where(_zero_count(y), jnp.zeros_like(c), c)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: a zero-inflated Poisson (statsmodels' ``zipoisson``), gates
        and rates at random, confident gates and rates of e^-80 and e^9.2 among the extremes."""
        return (Case("ZeroInflated(Poisson())", cls(Poisson()), _zip_random, _zip_extreme,
                     scipy=ScipyReference(_statsmodels_zipoisson, discrete=True), plain_log_prob=_zip_plain),)


# -- Hurdle ----------------------------------------------------------------------------------------


def _hurdle_value_and_partials(family: Hurdle, treedef, z: jax.Array, y: jax.Array, *leaves):
    """``log P(y)`` and its partials in ``(zero_logit, targets, *component output leaves)``.

    y = 0: ``log P = log_sigmoid(z)``, ``d/dz = 1 - P(0)``, nothing in theta. y > 0: ``log P =
    log_sigmoid(-z) + l(y) - log(1 - p0)``, ``d/dz = -P(0)``, ``d/dtheta = u(y) + u0 p0/(1 - p0)``
    with ``p0/(1 - p0) = 1/expm1(-l(0))``.
    """
    comp = jax.tree.unflatten(treedef, leaves)
    component = family.family
    if isinstance(component, Poisson):
        # p(y) / lambda = p(y - 1) / y, so l(y) - log(1 - p0) = l(y - 1) - log y - log((1 - e^-lambda)
        # / lambda): no difference of two logs of lambda (both -1e4 at a rate of e^-1e4).
        y = jnp.asarray(y)
        lp_prev = jnp.asarray(component.log_prob(comp, y - 1))
        shape = _broadcast("Hurdle", z, lp_prev)
        z = jnp.broadcast_to(z, shape)
        zero = jnp.broadcast_to(_zero_count(y), shape)
        log_rate = jnp.broadcast_to(comp, shape)
        y_b = jnp.broadcast_to(y.astype(lp_prev.dtype), shape)
        log_y = jnp.log(numerics.where(y_b >= 1, y_b, jnp.ones_like(y_b)))
        positive = numerics.log_sigmoid(-z) + jnp.broadcast_to(lp_prev, shape) - log_y - _log_share_of_exp(log_rate)
        value = jnp.where(zero, numerics.log_sigmoid(z), positive)
        d_z = jnp.where(zero, jax.nn.sigmoid(-z), -jax.nn.sigmoid(z))
        # u(y) + u0 p0/(1 - p0) = y - E[y | y > 0]: the truncated mean's closed form keeps the
        # second derivative (the truncated variance, ~lambda/2) accurate as lambda -> 0.
        return value, (d_z, None, jnp.where(zero, jnp.zeros_like(z), y_b - _truncated_poisson_mean(log_rate)))
    lp = jnp.asarray(component.log_prob(comp, y))
    shape = _broadcast("Hurdle", z, lp)
    lp, z = jnp.broadcast_to(lp, shape), jnp.broadcast_to(z, shape)
    zero = jnp.broadcast_to(_zero_count(y), shape)
    c = _zero_pieces(component, comp, shape, lp.dtype)
    value = jnp.where(zero, numerics.log_sigmoid(z), numerics.log_sigmoid(-z) + lp - c.log_pos)
    d_z = jnp.where(zero, jax.nn.sigmoid(-z), -jax.nn.sigmoid(z))
    scores = _component_scores(component, comp, y, shape)
    d_leaves = [jnp.where(zero, jnp.zeros_like(s), s + c.odds * s0) for s, s0 in zip(scores, c.u0)]
    return value, (d_z, None, *d_leaves)


_hurdle_log_prob = closed_form(_hurdle_value_and_partials, num_static=2)


def _truncated_poisson_information(log_rate: jax.Array) -> jax.Array:
    """The zero-truncated Poisson's Fisher information in ``log_rate``, ``Var(y | y > 0)``:
    ``(lambda (1 - e^-lambda) - e^-lambda lambda^2) / (1 - e^-lambda)^2 = lambda (1 - lambda /
    expm1(lambda)) / (1 - e^-lambda)``, the bracket as ``expm1mx(lambda) / expm1(lambda)`` for
    lambda <= 1 (where ``1 - lambda/expm1(lambda)`` cancels), as it stands above (< 0.582 there)."""
    rate = jnp.exp(log_rate)
    small = rate <= 1
    rs = numerics.where(small, rate, jnp.ones_like(rate))
    rl = numerics.where(small, jnp.full_like(rate, 2.0), rate)
    bracket = numerics.where(small, numerics.expm1mx(rs) / jnp.expm1(rs), 1 - rl / jnp.expm1(rl))
    return rate * bracket / -jnp.expm1(-rate)


@jax.custom_jvp
def _truncated_poisson_mean(log_rate: jax.Array) -> jax.Array:
    """``E[y | y > 0] = lambda / (1 - e^-lambda)`` of a Poisson, ``lambda + 1 / (expm1(lambda)/lambda)``
    for lambda <= 1 (1 where lambda underflows); its derivative in ``log_rate`` is stated: the
    truncated variance ``_truncated_poisson_information``, accurate as lambda -> 0."""
    rate = jnp.exp(log_rate)
    small = rate <= 1
    rs = numerics.where(small & (rate > 0), rate, jnp.ones_like(rate))
    ratio = numerics.where(rate > 0, jnp.expm1(rs) / rs, jnp.ones_like(rate))
    rl = numerics.where(small, jnp.full_like(rate, 2.0), rate)
    return numerics.where(small, rate + 1 / ratio, rl / -jnp.expm1(-rl))


@_truncated_poisson_mean.defjvp
def _truncated_poisson_mean_jvp(primals, tangents):
    (log_rate,), (t,) = primals, tangents
    return _truncated_poisson_mean(log_rate), _truncated_poisson_information(log_rate) * t


def _truncated_poisson_draws(key, log_rate, shape):
    """Zero-truncated Poisson draws, exactly: the first arrival time T of a unit-time Poisson process
    of rate lambda, given one arrival (``T = -log(1 - u (1 - e^-lambda)) / lambda``), then 1 plus
    the arrivals in (T, 1] (``Poisson(lambda (1 - T))``)."""
    k_time, k_rest = jax.random.split(key)
    rate = jnp.broadcast_to(jnp.exp(log_rate), shape)
    u = jax.random.uniform(k_time, shape, rate.dtype)
    t = -jnp.log1p(u * jnp.expm1(-rate)) / rate
    rest = jnp.maximum(rate * (1 - t), jnp.zeros_like(rate))
    return 1 + jax.random.poisson(k_rest, rest, shape).astype(rate.dtype)


def _truncated_binomial_draws(key, n: int, z, shape):
    """Zero-truncated Binomial(n, p) draws, exactly: the first success K given one in n trials (a
    geometric truncated to 1..n, by inversion), then 1 plus Binomial(n - K, p) for the rest."""
    k_first, k_rest = jax.random.split(key)
    z = jnp.broadcast_to(z, shape)
    log_q = numerics.log_sigmoid(-z)
    u = jax.random.uniform(k_first, shape, z.dtype)
    first = jnp.ceil(jnp.log1p(u * jnp.expm1(n * log_q)) / log_q)
    first = jnp.clip(jnp.where(jnp.isfinite(first), first, jnp.ones_like(first)), 1, n)
    rest = jax.random.binomial(k_rest, n - first, jax.nn.sigmoid(z), shape, z.dtype)
    return 1 + rest


def _rejection_draws(component, key, component_outputs, shape):
    """Positive draws by rejection: every entry redrawn until positive (expected ``1/(1 - p0)``
    rounds for each). ``component_outputs`` at the batch shape, ``shape`` = sample shape + batch."""
    batch_ndim = jnp.ndim(jnp.asarray(component.mean(component_outputs)))
    sample_shape = shape[:len(shape) - batch_ndim]

    def cond(state):
        return jnp.any(state[1] <= 0)

    def body(state):
        key, y = state
        key, sub = jax.random.split(key)
        drawn = jnp.asarray(component.sample(sub, component_outputs, sample_shape=sample_shape)).astype(y.dtype)
        return key, jnp.where(y > 0, y, drawn)

    dtype = jax.tree.leaves(component_outputs)[0].dtype
    _, y = jax.lax.while_loop(cond, body, (key, jnp.zeros(shape, dtype)))
    return y


@dataclasses.dataclass(frozen=True)
class Hurdle:
    r"""A hurdle model: a zero with probability ``sigmoid(zero_logit)``, else a positive count drawn
    from the family truncated to ``y > 0``.

    outputs: ``(zero_logit, component_outputs)``, ``component_outputs`` exactly what ``family``
    takes (``log_rate`` for ``Poisson()``, ``(log_mean, log_concentration)`` for
    ``NegativeBinomial()``, logits for ``Binomial(total_count=n)`` and ``Geometric()``), nested as
    ``MixtureSameFamily`` nests its component's. targets: counts, as the component's.

    Density: ``log P(0) = log_sigmoid(zero_logit)``; for y > 0 ``log P(y) = log_sigmoid(-zero_logit)
    + l(y) - log(1 - p(0))`` with ``l`` the component's log-density and ``log(1 - p(0)) =
    log1mexp(-l(0))`` (no cancellation as p(0) -> 1: a Poisson rate of 1e-20 gives ``log(1 - p0) =
    log(1e-20)``). The two parts have separate parameters, so the likelihood factorises: a logistic
    regression for "zero or not" plus a zero-truncated count model on the positive counts.

    Gradient: y = 0: ``d(-log P)/d zero_logit = -(1 - P(0))``, 0 in the component's outputs; y > 0:
    ``P(0)`` and ``component.grad(theta, y) - component.grad(theta, 0) p0 / (1 - p0)``, with
    ``p0 / (1 - p0) = 1 / expm1(-l(0))``. (The second is a difference: where p0 -> 1 and y = 1 it
    keeps an absolute, not a relative, accuracy: a Poisson at rate lambda gives ``1 - lambda /
    (1 - e^-lambda) ~ -lambda/2``.) ``log_prob``'s derivatives are these closed forms (a
    ``custom_jvp``), built on the component's closed-form score.

    Fisher information in ``(zero_logit, theta)``: ``F_zz = P0 (1 - P0)``, ``F_z theta = 0`` (the two
    parts share no parameter), ``F_theta theta = (1 - P0)(I_c / (1 - p0) - p0 u0 u0^T / (1 - p0)^2)``,
    the truncated family's information (``I_c`` the component's, ``u0 = d l(0)/d theta``), where the
    component has one (the difference loses relative accuracy as p0 -> 1). Entropy
    ``H_Bernoulli(P0) + (1 - P0)(H_c - H_Bernoulli(p0))/(1 - p0)`` and ``KL = KL_Bernoulli +
    (1 - P0_p)(KL_c - KL_Bernoulli(p0_p || p0_q))/(1 - p0_p)`` where the component has them.

    Sampling is exact: Poisson by the first arrival of a Poisson process, Geometric as 1 plus a
    geometric draw (memorylessness), Binomial by the first success; any other family (NegativeBinomial)
    by rejection, whose expected number of rounds is ``1 / (1 - p0)``.
    """

    family: Family

    def __post_init__(self):
        _check_component("Hurdle", self.family)

    @property
    def _name(self) -> str:
        return f"Hurdle({self.family!r})"

    def _split(self, outputs) -> _Outputs:
        return _split("Hurdle", "zero_logit", outputs)

    def log_prob(self, outputs: ZeroInflatedOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log P(y)``; ``-inf`` (NaN derivatives) off the component's support."""
        o = self._split(outputs)
        y = validate.numeric_targets(targets, where="Hurdle targets")
        leaves, treedef = jax.tree.flatten(o.component_outputs)
        lp = _hurdle_log_prob(self, treedef, o.logit, y, *leaves)
        valid = (lp > -jnp.inf) | jnp.broadcast_to(_zero_count(y), lp.shape)
        return minus_inf_off_support(lp, valid).astype(o.dtype)

    def grad(self, outputs: ZeroInflatedOutputs, targets: ArrayLike) -> ZeroInflatedOutputArrays:
        """Closed form ``(d(-log P)/d zero_logit, d(-log P)/d component_outputs)`` (NaN off the support)."""
        return _closed_grad(_hurdle_value_and_partials, self, self._split(outputs), targets)

    def params(self, outputs: ZeroInflatedOutputs) -> dict[str, jax.Array]:
        """``zero_logit``, ``zero_probs`` (P(y = 0)) and the component's, prefixed ``component_``."""
        return _params(self.family, self._split(outputs), "zero")

    def _pieces(self, o: _Outputs):
        """``(shape, zero_logit, _Zero, component outputs)`` at the batch shape."""
        shape, comp = _batch(self._name, self.family, o)
        return shape, jnp.broadcast_to(o.logit, shape), _zero_pieces(self.family, comp, shape, o.logit.dtype), comp

    def mean(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``(1 - P0) mean_c / (1 - p0)``."""
        o = self._split(outputs)
        _, z, c, comp = self._pieces(o)
        mean_c = jnp.asarray(self.family.mean(comp))
        return (jnp.exp(numerics.log_sigmoid(-z) - c.log_pos) * mean_c).astype(o.dtype)

    def sample(self, key: jax.Array, outputs: ZeroInflatedOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """0 with probability ``P0``, else a draw of the zero-truncated family (see the class)."""
        o = self._split(outputs)
        batch, comp = _batch(self._name, self.family, o)
        key_zero, key_draw = jax.random.split(key)
        shape = tuple(sample_shape) + batch
        component = self.family
        if isinstance(component, Poisson):
            positive = _truncated_poisson_draws(key_draw, comp, shape)
        elif isinstance(component, Geometric):
            positive = 1 + jnp.asarray(component.sample(key_draw, comp, sample_shape=sample_shape))
        elif isinstance(component, Binomial):
            positive = _truncated_binomial_draws(key_draw, component.total_count, comp, shape)
        else:
            positive = _rejection_draws(component, key_draw, comp, shape)
        positive = jnp.asarray(positive).astype(o.logit.dtype)
        zero = jax.random.bernoulli(key_zero, jnp.broadcast_to(jax.nn.sigmoid(o.logit), shape), shape)
        return jnp.where(zero, jnp.zeros_like(positive), positive).astype(o.dtype)

    def entropy(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``H_Bernoulli(P0) + (1 - P0)(H_c - H_Bernoulli(p0))/(1 - p0)``, where the component has one."""
        o = self._split(outputs)
        h_c = jnp.asarray(self.family.entropy(o.component_outputs))
        shape, z, c, _ = self._pieces(o)
        h_split = _binary_entropy(numerics.log_sigmoid(z), numerics.log_sigmoid(-z))
        rest = jnp.broadcast_to(h_c, shape) - _binary_entropy(c.lp0, c.log_pos)
        weight = jnp.exp(numerics.log_sigmoid(-z) - c.log_pos)
        return (h_split + numerics.mul_nonzero(weight, rest)).astype(o.dtype)

    def kl(self, outputs_p: ZeroInflatedOutputs, outputs_q: ZeroInflatedOutputs) -> jax.Array:
        """``KL_Bernoulli(P0_p || P0_q) + (1 - P0_p)(KL_c - KL_Bernoulli(p0_p || p0_q))/(1 - p0_p)``."""
        p, q = self._split(outputs_p), self._split(outputs_q)
        kl_c = jnp.asarray(self.family.kl(p.component_outputs, q.component_outputs))
        sp, zp, cp, _ = self._pieces(p)
        sq, zq, cq, _ = self._pieces(q)
        shape = validate.broadcast_shapes(f"{self._name}.kl", [("outputs_p", sp), ("outputs_q", sq)])
        b = lambda x: jnp.broadcast_to(x, shape)  # noqa: E731
        kl_split = numerics.bernoulli_kl(b(zp), b(zq))
        rest = b(kl_c) - numerics.bernoulli_kl(b(cp.lp0 - cp.log_pos), b(cq.lp0 - cq.log_pos))
        weight = b(jnp.exp(numerics.log_sigmoid(-zp) - cp.log_pos))
        return (kl_split + numerics.mul_nonzero(weight, rest)).astype(p.dtype)

    def fisher(self, outputs: ZeroInflatedOutputs) -> jax.Array:
        """``[[P0 (1 - P0), 0], [0, (1 - P0) I_truncated]]`` (see the class), ``batch + (P, P)``."""
        o = self._split(outputs)
        shape, z, c, comp = self._pieces(o)
        size = len(c.u0)
        i_c = _component_fisher(self.family, comp, shape, size)
        u = _flat(c.u0)
        f_zz = jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)
        not_zero = jax.nn.sigmoid(-z)[..., None, None]
        if isinstance(self.family, Poisson):
            f_tt = not_zero * _truncated_poisson_information(comp)[..., None, None]
        elif isinstance(self.family, Geometric):
            f_tt = not_zero * i_c  # 1 + Geometric: the truncated family's information is the family's
        else:
            scale = jnp.exp(numerics.log_sigmoid(-z) - c.log_pos)[..., None, None]  # (1 - P0) / (1 - p0)
            f_tt = scale * (i_c - c.odds[..., None, None] * u[..., :, None] * u[..., None, :])
        return _assemble(f_zz, jnp.zeros(shape + (size,), f_zz.dtype), f_tt).astype(o.dtype)

    def expectation_nodes(self, outputs: ZeroInflatedOutputs) -> tuple[jax.Array, jax.Array]:
        """The component's nodes with 0 first: weight ``P0`` there, ``(1 - P0) p(y)/(1 - p0)`` elsewhere."""
        o = self._split(outputs)
        shape, z, c, comp = self._pieces(o)
        nodes, weights = _with_component_zero_nodes(self.family, comp, shape)
        positive = jnp.exp(numerics.log_sigmoid(-z) - c.log_pos)
        return nodes, jnp.concatenate([jax.nn.sigmoid(z)[None], positive[None] * weights], axis=0)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The component's constant terms at y > 0, 0 at y = 0."""
        method = getattr(self.family, "constant_terms", None)
        if method is None:
            raise NotImplementedError(f"{self.family!r} has no constant_terms.")
        y = validate.numeric_targets(targets, where="Hurdle targets")
        c = jnp.asarray(method(y))
        return jnp.where(_zero_count(y), jnp.zeros_like(c), c)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: a Poisson hurdle (scipy's Bernoulli and statsmodels'
        ``truncatedpoisson``), zero logits and rates at random, extremes as ZeroInflated's."""
        return (Case("Hurdle(Poisson())", cls(Poisson()), _hurdle_random, _zip_extreme,
                     scipy=ScipyReference(_scipy_hurdle_poisson, discrete=True), plain_log_prob=_hurdle_plain),)


# -- check cases -----------------------------------------------------------------------------------


def _zip_plain(outputs, y):
    """``log(g + (1 - g) e^-rate)`` at 0 and ``log(1 - g) + y log rate - rate - log y!`` elsewhere,
    ``g = 1 / (1 + e^-gate_logit)``: the textbook formula."""
    gate, log_rate = outputs
    g = 1 / (1 + jnp.exp(-gate))
    rate = jnp.exp(log_rate)
    positive = jnp.log(1 - g) + y * log_rate - rate - jax.scipy.special.gammaln(y + 1)
    return jnp.where(y == 0, jnp.log(g + (1 - g) * jnp.exp(-rate)), positive)


def _hurdle_plain(outputs, y):
    """``log g`` at 0 and ``log(1 - g) + y log rate - rate - log y! - log(1 - e^-rate)`` elsewhere."""
    zero_logit, log_rate = outputs
    g = 1 / (1 + jnp.exp(-zero_logit))
    rate = jnp.exp(log_rate)
    positive = jnp.log(1 - g) + y * log_rate - rate - jax.scipy.special.gammaln(y + 1) - jnp.log(1 - jnp.exp(-rate))
    return jnp.where(y == 0, jnp.log(g), positive)


def _statsmodels_zipoisson(outputs):
    """statsmodels' ``zipoisson(mu, w)``, w the probability of a structural zero."""
    import scipy.special
    from statsmodels.distributions.discrete import zipoisson

    gate, log_rate = outputs
    return zipoisson(np.exp(log_rate), scipy.special.expit(gate))


class _ScipyHurdle:
    """A Poisson hurdle from an oracle's pieces: scipy's Bernoulli for the zero and statsmodels'
    ``truncatedpoisson`` for the positive counts."""

    def __init__(self, zero_prob, rate):
        from statsmodels.distributions.discrete import truncatedpoisson

        self.zero_prob, self.rate = zero_prob, rate
        self.positive = truncatedpoisson(rate, 0)

    def logpmf(self, y):
        with np.errstate(divide="ignore"):
            positive = np.log1p(-self.zero_prob) + self.positive.logpmf(np.maximum(y, 1))
        return np.where(_zero_count(y), np.log(self.zero_prob), positive)

    def mean(self):
        return (1 - self.zero_prob) * self.positive.mean()

    def var(self):
        m1 = self.positive.mean()
        second = self.positive.var() + m1**2
        return (1 - self.zero_prob) * second - self.mean() ** 2

    def support(self):
        return np.zeros_like(self.rate), np.full_like(self.rate, np.inf)


def _scipy_hurdle_poisson(outputs):
    import scipy.special

    zero_logit, log_rate = outputs
    return _ScipyHurdle(scipy.special.expit(zero_logit), np.exp(log_rate))


def _zip_random(key, dtype, n):
    """Gate logits ``1.5 N(0, 1)``, log-rates ``0.6 + 0.8 N(0, 1)`` (rates 0.2 to 20), counts from the
    model (a structural zero with probability g, else a discretised normal around the rate), from
    one draw of uniforms."""
    u = jax.random.uniform(key, (5, n), dtype)
    radius, angle = jnp.sqrt(-2 * jnp.log1p(-u[0])), 2 * jnp.pi * u[1]
    gate = 1.5 * radius * jnp.cos(angle)
    log_rate = 0.6 + 0.8 * radius * jnp.sin(angle)
    rate = jnp.exp(log_rate)
    normal = jnp.sqrt(-2 * jnp.log1p(-u[2])) * jnp.cos(2 * jnp.pi * u[3])
    count = jnp.maximum(jnp.round(rate + jnp.sqrt(rate) * normal), 0)
    return (gate, log_rate), jnp.where(u[4] < jax.nn.sigmoid(gate), jnp.zeros_like(count), count)


def _hurdle_random(key, dtype, n):
    """As ZeroInflated's, the positive counts at least 1."""
    (zero_logit, log_rate), y = _zip_random(key, dtype, n)
    u = jax.random.uniform(jax.random.fold_in(key, 1), (n,), dtype)
    positive = jnp.maximum(y, jnp.ones_like(y))
    return (zero_logit, log_rate), jnp.where(u < jax.nn.sigmoid(zero_logit), jnp.zeros_like(y), positive)


def _zip_extreme(dtype):
    """Confident gates (30, 80), rates from e^-30 to e^9.2, zeros and counts up to 1e6."""
    # Gates below about -5 are left out: there the expected Hessian the check compares fisher with
    # (autodiff at each count, summed) keeps only ~eps / g of its F_zz ~ g^2 (1 - p0) / P0.
    gate = jnp.array([30.0, -5.0, 0.0, 80.0, -4.0, 5.0, -5.0, 0.0, 2.0, -2.0], dtype)
    log_rate = jnp.array([2.0, -30.0, 9.2, 1.0, -30.0, 0.0, 9.2, 0.0, -10.0, 3.0], dtype)
    y = jnp.array([0.0, 0.0, 9500.0, 3.0, 1.0, 0.0, 0.0, 1e6, 1.0, 40.0], dtype)
    return (gate, log_rate), y

"""MixtureSameFamily: a target drawn from one of K components of one family, with learned weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form
from mlnll._src.families.normal import Normal
from mlnll._src.family import Family
from mlnll._src.types import MixtureOutputArrays, MixtureOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case

_NEEDED = ("log_prob", "grad", "params", "mean", "sample")


class _Outputs(NamedTuple):
    """The mixture's outputs, validated: ``mixture_logits [..., K]`` and the component's outputs (both in
    the accumulation dtype), and ``dtype``, the dtype results are returned in."""

    mixture_logits: jax.Array
    component_outputs: Any
    dtype: np.dtype


class _Joint(NamedTuple):
    """``log pi_k + l_k`` and the weights, at the full batch shape + (K,) in the accumulation dtype."""

    joint: jax.Array  # log pi_k + log p_k(y)
    weights: jax.Array  # pi = softmax(mixture_logits) (NaN where every logit is -inf)
    lp_ndim: int  # the rank of the component's log_prob
    impossible: jax.Array  # every component gives log p_k(y) = -inf (y outside their support)


def _shifted_and_sum(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(top, x - top, sum_k exp(x_k - top))`` over the last axis (keepdims), the max raised to the
    lowest finite number: a row that is all ``-inf`` gives shifted values ``-inf`` and a sum of 0
    rather than NaN, with no select."""
    top = jnp.maximum(jnp.max(x, axis=-1, keepdims=True), jnp.finfo(x.dtype).min)
    shifted = x - top
    return top, shifted, jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True)


def _log_weights_and_weights(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log_softmax(logits), softmax(logits))`` with the max subtracted.

    ``log pi = (z - max) - log(sum)``: the sum is >= 1 (the max's own term is 1) except for a row that
    is all ``-inf``, where it is 0 and ``log(max(sum, 1)) = 0`` keeps log pi at ``-inf`` (weights all
    0). The plain form, not log1p of the others' sum: the mixture's log-density adds log pi to the
    components' log-densities, so it is accurate to a few ulps of its terms, not of itself, whatever
    form log pi takes; this one is one pass cheaper.
    """
    _, shifted, total = _shifted_and_sum(logits)
    return shifted - jnp.log(jnp.maximum(total, 1)), jnp.exp(shifted) / total


def _joint(component: Family, logits: jax.Array, component_outputs, y: jax.Array) -> _Joint:
    num_components = logits.shape[-1]
    try:
        component_lp = jnp.asarray(component.log_prob(component_outputs, y))
    except ValueError as error:  # most often a K axis that does not match the mixture's
        raise ValueError(
            f"MixtureSameFamily: the component's outputs must carry a trailing K = {num_components} axis "
            f"(as mixture_logits shape {logits.shape}) before their event axes; the component says: {error}"
        ) from None
    if component_lp.ndim == 0 or component_lp.shape[-1] != num_components:
        raise ValueError(
            f"MixtureSameFamily: the component's outputs must carry a trailing K = {num_components} axis "
            f"(as mixture_logits shape {logits.shape}); the component's log_prob has shape "
            f"{component_lp.shape}."
        )
    shape = validate.broadcast_shapes("MixtureSameFamily", [("mixture_logits", logits.shape),
                                                            ("component log_prob", component_lp.shape)])
    (logits, component_lp), _ = numerics.upcast(logits, component_lp)
    log_weights, weights = (jnp.broadcast_to(a, shape) for a in _log_weights_and_weights(logits))
    impossible = jnp.all(jnp.broadcast_to(component_lp, shape) == -jnp.inf, axis=-1)
    return _Joint(log_weights + jnp.broadcast_to(component_lp, shape), weights, component_lp.ndim, impossible)


def _log_sum_and_posterior(joint: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(logsumexp_k joint, softmax_k joint)``: the log-density and the responsibilities ``r``.

    Identity: logsumexp = max + log(sum_k exp(x_k - max)) and softmax = exp(x - max) / that sum,
    sharing one max and one sum. A row that is all ``-inf`` (no component can produce y) gives
    ``-inf`` (the log of a sum of 0) and NaN responsibilities (0 / 0).
    """
    top, shifted, total = _shifted_and_sum(joint)
    return jnp.squeeze(top + jnp.log(total), -1), jnp.exp(shifted) / total


def _weighted(r: jax.Array, g: jax.Array, lp_ndim: int) -> jax.Array:
    """``r_k * g`` for a component gradient leaf ``g`` of shape [*component batch, K, *event].

    The first ``lp_ndim`` axes of ``g`` are those of the component's log_prob; ``g`` is broadcast to
    the full batch. ``r_k = 0`` drops component k's gradient even where it is inf or NaN.
    """
    event = g.shape[lp_ndim:]
    g = jnp.broadcast_to(g, r.shape + event)
    return numerics.mul_nonzero(numerics.expand_to(r, g.ndim).astype(g.dtype), g)


def _value_and_partials(family: MixtureSameFamily, treedef, logits: jax.Array, targets: jax.Array, *leaves):
    """``log p(y)`` and its partials in ``(mixture_logits, targets, *component output leaves)``.

    ``d log p/dmixture_logits = r - softmax(mixture_logits)``, ``d log p/dtheta_k = -r_k
    component.grad`` and ``d log p/dy = sum_k r_k d l_k/dy`` (the component's own derivative in its
    targets, computed only when the targets are differentiated); see the class. Where ``log p = -inf``
    the responsibilities are NaN (0 / 0), and so are the partials.
    """
    component_outputs = jax.tree.unflatten(treedef, leaves)
    num_components = logits.shape[-1]
    y = family._component_targets(targets, num_components)
    j = _joint(family.component, logits, component_outputs, y)
    value, r = _log_sum_and_posterior(j.joint)
    # No component can produce y: -inf whatever the weights (a +inf mixture logit makes log pi NaN,
    # and NaN + -inf is NaN), as every family's target outside the support.
    value = jnp.where(j.impossible, -jnp.inf, value)
    d_logits = r - j.weights
    d_leaves = [-_weighted(r, g, j.lp_ndim)
                for g in jax.tree.leaves(family.component.grad(component_outputs, y))]

    def d_targets():  # sum_k r_k dl_k/dy, per example
        event = targets.shape[targets.ndim - family.event_ndim:]
        y_k = family._component_targets(jnp.broadcast_to(targets, value.shape + event), num_components)
        lp, pullback = jax.vjp(lambda t: family.component.log_prob(component_outputs, t), y_k)
        # dl_k/dy of each component (l_k reads only its own copy of y), then weighted by r_k:
        # r_k = 0 drops a component whose derivative is inf or NaN (a scale of e^-3e38), where a
        # cotangent of r would give 0 * NaN. In the value's dtype (float32 targets, float64 outputs).
        g = pullback(jnp.ones_like(lp))[0]
        return jnp.sum(_weighted(r, g, j.lp_ndim), axis=r.ndim - 1).astype(value.dtype)

    return value, (d_logits, d_targets, *d_leaves)


# log p(y) of the mixture, differentiated by the closed form (jax.grad, jacfwd, hessian).
_mixture_log_prob = closed_form(_value_and_partials, num_static=2)


@dataclasses.dataclass(frozen=True)
class MixtureSameFamily:
    r"""Mixture of K components of one family: ``p(y) = sum_k pi_k p_k(y)``.

    outputs: ``(mixture_logits [..., K], component_outputs)``, where ``component_outputs`` are the
    component family's outputs with a trailing K axis on its batch shape; for ``Normal()`` a tuple
    ``(loc [..., K], log_scale [..., K])``, for ``MultivariateNormal()`` a tuple
    ``(loc [..., K, d], scale_tril [..., K, d, d])``. targets: as the component's, ``[...]`` plus
    the component's event axes (``event_ndim`` of them: 0 for scalar targets, 1 for vectors).

    Density, with ``pi = softmax(mixture_logits)`` and ``l_k = log p_k(y)``:
    ``log p(y) = logsumexp_k(log_softmax(mixture_logits)_k + l_k)``, evaluated with the max
    subtracted, so no component's density is ever exponentiated on its own.

    Gradient. With the responsibilities ``r_k = pi_k p_k(y) / p(y) = softmax(log pi + l)_k`` (the
    posterior probability of component k given y):
    ``d(-log p)/dmixture_logits = softmax(mixture_logits) - r`` (the Categorical gradient with the
    posterior in place of a one-hot label), because ``d log p / d log pi_k = r_k`` and
    ``d log pi_k / dmixture_logits = onehot(k) - pi``; and for component k's outputs
    ``d(-log p)/dtheta_k = r_k d(-l_k)/dtheta_k = r_k component.grad``.

    In the targets, ``d log p/dy = sum_k r_k d l_k/dy``: the responsibilities weigh the component's
    own derivative in its targets (through the component's closed form when it has one); it is
    computed only when the targets are differentiated.

    Derivatives of ``log_prob`` (``jax.grad``, ``jax.jacfwd``, ``jax.hessian``, in the outputs and
    the targets) are those of this closed form (a ``custom_jvp``, ``closed_form``): a
    mixture loss's gradient reuses the responsibilities and the component's own closed-form
    gradient, and equals ``grad`` exactly. The tests check it, and its own derivative, against
    autodiff of the plain formula. Where ``log p = -inf`` (no component can produce y) the
    responsibilities are NaN, and so are ``grad`` and every derivative of ``log_prob`` for that
    example (the convention of ``minus_inf_off_support``); masked out of a loss it contributes
    exactly 0 (``nll`` stops the cotangents of masked rows).

    Accuracy: ``log p`` adds the log-weights to the components' log-densities, so every form keeps
    an error of a few ulps of those terms (not of ``log p`` when they cancel); the max-shifted
    ``log(sum exp)`` is used for the weights and for the sum over components (one pass cheaper than
    ``log1p`` of the others' sum, which would only matter for a ``log p`` near 0 that is not
    itself a cancellation).

    Fisher information, entropy and KL have no closed form (they are expectations of a logsumexp):
    those methods raise ``NotImplementedError``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> mix = mlnll.MixtureSameFamily(mlnll.Normal())
      >>> outputs = (jnp.zeros(2), (jnp.array([-1.0, 1.0]), jnp.zeros(2)))
      >>> round(float(mix.log_prob(outputs, jnp.array(0.0))), 6)
      -1.418939
    """

    component: Family
    event_ndim: int = dataclasses.field(default=0, kw_only=True)

    def __post_init__(self):
        missing = [m for m in _NEEDED if not callable(getattr(self.component, m, None))]
        if missing:
            raise TypeError(
                f"MixtureSameFamily(component=...) needs an mlnll family; {self.component!r} lacks "
                f"{', '.join(missing)}."
            )
        if not (isinstance(self.event_ndim, int) and self.event_ndim >= 0):
            raise ValueError(f"MixtureSameFamily(event_ndim=...) must be an integer >= 0; "
                             f"got {self.event_ndim!r}.")

    # -- unpacking ---------------------------------------------------------------------------

    def _split(self, outputs) -> _Outputs:
        """``mixture_logits`` (through the unpacking layer) and ``component_outputs``, every floating
        leaf cast to the accumulation dtype (so the component's log-likelihoods reach the logsumexp
        unrounded), and the result dtype. The component validates its own outputs."""
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            kind = type(outputs).__name__
            is_sequence = isinstance(outputs, (tuple, list))
            got = f"a {kind} of length {len(outputs)}" if is_sequence else f"a single {kind}"
            raise TypeError("MixtureSameFamily outputs must be a tuple (mixture_logits, component_outputs); "
                            f"got {got}.")
        if jnp.ndim(outputs[0]) == 0:
            raise ValueError("MixtureSameFamily outputs[0] (mixture_logits) need a component axis, "
                             "shape [..., K]; got shape ().")
        p = unpack.unpack(outputs[0], family="MixtureSameFamily", names=("mixture_logits",),
                          event_ndims={"mixture_logits": 1}, upcast=False)
        leaves, treedef = jax.tree.flatten(outputs[1])
        leaves = [jnp.asarray(x) for x in leaves]
        dtype = numerics.float_dtype(p.mixture_logits, *leaves)
        acc = numerics.accumulation_dtype(dtype)
        cast = lambda x: x.astype(acc) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return _Outputs(p.mixture_logits.astype(acc), jax.tree.unflatten(treedef, [cast(x) for x in leaves]), dtype)

    def _component_targets(self, targets, num_components: int) -> jax.Array:
        """``targets`` [*batch, *event] as [*batch, K, *event]: one copy per component, so the
        component sees targets of its own batch shape (a K axis of 1 would be an outer product)."""
        y = validate.numeric_targets(targets, where="MixtureSameFamily targets")
        if y.ndim < self.event_ndim:
            raise ValueError(
                f"MixtureSameFamily targets need {self.event_ndim} event axes; got shape {y.shape}."
            )
        axis = y.ndim - self.event_ndim
        return jnp.broadcast_to(jnp.expand_dims(y, axis), y.shape[:axis] + (num_components,) + y.shape[axis:])

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: MixtureOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log sum_k pi_k p_k(y)``; ``-inf`` where every component gives ``-inf``.

        Its derivative in the outputs is the closed form ``grad``, in the targets
        ``sum_k r_k d l_k/dy`` (a ``custom_jvp``).
        """
        o = self._split(outputs)
        y = validate.numeric_targets(targets, where="MixtureSameFamily targets")
        leaves, treedef = jax.tree.flatten(o.component_outputs)
        return _mixture_log_prob(self, treedef, o.mixture_logits, y, *leaves).astype(o.dtype)

    def responsibilities(self, outputs: MixtureOutputs, targets: ArrayLike) -> jax.Array:
        """``r_k = p(component k | y) = softmax_k(log pi + log p_k(y))``, shape [..., K]."""
        o = self._split(outputs)
        y = self._component_targets(targets, o.mixture_logits.shape[-1])
        _, r = _log_sum_and_posterior(_joint(self.component, o.mixture_logits, o.component_outputs, y).joint)
        return r.astype(o.dtype)

    def grad(self, outputs: MixtureOutputs, targets: ArrayLike) -> MixtureOutputArrays:
        """Closed form ``(softmax(mixture_logits) - r, r_k * component.grad)``.

        Where every component gives ``-inf`` the responsibilities, and so the gradient, are NaN.
        """
        o = self._split(outputs)
        y = validate.numeric_targets(targets, where="MixtureSameFamily targets")
        leaves, treedef = jax.tree.flatten(o.component_outputs)
        _, (d_logits, _, *d_leaves) = _value_and_partials(self, treedef, o.mixture_logits, y, *leaves)
        return (-d_logits).astype(o.dtype), jax.tree.unflatten(treedef, [(-d).astype(o.dtype) for d in d_leaves])

    def params(self, outputs: MixtureOutputs) -> dict[str, jax.Array]:
        """``mixture_logits``, ``mixture_probs`` and the component's parameters prefixed ``component_``."""
        o = self._split(outputs)
        out = {"mixture_logits": o.mixture_logits, "mixture_probs": jax.nn.softmax(o.mixture_logits, axis=-1)}
        out.update({f"component_{k}": v for k, v in self.component.params(o.component_outputs).items()})
        return {k: v.astype(o.dtype) for k, v in out.items()}

    def mean(self, outputs: MixtureOutputs) -> jax.Array:
        """``sum_k pi_k mean_k``, shape batch (+ the component's event axes)."""
        o = self._split(outputs)
        means = jnp.asarray(self.component.mean(o.component_outputs))
        pi = jax.nn.softmax(o.mixture_logits, axis=-1)
        pi = numerics.expand_to(pi, pi.ndim + self.event_ndim)  # [..., K, 1 per event axis]
        pi = pi.reshape((1,) * (means.ndim - pi.ndim) + pi.shape)
        means = means.reshape((1,) * (pi.ndim - means.ndim) + means.shape)
        return jnp.sum(pi * means.astype(pi.dtype), axis=-1 - self.event_ndim).astype(o.dtype)

    def sample(self, key: jax.Array, outputs: MixtureOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Pick ``k ~ Categorical(pi)``, then draw from component k; ``sample_shape + batch (+ event)``."""
        o = self._split(outputs)
        key_pick, key_draw = jax.random.split(key)
        every = self.component.sample(key_draw, o.component_outputs, sample_shape=sample_shape)  # each k
        k_axis = every.ndim - 1 - self.event_ndim
        batch = every.shape[len(tuple(sample_shape)):k_axis]
        logits = jnp.broadcast_to(o.mixture_logits, batch + (o.mixture_logits.shape[-1],))
        picked = jax.random.categorical(key_pick, logits, shape=tuple(sample_shape) + batch)
        index = numerics.expand_to(picked[..., None], every.ndim)
        drawn = jnp.squeeze(jnp.take_along_axis(every, index, axis=k_axis), axis=k_axis)
        return drawn.astype(o.dtype) if jnp.issubdtype(drawn.dtype, jnp.floating) else drawn

    def entropy(self, outputs: MixtureOutputs) -> jax.Array:
        raise NotImplementedError("MixtureSameFamily has no closed-form entropy (an expected logsumexp).")

    def kl(self, outputs_p: MixtureOutputs, outputs_q: MixtureOutputs) -> jax.Array:
        raise NotImplementedError("MixtureSameFamily has no closed-form KL divergence (sample it).")

    def fisher(self, outputs: MixtureOutputs) -> jax.Array:
        raise NotImplementedError(
            "MixtureSameFamily has no closed-form Fisher information: E[grad grad^T] involves the "
            "responsibilities, which have no closed-form expectation."
        )

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The component's constant terms: they depend on y alone, so they factor out of the sum over k."""
        method = getattr(self.component, "constant_terms", None)
        if method is None:
            raise NotImplementedError(f"{self.component!r} has no constant_terms.")
        return method(targets)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: 3 Normal components, overlapping at random; confident and masked
        (-inf) mixture logits, scales of e^±80 and targets far in the tails among the extremes."""
        return (
            Case("Mixture of 3 Normals", cls(Normal()), _random, _extreme,
                 plain_log_prob=_plain_normal_mixture, continuous_targets=True),
        )


# -- check cases: a mixture of 3 Normals ------------------------------------------------------------

_K = 3  # components in the check cases


def _plain_normal_mixture(outputs, y):
    """``log sum_k softmax(mixture_logits)_k N(y; loc_k, scale_k^2)``: the textbook formula, every
    component's density exponentiated (no logsumexp), per example."""
    logits, (loc, log_scale) = outputs
    scale = jnp.exp(log_scale)
    density = jnp.exp(-0.5 * ((y[:, None] - loc) / scale) ** 2) / (scale * jnp.sqrt(2 * jnp.pi))
    return jnp.log(jnp.sum(jax.nn.softmax(logits, axis=-1) * density, axis=-1))


def _random(key, dtype, n):
    """Overlapping Normal components (logits N(0, 1), locations 2 N(0, 1), log-scales 0.5 N(0, 1)) and
    targets drawn from the mixture (a component picked by the inverse CDF of the weights, then a
    normal draw from it): the first of ``draws.CANDIDATES`` such draws whose gradient the dtype
    resolves. ``pi_k - r_k`` cancels where a component's posterior is close to its weight (and
    ``r_k (1 - rho_k^2)`` where ``|rho_k| = 1``): no formula resolves it there, in any dtype. One
    uniform draw for everything."""
    c = draws.CANDIDATES
    num_normals = 3 * _K + c + 1  # one spare: Box-Muller makes normals in pairs
    u = draws.uniform_rows(key, (n, num_normals + c))
    z = draws.box_muller(u[:, :num_normals])
    outputs = (z[:, :_K], (2 * z[:, _K:2 * _K], 0.5 * z[:, 2 * _K:3 * _K]))
    outputs = jax.tree.map(lambda x: x.astype(dtype), outputs)
    logits, (loc, log_scale) = exact = jax.tree.map(lambda x: x.astype(u.dtype), outputs)  # as rounded
    below = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)[:, :-1]
    pick = jnp.sum(u[:, -c:, None] > below[:, None, :], axis=-1)  # [n, C]: k with P(< k) < u <= P(<= k)
    centre, spread = jnp.take_along_axis(loc, pick, 1), jnp.exp(jnp.take_along_axis(log_scale, pick, 1))
    candidates = (centre + spread * z[:, 3 * _K:3 * _K + c]).T  # [C, n]
    y = draws.well_conditioned(MixtureSameFamily(Normal()).grad, exact, candidates, dtype)
    return outputs, y.astype(dtype)


def _extreme(dtype):
    """Confident and masked (-inf) mixture logits, tiny and huge scales, targets far in the tails."""
    big = 80.0 if np.dtype(dtype) == np.float64 else 30.0
    logits = [[1e4, -1e4, 0.0], [-jnp.inf, 0.0, 1.0], [0.0, 0.0, 0.0], [3.0, -jnp.inf, -jnp.inf], [0.0, 1.0, 2.0]]
    loc = [[0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [-1e4, 0.0, 1e4], [1.0, 2.0, 3.0], [0.0, 1e-30, -1e-30]]
    log_scale = [[0.0, 0.0, 0.0], [-big, 0.0, big], [0.0, 1.0, 2.0], [-big, 0.0, 0.0], [big, -big, 0.0]]
    y = [0.5, 1e-36, 30.0, 1.0, 2.0]
    a = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return (a(logits), (a(loc), a(log_scale))), a(y)

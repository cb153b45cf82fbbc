"""BetaBinomial and DirichletMultinomial: over-dispersed counts out of ``total_count`` trials.

The Dirichlet-multinomial is the multinomial whose class probabilities are drawn from a Dirichlet
with concentrations ``a``; the beta-binomial is its two-class case. Both are evaluated through one
identity: if ``Y_k ~ NegativeBinomial(concentration a_k, mean a_k t)`` are independent (one success
probability ``1/(1 + t)`` for all k), then ``sum_k Y_k ~ NegativeBinomial(A, A t)``, ``A = sum_k
a_k``, and ``Y`` given ``sum_k Y_k = n`` is Dirichlet-multinomial(n, a). So, for any t > 0,

    log DM(y; n, a) = sum_k log NB(y_k; a_k, a_k t) - log NB(n; A, A t),

and with ``t = n / A`` (the total at its mean) every term is a negative-binomial log-pmf evaluated
in Loader's saddle-point form (``negative_binomial``), accurate for counts to 1e6 and
concentrations from 1e-35 to 1e35, where the textbook ``lgamma(n + A) - lgamma(A) + ...``
subtracts terms of size ``n log n`` (at n = 1e6 and a = 1e6 it keeps ~6 digits).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families.multinomial import Multinomial, _multinomial_draws, _softmax_parts, compositions
from mlnll._src.families.negative_binomial import _log_pmf_value as _nb_log_pmf
from mlnll._src.numerics import counts
from mlnll._src.types import BetaBinomialOutputArrays, BetaBinomialOutputs
from mlnll._src.verify.case import Case, ScipyReference


def _log_pmf(n: int, log_a: jax.Array, y: jax.Array) -> jax.Array:
    """``log DM(y; n, a)`` over the last axis, for valid count vectors y summing to n >= 1, by the
    negative-binomial identity of the module docstring at ``t = n / A``."""
    log_total = numerics.logsumexp(log_a, axis=-1)  # log A
    log_p = numerics.log_softmax(log_a, axis=-1)
    log_n = math.log(n)
    # Class k: NB(y_k; a_k, mean n p_k); the total: NB(n; A, mean n), in one call.
    a = jnp.concatenate([log_n + log_p, jnp.full(log_total.shape + (1,), log_n, log_a.dtype)], axis=-1)
    b = jnp.concatenate([log_a, log_total[..., None]], axis=-1)
    ys = jnp.concatenate([y, jnp.full(log_total.shape + (1,), float(n), y.dtype)], axis=-1)
    terms = _nb_log_pmf(a, b, ys)
    value = jnp.sum(terms[..., :-1], axis=-1) - terms[..., -1]
    if n > _CORNER_UP_TO:
        return value
    # y = n e_k (every draw in class k), x = a_k, R = A - a_k <= x: log p = -sum_{j<n} log1p(R/(x + j)),
    # near 0 where the class is near-certain (the identity's negative-binomial terms, each ~1, cancel
    # there). Summed as log1p(S), S = prod_j (1 + e_j) - 1 combined pairwise (s1 + s2 + s1 s2: positive
    # terms only), e_j = R/(x + j).
    is_k = y == n
    corner = jnp.any(is_k, axis=-1)
    log_x = jnp.sum(numerics.where(is_k, log_a, jnp.zeros_like(log_a)), axis=-1)
    log_rest = numerics.logsumexp_or_neg_inf(numerics.where(is_k, jnp.full_like(log_a, -jnp.inf), log_a))
    log_u = log_rest - log_x  # log(R / x); NaN where both are inf (not taken)
    # a_k beyond the dtype (e^1e4 = inf) keeps the identity's outcome (its Multinomial limit; a_k = e^inf's
    # limit 0 would come with the score's NaN): R / (a_k + j) is inf / inf there
    use = corner & (log_u <= 0) & (log_x < math.log(float(jnp.finfo(log_a.dtype).max)))
    zero = jnp.zeros_like(log_x)
    rest = jnp.exp(numerics.where(use, log_rest, zero))  # double where: safe values where not taken
    x = jnp.exp(numerics.where(use, log_x, zero))
    parts = [jnp.exp(numerics.where(use, log_u, zero))] + [rest / (x + j) for j in range(1, n)]
    while len(parts) > 1:
        pairs = [p + q + p * q for p, q in zip(parts[0::2], parts[1::2])]
        parts = pairs + ([parts[-1]] if len(parts) % 2 else [])
    return numerics.where(use, -jnp.log1p(parts[0]), value)


def _score(n: int, log_a: jax.Array, y: jax.Array) -> jax.Array:
    """``d log DM / d log a_k = a_k [psi(y_k + a_k) - psi(a_k) - psi(n + A) + psi(A)]``, evaluated as
    ``G(a_k, y_k) + a_k log1p(w_k) - p_k G(A, n)`` (see ``DirichletMultinomial``)."""
    log_total = numerics.logsumexp(log_a, axis=-1)[..., None]
    _, p, _, _ = _softmax_parts(log_a)
    log_t = math.log(n) - log_total  # t = n / A
    log1p_t = numerics.softplus(log_t)
    d = y - n * p  # y_k - mu_k
    w = d * jnp.exp(-log_a - log1p_t)  # (y_k - mu_k) / (a_k (1 + t))
    near = jnp.abs(w) <= 0.5
    wn = numerics.where(near, w, jnp.zeros_like(w))
    # a_k w_k = (y_k - mu_k) / (1 + t); log1p(w)/w = 1 + log1pmx(w)/w
    a_log1p_w_near = d * jax.nn.sigmoid(-log_t) * (1 + numerics.log1pmx_over_x(wn))
    positive = y > 0
    log_y = jnp.log(numerics.where(positive, y, jnp.ones_like(y)))
    # a_k [log1p(y_k/a_k) - log1p(t)]; at y_k = 0, -a_k log1p(t) without overflow
    far_positive = jnp.exp(log_a) * (numerics.softplus(log_y - log_a) - log1p_t)
    far_zero = -numerics.softplus_times_exp(log_a, jnp.broadcast_to(log_t, log_a.shape))
    a_log1p_w = numerics.where(near, a_log1p_w_near, numerics.where(positive, far_positive, far_zero))
    gap_k = counts.scaled_digamma_gap(log_a, y)  # G(a_k, y_k) = a_k [psi(a_k + y_k) - psi(a_k) - log1p(y_k/a_k)]
    gap_total = counts.scaled_digamma_gap(log_total, jnp.full(log_total.shape, float(n), log_a.dtype))
    return gap_k + a_log1p_w - p * gap_total


def _value_and_partials(n: int, log_a: jax.Array, y: jax.Array):
    return _log_pmf(n, log_a, y), (_score(n, log_a, y), None)  # counts are not differentiable


# log DM(y; n, a), differentiated by the closed-form score (jax.grad, jacfwd, hessian).
_dm_log_pmf = closed_form(_value_and_partials, num_static=1)


def _log_pmf_any_n(n: int, log_a: jax.Array, y: jax.Array) -> jax.Array:
    """``_dm_log_pmf`` for valid count vectors; n = 0 has one outcome, of probability 1."""
    if n == 0:
        return jnp.zeros(y.shape[:-1], log_a.dtype)
    return _dm_log_pmf(n, log_a, y)


def _marginal_fisher(n: int, log_a: jax.Array) -> jax.Array:
    """The Fisher information in ``log a``, ``[..., K, K]``, as exact finite sums (see the class):
    ``diag_k(sum_y BB(y; n, a_k, A - a_k) s(a_k, y)) - p p^T s(A, n)``, ``s(x, d) = x^2 (psi'(x) -
    psi'(x + d))``."""
    k = log_a.shape[-1]
    log_p, p, _, log_rest_share = _softmax_parts(log_a)
    log_total = numerics.logsumexp(log_a, axis=-1)[..., None]
    log_rest = log_total + log_rest_share  # log(A - a_k), from 1 - p_k without cancellation
    a = jnp.exp(log_a)
    pair = jnp.stack([log_a, log_rest], axis=-1)  # [..., K, 2]: the marginal of class k is BB(a_k, A - a_k)

    def terms(y):  # [chunk] -> [chunk, ..., K]
        shape = y.shape + log_a.shape
        yy = jnp.broadcast_to(y.reshape(y.shape + (1,) * log_a.ndim), shape)
        vectors = jnp.stack([yy, n - yy], axis=-1)
        weights = jnp.exp(_log_pmf_any_n(n, jnp.broadcast_to(pair, shape + (2,)), vectors))
        return numerics.mul_nonzero(weights, numerics.scaled_trigamma_difference(jnp.broadcast_to(a, shape), yy))

    diagonal = numerics.sum_over_counts(terms, n, log_a.dtype)
    total = numerics.scaled_trigamma_difference(jnp.exp(log_total), jnp.full(log_total.shape, float(n), log_a.dtype))
    eye = jnp.eye(k, dtype=bool)
    return jnp.where(eye, diagonal[..., :, None], 0.0) - p[..., :, None] * p[..., None, :] * total[..., None]


# -- DirichletMultinomial --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirichletMultinomial:
    r"""Dirichlet-multinomial: counts of K classes in ``total_count`` draws, over-dispersed.

    ``DirichletMultinomial(total_count=n)``, n a whole number >= 0 (static). outputs:
    ``log_concentration [..., K]`` (K >= 2), ``a = exp(log_concentration)``, ``A = sum_k a_k``.
    targets: count vectors ``[..., K]`` summing to n (as ``Multinomial``'s); any other vector gives
    ``-inf``. Mean ``n a / A``; the variance is the multinomial's times ``(n + A)/(1 + A)``, so
    ``A -> inf`` is ``Multinomial`` with logits ``log a``. scipy's ``dirichlet_multinomial(a, n)``.

    Density: ``log p(y) = log n! - sum_k log y_k! + lgamma(A) - lgamma(n + A) + sum_k [lgamma(y_k +
    a_k) - lgamma(a_k)]``, evaluated by the negative-binomial identity of the module docstring
    (every term a negative-binomial log-pmf in Loader's form; the cancellation between them is
    bounded by ``log(2 pi Var(n))/2``, the total's log-pmf at its mean). That bound is not relative:
    where every draw falls in one class k with ``R = A - a_k <= a_k`` (a near-certain outcome, log p
    ~ -1e-7) and n <= 32, ``log p = log Gamma(n + a_k) Gamma(A) / (Gamma(a_k) Gamma(n + A)) =
    -sum_{j<n} log1p(R/(a_k + j))`` is summed directly, as ``log1p`` of the product of the
    ``1 + R/(a_k + j)`` minus 1 (pairwise, positive terms only): n divisions per example.

    Gradient. ``d log p/d log a_k = a_k [psi(y_k + a_k) - psi(a_k) - psi(n + A) + psi(A)]``. With
    ``G(r, y) = r [psi(r + y) - psi(r) - log1p(y/r)]`` (``numerics.scaled_digamma_gap``, no digamma
    call), ``t = n/A`` and ``w_k = (y_k - n p_k)/(a_k (1 + t))``, the logs combine as
    ``a_k [log1p(y_k/a_k) - log1p(n/A)] = a_k log1p(w_k)``, so
    ``d log p/d log a_k = G(a_k, y_k) + a_k log1p(w_k) - p_k G(A, n)``: the two large logs never
    meet (``a_k log1p(w_k) = (y_k - n p_k) log1p(w_k)/w_k / (1 + t)`` near w = 0). ``log_prob``
    differentiates through this closed form (a ``custom_jvp``; the counts are not differentiable).

    Fisher information in ``log a``: minus the expected Hessian, whose digamma terms have
    expectation 0, leaves trigamma terms: ``I_jk = [j = k] E[s(a_k, y_k)] - p_j p_k s(A, n)``,
    ``s(x, d) = x^2 (psi'(x) - psi'(x + d))`` (``numerics.scaled_trigamma_difference``), the
    expectation over y_k's beta-binomial marginal ``BB(n, a_k, A - a_k)``: an exact sum of n + 1
    terms per class (O(n K) work, chunks of 1024 counts). In the direction that scales every a
    (``1^T I 1``, which tends to 0 as A grows) the two parts cancel (a relative error of about
    ``eps A / n`` there), so where there are at most 4096 count vectors ``fisher`` sums
    ``E[s s^T]`` over them instead, products of the closed-form score. Entropy and KL have no closed
    form (sums over all C(n + K - 1, K - 1) count vectors): they raise ``NotImplementedError``.
    """

    total_count: int

    def __post_init__(self):
        object.__setattr__(self, "total_count",
                           numerics.check_total_count("DirichletMultinomial", self.total_count))

    @property
    def _multinomial(self) -> Multinomial:
        """The multinomial of the same n: its support test (count vectors summing to n) is this one's."""
        return Multinomial(total_count=self.total_count)

    def _log_a(self, outputs, family: str = "DirichletMultinomial") -> unpack.Params:
        p = unpack.unpack(outputs, family=family, names=("log_concentration",), event_ndims={"log_concentration": 1})
        if p.log_concentration.shape[-1] < 2:
            raise ValueError(f"{family} outputs (log_concentration) need a class axis of size K >= 2, shape "
                             f"[..., K]; got shape {p.log_concentration.shape}.")
        return p

    def _prepare(self, outputs, targets):
        p = self._log_a(outputs)
        y = validate.numeric_targets(targets, where="DirichletMultinomial targets")
        k = p.log_concentration.shape[-1]
        if y.ndim == 0 or y.shape[-1] != k:
            raise ValueError(f"DirichletMultinomial: targets are count vectors [..., K] with K = {k} as in "
                             f"outputs shape {p.log_concentration.shape}; got targets shape {y.shape}.")
        p, y = unpack.with_targets(p, y, family="DirichletMultinomial", event_ndim=1)
        exact_limit = 2 ** (jnp.finfo(y.dtype).nmant + 1)
        if self.total_count >= exact_limit:
            raise ValueError(
                f"DirichletMultinomial(total_count={self.total_count}): counts are checked in "
                f"{jnp.dtype(y.dtype).name}, which holds every sum of whole numbers exactly only below "
                f"{exact_limit}; pass float64 outputs (with jax_enable_x64) for totals this large."
            )
        valid = self._multinomial._valid(y)
        ys = jnp.where(valid[..., None], y, self._multinomial._all_in_class_0(y))  # double where
        return p, ys, valid

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(y)``, equal to scipy.stats.dirichlet_multinomial.logpmf."""
        p, ys, valid = self._prepare(outputs, targets)
        lp = _log_pmf_any_n(self.total_count, p.log_concentration, ys)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``-d log p/d log a``, shape [..., K] (rows with an invalid target are NaN)."""
        p, ys, valid = self._prepare(outputs, targets)
        if self.total_count == 0:
            g = jnp.zeros_like(p.log_concentration)
        else:
            g = -_score(self.total_count, p.log_concentration, ys)
        return jnp.where(valid[..., None], g, jnp.nan).astype(p.dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        p = self._log_a(outputs)
        a = p.log_concentration
        return {"total_count": jnp.full(a.shape[:-1], self.total_count, p.dtype),
                "concentration": jnp.exp(a).astype(p.dtype), "probs": jax.nn.softmax(a).astype(p.dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """``n a / A``, shape [..., K]."""
        p = self._log_a(outputs)
        return (self.total_count * jax.nn.softmax(p.log_concentration)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Probabilities ``softmax(log g)``, ``g_k ~ Gamma(a_k)`` drawn in logs (accurate for tiny
        a), then a multinomial draw; shape ``sample_shape + [..., K]``."""
        p = self._log_a(outputs)
        a = p.log_concentration
        shape = tuple(sample_shape) + a.shape
        k_gamma, k_draw = jax.random.split(key)
        log_g = jax.random.loggamma(k_gamma, jnp.broadcast_to(jnp.exp(a), shape), shape, a.dtype)
        probs = jax.nn.softmax(log_g, axis=-1)
        n = jnp.asarray(float(self.total_count), a.dtype)
        return _multinomial_draws(k_draw, n, probs, shape=shape).astype(p.dtype)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        raise NotImplementedError("DirichletMultinomial.entropy has no closed form: it is a sum over all "
                                  "C(n + K - 1, K - 1) count vectors.")

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        raise NotImplementedError("DirichletMultinomial.kl has no closed form: it is a sum over all "
                                  "C(n + K - 1, K - 1) count vectors.")

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``[..., K, K]``: ``E[s s^T]`` over every count vector when there are at most
        ``_ENUMERATE_UP_TO`` of them (products of the closed-form score: no cancellation), else the
        trigamma sums over each class's beta-binomial marginal (see the class)."""
        p = self._log_a(outputs)
        a = p.log_concentration
        n, k = self.total_count, a.shape[-1]
        if n == 0:
            return jnp.zeros(a.shape + (k,), p.dtype)
        if math.comb(n + k - 1, k - 1) > _ENUMERATE_UP_TO:
            return _marginal_fisher(n, a).astype(p.dtype)
        table = jnp.asarray(compositions(n, k), a.dtype)
        table = table.reshape((table.shape[0],) + (1,) * (a.ndim - 1) + (k,))
        nodes = jnp.broadcast_to(table, (table.shape[0],) + a.shape)
        a_b = jnp.broadcast_to(a[None], nodes.shape)
        weights = jnp.exp(_dm_log_pmf(n, a_b, nodes))[..., None, None]
        score = _score(n, a_b, nodes)
        return jnp.sum(numerics.mul_nonzero(weights, score[..., :, None] * score[..., None, :]), axis=0).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``log n! - sum_k log y_k!`` (``Multinomial``'s), the part free of the concentrations."""
        return self._multinomial.constant_terms(targets)

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Every count vector, ``[C(n + K - 1, K - 1), *batch, K]``, and its probability (small n, K)."""
        p = self._log_a(outputs)
        a = p.log_concentration
        table = compositions(self.total_count, a.shape[-1])
        m = table.shape[0]
        nodes = jnp.broadcast_to(jnp.asarray(table, a.dtype).reshape((m,) + (1,) * (a.ndim - 1) + (a.shape[-1],)),
                                 (m,) + a.shape)
        weights = jnp.exp(self.log_prob(jnp.broadcast_to(a[None], nodes.shape), nodes).astype(a.dtype))
        return nodes, weights

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: n = 4 draws of 3 classes (the Fisher check enumerates all 15
        count vectors), concentrations e^(±1.5 N(0, 1)); 1e-6 and 1e6 among the extremes."""
        n = _CHECK_TOTAL_COUNT
        return (Case(f"DirichletMultinomial(n={n})", cls(total_count=n), _dm_random, _dm_extreme,
                     scipy=ScipyReference(lambda a: _scipy_dm(n, a), discrete=True),
                     plain_log_prob=lambda a, y: _dm_plain(n, a, y)),)


# -- BetaBinomial ----------------------------------------------------------------------------------


_BB_NAMES = ("log_concentration1", "log_concentration0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BetaBinomial:
    r"""Beta-binomial: successes in ``total_count`` trials whose success probability is Beta(a, b).

    ``BetaBinomial(total_count=n)``, n a whole number >= 0 (static). outputs:
    ``(log_concentration1, log_concentration0)``, ``a = exp(log_concentration1)`` (successes) and
    ``b = exp(log_concentration0)`` (failures), as ``Beta``'s. targets: counts 0..n; anything else
    gives ``-inf``. Mean ``n a / (a + b)``, variance ``n p (1 - p) (a + b + n)/(a + b + 1)``
    (``a + b -> inf`` is ``Binomial`` with logit ``log a - log b``). scipy's ``betabinom(n, a, b)``.

    Density: ``log p(y) = log C(n, y) + log B(y + a, n - y + b) - log B(a, b)``, the
    ``DirichletMultinomial`` of the counts ``(y, n - y)`` with concentrations ``(a, b)``: evaluated
    by its negative-binomial identity (accurate to n = 1e6 and concentrations from 1e-6 to 1e6 and
    beyond), differentiated by its closed form (``d log p/d log a = a [psi(y + a) - psi(a) -
    psi(n + a + b) + psi(a + b)]``, evaluated without digamma differences, see there).

    Fisher information: the ``DirichletMultinomial``'s, a sum of n + 1 terms per class; entropy
    ``-sum_y p log p`` and KL ``sum_y p log(p / q)``: exact sums over the n + 1 counts (no closed form
    exists), O(n) work per example in chunks of 1024 counts. (The KL sums terms of both signs: where
    p and q are close its relative accuracy is that of the terms, not of the result.)
    """

    total_count: int

    def __post_init__(self):
        object.__setattr__(self, "total_count", numerics.check_total_count("BetaBinomial", self.total_count))

    def _outputs(self, outputs, family: str = "BetaBinomial") -> unpack.Params:
        return unpack.unpack(outputs, family=family, names=_BB_NAMES)

    @staticmethod
    def _pair(p: unpack.Params) -> jax.Array:
        return jnp.stack([p.log_concentration1, p.log_concentration0], axis=-1)

    def _log_pmf(self, pair: jax.Array, ys: jax.Array) -> jax.Array:
        return _log_pmf_any_n(self.total_count, pair, jnp.stack([ys, self.total_count - ys], axis=-1))

    def log_prob(self, outputs: BetaBinomialOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(y)``, equal to scipy.stats.betabinom.logpmf."""
        p, y = unpack.with_targets(self._outputs(outputs), targets, family="BetaBinomial")
        ys, valid = counts.counts_or_zero(y, self.total_count)  # double where: a count in 0..n
        return minus_inf_off_support(self._log_pmf(self._pair(p), ys), valid).astype(p.dtype)

    def grad(self, outputs: BetaBinomialOutputs, targets: ArrayLike) -> BetaBinomialOutputArrays:
        """Closed forms of ``d(-log p)/d(log_concentration1, log_concentration0)`` (NaN off the support)."""
        p, y = unpack.with_targets(self._outputs(outputs), targets, family="BetaBinomial")
        ys, valid = counts.counts_or_zero(y, self.total_count)
        n = self.total_count
        pair = self._pair(p)
        g = jnp.zeros_like(pair) if n == 0 else -_score(n, pair, jnp.stack([ys, n - ys], axis=-1))
        g = jnp.where(valid[..., None], g, jnp.nan).astype(p.dtype)
        return g[..., 0], g[..., 1]

    def params(self, outputs: BetaBinomialOutputs) -> dict[str, jax.Array]:
        p = self._outputs(outputs)
        return {"total_count": jnp.full(p.batch_shape, self.total_count, p.dtype),
                "concentration1": jnp.exp(p.log_concentration1).astype(p.dtype),
                "concentration0": jnp.exp(p.log_concentration0).astype(p.dtype)}

    def mean(self, outputs: BetaBinomialOutputs) -> jax.Array:
        """``n a / (a + b) = n sigmoid(log a - log b)``."""
        p = self._outputs(outputs)
        return (self.total_count * jax.nn.sigmoid(p.log_concentration1 - p.log_concentration0)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: BetaBinomialOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``p = sigmoid(log g_a - log g_b)``, ``g ~ Gamma`` drawn in logs, then ``Binomial(n, p)``."""
        p = self._outputs(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        k_a, k_b, k_draw = jax.random.split(key, 3)
        la, lb = p.log_concentration1, p.log_concentration0
        log_ga = jax.random.loggamma(k_a, jnp.broadcast_to(jnp.exp(la), shape), shape, la.dtype)
        log_gb = jax.random.loggamma(k_b, jnp.broadcast_to(jnp.exp(lb), shape), shape, la.dtype)
        n = jnp.full(shape, self.total_count, la.dtype)
        return jax.random.binomial(k_draw, n, jax.nn.sigmoid(log_ga - log_gb), shape, la.dtype).astype(p.dtype)

    def _sum_over_counts(self, p: unpack.Params, term) -> jax.Array:
        pair = self._pair(p)

        def terms(y):
            shape = y.shape + p.batch_shape
            yy = jnp.broadcast_to(y.reshape(y.shape + (1,) * len(p.batch_shape)), shape)
            return term(jnp.broadcast_to(pair, shape + (2,)), yy)

        return numerics.sum_over_counts(terms, self.total_count, pair.dtype)

    def entropy(self, outputs: BetaBinomialOutputs) -> jax.Array:
        """``-sum_{y=0}^{n} p(y) log p(y)``, an exact finite sum (no closed form exists)."""
        p = self._outputs(outputs)

        def term(pair, y):
            lp = self._log_pmf(pair, y)
            return -numerics.mul_nonzero(jnp.exp(lp), lp)  # 0 log 0 = 0

        return self._sum_over_counts(p, term).astype(p.dtype)

    def kl(self, outputs_p: BetaBinomialOutputs, outputs_q: BetaBinomialOutputs) -> jax.Array:
        """``sum_{y=0}^{n} p(y) (log p(y) - log q(y))``, an exact finite sum."""
        p = self._outputs(outputs_p, "BetaBinomial.kl p")
        q = self._outputs(outputs_q, "BetaBinomial.kl q")
        shape = validate.broadcast_shapes("BetaBinomial.kl", [("outputs_p", p.batch_shape), ("outputs_q", q.batch_shape)])
        (la, lb, qa, qb), dtype = numerics.upcast(*(jnp.broadcast_to(x, shape) for x in (
            p.log_concentration1, p.log_concentration0, q.log_concentration1, q.log_concentration0)))
        both = jnp.stack([la, lb, qa, qb], axis=-1)

        def terms(y):
            full = y.shape + shape
            yy = jnp.broadcast_to(y.reshape(y.shape + (1,) * len(shape)), full)
            pairs = jnp.broadcast_to(both, full + (4,))
            lp, lq = self._log_pmf(pairs[..., :2], yy), self._log_pmf(pairs[..., 2:], yy)
            return numerics.mul_nonzero(jnp.exp(lp), lp - lq)

        return numerics.sum_over_counts(terms, self.total_count, both.dtype).astype(dtype)

    def fisher(self, outputs: BetaBinomialOutputs) -> jax.Array:
        """``E[s s^T] = sum_{y=0}^{n} p(y) s(y) s(y)^T`` with the closed-form score s, ``batch + (2, 2)``:
        an exact sum of n + 1 terms (the trigamma form of ``DirichletMultinomial.fisher`` cancels in
        the direction that scales a and b together, which the products of scores do not)."""
        p = self._outputs(outputs)
        n = self.total_count
        if n == 0:
            return jnp.zeros(p.batch_shape + (2, 2), p.dtype)

        def term(pair, y):
            score = _score(n, pair, jnp.stack([y, n - y], axis=-1))
            weight = jnp.exp(self._log_pmf(pair, y))[..., None, None]
            return numerics.mul_nonzero(weight, score[..., :, None] * score[..., None, :])

        return self._sum_over_counts(p, term).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``log C(n, y)`` (``Binomial``'s), the part free of the concentrations."""
        from mlnll._src.families.binomial import Binomial

        return Binomial(total_count=self.total_count).constant_terms(targets)

    def expectation_nodes(self, outputs: BetaBinomialOutputs) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over all n + 1 outcomes: nodes ``[n + 1, *batch]`` and probabilities."""
        p = self._outputs(outputs)
        n = self.total_count
        column = jnp.arange(n + 1, dtype=p.log_concentration1.dtype).reshape((n + 1,) + (1,) * len(p.batch_shape))
        nodes = jnp.broadcast_to(column, (n + 1,) + p.batch_shape)
        pair = jnp.broadcast_to(self._pair(p), nodes.shape + (2,))
        return nodes, jnp.exp(self._log_pmf(pair, nodes))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: n = 10, concentrations e^(1.5 N(0, 1)); 1e-6 and 1e6 among
        the extremes (the Fisher check enumerates all 11 counts)."""
        n = _CHECK_TOTAL_COUNT_BB
        return (Case(f"BetaBinomial(n={n})", cls(total_count=n), _bb_random, _bb_extreme,
                     scipy=ScipyReference(lambda o: _scipy_bb(n, o), discrete=True),
                     plain_log_prob=lambda o, y: _bb_plain(n, o, y)),)


# -- check cases -----------------------------------------------------------------------------------

_CHECK_TOTAL_COUNT = 4
# Up to this total, a near-certain count vector (all n draws in class k, A - a_k <= a_k) takes the direct
# sum of its n terms (n divisions per example); above it, the identity (not yet accurate there).
_CORNER_UP_TO = 32
# Up to this many count vectors, fisher sums E[s s^T] over all of them.
_ENUMERATE_UP_TO = 4096
_CHECK_TOTAL_COUNT_BB = 10
_CHECK_CLASSES = 3


def _lgamma(x):
    return jax.scipy.special.gammaln(x)


def _dm_plain(n: int, log_a, y):
    """``log n! - sum log y_k! + lgamma(A) - lgamma(n + A) + sum [lgamma(y_k + a_k) - lgamma(a_k)]``."""
    a = jnp.exp(log_a)
    total = jnp.sum(a, axis=-1)
    return (_lgamma(n + 1.0) - jnp.sum(_lgamma(y + 1), axis=-1) + _lgamma(total) - _lgamma(n + total)
            + jnp.sum(_lgamma(y + a) - _lgamma(a), axis=-1))


def _bb_plain(n: int, outputs, y):
    """``log C(n, y) + betaln(y + a, n - y + b) - betaln(a, b)`` with lgamma."""
    a, b = jnp.exp(outputs[0]), jnp.exp(outputs[1])
    return (_lgamma(n + 1.0) - _lgamma(y + 1) - _lgamma(n - y + 1) + _lgamma(y + a) + _lgamma(n - y + b)
            - _lgamma(n + a + b) - _lgamma(a) - _lgamma(b) + _lgamma(a + b))


def _scipy_dm(n: int, log_a):
    import scipy.stats

    return scipy.stats.dirichlet_multinomial(np.exp(log_a), n)


def _scipy_bb(n: int, outputs):
    import scipy.stats

    return scipy.stats.betabinom(n, np.exp(outputs[0]), np.exp(outputs[1]))


def _dm_random(key, dtype, n):
    """Log-concentrations ``1.5 N(0, 1)`` and a count vector drawn uniformly from all of them."""
    u = jax.random.uniform(key, (2 * _CHECK_CLASSES + 1, n), dtype)
    radius, angle = u[:_CHECK_CLASSES], u[_CHECK_CLASSES:-1]
    log_a = 1.5 * jnp.sqrt(-2 * jnp.log1p(-radius)) * jnp.cos(2 * jnp.pi * angle)
    table = compositions(_CHECK_TOTAL_COUNT, _CHECK_CLASSES)
    rows = jnp.floor(table.shape[0] * u[-1]).astype(jnp.int32)
    return log_a.T, jnp.asarray(table, dtype)[rows]


def _dm_extreme(dtype):
    """Concentrations from e^-8 to e^8, mixed, with count vectors at the corners. (1e-6 and 1e6 are
    in tests/test_dirichlet_multinomial.py against mpmath: there the check's oracle, autodiff's
    Hessian summed over the 15 outcomes, keeps fewer digits of the Fisher information than fisher.)"""
    log_a = jnp.array([[-8.0, -8.0, -8.0], [8.0, 8.0, 8.0], [-8.0, 0.0, 8.0], [8.0, -8.0, 0.0],
                       [0.0, 0.0, 0.0], [-8.0, 5.0, 5.0]], dtype)
    y = jnp.array([[4, 0, 0], [2, 1, 1], [0, 4, 0], [0, 0, 4], [1, 1, 2], [4, 0, 0]], dtype)
    return log_a, y


def _bb_random(key, dtype, n):
    """Log-concentrations ``1.5 N(0, 1)`` each and counts uniform on 0..n."""
    u = jax.random.uniform(key, (3, n), dtype)
    radius, angle = jnp.sqrt(-2 * jnp.log1p(-u[0])), 2 * jnp.pi * u[1]
    return (1.5 * radius * jnp.cos(angle), 1.5 * radius * jnp.sin(angle)), jnp.floor((_CHECK_TOTAL_COUNT_BB + 1) * u[2])


def _bb_extreme(dtype):
    """Concentrations e^-8 and e^8 (e^-6 against e^6 mixed), counts at 0, n and between (1e-6 and
    1e6: see ``_dm_extreme``)."""
    la = jnp.array([-8.0, 8.0, -6.0, 6.0, 0.0, 8.0, -8.0, 2.0], dtype)
    lb = jnp.array([-8.0, 8.0, 6.0, -6.0, 0.0, 0.0, -8.0, -6.0], dtype)
    y = jnp.array([0.0, 5.0, 10.0, 3.0, 10.0, 10.0, 5.0, 10.0], dtype)
    return (la, lb), y

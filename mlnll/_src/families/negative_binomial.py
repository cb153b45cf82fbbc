"""NegativeBinomial: an over-dispersed count given a log-mean and a log-concentration."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.numerics import counts, gamma_bessel
from mlnll._src.types import NegativeBinomialOutputArrays, NegativeBinomialOutputs
from mlnll._src.verify.case import Case, ScipyReference

# Truncated support for expectation_nodes: 2048 consecutive counts from max(0, floor(mean - 10 sd)),
# sd = sqrt(mean + mean^2 / concentration). tests/test_counts.py checks with scipy that they hold all
# but < 1e-16 of the mass for mean <= 100 with concentration >= 5, mean <= 20 with concentration
# >= 1, and mean <= 1 with concentration >= 0.1.
NUM_NODES = 2048


_NAMES = ("log_mean", "log_concentration")


def _outputs(outputs) -> unpack.Params:
    """``log_mean`` and ``log_concentration`` by name, in the accumulation dtype, broadcast together."""
    return unpack.unpack(outputs, family="NegativeBinomial", names=_NAMES)


def _prepare(outputs, targets) -> tuple[unpack.Params, jax.Array]:
    """The outputs and the counts broadcast to one batch shape (the counts in the outputs' dtype)."""
    return unpack.with_targets(_outputs(outputs), targets, family="NegativeBinomial")


class _Shared(NamedTuple):
    """The pieces the log-density and its partials both use, computed once."""

    positive: jax.Array  # y > 0
    ys: jax.Array  # y, or 1 where y = 0 (double where: log y)
    log_ys: jax.Array
    r: jax.Array  # e^b
    softplus_a_minus_b: jax.Array  # log1p(mu / r) as softplus(a - b): mu / r may overflow, its log not
    log1p_y_over_r: jax.Array  # log1p(y / r) as softplus(log y - b), 0 at y = 0


def _shared(a: jax.Array, b: jax.Array, y: jax.Array) -> _Shared:
    """``_Shared`` at mean e^a, concentration e^b and valid counts y."""
    positive = y > 0
    ys = numerics.where(positive, y, jnp.ones_like(y))
    log_ys = jnp.log(ys)
    log1p_y_over_r = numerics.where(positive, numerics.softplus(log_ys - b), jnp.zeros_like(y))
    return _Shared(positive, ys, log_ys, jnp.exp(b), numerics.softplus(a - b), log1p_y_over_r)


def _log_pmf_value(a: jax.Array, b: jax.Array, y: jax.Array, sh: _Shared | None = None) -> jax.Array:
    """``log p(y)`` for valid counts y, mean e^a, concentration e^b, in Loader's form (see the class).

    The log-gamma remainders come from ``stirling_remainder_in_dtype`` (arithmetic alone,
    no lgamma call: XLA:CPU's lgamma costs as much as ~40 logs), and ``stirlerr`` and ``bd0`` stop
    their series at the dtype's precision.
    """
    sh = _shared(a, b, y) if sh is None else sh
    positive, ys, log_ys, r, log1p_y_over_r = sh.positive, sh.ys, sh.log_ys, sh.r, sh.log1p_y_over_r
    # s = log((r + mu) / (r + y)) = log1p(mu/r) - log1p(y/r), both as softplus of a log-ratio.
    s = sh.softplus_a_minus_b - log1p_y_over_r
    t_y = numerics.log_ratio(ys, a) + s  # log(y / m_y), m_y = (r + y) mu / (r + mu)
    # The Poisson limit where r = e^b overflows: the r-terms (-delta(r) + delta(r + y) - bd0(r, m_r),
    # together about -(y - mu)^2 / (2 r)) are below eps / e (absolute) where 2 log max(y, mu) - b <
    # log(eps) - 1, and are inf - inf at r = inf; there they are 0 (s = 0 and t_y = log(y/mu) already).
    # Elsewhere (r = inf beside a huge y or mu) the form is NaN as before.
    eps = float(jnp.finfo(b.dtype).eps)
    poisson = (b > math.log(float(jnp.finfo(b.dtype).max))) & (
        2 * jnp.maximum(log_ys, a) - b < math.log(eps) - 1)
    b_r = numerics.where(poisson, jnp.zeros_like(b), b)  # double where: the r-terms see r = 1 there
    r_r = numerics.where(poisson, jnp.ones_like(r), r)
    s_r = numerics.where(poisson, jnp.zeros_like(s), s)
    zero = jnp.zeros_like(b)
    delta_r = numerics.where(poisson, zero, gamma_bessel.stirling_remainder_in_dtype(r_r, b_r))
    # r + y >= 1: no x < 1 branch
    delta_r_plus_y = numerics.where(poisson, zero, gamma_bessel.stirling_remainder_in_dtype(r_r + ys))
    bd0_r = numerics.where(poisson, zero, counts.bd0_in_dtype(r_r, s_r, jnp.exp(b_r - s_r)))  # m_r = r e^(-s)
    spread = (
        -0.5 * log1p_y_over_r
        - delta_r
        + delta_r_plus_y
        - counts.log_factorial_part_in_dtype(ys, log_ys)
        - bd0_r
        - counts.bd0_in_dtype(ys, t_y, ys * jnp.exp(-t_y))
    )
    # y = 0: log p = r log(r / (r + mu)) = -r softplus(a - b), kept ~ -mu when mu / r underflows.
    at_zero = -numerics.softplus_times_exp(b, a - b, a)  # e^(b + (a - b)) is e^a: from a itself
    return numerics.where(positive, spread, at_zero)


def neg_log_pmf_grad(
    a: jax.Array, b: jax.Array, y: jax.Array, sh: _Shared | None = None
) -> tuple[jax.Array, jax.Array]:
    """The closed forms of ``d(-log p)/d(log_mean, log_concentration)`` for valid counts y."""
    sh = _shared(a, b, y) if sh is None else sh
    r = sh.r
    # r / (r + mu) = sigmoid(b - a): (mu - y) r / (r + mu) without forming r + mu. Where
    # sigmoid(b - a) would underflow, the product is taken in logs (it can be as large as ~r).
    log_share = -sh.softplus_a_minus_b  # log_sigmoid(b - a)
    # log(r mu / (r + mu)) = min(a, b) - log1p(e^-|a - b|) (the log1p is softplus's own): no
    # rounding of a - softplus(a - b) at a = 1e4.
    log1p_exp_gap = jnp.log1p(jnp.exp(-jnp.abs(a - b)))
    log_harmonic = jnp.minimum(a, b) - log1p_exp_gap
    # Where mu = e^a overflows (then y < mu): mu - y = mu (1 - y/mu) with 1 - y/mu = -expm1(log y - a).
    over = a > math.log(jnp.finfo(a.dtype).max)
    mu = jnp.exp(numerics.where(over, jnp.zeros_like(a), a))  # double where: e^a is never inf
    gap = mu - y
    log_y = sh.log_ys
    shortfall = -jnp.expm1(numerics.where(over, log_y - a, jnp.full_like(a, -jnp.inf)))  # 1 - y/mu, or 1
    normal = (log_share > math.log(jnp.finfo(a.dtype).tiny) + 1) & ~over
    abs_gap = numerics.where(gap == 0, jnp.ones_like(gap), jnp.abs(gap))  # double where: log(0)
    # log|mu - y| r/(r + mu), and where mu overflows (mu - y) r/(r + mu) = e^log_harmonic (1 - y/mu)
    log_in_logs = numerics.where(over, log_harmonic, jnp.log(abs_gap) + log_share)
    sign = numerics.where(over, jnp.ones_like(gap), jnp.sign(gap))
    in_logs = sign * jnp.exp(log_in_logs) * shortfall
    share = jnp.exp(log_share)
    excess = numerics.where(normal, gap * share, in_logs)  # (mu - y) r / (r + mu) = -r w
    # r log1pmx(w), w = (y - mu)/(r + mu): near w = 0 as r w * log1pmx(w)/w; elsewhere as
    # r log1p(w) - r w with r log1p(w) = r [log1p(y/r) - log1p(mu/r)] (no overflow of w itself).
    # Where mu overflows, w = -sigmoid(a - b) (1 - y/mu) with sigmoid(a - b) = -expm1(log_sigmoid(b - a)).
    # Elsewhere |w| = exp(log|gap| - logaddexp(a, b)), logaddexp(a, b) = max(a, b) + log1p(e^-|a - b|):
    # never gap * exp(-logaddexp(a, b)), whose factor flushes to 0 once r + mu > 1/tiny (e^87.3 in
    # float32) while w is ~1, nor gap / (r + mu), whose derivative overflows at r ~ mu ~ 1e38.
    log_r_plus_mu = jnp.maximum(a, b) + log1p_exp_gap
    w_logs = -jnp.sign(gap) * jnp.exp(jnp.log(abs_gap) - log_r_plus_mu)
    # where 1/(r + mu) is a normal number, the product itself (one rounding fewer)
    inverse_normal = log_r_plus_mu < -math.log(jnp.finfo(a.dtype).tiny)
    w_finite = numerics.where(inverse_normal, -gap * jnp.exp(-log_r_plus_mu), w_logs)
    w = numerics.where(over, jnp.expm1(log_share) * shortfall, w_finite)
    near = jnp.abs(w) <= 0.5
    wn = numerics.where(near, w, jnp.zeros_like(w))
    r_log1p_w = r * (sh.log1p_y_over_r - sh.softplus_a_minus_b)
    r_log1pmx_w = numerics.where(near, -excess * numerics.log1pmx_over_x(wn), r_log1p_w + excess)
    return excess, -numerics.scaled_digamma_gap(b, y) - r_log1pmx_w


def _log_pmf_and_partials(a: jax.Array, b: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
    """``log p(y)`` for valid counts y (Loader's form) and its closed-form partials in
    ``(log_mean, log_concentration)``; the counts are not differentiable."""
    sh = _shared(a, b, y)
    g_a, g_b = neg_log_pmf_grad(a, b, y, sh)
    return _log_pmf_value(a, b, y, sh), (-g_a, -g_b, None)


# log p(y) for valid counts y, mean e^a, concentration e^b, differentiated by its partials: autodiff
# of Loader's form would lose the O(1/r) derivative in log_concentration to underflow at r = 1e35 in
# float32 and to lgamma's cancellation at r ~ 1 (1.6e-5 relative in float32).
nb_log_pmf = closed_form(_log_pmf_and_partials)


@functools.partial(jax.jit, static_argnames="shape")
def _gamma_poisson_draws(key: jax.Array, a: jax.Array, b: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Poisson(mu / r * g) draws, g ~ Gamma(r, 1) drawn in logs (accurate for tiny r)."""
    k_gamma, k_poisson = jax.random.split(key)
    log_g = jax.random.loggamma(k_gamma, jnp.broadcast_to(jnp.exp(b), shape), shape, a.dtype)
    rate = jnp.exp(log_g + jnp.broadcast_to(a - b, shape))
    return jax.random.poisson(k_poisson, rate, shape)


@dataclasses.dataclass(frozen=True)
class NegativeBinomial:
    r"""Negative binomial (gamma-Poisson) distribution of a count, by mean and concentration.

    outputs: ``(log_mean, log_concentration)``, ``mu = exp(log_mean)``, ``r = exp(log_concentration)``;
    ``Var[y] = mu + mu^2 / r`` (r -> inf is Poisson). targets: counts 0, 1, 2, ... (integer or
    floating dtype). Negative, non-integer or non-finite targets give ``-inf``. In scipy's terms
    it is ``scipy.stats.nbinom(n=r, p=r / (r + mu))``.

    Density:
    ``log p(y) = lgamma(y + r) - lgamma(r) - log(y!) + r log(r / (r + mu)) + y log(mu / (r + mu))``.
    Evaluated, for y >= 1, as Loader's form of ``r / (r + y) * Binomial(r; r + y, r / (r + mu))``
    (R's dnbinom):
    ``log p = -log1p(y/r)/2 - delta(r) + delta(r + y) - stirlerr(y) - log(2 pi y)/2
    - bd0(r, r (r + y)/(r + mu)) - bd0(y, mu (r + y)/(r + mu))``, with ``delta`` the log-gamma
    remainder (``numerics.stirling_remainder``; ``stirlerr`` is delta at whole numbers): all terms
    <= 0 (delta decreases), so it stays accurate at y = 1e6, r = 1e-35 or r = 1e35 where the lgamma form
    cancels; y = 0 gives ``-r log1p(mu/r)``.

    Gradient. With ``d mu/d log_mean = mu`` and ``d r/d log_concentration = r``:
    ``d(-log p)/d log_mean = -mu [y/mu - (r + y)/(r + mu)] = (mu - y) r / (r + mu)``;
    ``d(-log p)/d log_concentration = -r [psi(y + r) - psi(r) - log1p(mu/r) + (mu - y)/(r + mu)]``.
    Since ``log1p(y/r) - log1p(mu/r) = log1p(w)``, ``w = (y - mu)/(r + mu)``, the bracket is
    ``[psi(y + r) - psi(r) - log1p(y/r)] + [log1p(w) - w]``: both parts are evaluated without
    cancellation (``numerics.scaled_digamma_gap``: a finite sum ``sum_{k<y} 1/(r + k)`` for
    small y, a series at r >= 10; ``log1pmx``), so the gradient keeps its relative accuracy as
    r -> inf, where it tends to 0 like 1/r. ``log_prob`` differentiates through exactly these
    partials (a ``closed_form`` custom_jvp, also what ``grad`` returns; the counts are not
    differentiable), so ``jax.grad``, ``jacfwd`` and ``hessian`` run the derivation: autodiff of
    Loader's form would lose that O(1/r) derivative in float32.

    Fisher information in ``(log_mean, log_concentration)``. ``E[y] = mu`` gives
    ``I_11 = E[d^2/d log_mean^2] = mu r / (r + mu)`` and ``I_12 = E[(mu - y)] r mu / (r + mu)^2 = 0``.
    ``I_22 = r^2 (psi'(r) - E[psi'(y + r)]) - r mu / (r + mu)
    = r^2 sum_{k>=0} P(y > k) / (r + k)^2 - r mu / (r + mu)`` has no closed form, and no fixed
    truncation of that series is exact for every input (its length grows with mu and 1/r), so
    ``fisher`` raises NotImplementedError.
    """

    def log_prob(self, outputs: NegativeBinomialOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | outputs)``, equal to scipy.stats.nbinom.logpmf(y, r, r/(r+mu))."""
        p, y = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)  # double where: the closed form sees a count
        lp = nb_log_pmf(p.log_mean, p.log_concentration, ys)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: NegativeBinomialOutputs, targets: ArrayLike) -> NegativeBinomialOutputArrays:
        """Closed forms of ``d(-log_prob)/d(log_mean, log_concentration)`` (NaN where y is invalid)."""
        p, y = _prepare(outputs, targets)
        ys, valid = counts.counts_or_zero(y)
        d_log_mean, d_log_concentration = neg_log_pmf_grad(p.log_mean, p.log_concentration, ys)
        nan = jnp.full_like(y, jnp.nan)
        return (
            jnp.where(valid, d_log_mean, nan).astype(p.dtype),
            jnp.where(valid, d_log_concentration, nan).astype(p.dtype),
        )

    def params(self, outputs: NegativeBinomialOutputs) -> dict[str, jax.Array]:
        p = _outputs(outputs)
        mean, concentration = jnp.exp(p.log_mean), jnp.exp(p.log_concentration)
        return {"mean": mean.astype(p.dtype), "concentration": concentration.astype(p.dtype)}

    def mean(self, outputs: NegativeBinomialOutputs) -> jax.Array:
        p = _outputs(outputs)
        return jnp.exp(p.log_mean).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: NegativeBinomialOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Counts in the outputs' dtype: ``y ~ Poisson(mu / r * g)``, ``g ~ Gamma(r, 1)``.

        ``log g`` comes from ``jax.random.loggamma`` (accurate for tiny r); the Poisson draw has
        ``Poisson.sample``'s range (rates below 2^31 without x64).
        """
        p = _outputs(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        return _gamma_poisson_draws(key, p.log_mean, p.log_concentration, shape).astype(p.dtype)

    def entropy(self, outputs: NegativeBinomialOutputs) -> jax.Array:
        """Not implemented: the negative binomial entropy has no closed form."""
        raise NotImplementedError(
            "NegativeBinomial.entropy has no closed form: it needs E[lgamma(y + r) - log(y!)], an "
            "infinite series in y."
        )

    def kl(self, outputs_p: NegativeBinomialOutputs, outputs_q: NegativeBinomialOutputs) -> jax.Array:
        """Not implemented: the KL between two negative binomials has no closed form."""
        raise NotImplementedError(
            "NegativeBinomial.kl has no closed form: with different concentrations it needs "
            "E_p[lgamma(y + r_p) - lgamma(y + r_q)], an infinite series in y."
        )

    def fisher(self, outputs: NegativeBinomialOutputs) -> jax.Array:
        """Not implemented: the (log_concentration, log_concentration) entry has no closed form.

        ``I = [[mu r/(r + mu), 0], [0, r^2 sum_k P(y > k)/(r + k)^2 - r mu/(r + mu)]]`` (derivation
        in the class docstring); the series' length grows without bound with mu and 1/r.
        """
        raise NotImplementedError(
            "NegativeBinomial.fisher: the (log_concentration, log_concentration) entry "
            "r^2 (trigamma(r) - E[trigamma(y + r)]) - r mu/(r + mu) has no closed form, and no fixed "
            "truncation of its series sum_k P(y > k)/(r + k)^2 is exact for every mean and "
            "concentration. The (log_mean, log_mean) entry is mu r/(r + mu) and the cross term is 0."
        )

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``-log(y!)``, the part of ``log_prob`` free of the outputs (0 for an invalid count, whose
        ``log_prob`` is already -inf: ``nll(..., drop_constants=True)`` then gives inf, not NaN)."""
        y = validate.numeric_targets(targets, where="NegativeBinomial targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = numerics.is_count(y)
        ys = jnp.where(valid, y, jnp.zeros_like(y))
        return jnp.where(valid, -numerics.log_factorial(ys), jnp.zeros_like(y))

    def expectation_nodes(self, outputs: NegativeBinomialOutputs) -> tuple[jax.Array, jax.Array]:
        """A truncated support: ``NUM_NODES`` (2048) consecutive counts and their probabilities.

        The counts start at ``max(0, floor(mu - 10 sd))``, ``sd = sqrt(mu + mu^2/r)``; the region
        where they hold all but < 1e-16 of the mass is stated at ``NUM_NODES``. The weights are not
        renormalised.
        """
        p = _outputs(outputs)
        a, b = p.log_mean, p.log_concentration
        mu = jnp.exp(a)
        sd = jnp.sqrt(mu + mu * jnp.exp(a - b))
        nodes = numerics.window_nodes(mu, sd, NUM_NODES)
        bc = lambda x: jnp.broadcast_to(x[None], nodes.shape)  # noqa: E731
        weights = jnp.exp(_log_pmf_value(bc(a), bc(b), nodes))
        return nodes, weights

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: means e^(1.5 N(0, 1)) and concentrations e^(2 N(0, 1)) at
        random, means and concentrations of e^(±80) and counts of 1e6 among the extremes."""
        return (
            Case("NegativeBinomial", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_nbinom, discrete=True), plain_log_prob=_plain_log_prob),
        )


# -- check cases: means and concentrations of e^(±80), counts up to 1e6 -------------------------------


def _plain_log_prob(outputs, y):
    """``lgamma(y + r) - lgamma(r) - log(y!) + r log(r / (r + mu)) + y log(mu / (r + mu))``: the
    textbook formula."""
    log_mean, log_concentration = outputs
    mu, r = jnp.exp(log_mean), jnp.exp(log_concentration)
    lgamma = jax.scipy.special.gammaln
    return lgamma(y + r) - lgamma(r) - lgamma(y + 1) + r * jnp.log(r / (r + mu)) + y * jnp.log(mu / (r + mu))


def _scipy_nbinom(outputs):
    """scipy's ``nbinom(n, p)`` with ``n = r`` and ``p = r / (r + mu)``."""
    import scipy.stats

    mu, r = np.exp(outputs[0]), np.exp(outputs[1])
    return scipy.stats.nbinom(r, r / (r + mu))


def _random(key, dtype, n):
    """Log-means ``1.5 N(0, 1)``, log-concentrations ``2 N(0, 1)`` and counts uniform on 0..39,
    from one draw of uniforms."""
    u = jax.random.uniform(key, (3, n), dtype)
    # Box-Muller: with r = sqrt(-2 log(1 - u0)) and theta = 2 pi u1, r cos(theta) and r sin(theta)
    # are independent standard normals.
    radius, angle = jnp.sqrt(-2 * jnp.log1p(-u[0])), 2 * jnp.pi * u[1]
    log_mean = 1.5 * radius * jnp.cos(angle)
    log_concentration = 2.0 * radius * jnp.sin(angle)
    return (log_mean, log_concentration), jnp.floor(40 * u[2])


def _extreme(dtype):
    log_mean = jnp.array([80.0, -80.0, 0.0, 0.0, 14.0, 14.0, -80.0, 1.0, 1.0, 5.0], dtype)
    log_concentration = jnp.array([-80.0, 80.0, 80.0, -80.0, 2.0, 80.0, -80.0, 30.0, -30.0, 12.0], dtype)
    y = jnp.array([0.0, 0.0, 5.0, 3.0, 1e6, 1e6, 1.0, 7.0, 0.0, 140.0], dtype)
    return (log_mean, log_concentration), y

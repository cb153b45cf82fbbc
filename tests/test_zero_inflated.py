"""ZeroInflated and Hurdle: what the conformance table does not already check.

* Real fits, oracles no one here wrote: statsmodels' ``ZeroInflatedPoisson`` and
  ``ZeroInflatedNegativeBinomialP`` (``inflation="logit"``), and the hurdle as statsmodels' ``Logit``
  for "zero or not" plus ``TruncatedLFPoisson`` on the positive counts (the hurdle likelihood
  factorises). Minimising mlnll's NLL from zero reaches their maximised log-likelihoods to 1e-7
  relative, and mlnll's log-likelihood at their estimates equals theirs to 1e-12.
* Extremes against mpmath: ``log P(0)`` at a confident gate and at a large rate (where
  ``log(g + (1 - g) e^-rate)`` rounds), ``log(1 - p0)`` at a rate of e^-1e4, in both dtypes.
* Fisher information, entropy and KL of the wrappers over Binomial and Geometric against exact sums
  over the support (numpy, from scipy's pmf); the zero-truncated samplers' means.
"""

import functools
import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64, jitted

mp.mp.dps = max(mp.mp.dps, 40)
F32, F64 = np.dtype("float32"), np.dtype("float64")


# -- statsmodels fits ------------------------------------------------------------------------------


def _design(seed=0, n=400):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    exog = np.column_stack([np.ones(n), x])  # count part: intercept and two covariates
    exog_infl = np.column_stack([np.ones(n), x[:, 0]])  # gate: intercept and the first covariate
    return rng, exog, exog_infl


def _zip_data():
    rng, exog, exog_infl = _design(0)
    rate = np.exp(exog @ np.array([0.8, 0.4, -0.3]))
    gate = scipy.special.expit(exog_infl @ np.array([-0.5, 1.0]))
    y = np.where(rng.uniform(size=len(rate)) < gate, 0, rng.poisson(rate))
    return y.astype(np.float64), exog, exog_infl


def _zinb_data():
    rng, exog, exog_infl = _design(1)
    mean = np.exp(exog @ np.array([1.0, 0.5, -0.3]))
    r = 2.0  # concentration; statsmodels' alpha = 1/r (NB2: var = mu + alpha mu^2)
    gate = scipy.special.expit(exog_infl @ np.array([-0.7, 0.8]))
    y = np.where(rng.uniform(size=len(mean)) < gate, 0, rng.negative_binomial(r, r / (r + mean)))
    return y.astype(np.float64), exog, exog_infl


def _minimise(neg_log_lik, size):
    """mlnll's NLL minimised from zero: trust-region Newton (jax's gradient and Hessian, float64),
    then plain Newton steps until the gradient is at rounding level."""
    fun = jax.jit(jax.value_and_grad(neg_log_lik))
    hess = jax.jit(jax.hessian(neg_log_lik))
    result = scipy.optimize.minimize(lambda t: tuple(map(np.asarray, fun(jnp.asarray(t)))), np.zeros(size),
                                     jac=True, hess=lambda t: np.asarray(hess(jnp.asarray(t))),
                                     method="trust-exact", options={"gtol": 1e-6})
    theta = result.x
    for _ in range(4):
        value, g = fun(jnp.asarray(theta))
        theta = theta - np.linalg.solve(np.asarray(hess(jnp.asarray(theta))), np.asarray(g))
    value, g = fun(jnp.asarray(theta))
    assert np.max(np.abs(np.asarray(g))) <= 1e-8 * abs(float(value)), g
    return theta, -float(value)


def _zi_neg_log_lik(family, exog, exog_infl, y, with_concentration=False):
    exog, exog_infl, y = (jnp.asarray(a) for a in (exog, exog_infl, y))
    k_infl, k = exog_infl.shape[1], exog.shape[1]

    def neg_log_lik(theta):
        gate = exog_infl @ theta[:k_infl]
        log_mean = exog @ theta[k_infl:k_infl + k]
        component = (log_mean, jnp.broadcast_to(theta[-1], log_mean.shape)) if with_concentration else log_mean
        return -jnp.sum(family.log_prob((gate, component), y))

    return neg_log_lik


def test_zero_inflated_poisson_reproduces_statsmodels_fit():
    from statsmodels.discrete.count_model import ZeroInflatedPoisson

    y, exog, exog_infl = _zip_data()
    fit = ZeroInflatedPoisson(y, exog, exog_infl=exog_infl, inflation="logit").fit(method="newton", maxiter=100, disp=0)
    assert fit.mle_retvals["converged"]
    neg_log_lik = _zi_neg_log_lik(mlnll.ZeroInflated(mlnll.Poisson()), exog, exog_infl, y)
    # The same log-likelihood at statsmodels' estimates (its parameters: inflation first, then count).
    assert abs(-float(neg_log_lik(jnp.asarray(fit.params))) - fit.llf) <= 1e-12 * abs(fit.llf)
    theta, llf = _minimise(neg_log_lik, len(fit.params))
    assert abs(llf - fit.llf) <= 1e-7 * abs(fit.llf), (llf, fit.llf)
    np.testing.assert_allclose(theta, fit.params, atol=1e-4 * np.max(np.abs(fit.bse)) * 10)


def test_zero_inflated_negative_binomial_reproduces_statsmodels_fit():
    from statsmodels.discrete.count_model import ZeroInflatedNegativeBinomialP

    y, exog, exog_infl = _zinb_data()
    model = ZeroInflatedNegativeBinomialP(y, exog, exog_infl=exog_infl, inflation="logit", p=2)
    fit = model.fit(method="bfgs", maxiter=2000, disp=0, gtol=1e-8)
    assert fit.mle_retvals["converged"]
    neg_log_lik = _zi_neg_log_lik(mlnll.ZeroInflated(mlnll.NegativeBinomial()), exog, exog_infl, y,
                                  with_concentration=True)
    # statsmodels' last parameter is alpha = 1 / r: mlnll's log_concentration is -log(alpha).
    theirs = np.concatenate([fit.params[:-1], [-np.log(fit.params[-1])]])
    assert abs(-float(neg_log_lik(jnp.asarray(theirs))) - fit.llf) <= 1e-12 * abs(fit.llf)
    _, llf = _minimise(neg_log_lik, len(fit.params))
    assert abs(llf - fit.llf) <= 1e-7 * abs(fit.llf), (llf, fit.llf)


def test_poisson_hurdle_reproduces_statsmodels_logit_plus_truncated_poisson():
    import statsmodels.api as sm
    from statsmodels.discrete.truncated_model import TruncatedLFPoisson

    y, exog, exog_infl = _zip_data()
    zero_fit = sm.Logit((y == 0).astype(np.float64), exog_infl).fit(method="newton", disp=0, tol=1e-12)
    positive = y > 0
    count_fit = TruncatedLFPoisson(y[positive], exog[positive], truncation=0).fit(method="newton", maxiter=100, disp=0)
    assert zero_fit.mle_retvals["converged"] and count_fit.mle_retvals["converged"]
    llf = zero_fit.llf + count_fit.llf  # the hurdle likelihood factorises into the two
    neg_log_lik = _zi_neg_log_lik(mlnll.Hurdle(mlnll.Poisson()), exog, exog_infl, y)
    theirs = jnp.asarray(np.concatenate([zero_fit.params, count_fit.params]))
    assert abs(-float(neg_log_lik(theirs)) - llf) <= 1e-12 * abs(llf)
    _, ours = _minimise(neg_log_lik, len(theirs))
    assert abs(ours - llf) <= 1e-7 * abs(llf), (ours, llf)


# -- extremes against mpmath -----------------------------------------------------------------------


def _mp_poisson_log_pmf(rate, y):
    return y * mp.log(rate) - rate - mp.loggamma(y + 1)


def _mp_zip(gate, log_rate, y):
    g, rate = 1 / (1 + mp.exp(-gate)), mp.exp(log_rate)
    if y == 0:
        return mp.log(g + (1 - g) * mp.exp(-rate))
    return mp.log(1 - g) + _mp_poisson_log_pmf(rate, y)


def _mp_hurdle(zero_logit, log_rate, y):
    g, rate = 1 / (1 + mp.exp(-zero_logit)), mp.exp(log_rate)
    if y == 0:
        return mp.log(g)
    return mp.log(1 - g) + _mp_poisson_log_pmf(rate, y) - mp.log(-mp.expm1(-rate))


# (logit, log_rate, y): a confident gate with a large rate (g + (1 - g) e^-rate: 1 - g rounds to 0 and
# e^-rate underflows), a gate of e^-40 at a rate of e^-1e4 (p0 rounds to 1), rates of e^-30 and e^8.
POINTS = [(40.0, 5.0, 0.0), (-40.0, 5.0, 0.0), (-10.0, -30.0, 1.0), (20.0, 8.0, 3000.0), (0.5, -1e4, 0.0),
          (-3.0, -1e4, 1.0), (3.0, -30.0, 2.0), (-20.0, 8.0, 0.0)]


@pytest.mark.parametrize("name", ["ZeroInflated", "Hurdle"])
def test_extreme_points_match_mpmath(name, dtype):
    family = getattr(mlnll, name)(mlnll.Poisson())
    reference = _mp_zip if name == "ZeroInflated" else _mp_hurdle
    logit, log_rate, y = (np.asarray(c, dtype) for c in zip(*POINTS))
    got = f64(jitted(family, "log_prob")((jnp.asarray(logit), jnp.asarray(log_rate)), jnp.asarray(y)))
    with mp.workdps(60):
        want = np.array([float(reference(mp.mpf(float(a)), mp.mpf(float(b)), int(c)))
                         for a, b, c in zip(logit, log_rate, y)])
    # each value is a few roundings of its largest term (|log p| or the logit it carries)
    scale = np.maximum(np.abs(want), 1.0)
    assert np.all(np.abs(got - want) <= 4 * RTOL[dtype] * scale), (got, want)


# -- Fisher, entropy, KL against exact sums over the support ---------------------------------------


N_BINOMIAL = 12


def _support_sums(family, outputs, q_outputs, ys):
    """``(fisher, entropy, kl)`` by summing over the counts ``ys`` (a truncated support: the rest of the
    mass is below 1e-17): ``sum P s s^T``, ``-sum P log P``, ``sum P log(P / Q)``."""
    log_p = jax.vmap(lambda y: family.log_prob(outputs, y))(ys)  # [Y, N]
    log_q = jax.vmap(lambda y: family.log_prob(q_outputs, y))(ys)
    scores = jax.vmap(lambda y: jnp.stack(jax.tree.leaves(family.grad(outputs, y)), axis=-1))(ys)  # [Y, N, P]
    p = jnp.exp(log_p)
    fisher = jnp.einsum("yn,ynp,ynq->npq", p, scores, scores)
    entropy = -jnp.sum(_weighted(p, log_p), axis=0)
    kl = jnp.sum(_weighted(p, log_p - log_q), axis=0)
    return fisher, entropy, kl


def _weighted(p, x):
    """``p x`` with 0 where p = 0 (0 log 0 = 0)."""
    return jnp.where(p > 0, p * jnp.where(p > 0, x, 0.0), 0.0)


@functools.lru_cache(maxsize=None)
def _sums_program(family, num):
    return jax.jit(lambda o, q: _support_sums(family, o, q, jnp.arange(num, dtype=jnp.float64)))


CLOSED = [("ZeroInflated", lambda: mlnll.Binomial(total_count=N_BINOMIAL), N_BINOMIAL + 1),
          ("Hurdle", lambda: mlnll.Binomial(total_count=N_BINOMIAL), N_BINOMIAL + 1),
          ("ZeroInflated", mlnll.Geometric, 1200), ("Hurdle", mlnll.Geometric, 1200)]


@pytest.mark.parametrize(("name", "component", "num"), CLOSED, ids=[f"{n}-{c.__name__ if isinstance(c, type) else 'Binomial'}" for n, c, _ in CLOSED])
def test_fisher_entropy_and_kl_equal_sums_over_the_support(name, component, num):
    family = getattr(mlnll, name)(component())
    logits = jnp.array([-2.0, 0.0, 1.5, 4.0, -0.5])
    z = jnp.array([0.3, -1.0, 2.0, -3.0, 0.0]) if num > 100 else jnp.array([-3.0, 0.0, 0.7, -1.5, 2.5])
    outputs, q_outputs = (logits, z), (logits + 0.3, z - 0.2)
    fisher, entropy, kl = (f64(a) for a in _sums_program(family, num)(outputs, q_outputs))
    got_fisher = f64(jitted(family, "fisher")(outputs))
    root = np.sqrt(np.diagonal(fisher, axis1=1, axis2=2))
    assert np.all(np.abs(got_fisher - fisher) <= 1e-12 * root[:, :, None] * root[:, None, :]), (got_fisher, fisher)
    np.testing.assert_allclose(f64(jitted(family, "entropy")(outputs)), entropy, rtol=1e-12)
    np.testing.assert_allclose(f64(jitted(family, "kl")(outputs, q_outputs)), kl, rtol=1e-10)


def test_methods_without_a_closed_form_say_so():
    for name in ("ZeroInflated", "Hurdle"):
        with pytest.raises(NotImplementedError, match="entropy"):
            getattr(mlnll, name)(mlnll.Poisson()).entropy((jnp.zeros(2), jnp.zeros(2)))
        with pytest.raises(NotImplementedError, match="fisher|Fisher"):
            getattr(mlnll, name)(mlnll.NegativeBinomial()).fisher((jnp.zeros(2), (jnp.zeros(2), jnp.zeros(2))))


# -- samplers --------------------------------------------------------------------------------------

SAMPLED = [("Hurdle", mlnll.Poisson(), jnp.array([-6.0, 0.0, 2.5])),
           ("Hurdle", mlnll.Binomial(total_count=7), jnp.array([-5.0, 0.0, 2.0])),
           ("Hurdle", mlnll.Geometric(), jnp.array([-1.0, 0.5, 3.0])),
           ("Hurdle", mlnll.NegativeBinomial(), (jnp.array([-1.0, 0.0, 2.0]), jnp.array([0.5, -1.0, 1.0]))),
           ("ZeroInflated", mlnll.Poisson(), jnp.array([-1.0, 0.0, 2.0]))]


@pytest.mark.parametrize(("name", "component", "comp"), SAMPLED,
                         ids=[f"{n}-{type(c).__name__}" for n, c, _ in SAMPLED])
def test_sample_mean_matches_mean(name, component, comp):
    """The draws' mean within 5 standard errors of ``mean`` (the hurdle's positive part: the exact
    zero-truncated samplers, rejection for NegativeBinomial); every draw in the support."""
    family = getattr(mlnll, name)(component)
    outputs = (jnp.array([0.4, -1.0, 1.0]), comp)
    draws = f64(jitted(family, "sample")(jax.random.PRNGKey(3), outputs, sample_shape=(4000,)))
    top = component.total_count if isinstance(component, mlnll.Binomial) else np.inf
    assert np.all((draws >= 0) & (draws == np.floor(draws)) & (draws <= top))  # counts in the support
    mean = f64(jitted(family, "mean")(outputs))
    se = draws.std(axis=0) / math.sqrt(draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - mean) <= 5 * se), (draws.mean(axis=0), mean, se)

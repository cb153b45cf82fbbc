"""Tweedie against oracles no one here wrote: mpmath, scikit-learn, and autodiff of the textbook series.

* mpmath at 30+ digits: the series of Dunn and Smyth (2005) summed term by term (all terms within
  45 standard deviations of the largest), or, where the terms' bell is wider than 60 integers, its
  integral (``mpmath.quad``; equal to the sum to ``exp(-2 pi^2 sigma^2)`` by Poisson summation), for
  p from 1.05 to 1.95 and y from 1e-300 to 1e15;
* scikit-learn: ``TweedieRegressor(power=p, link="log", alpha=0)`` coefficients reproduced by
  minimising mlnll's NLL with a fixed dispersion, and ``mean_tweedie_deviance`` against
  ``-2 phi (log p(y | mu) - log p(y | mu = y))``;
* ``jax.grad`` of the textbook series in float64 and float64 finite differences
  (``jax.test_util.check_grads``) for the closed-form partials, in both of the window's regimes;
* seeded Monte Carlo of the sampler: P(y = 0), the mean and the variance ``phi mu^p`` (whose
  score form is the fixed-dispersion Fisher information).

The generic promises (frozen hashable family, the closed form against autodiff of the textbook
series, hessian and jacfwd, extreme inputs, off-support targets, low precision, samples in the
support) are checked for its two rows of the check table by tests/test_conformance.py.
"""

import functools
import math

import jax
import jax.numpy as jnp
import jax.test_util
import mpmath as mp
import numpy as np
import pytest
import scipy.optimize

import mlnll
from conftest import RTOL
from helpers import f64
from mlnll._src.families import tweedie as tweedie_

F32, F64 = np.dtype("float32"), np.dtype("float64")
POWERS = (1.05, 1.3, 1.5, 1.8, 1.95)


def _mp_log_prob(p: float, log_mu: float, log_phi: float, y: float) -> float:
    """``log p(y)`` from the series ``sum_j exp(j z - lgamma(j + 1) - lgamma(j a))`` in mpmath, at
    30 digits plus those of the largest term's index (its terms are ~j log j and cancel)."""
    jm0 = y ** (2 - p) / (math.exp(log_phi) * (2 - p)) if y > 0 else 0.0
    with mp.workdps(30 + int(max(0.0, math.log10(max(jm0, 1.0))))):
        p_, y_, phi = mp.mpf(p), mp.mpf(y), mp.exp(mp.mpf(log_phi))
        mu = mp.exp(mp.mpf(log_mu))
        a = (2 - p_) / (p_ - 1)
        lam = mu ** (2 - p_) / (phi * (2 - p_))
        if y == 0:
            return float(-lam)
        z = a * mp.log(y_ / (p_ - 1)) - (1 + a) * mp.log(phi) - mp.log(2 - p_)

        def term(j):
            return j * z - mp.loggamma(j + 1) - mp.loggamma(j * a)

        jm = y_ ** (2 - p_) / (phi * (2 - p_))
        sd = mp.sqrt(jm * (p_ - 1))
        top = term(max(mp.mpf(1), jm))
        if sd < 60:
            lo, hi = max(1, int(mp.floor(jm - 45 * sd - 50))), int(mp.ceil(jm + 45 * sd + 200))
            total = mp.fsum(mp.exp(term(j) - top) for j in range(lo, hi + 1))
        else:
            total = mp.re(mp.quad(lambda j: mp.exp(term(j) - top), mp.linspace(jm - 45 * sd, jm + 45 * sd, 9)))
        return float(-lam - y_ * mu ** (1 - p_) / (phi * (p_ - 1)) - mp.log(y_) + top + mp.log(total))


def _points(p: float):
    """``(log_mu, log_phi, y)`` from y = 0 and 1e-300 to 1e15, log-dispersions -3..3 and means
    e^(-2..1) times y: both the consecutive window (M below ~100) and the strided one."""
    ys = [0.0, 1e-300, 1e-30, 1e-3, 0.7, 4.0, 60.0, 2e3, 1e6, 1e9, 1e15]
    log_phis = [-3.0, 0.0, 3.0]
    shifts = [-2.0, 0.0, 1.0, 0.5]
    rows = []
    for i, y in enumerate(ys):
        log_phi, shift = log_phis[i % 3], shifts[i % 4]
        rows.append(((math.log(y) if y > 0 else 0.0) + shift, log_phi, y))
    return np.asarray(rows)


@functools.lru_cache(maxsize=None)
def _reference(p: float):
    rows = _points(p)
    return rows, np.asarray([_mp_log_prob(p, *row) for row in rows])


@functools.lru_cache(maxsize=None)
def _jitted(family, method):
    return jax.jit(getattr(family, method))


def _conditioning(p: float, rows: np.ndarray) -> np.ndarray:
    """How far log p moves when log y and log_mean move by one relative ulp: ``r = log_mean - log y``
    enters the deviance, whose derivative in log_mean is ``(y - mu) mu^(1-p)/phi``."""
    log_mu, log_phi, y = rows.T
    score = np.abs((y - np.exp(log_mu)) * np.exp((1 - p) * log_mu - log_phi))
    log_y = np.log(np.where(y > 0, y, 1.0))
    return score * (np.abs(log_mu) + np.abs(log_y))


@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("p", POWERS)
def test_log_prob_matches_the_mpmath_series_from_tiny_to_huge_targets(p, dtype):
    """<= 1e-10 relative in float64 (RTOL[float32]-keyed in float32), beyond the conditioning of
    the inputs themselves (the deviance's ``(y - mu) mu^(1-p)/phi`` times one ulp of log y)."""
    rows, want = _reference(p)
    if dtype == F32:  # float32's range: y = 1e-300 is 0 there
        keep = (rows[:, 2] == 0) | ((rows[:, 2] > 1e-37) & (rows[:, 2] < 1e30))
        rows, want = rows[keep], want[keep]
    family = mlnll.Tweedie(power=p)
    got = f64(_jitted(family, "log_prob")((jnp.asarray(rows[:, 0], dtype), jnp.asarray(rows[:, 1], dtype)),
                                          jnp.asarray(rows[:, 2], dtype)))
    # float32 inputs: the rounding of log_mu and log_phi to float32 moves the exact value; the
    # reference is recomputed at the rounded inputs.
    if dtype == F32:
        rounded = rows.astype(np.float32).astype(np.float64)
        want = np.asarray([_mp_log_prob(p, *row) for row in rounded])
        rows = rounded
    rtol = 1e-10 if dtype == F64 else 4 * RTOL[F32]
    bound = rtol * np.maximum(np.abs(want), 1.0) + 8 * np.finfo(dtype).eps * _conditioning(p, rows)
    assert np.all(np.abs(got - want) <= bound), (got, want, np.abs(got - want) / np.maximum(np.abs(want), 1.0))


def test_the_window_grows_with_the_power_and_shrinks_in_float32():
    """The static window (``tweedie.num_terms``): what the docstring states it costs."""
    n64 = [tweedie_.num_terms(p, F64) for p in POWERS]
    n32 = [tweedie_.num_terms(p, F32) for p in POWERS]
    assert max(n64[:3]) <= 120 and max(n64) == n64[-1] <= 220  # p -> 2 (the Poisson limit) needs the most
    assert all(a < b for a, b in zip(n32, n64))


@functools.partial(jax.jit, static_argnums=0)
def _grads(p, outputs, y):
    family = mlnll.Tweedie(power=p)
    closed = family.grad(outputs, y)
    through = jax.grad(lambda o: -jnp.sum(family.log_prob(o, y)))(outputs)
    plain = jax.grad(lambda o: -jnp.sum(tweedie_.textbook_log_prob(p, o, y)))(outputs)
    d_y = jax.grad(lambda t: jnp.sum(family.log_prob(outputs, t)))(y)
    d_y_plain = jax.grad(lambda t: jnp.sum(tweedie_.textbook_log_prob(p, outputs, t)))(y)
    return closed, through, plain, d_y, d_y_plain


@pytest.mark.parametrize("p", [1.05, 1.5, 1.95])
def test_closed_form_matches_autodiff_of_the_textbook_series(p):
    """Where 200 textbook terms hold the whole series (M <= 30): the closed form, ``jax.grad``
    through it and the target derivative against ``jax.grad`` of the textbook series, float64."""
    key = jax.random.PRNGKey(int(100 * p))
    k1, k2, k3 = jax.random.split(key, 3)
    log_mean = jax.random.normal(k1, (24,), F64)
    log_dispersion = 0.5 * jax.random.normal(k2, (24,), F64)
    y = mlnll.Tweedie(power=p).sample(k3, (log_mean, log_dispersion)).at[:4].set(0.0)  # the atom too
    closed, through, plain, d_y, d_y_plain = _grads(p, (log_mean, log_dispersion), y)
    for c, t, w in zip(closed, through, plain):
        np.testing.assert_allclose(f64(c), f64(w), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f64(t), f64(w), rtol=1e-10, atol=1e-12)
    positive = f64(y) > 0
    np.testing.assert_allclose(f64(d_y)[positive], f64(d_y_plain)[positive], rtol=1e-9, atol=1e-11)
    assert np.all(f64(d_y)[~positive] == 0)  # the atom at 0 does not move with y


def test_closed_form_matches_float64_finite_differences_in_both_window_regimes():
    """``check_grads`` (first and second order, reverse mode) of log_prob, whose derivatives
    run the closed form, at M from 0.02 (consecutive window) to 1e8 (strided), y = 0 included; at
    p = 1.95, the widest window (the textbook comparison covers 1.05 and 1.5 at small M)."""
    family = mlnll.Tweedie(power=1.95)
    y = jnp.asarray([0.0, 0.05, 2.0, 300.0, 1e5, 1e9], F64)
    log_mean = jnp.log(jnp.where(y > 0, y, 1.0)) + jnp.asarray([0.3, -0.5, 0.2, 0.1, -0.05, 0.02], F64)
    log_dispersion = jnp.asarray([0.1, -1.0, 0.5, 0.0, 1.0, -0.5], F64)
    jax.test_util.check_grads(lambda a, b: family.log_prob((a, b), y), (log_mean, log_dispersion),
                              order=2, modes=("rev",), eps=1e-5, rtol=1e-6)


def test_fixed_dispersion_equals_the_free_one_at_that_dispersion_and_its_fisher_is_the_mean_block():
    free, fixed = mlnll.Tweedie(power=1.4), mlnll.Tweedie(power=1.4, dispersion=2.5)
    log_mean = jnp.asarray([-1.0, 0.0, 2.0], F64)
    y = jnp.asarray([0.0, 0.4, 9.0], F64)
    log_phi = jnp.full_like(log_mean, math.log(2.5))
    np.testing.assert_allclose(f64(fixed.log_prob(log_mean, y)), f64(free.log_prob((log_mean, log_phi), y)), rtol=1e-14)
    np.testing.assert_allclose(f64(fixed.grad(log_mean, y)), f64(free.grad((log_mean, log_phi), y)[0]), rtol=1e-14)
    np.testing.assert_allclose(f64(fixed.fisher(log_mean)), np.exp(0.6 * f64(log_mean)) / 2.5, rtol=1e-14)
    with pytest.raises(NotImplementedError, match="log_dispersion"):
        free.fisher((log_mean, log_phi))


def test_samples_have_the_compound_poisson_gamma_moments():
    """P(0) = exp(-lambda), E[y] = mu and Var[y] = phi mu^p (so E[score^2] = mu^(2-p)/phi, the
    fixed-dispersion Fisher information), from 2e5 seeded draws, to 5 standard errors."""
    p, log_mu, log_phi = 1.6, 0.4, -0.3
    mu, phi = math.exp(log_mu), math.exp(log_phi)
    family = mlnll.Tweedie(power=p, dispersion=phi)
    draws = f64(family.sample(jax.random.PRNGKey(3), jnp.asarray(log_mu, F64), sample_shape=(200_000,)))
    n = draws.size
    p0 = math.exp(-mu ** (2 - p) / (phi * (2 - p)))
    var = phi * mu**p
    assert abs(np.mean(draws == 0) - p0) <= 5 * math.sqrt(p0 * (1 - p0) / n)
    assert abs(np.mean(draws) - mu) <= 5 * math.sqrt(var / n)
    score = (draws - mu) * mu ** (1 - p) / phi
    fisher = float(family.fisher(jnp.asarray(log_mu, F64)))
    assert abs(np.mean(score**2) - fisher) <= 5 * np.std(score**2) / math.sqrt(n)


@pytest.mark.parametrize("p", [1.2, 1.7])
def test_unit_deviance_matches_sklearn_mean_tweedie_deviance(p):
    """``-2 phi (log p(y | mu) - log p(y | mu = y))`` is the unit deviance, free of phi, for y > 0."""
    from sklearn.metrics import mean_tweedie_deviance

    rng = np.random.default_rng(7)
    y = np.exp(rng.uniform(-8, 12, 40))
    mu = y * np.exp(rng.uniform(-3, 3, 40))
    family = mlnll.Tweedie(power=p, dispersion=1.7)
    log_p = jax.jit(family.log_prob)
    got = -2 * 1.7 * (f64(log_p(jnp.log(jnp.asarray(mu)), jnp.asarray(y))) - f64(log_p(jnp.log(jnp.asarray(y)), jnp.asarray(y))))
    for i in range(0, 40, 8):  # sklearn's is a mean: compared in blocks of one example each
        want = np.asarray([mean_tweedie_deviance(y[k:k + 1], mu[k:k + 1], power=p) for k in range(i, i + 8)])
        np.testing.assert_allclose(got[i:i + 8], want, rtol=1e-9)


def test_sklearn_tweedie_regressor_coefficients_are_the_nll_minimiser_at_a_fixed_dispersion():
    """``TweedieRegressor(power=1.5, link="log", alpha=0)`` minimises the mean unit deviance; the
    NLL with any fixed dispersion has the same minimiser (its score is the deviance's)."""
    from sklearn.linear_model import TweedieRegressor

    p = 1.5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    beta, intercept = np.array([0.5, -0.3, 0.2]), 0.4
    log_mean = jnp.asarray(x @ beta + intercept)
    y = f64(mlnll.Tweedie(power=p, dispersion=1.3).sample(jax.random.PRNGKey(5), log_mean))
    fit = TweedieRegressor(power=p, link="log", alpha=0.0, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(x, y)
    loss = mlnll.nll(mlnll.Tweedie(power=p, dispersion=1.3), reduction="sum")
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    value_and_grad = jax.jit(jax.value_and_grad(lambda w: loss(xj @ w[:3] + w[3], yj)))

    def fun(w):
        v, g = value_and_grad(jnp.asarray(w))
        return float(v), np.asarray(g)

    ours = scipy.optimize.minimize(fun, np.zeros(4), jac=True, method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(ours[:3], fit.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours[3], fit.intercept_, rtol=1e-6, atol=1e-8)


def test_options_and_outputs_are_validated_naming_them():
    for bad in (1.0, 2.0, 0.5, 3, float("nan"), True):
        with pytest.raises(ValueError, match=r"Tweedie\(power=\.\.\.\) must be a number with 1 < power < 2"):
            mlnll.Tweedie(power=bad)
    with pytest.raises(ValueError, match=r"Tweedie\(dispersion=\.\.\.\) must be a finite positive number"):
        mlnll.Tweedie(power=1.5, dispersion=-1.0)
    with pytest.raises(TypeError):
        mlnll.Tweedie()  # the power has no default: it is the model
    with pytest.raises(TypeError, match="takes log_mean alone"):
        mlnll.Tweedie(power=1.5, dispersion=1.0).log_prob((jnp.zeros(2), jnp.zeros(2)), jnp.zeros(2))
    for method in ("entropy",):
        with pytest.raises(NotImplementedError, match="no closed form"):
            getattr(mlnll.Tweedie(power=1.5), method)((jnp.zeros(2), jnp.zeros(2)))

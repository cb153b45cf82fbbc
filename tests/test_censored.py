"""``Censored``, ``IntervalCensored`` and ``Truncated``: what the generic conformance table does not
hold. Real fits against scipy (``CensoredData``, ``truncnorm``), the far-tail windows against
50-digit mpmath where the naive form is inf, the reductions to ``log_cdf`` and ``log_survival``, the
support convention for the new kinds of bad target, and ``checked`` inside ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import mlnll
from conftest import RTOL

F64 = np.dtype("float64")


def _minimize(loss, x0):
    """scipy's BFGS on a float64 jax loss and its ``jax.grad`` (the closed forms), to a gradient
    below 1e-6 (BFGS may stop on "precision loss" once the gradient is at rounding level)."""
    value_and_grad = jax.jit(jax.value_and_grad(loss))

    def fun(x):
        v, g = value_and_grad(jnp.asarray(x))
        return float(v), np.asarray(g, np.float64)

    result = scipy.optimize.minimize(fun, np.asarray(x0, np.float64), jac=True, method="BFGS", options={"gtol": 1e-10})
    assert np.max(np.abs(result.jac)) < 1e-6, result
    return result.x


def _tight(func, x0, args=(), disp=0):
    """scipy's own optimizer for ``fit`` (Nelder-Mead), run to its rounding level."""
    return scipy.optimize.fmin(func, x0, args=args, disp=disp, xtol=1e-12, ftol=1e-14, maxiter=20000, maxfun=40000)


def test_censored_weibull_fit_reproduces_scipy_on_censored_data():
    # Lifetimes of wear-out units (k = 1.6, scale 5), each watched until its own end of study, and a
    # few known only to have failed before a first inspection (left-censored: side="left").
    rng = np.random.default_rng(11)
    lifetimes = scipy.stats.weibull_min(1.6, scale=5.0).rvs(400, random_state=rng)
    ends = rng.uniform(2.0, 9.0, 400)
    observed = lifetimes <= ends
    y = np.where(observed, lifetimes, ends)
    data = scipy.stats.CensoredData(uncensored=y[observed], right=y[~observed])
    k, _, scale = scipy.stats.weibull_min.fit(data, floc=0, optimizer=_tight)
    loss = mlnll.nll(mlnll.Censored(mlnll.Weibull()), reduction="sum")
    targets = (jnp.asarray(y), jnp.asarray(observed))
    log_scale, log_k = _minimize(lambda p: loss((p[0], p[1]), targets), [0.0, 0.0])
    assert 0.2 < np.mean(~observed) < 0.6
    np.testing.assert_allclose([np.exp(log_k), np.exp(log_scale)], [k, scale], rtol=1e-5)
    # the same lifetimes seen at inspection times instead: left-censored (failed before t) or exact
    inspect = rng.uniform(0.5, 3.0, 400)
    early = lifetimes <= inspect
    y_left = np.where(early, inspect, lifetimes)
    left = scipy.stats.CensoredData(uncensored=y_left[~early], left=y_left[early])
    k_left, _, scale_left = scipy.stats.weibull_min.fit(left, floc=0, optimizer=_tight)
    loss_left = mlnll.nll(mlnll.Censored(mlnll.Weibull(), side="left"), reduction="sum")
    targets_left = (jnp.asarray(y_left), jnp.asarray(~early))
    fit_left = _minimize(lambda p: loss_left((p[0], p[1]), targets_left), [0.0, 0.0])
    np.testing.assert_allclose([np.exp(fit_left[1]), np.exp(fit_left[0])], [k_left, scale_left], rtol=1e-5)


def test_censored_log_normal_fit_reproduces_scipy_on_censored_data():
    rng = np.random.default_rng(3)
    lifetimes = scipy.stats.lognorm(0.8, scale=np.exp(1.2)).rvs(400, random_state=rng)
    ends = rng.uniform(1.0, 8.0, 400)  # each unit watched until a random end of study
    observed = lifetimes <= ends
    y = np.where(observed, lifetimes, ends)
    data = scipy.stats.CensoredData(uncensored=y[observed], right=y[~observed])

    s, _, scale = scipy.stats.lognorm.fit(data, floc=0, optimizer=_tight)
    loss = mlnll.nll(mlnll.Censored(mlnll.LogNormal()), reduction="sum")
    targets = (jnp.asarray(y), jnp.asarray(observed))
    loc, log_scale = _minimize(lambda p: loss((p[0], p[1]), targets), [0.0, 0.0])
    assert 0.2 < np.mean(~observed) < 0.6  # the fit is about censoring, not a side case of it
    np.testing.assert_allclose([np.exp(log_scale), np.exp(loc)], [s, scale], rtol=1e-5)
    # dropping the censored rows biases the fit towards short lifetimes (the notebook's point)
    naive = mlnll.mle(mlnll.LogNormal(), jnp.asarray(y[observed]))
    assert float(naive[0]) < loc - 0.1


def test_truncated_normal_matches_truncnorm_and_mpmath_far_in_the_tail():
    y = jnp.asarray([8.0, 8.3, 8.9999])
    family = mlnll.Truncated(mlnll.Normal(), low=8.0, high=9.0)
    got = family.log_prob((0.0, 0.0), y)
    with mp.workdps(60):
        mass = mp.ncdf(-8) - mp.ncdf(-9)
        want = [float(mp.log(mp.npdf(mp.mpf(float(v)))) - mp.log(mass)) for v in np.asarray(y)]
    np.testing.assert_allclose(got, want, rtol=RTOL[F64])
    naive = jax.scipy.stats.norm.logpdf(y) - jnp.log(jax.scipy.stats.norm.cdf(9.0) - jax.scipy.stats.norm.cdf(8.0))
    assert np.all(np.isinf(naive)) or np.max(np.abs(naive / np.asarray(want) - 1)) > 1e-3  # what the naive form gives
    # scipy's truncnorm at ordinary windows, and the derivative of its log-density by finite differences
    loc, log_scale = 0.3, -0.2
    t = mlnll.Truncated(mlnll.Normal(), low=-1.0, high=0.5)
    ys = np.asarray([-0.9, 0.0, 0.45])
    s = np.exp(log_scale)
    ref = scipy.stats.truncnorm((-1.0 - loc) / s, (0.5 - loc) / s, loc=loc, scale=s)
    np.testing.assert_allclose(t.log_prob((loc, log_scale), ys), ref.logpdf(ys), rtol=RTOL[F64])
    grad = jax.grad(lambda o: jnp.sum(t.log_prob(o, ys)))((jnp.float64(loc), jnp.float64(log_scale)))
    h = 1e-6

    def ref_sum(lo, ls):
        si = np.exp(ls)
        return np.sum(scipy.stats.truncnorm((-1.0 - lo) / si, (0.5 - lo) / si, loc=lo, scale=si).logpdf(ys))

    fd = [(ref_sum(loc + h, log_scale) - ref_sum(loc - h, log_scale)) / (2 * h),
          (ref_sum(loc, log_scale + h) - ref_sum(loc, log_scale - h)) / (2 * h)]
    np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-7)
    # outside the window: -inf with NaN derivatives for that example only
    lp = t.log_prob((jnp.zeros(2), jnp.zeros(2)), jnp.asarray([0.0, 0.7]))
    g = t.grad((jnp.zeros(2), jnp.zeros(2)), jnp.asarray([0.0, 0.7]))
    assert np.isfinite(lp[0]) and lp[1] == -np.inf and np.all(np.isfinite([x[0] for x in g])) and np.all(np.isnan([x[1] for x in g]))


def test_interval_censored_reduces_to_the_tails_and_keeps_far_windows():
    family, normal = mlnll.IntervalCensored(mlnll.Normal()), mlnll.Normal()
    outputs = (jnp.asarray([0.5, 0.5]), jnp.asarray([-0.3, -0.3]))
    y = jnp.asarray([1.0, -2.0])
    inf = jnp.full(2, jnp.inf)
    np.testing.assert_allclose(family.log_prob(outputs, (-inf, y)), normal.log_cdf(outputs, y), rtol=1e-15)
    np.testing.assert_allclose(family.log_prob(outputs, (y, inf)), normal.log_survival(outputs, y), rtol=1e-15)
    # 8 to 9 and -9 to -8 standard units, and a window straddling the centre
    lower, upper = jnp.asarray([8.0, -9.0, -0.5]), jnp.asarray([9.0, -8.0, 1.5])
    got = family.log_prob((jnp.zeros(3), jnp.zeros(3)), (lower, upper))
    with mp.workdps(60):
        want = [float(mp.log(mp.ncdf(u) - mp.ncdf(lo))) for lo, u in zip([8, -9, -0.5], [9, -8, 1.5])]
    np.testing.assert_allclose(got, want, rtol=RTOL[F64])
    # an empty or NaN interval is outside the support
    bad = family.log_prob((jnp.zeros(3), jnp.zeros(3)), (jnp.asarray([1.0, 1.0, jnp.nan]), jnp.asarray([0.0, 1.0, 2.0])))
    np.testing.assert_array_equal(bad, -np.inf)


def test_censored_sides_observed_flags_and_the_support():
    exp_family = mlnll.Exponential()
    log_rate = jnp.asarray([0.2, 0.2, 0.2, 0.2, 0.2])
    y = jnp.asarray([1.0, 1.0, 2.0, 2.0, -1.0])
    flags = jnp.asarray([1, 0, 0, 2, 0])  # numbers: 1 observed, 0 censored, anything else off the support
    right = mlnll.Censored(exp_family).log_prob(log_rate, (y, flags))
    left = mlnll.Censored(exp_family, side="left").log_prob(log_rate, (y, flags))
    np.testing.assert_allclose(right[:3], [exp_family.log_prob(0.2, 1.0), exp_family.log_survival(0.2, 1.0),
                                           exp_family.log_survival(0.2, 2.0)], rtol=1e-15)
    np.testing.assert_allclose(left[1:3], [exp_family.log_cdf(0.2, 1.0), exp_family.log_cdf(0.2, 2.0)], rtol=1e-15)
    # observed = 2, and a censored lifetime of -1 (outside the family's support): -inf, NaN gradient
    assert right[3] == right[4] == -np.inf
    g = mlnll.Censored(exp_family).grad(log_rate, (y, flags))
    assert np.all(np.isfinite(g[:3])) and np.all(np.isnan(g[3:]))
    with pytest.raises(ValueError, match="side must be"):
        mlnll.Censored(exp_family, side="both")
    with pytest.raises(TypeError, match="lacks log_cdf"):
        mlnll.Censored(mlnll.Poisson())
    with pytest.raises(TypeError, match="pass a family instance"):
        mlnll.Censored(mlnll.Normal)
    with pytest.raises(TypeError, match=r"expected a tuple \(y, observed\)"):
        mlnll.Censored(exp_family).log_prob(log_rate, y)


def test_checked_names_a_bad_censored_target_inside_jit():
    loss = mlnll.checked(mlnll.nll(mlnll.Censored(mlnll.Exponential())))
    outputs, observed = jnp.zeros(3), jnp.asarray([True, False, True])
    assert np.isfinite(float(jax.jit(loss)(outputs, (jnp.asarray([1.0, 2.0, 3.0]), observed))))
    with pytest.raises((mlnll.CheckError, jax.errors.JaxRuntimeError), match="outside the support at flat index 1: got y = -1.0"):
        jax.block_until_ready(jax.jit(loss)(outputs, (jnp.asarray([1.0, -1.0, 3.0]), observed)))

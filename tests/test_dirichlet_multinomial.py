"""BetaBinomial and DirichletMultinomial: what the conformance table does not already check.

* scipy.stats ``betabinom`` (1e-12) and ``dirichlet_multinomial`` (1e-10) at ordinary inputs.
* mpmath at n = 1e6 and concentrations from 1e-6 to 1e6: the log-pmf and the closed-form score
  (where scipy's ``betaln`` form keeps ~9 digits), in float64, and float32 at n = 1e4.
* The Fisher information at concentrations of 1e-6 and 1e6 against an mpmath sum over the support
  (the check command's oracle, autodiff's Hessian, keeps fewer digits there); BetaBinomial's entropy
  against scipy and its KL against a sum; the samplers' means.
"""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64, jitted

mp.mp.dps = max(mp.mp.dps, 40)
LOG_1E6 = math.log(1e6)


def _mp_dm(n, a, y):
    """``log DM(y; n, a)`` and its score ``a_k [psi(y_k + a_k) - psi(a_k) - psi(n + A) + psi(A)]``."""
    a = [mp.exp(mp.mpf(x)) for x in a]
    total = mp.fsum(a)
    value = mp.loggamma(n + 1) + mp.loggamma(total) - mp.loggamma(n + total)
    value += mp.fsum(mp.loggamma(k + x) - mp.loggamma(x) - mp.loggamma(k + 1) for k, x in zip(y, a))
    shared = mp.digamma(total) - mp.digamma(n + total)
    score = [x * (mp.digamma(k + x) - mp.digamma(x) + shared) for k, x in zip(y, a)]
    # the textbook score's two terms, a_k [psi(y_k + a_k) - psi(a_k)] and a_k [psi(n + A) - psi(A)]:
    # the scale a gradient component is judged on (the closed form avoids their difference)
    terms = [abs(x * (mp.digamma(k + x) - mp.digamma(x))) + abs(x * shared) for k, x in zip(y, a)]
    return value, score, terms


def test_log_prob_matches_scipy_at_ordinary_inputs():
    rng = np.random.default_rng(0)
    la, lb = rng.normal(0, 1.5, 64), rng.normal(0, 1.5, 64)
    y = rng.integers(0, 51, 64).astype(np.float64)
    got = f64(jitted(mlnll.BetaBinomial(total_count=50), "log_prob")((jnp.asarray(la), jnp.asarray(lb)), jnp.asarray(y)))
    want = scipy.stats.betabinom(50, np.exp(la), np.exp(lb)).logpmf(y)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    log_a = rng.normal(0, 1.5, (16, 4))
    counts = rng.multinomial(30, np.full(4, 0.25), 16).astype(np.float64)
    got = f64(jitted(mlnll.DirichletMultinomial(total_count=30), "log_prob")(jnp.asarray(log_a), jnp.asarray(counts)))
    want = scipy.stats.dirichlet_multinomial(np.exp(log_a), 30).logpmf(counts)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def _bb_points(n):
    """Concentrations 1e-6, 1e-2, 1, 1e3, 1e6 each way, counts 0, 1, n/3, n - 1, n."""
    logs = [-LOG_1E6, math.log(1e-2), 0.0, math.log(1e3), LOG_1E6]
    rows = [(a, b, y) for a in logs for b in logs for y in (0, 1, n // 3, n - 1, n)]
    return [np.asarray(c, np.float64) for c in zip(*rows)]


@pytest.mark.parametrize("dtype", [np.dtype("float32"), np.dtype("float64")], ids=str)
def test_beta_binomial_matches_mpmath_at_large_counts_and_extreme_concentrations(dtype):
    n = 10**6 if dtype == np.float64 else 10**4  # float32 holds counts exactly up to 2^24
    family = mlnll.BetaBinomial(total_count=n)
    la, lb, y = _bb_points(n)
    outputs = (jnp.asarray(la, dtype), jnp.asarray(lb, dtype))
    got = f64(jitted(family, "log_prob")(outputs, jnp.asarray(y, dtype)))
    grad = [f64(g) for g in jitted(family, "grad")(outputs, jnp.asarray(y, dtype))]
    with mp.workdps(40):
        refs = [_mp_dm(n, (float(np.asarray(a, dtype)), float(np.asarray(b, dtype))), (int(k), n - int(k)))
                for a, b, k in zip(la, lb, y)]
    want = np.array([float(v) for v, _, _ in refs])
    want_grad = np.array([[float(s) for s in score] for _, score, _ in refs])
    terms = np.array([[float(t) for t in term] for _, _, term in refs])
    # Each value is a few roundings of its terms, the largest about |log p| + log n.
    assert np.all(np.abs(got - want) <= 4 * RTOL[dtype] * (np.abs(want) + math.log(n))), np.max(np.abs(got - want))
    for i in range(2):
        assert np.all(np.abs(-grad[i] - want_grad[:, i]) <= 4 * RTOL[dtype] * (terms[:, i] + 1)), i


def test_dirichlet_multinomial_matches_mpmath_at_large_counts():
    n = 10**6
    family = mlnll.DirichletMultinomial(total_count=n)
    log_a = np.array([[-LOG_1E6, 0.0, LOG_1E6], [LOG_1E6, LOG_1E6, LOG_1E6], [-LOG_1E6, -LOG_1E6, -LOG_1E6],
                      [2.0, -3.0, 5.0], [0.0, 0.0, 0.0]])
    y = np.array([[0, 3, n - 3], [n // 3, n // 3, n - 2 * (n // 3)], [n, 0, 0], [10, 0, n - 10], [1, n - 2, 1]],
                 np.float64)
    got = f64(jitted(family, "log_prob")(jnp.asarray(log_a), jnp.asarray(y)))
    grad = f64(jitted(family, "grad")(jnp.asarray(log_a), jnp.asarray(y)))
    refs = [_mp_dm(n, a, [int(k) for k in row]) for a, row in zip(log_a, y)]
    want = np.array([float(v) for v, _, _ in refs])
    want_grad = np.array([[float(s) for s in score] for _, score, _ in refs])
    terms = np.array([[float(t) for t in term] for _, _, term in refs])
    assert np.all(np.abs(got - want) <= 4 * RTOL[np.dtype("float64")] * (np.abs(want) + math.log(n))), got - want
    assert np.all(np.abs(-grad - want_grad) <= 4 * RTOL[np.dtype("float64")] * (terms + 1)), -grad - want_grad


def _mp_fisher(n, la, lb):
    """``sum_y p(y) s(y) s(y)^T`` of the beta-binomial, in mpmath."""
    total = mp.matrix(2, 2)
    for y in range(n + 1):
        value, score, _ = _mp_dm(n, (la, lb), (y, n - y))
        p = mp.exp(value)
        for i in range(2):
            for j in range(2):
                total[i, j] += p * score[i] * score[j]
    return np.array(total.tolist(), np.float64)


def test_fisher_matches_mpmath_at_extreme_concentrations():
    n = 10
    pairs = [(-LOG_1E6, LOG_1E6), (LOG_1E6, 0.0), (2.0, -20.0), (-LOG_1E6, -LOG_1E6), (LOG_1E6, LOG_1E6)]
    la, lb = (jnp.asarray(c) for c in zip(*pairs))
    got = f64(jitted(mlnll.BetaBinomial(total_count=n), "fisher")((la, lb)))
    # DirichletMultinomial with the two classes: the same matrix (its sum over count vectors)
    as_dm = f64(jitted(mlnll.DirichletMultinomial(total_count=n), "fisher")(jnp.stack([la, lb], -1)))
    for g, d, (a, b) in zip(got, as_dm, pairs):
        want = _mp_fisher(n, a, b)
        root = np.sqrt(np.diag(want))
        assert np.all(np.abs(g - want) <= 1e-12 * np.outer(root, root)), (g, want)
        assert np.all(np.abs(d - want) <= 1e-12 * np.outer(root, root)), (d, want)


def test_beta_binomial_entropy_and_kl_match_mpmath_sums():
    n = 30
    family = mlnll.BetaBinomial(total_count=n)
    p = (jnp.array([-1.0, 0.0, 2.0, LOG_1E6]), jnp.array([0.5, -2.0, 1.0, 3.0]))
    q = (p[0] + 0.2, p[1] - 0.1)
    entropy, kl = [], []
    for i in range(4):
        lp = [_mp_dm(n, (float(p[0][i]), float(p[1][i])), (y, n - y))[0] for y in range(n + 1)]
        lq = [_mp_dm(n, (float(q[0][i]), float(q[1][i])), (y, n - y))[0] for y in range(n + 1)]
        entropy.append(float(-mp.fsum(mp.exp(a) * a for a in lp)))
        kl.append(float(mp.fsum(mp.exp(a) * (a - b) for a, b in zip(lp, lq))))
    np.testing.assert_allclose(f64(jitted(family, "entropy")(p)), entropy, rtol=1e-12)
    np.testing.assert_allclose(f64(jitted(family, "kl")(p, q)), kl, rtol=1e-10)


def test_beta_binomial_is_the_two_class_dirichlet_multinomial():
    n = 17
    la, lb = jnp.array([-3.0, 0.5, 4.0]), jnp.array([1.0, -0.5, 2.0])
    y = jnp.array([0.0, 9.0, 17.0])
    bb = f64(jitted(mlnll.BetaBinomial(total_count=n), "log_prob")((la, lb), y))
    dm = f64(jitted(mlnll.DirichletMultinomial(total_count=n), "log_prob")(jnp.stack([la, lb], -1), jnp.stack([y, n - y], -1)))
    np.testing.assert_allclose(bb, dm, rtol=1e-15)


def test_dirichlet_multinomial_without_closed_forms_says_so():
    family = mlnll.DirichletMultinomial(total_count=3)
    for method in (family.entropy, lambda o: family.kl(o, o)):
        with pytest.raises(NotImplementedError, match="no closed form"):
            method(jnp.zeros((2, 3)))


@pytest.mark.parametrize("name", ["BetaBinomial", "DirichletMultinomial"])
def test_sample_mean_matches_mean(name):
    """Draws in the support, their mean within 5 standard errors of ``mean`` (tiny concentrations
    included: the gamma draws are taken in logs)."""
    n = 12
    if name == "BetaBinomial":
        family, outputs = mlnll.BetaBinomial(total_count=n), (jnp.array([-LOG_1E6, 0.0, 2.0]), jnp.array([-LOG_1E6, 1.0, -1.0]))
    else:
        family, outputs = mlnll.DirichletMultinomial(total_count=n), jnp.array([[-LOG_1E6, -LOG_1E6, 0.0], [0.0, 1.0, 2.0]])
    draws = f64(jitted(family, "sample")(jax.random.PRNGKey(5), outputs, sample_shape=(4000,)))
    assert np.all((draws >= 0) & (draws <= n) & (draws == np.floor(draws)))
    if name == "DirichletMultinomial":
        assert np.all(draws.sum(-1) == n)
    mean = f64(jitted(family, "mean")(outputs))
    # the variance: the multinomial's n p (1 - p) times (n + A) / (1 + A)
    if name == "BetaBinomial":
        a = np.exp(f64(jnp.stack(outputs, -1)))
    else:
        a = np.exp(f64(outputs))
    total = a.sum(-1, keepdims=True)
    share = a / total
    var = n * share * (1 - share) * (n + total) / (1 + total)
    if name == "BetaBinomial":
        var = var[..., 0]
    se = np.sqrt(var / draws.shape[0])
    assert np.all(np.abs(draws.mean(axis=0) - mean) <= 5 * se), (draws.mean(axis=0), mean, se)

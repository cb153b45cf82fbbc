"""Binomial, Geometric, Poisson, NegativeBinomial and Multinomial against scipy.stats, mpmath and
autodiff of the plain textbook formulas.

Oracles: scipy.stats (log-pmfs at moderate parameters, entropy, moments, fit), mpmath at 60 digits
(log-pmfs and gradients at extreme parameters, where scipy's lgamma form itself loses digits: its
relative error is ~1e-10 at counts of 1e6), ``jax.grad``/``jax.hessian`` of the plain formulas
written here, exact enumeration (Fisher information) and seeded Monte Carlo (KL).

The generic promises (a frozen hashable family, log_prob, entropy and mean against scipy, the
closed form and jax.grad against autodiff of the plain formula, hessian and jacfwd, extreme
inputs, bfloat16/float16 outputs, samples in the support) are checked for every row of the check
table by tests/test_conformance.py; this file keeps what is specific to these families, and the
comparisons it makes more strictly than that suite does.
"""

import dataclasses
import functools
import math
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64, jitted, maybe_jit
from helpers import expected_hessian
from mlnll._src.families.multinomial import compositions

N = 16
C = 4
BINOMIAL_N = 20
MULTINOMIAL_N = 6
mpmath.mp.dps = max(mpmath.mp.dps, 60)  # never lowered by another module (one process imports them all)


def _as_tuple(outputs):
    return outputs if isinstance(outputs, tuple) else (outputs,)


# -- plain textbook formulas (float64), differentiated by jax.grad / jax.hessian as the oracle ----


def plain_binomial(n):
    def f(z, y):
        p = 1 / (1 + jnp.exp(-z))
        lgamma = jax.scipy.special.gammaln
        return lgamma(n + 1.0) - lgamma(y + 1) - lgamma(n - y + 1) + y * jnp.log(p) + (n - y) * jnp.log(1 - p)

    return f


def plain_geometric(z, y):
    p = 1 / (1 + jnp.exp(-z))
    return y * jnp.log(1 - p) + jnp.log(p)


def plain_poisson(log_rate, y):
    return y * log_rate - jnp.exp(log_rate) - jax.scipy.special.gammaln(y + 1)


def plain_negative_binomial(outputs, y):
    log_mean, log_conc = outputs
    mu, r = jnp.exp(log_mean), jnp.exp(log_conc)
    lgamma = jax.scipy.special.gammaln
    return lgamma(y + r) - lgamma(r) - lgamma(y + 1) + r * jnp.log(r / (r + mu)) + y * jnp.log(mu / (r + mu))


def plain_multinomial(n):
    def f(z, y):
        lgamma = jax.scipy.special.gammaln
        log_p = z - jnp.log(jnp.sum(jnp.exp(z)))
        return lgamma(n + 1.0) - jnp.sum(lgamma(y + 1)) + jnp.sum(y * log_p)

    return f


# -- mpmath references (60 digits) ---------------------------------------------------------------


def _mp_log_sigmoid(z):
    return -mpmath.log1p(mpmath.exp(-z))


def mp_binomial(n):
    def f(outputs, y):
        (z,) = outputs
        return (mpmath.loggamma(n + 1) - mpmath.loggamma(y + 1) - mpmath.loggamma(n - y + 1)
                + y * _mp_log_sigmoid(z) + (n - y) * _mp_log_sigmoid(-z))

    return f


def mp_geometric(outputs, y):
    (z,) = outputs
    return y * _mp_log_sigmoid(-z) + _mp_log_sigmoid(z)


def mp_poisson(outputs, y):
    (log_rate,) = outputs
    return y * log_rate - mpmath.exp(log_rate) - mpmath.loggamma(y + 1)


# At r = e^80 the lgamma/digamma differences cancel ~70 digits before the ~1e-36 result: the
# negative binomial references run at 250 digits.
NB_DPS = 250


def mp_negative_binomial(outputs, y):
    with mpmath.workdps(NB_DPS):
        a, b = (mpmath.mpf(v) for v in outputs)
        mu, r = mpmath.exp(a), mpmath.exp(b)
        log1p_mu_r = mpmath.log1p(mu / r)
        coefficient = mpmath.loggamma(y + r) - mpmath.loggamma(r) - mpmath.loggamma(y + 1)
        value = coefficient - r * log1p_mu_r + y * (a - b - log1p_mu_r)
    return +value


def mp_negative_binomial_grad(outputs, y):
    """The textbook d(-log p)/d(log_mean, log_concentration)."""
    with mpmath.workdps(NB_DPS):
        a, b = (mpmath.mpf(v) for v in outputs)
        mu, r = mpmath.exp(a), mpmath.exp(b)
        d_a = (mu - y) * r / (r + mu)
        d_b = -r * (mpmath.digamma(y + r) - mpmath.digamma(r) - mpmath.log1p(mu / r) + (mu - y) / (r + mu))
    return [+d_a, +d_b]


def mp_multinomial(n):
    def f(outputs, y):
        (z,) = outputs
        top = max(z)
        lse = top + mpmath.log(mpmath.fsum(mpmath.exp(zc - top) for zc in z))
        return mpmath.loggamma(n + 1) + mpmath.fsum(yc * (zc - lse) - mpmath.loggamma(yc + 1) for yc, zc in zip(y, z))

    return f


# -- the table of families ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    family: object
    inputs: Callable  # (key, dtype) -> (outputs, targets), batch N
    plain: Callable  # (outputs_f64, y) -> log p, one example (jnp)
    scipy_logpmf: Callable  # (outputs_f64 tuple of np arrays, y) -> np array


def _binomial_inputs(key, dtype):
    kz, ky = jax.random.split(key)
    return (2 * jax.random.normal(kz, (N,))).astype(dtype), jax.random.randint(ky, (N,), 0, BINOMIAL_N + 1)


def _geometric_inputs(key, dtype):
    kz, ky = jax.random.split(key)
    return (2 * jax.random.normal(kz, (N,))).astype(dtype), jax.random.randint(ky, (N,), 0, 30).astype(dtype)


def _poisson_inputs(key, dtype):
    kz, ky = jax.random.split(key)
    return (1.5 * jax.random.normal(kz, (N,))).astype(dtype), jax.random.randint(ky, (N,), 0, 50)


def _negative_binomial_inputs(key, dtype):
    ka, kb, ky = jax.random.split(key, 3)
    a = jax.random.normal(ka, (N,)).astype(dtype)
    b = (1.2 * jax.random.normal(kb, (N,))).astype(dtype)
    return (a, b), jax.random.randint(ky, (N,), 0, 40).astype(dtype)


def _multinomial_inputs(key, dtype):
    kz, ky = jax.random.split(key)
    z = (2 * jax.random.normal(kz, (N, C))).astype(dtype)
    table = jnp.asarray(compositions(MULTINOMIAL_N, C))
    return z, table[jax.random.randint(ky, (N,), 0, table.shape[0])].astype(dtype)


def _nbinom_scipy(outputs, y):
    mu, r = np.exp(outputs[0]), np.exp(outputs[1])
    return scipy.stats.nbinom.logpmf(y, r, r / (r + mu))


SPECS = {
    "binomial": Spec(
        "binomial", mlnll.Binomial(total_count=BINOMIAL_N), _binomial_inputs, plain_binomial(BINOMIAL_N),
        lambda o, y: scipy.stats.binom.logpmf(y, BINOMIAL_N, scipy.special.expit(o[0]))),
    "geometric": Spec(
        "geometric", mlnll.Geometric(), _geometric_inputs, plain_geometric,
        lambda o, y: scipy.stats.geom.logpmf(y + 1, scipy.special.expit(o[0]))),
    "poisson": Spec(
        "poisson", mlnll.Poisson(), _poisson_inputs, plain_poisson,
        lambda o, y: scipy.stats.poisson.logpmf(y, np.exp(o[0]))),
    "negative_binomial": Spec(
        "negative_binomial", mlnll.NegativeBinomial(), _negative_binomial_inputs, plain_negative_binomial,
        _nbinom_scipy),
    "multinomial": Spec(
        "multinomial", mlnll.Multinomial(total_count=MULTINOMIAL_N), _multinomial_inputs,
        plain_multinomial(MULTINOMIAL_N),
        lambda o, y: scipy.stats.multinomial.logpmf(y, MULTINOMIAL_N, scipy.special.softmax(o[0], axis=-1))),
}
NAMES = list(SPECS)


def _spec_inputs(name, dtype, seed):
    spec = SPECS[name]
    outputs, y = spec.inputs(jax.random.PRNGKey(seed), dtype)
    return spec, outputs, y


# -- log_prob equals scipy (moderate parameters) and mpmath (extreme ones) -------------------------


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_matches_scipy(name, dtype, use_jit):
    spec, outputs, y = _spec_inputs(name, dtype, 0)
    got = maybe_jit(spec.family.log_prob, use_jit)(outputs, y)
    assert got.dtype == dtype and got.shape == (N,)
    want = spec.scipy_logpmf(tuple(f64(o) for o in _as_tuple(outputs)), f64(y))
    np.testing.assert_allclose(f64(got), want, rtol=RTOL[dtype], atol=0)


# Extreme points, grouped by family (one jitted call per family and dtype): counts of 1e6 near and
# away from the mode (scipy's relative error is 1e-11 .. 1e-10 at the first ones), log-rates and
# logits of +-80, concentrations of e^-80 and e^80.
EXTREMES = {
    "Poisson": (mlnll.Poisson(), [
        ((math.log(1e6),), 1e6), ((math.log(1.003e6),), 1e6), ((math.log(1e8),), 1e8 + 3e4), ((0.0,), 1e6),
        ((80.0,), 0.0), ((80.0,), 1e6), ((-80.0,), 0.0), ((-80.0,), 3.0)]),
    "Binomial(n=1e6)": (mlnll.Binomial(total_count=10**6), [
        ((0.0,), 500_700.0), ((11.5,), 999_990.0), ((-0.8,), 300_000.0), ((80.0,), 1e6), ((20.0,), 1e6),
        ((-80.0,), 3.0)]),
    "Binomial(n=10)": (mlnll.Binomial(total_count=10), [
        ((30.0,), 10.0), ((-30.0,), 0.0), ((1e4,), 7.0), ((-80.0,), 5.0), ((0.0,), 3.0)]),
    "Geometric": (mlnll.Geometric(), [
        ((80.0,), 0.0), ((-80.0,), 1e6), ((-80.0,), 0.0), ((30.0,), 1e6), ((-13.8,), 1e6)]),
    "NegativeBinomial": (mlnll.NegativeBinomial(), [
        ((math.log(1.1e6), 2.0), 1e6), ((math.log(0.997e6), 80.0), 1e6), ((math.log(1.01e6), -80.0), 1e6),
        ((1.0, 80.0), 5.0), ((1.0, -80.0), 5.0), ((80.0, -80.0), 0.0), ((-80.0, 80.0), 0.0), ((80.0, 80.0), 0.0),
        ((-80.0, -80.0), 1.0), ((80.0, 80.0), 1e6), ((4.6, 30.0), 100.0), ((2.4, 1.1), 12.0)]),
    "Multinomial(n=1e6)": (mlnll.Multinomial(total_count=10**6), [
        (((0.0, 0.5, -1.0),), (400_000.0, 400_000.0, 200_000.0)), (((20.0, 0.0, 0.0),), (1e6, 0.0, 0.0)),
        (((0.0, 0.0, 0.0),), (333_000.0, 333_000.0, 334_000.0))]),
    "Multinomial(n=10)": (mlnll.Multinomial(total_count=10), [
        (((1e4, -1e4, 0.0),), (4.0, 0.0, 6.0)), (((80.0, -80.0, 0.0),), (9.0, 0.0, 1.0)),
        (((20.0, 0.0, 0.0),), (10.0, 0.0, 0.0))]),
}


def _mp_log_pmf(family, outputs, y):
    if isinstance(family, mlnll.Binomial):
        return mp_binomial(family.total_count)(outputs, y)
    if isinstance(family, mlnll.Multinomial):
        return mp_multinomial(family.total_count)(outputs, y)
    scalar = {mlnll.Geometric: mp_geometric, mlnll.Poisson: mp_poisson, mlnll.NegativeBinomial: mp_negative_binomial}
    return scalar[type(family)](outputs, y)


def _to_mp(outputs, y):
    def mp(o):
        return tuple(mpmath.mpf(float(v)) for v in o) if isinstance(o, tuple) else mpmath.mpf(float(o))

    mp_out = tuple(mp(o) for o in outputs)
    mp_y = tuple(mpmath.mpf(float(v)) for v in y) if isinstance(y, tuple) else mpmath.mpf(float(y))
    return mp_out, mp_y


def _batched(points, dtype):
    """The points' outputs stacked into the family's arrays (dtype), their targets, and each
    point's outputs after rounding to dtype, as Python floats (tuples for a class axis)."""
    num_outputs = len(points[0][0])
    stacked = tuple(jnp.asarray([p[0][i] for p in points], dtype) for i in range(num_outputs))
    outputs = stacked if num_outputs > 1 else stacked[0]
    y = jnp.asarray([p[1] for p in points], dtype)
    def as_floats(o, k):
        return tuple(float(t) for t in f64(o[k])) if o.ndim > 1 else float(o[k])

    rounded = [tuple(as_floats(o, k) for o in stacked) for k in range(len(points))]
    return outputs, y, rounded


def _condition(family, outputs, y):
    """sum_i |d log p / d theta_i| max(|theta_i|, 1) / |log p| at the point (the textbook
    gradient ``_mp_grad`` at 60+ digits): the error from perturbing each output by a relative eps,
    or by an absolute eps where it is near 0 (as the rounded log-probabilities computed from it
    are)."""
    mp_outputs, mp_y = _to_mp(outputs, y)
    value = _mp_log_pmf(family, mp_outputs, mp_y)
    flat = [v for o in outputs for v in (o if isinstance(o, tuple) else (o,))]
    grads = _mp_grad(family, mp_outputs, mp_y)
    if isinstance(family, mlnll.Multinomial):  # d log p / dz_c = y_c - n p_c, for each class
        grads = [-g for g in grads]
    return float(sum(abs(g) * max(abs(v), 1.0) for g, v in zip(grads, flat)) / abs(value))


@pytest.mark.parametrize("config", list(EXTREMES))
def test_log_prob_at_extremes_matches_mpmath(config, dtype):
    """float64: relative error <= 1e-12 against 60 digits. float32: the outputs round to float32
    first and the oracle is evaluated at the rounded values; the tolerance is RTOL scaled by the
    condition number of log p in its outputs (``_condition``), the accuracy any float32 algorithm
    can reach (2000 at y = 1e6, rate = 1.003e6)."""
    family, points = EXTREMES[config]
    outputs, y, rounded = _batched(points, dtype)
    got = jitted(family, "log_prob")(outputs, y)
    assert got.dtype == dtype
    for k, (o, (_, target)) in enumerate(zip(rounded, points)):
        want = _mp_log_pmf(family, *_to_mp(o, target))
        rel = abs(float((mpmath.mpf(float(got[k])) - want) / want))
        tol = RTOL[dtype] if dtype == np.float64 else RTOL[dtype] * (1 + _condition(family, o, target))
        assert rel <= tol, (o, target, float(got[k]), float(want), rel, tol)


# -- closed-form gradients equal jax.grad of the plain formula ------------------------------------


@functools.lru_cache(maxsize=None)
def _jitted_plain_grad(name):
    """The float64 oracle of one spec, one compiled program (op by op, jax.grad of a vmap compiles
    every primitive on its own)."""
    spec = SPECS[name]
    return jax.jit(jax.vmap(jax.grad(lambda o, t: -spec.plain(o, t))))


def _plain_grad(spec, outputs, y):
    f64 = jax.tree.map(lambda a: jnp.asarray(a).astype(jnp.float64), outputs)
    return _jitted_plain_grad(spec.name)(f64, jnp.asarray(y).astype(jnp.float64))


# The negative binomial's row is tests/test_conformance.py's (its closed form and jax.grad against
# autodiff of the plain formula at 8 RTOL relative, eager and jit, float32 and float64: no Fisher
# information widens its scale). The other families keep this test: the conformance suite judges
# their components against max(|grad|, sqrt(F_ii)), looser than 8 RTOL |grad| + 1e-3 RTOL here.
@pytest.mark.parametrize("name", [n for n in NAMES if n != "negative_binomial"])
def test_grad_matches_autodiff_of_plain_formula(name, dtype, use_jit):
    spec, outputs, y = _spec_inputs(name, dtype, 1)
    got = maybe_jit(spec.family.grad, use_jit)(outputs, y)
    want = _plain_grad(spec, outputs, y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.dtype == dtype and g.shape == w.shape
        np.testing.assert_allclose(f64(g), f64(w), rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 1e-3)


GRAD_EXTREMES = {
    # Binomial keeps relative accuracy near p = 1 like Bernoulli: z = 20, y = n gives -n sigmoid(-20).
    "Binomial(n=10)": (mlnll.Binomial(total_count=10), [
        ((20.0,), 10.0), ((-20.0,), 0.0), ((80.0,), 10.0), ((-80.0,), 3.0)]),
    "Binomial(n=1e6)": (mlnll.Binomial(total_count=10**6), [((11.5,), 999_990.0), ((0.0,), 500_700.0)]),
    "Poisson": (mlnll.Poisson(), [((80.0,), 0.0), ((-80.0,), 3.0), ((math.log(1.003e6),), 1e6), ((0.0,), 1e6)]),
    "Geometric": (mlnll.Geometric(), [((80.0,), 0.0), ((-80.0,), 1e6), ((30.0,), 2.0), ((-13.8,), 0.0)]),
    "Multinomial(n=10)": (mlnll.Multinomial(total_count=10), [
        (((20.0, 0.0, 0.0),), (10.0, 0.0, 0.0)), (((80.0, -80.0, 0.0),), (9.0, 0.0, 1.0)),
        (((0.5, -1.0, 2.0),), (1.0, 3.0, 6.0))]),
    "NegativeBinomial": (mlnll.NegativeBinomial(), [
        ((math.log(1.1e6), 2.0), 1e6), ((math.log(0.99e6), 80.0), 1e6), ((math.log(1.01e6), -80.0), 1e6),
        ((1.0, 80.0), 5.0), ((1.0, -80.0), 5.0), ((80.0, -80.0), 0.0), ((-80.0, 80.0), 0.0), ((80.0, 80.0), 0.0),
        ((-80.0, -80.0), 1.0), ((0.0, 80.0), 5.0), ((0.0, -80.0), 3.0), ((14.0, 80.0), 1e6),
        ((-1.0091076, 0.34234956), 2.0),
        ((4.6, 30.0), 100.0), ((2.0, 12.0), 5.0), ((1.0, 9.99), 3.0), ((1.0, 10.01), 3.0), ((3.0, 2.0), 40.0)]),
}


def _mp_grad(family, outputs, y):
    """The textbook closed forms (n sigmoid(z) - y, rate - y, y p - (1 - p), n p - y, and the
    negative binomial's digamma form)."""
    if isinstance(family, mlnll.NegativeBinomial):
        return mp_negative_binomial_grad(outputs, y)
    (z,) = outputs
    if isinstance(family, mlnll.Binomial):
        return [family.total_count / (1 + mpmath.exp(-z)) - y]
    if isinstance(family, mlnll.Poisson):
        return [mpmath.exp(z) - y]
    if isinstance(family, mlnll.Geometric):
        return [y / (1 + mpmath.exp(-z)) - 1 / (1 + mpmath.exp(z))]
    top = max(z)
    total = mpmath.fsum(mpmath.exp(zc - top) for zc in z)
    return [family.total_count * mpmath.exp(zc - top) / total - yc for zc, yc in zip(z, y)]


@pytest.mark.parametrize("config", list(GRAD_EXTREMES))
def test_grad_at_extremes_matches_mpmath(config, dtype):
    """Each component against the textbook formula (mpmath), at the dtype-rounded outputs; a
    reference below the dtype's smallest normal number counts as 0."""
    family, points = GRAD_EXTREMES[config]
    outputs, y, rounded = _batched(points, dtype)
    got = jitted(family, "grad")(outputs, y)
    got = np.stack([f64(g).reshape(len(points), -1) for g in jax.tree.leaves(got)], axis=1).reshape(len(points), -1)
    tiny = np.finfo(dtype).tiny
    for k, (o, (_, target)) in enumerate(zip(rounded, points)):
        want = np.array([float(w) for w in _mp_grad(family, *_to_mp(o, target))])
        want = np.where(np.abs(want) < tiny, 0.0, want)
        np.testing.assert_allclose(got[k], want, rtol=RTOL[dtype] * 4, atol=tiny, err_msg=str((o, target)))


def test_negative_binomial_log_prob_differentiates_to_the_closed_form(dtype):
    """log_prob is a custom_jvp whose tangent is grad (so jax.grad gives exactly the closed form)."""
    fam = mlnll.NegativeBinomial()
    (a, b), y = SPECS["negative_binomial"].inputs(jax.random.PRNGKey(2), dtype)
    auto = jax.jit(jax.grad(lambda o: -jnp.sum(fam.log_prob(o, y))))((a, b))
    closed = jitted(fam, "grad")((a, b), y)
    for g, c in zip(auto, closed):
        np.testing.assert_array_equal(f64(g), f64(c))


def test_negative_binomial_jacfwd_matches_the_closed_form():
    """Forward mode through the custom_jvp (jax.hessian of it runs in the Fisher derivation test)."""
    fam = mlnll.NegativeBinomial()
    (a, b), y = SPECS["negative_binomial"].inputs(jax.random.PRNGKey(2), np.dtype("float64"))
    f = lambda o: fam.log_prob((o[0], o[1]), y[:4])  # noqa: E731
    fwd = jax.jit(jax.jacfwd(f))((a[:4], b[:4]))
    closed = jitted(fam, "grad")((a[:4], b[:4]), y[:4])
    for j, c in zip(fwd, closed):
        np.testing.assert_allclose(-np.diagonal(f64(j)), f64(c), rtol=1e-15)


# -- Fisher information equals the expected Hessian (exact enumeration) ---------------------------


FISHER_OUTPUTS = {
    "binomial": lambda dtype: (2 * jax.random.normal(jax.random.PRNGKey(3), (8,))).astype(dtype),
    "geometric": lambda dtype: jax.random.uniform(jax.random.PRNGKey(4), (8,), minval=-4.0, maxval=8.0).astype(dtype),
    "poisson": lambda dtype: jax.random.uniform(jax.random.PRNGKey(5), (8,), minval=-30.0, maxval=9.2).astype(dtype),
    "multinomial": lambda dtype: (2 * jax.random.normal(jax.random.PRNGKey(6), (8, C))).astype(dtype),
}


def _assert_information_close(got, want, rtol):
    """|F_ij - E_ij| <= rtol sqrt(E_ii E_jj): the natural scale of an information matrix."""
    got, want = f64(got), f64(want)
    if got.ndim == 1:
        np.testing.assert_allclose(got, want.reshape(got.shape), rtol=rtol, atol=0)
        return
    want = want.reshape(got.shape)
    root = np.sqrt(np.abs(np.diagonal(want, axis1=-2, axis2=-1)))
    scale = root[..., :, None] * root[..., None, :]
    assert np.all(np.abs(got - want) <= rtol * scale), np.max(np.abs(got - want) / scale)


@pytest.mark.parametrize("name", list(FISHER_OUTPUTS))
def test_fisher_equals_expected_hessian_by_enumeration(name, dtype):
    fam = SPECS[name].family
    outputs = FISHER_OUTPUTS[name](dtype)
    got = jitted(fam, "fisher")(outputs)
    assert got.dtype == dtype
    want = expected_hessian(fam, outputs.astype(jnp.float64))
    _assert_information_close(got, want, RTOL[dtype] * 4)


@pytest.mark.parametrize("name", ["binomial", "poisson", "multinomial", "geometric"])
def test_fisher_equals_hessian_of_plain_formula(name, dtype):
    """Binomial, Poisson and Multinomial: the Hessian of -log p does not depend on y. Geometric:
    it is (y + 1) p (1 - p), linear in y, so its expectation is the Hessian at y = E[y] = e^(-z)."""
    spec = SPECS[name]
    outputs = FISHER_OUTPUTS[name](dtype)
    z = outputs.astype(jnp.float64)
    if name == "geometric":
        y = jnp.exp(-z)
    elif name == "multinomial":
        y = jnp.broadcast_to(jnp.array([MULTINOMIAL_N, 0, 0, 0], jnp.float64), z.shape)
    else:
        y = jnp.zeros_like(z)
    hess = jax.jit(jax.vmap(jax.hessian(lambda a, b: -spec.plain(a, b))))(z, y)
    _assert_information_close(jitted(spec.family, "fisher")(outputs), hess, RTOL[dtype] * 4)


def test_negative_binomial_fisher_is_not_implemented_and_its_derivation_holds():
    """fisher raises (the log_concentration entry has no closed form); the docstring's derivation
    [[mu r/(r+mu), 0], [0, r^2 sum_k P(y > k)/(r + k)^2 - r mu/(r + mu)]] (the series summed with
    scipy's survival function until it is below 1e-30) matches the enumerated expected Hessian."""
    fam = mlnll.NegativeBinomial()
    a = jnp.array([0.3, 2.0, -1.0, 4.0, 3.0])
    b = jnp.array([0.5, -1.0, 2.0, 3.0, 1.7])
    with pytest.raises(NotImplementedError, match="no closed form"):
        fam.fisher((a, b))
    want = f64(expected_hessian(fam, (a, b)))
    for i in range(a.shape[0]):
        mu, r = math.exp(float(a[i])), math.exp(float(b[i]))
        dist = scipy.stats.nbinom(r, r / (r + mu))
        k = np.arange(0, 200_000)
        sf = dist.sf(k)
        last = int(np.argmax(sf < 1e-30)) or k.size
        series = math.fsum(sf[:last] / (r + k[:last]) ** 2)
        derived = np.array([[mu * r / (r + mu), 0.0], [0.0, r * r * series - r * mu / (r + mu)]])
        _assert_information_close(derived, want[i], 1e-12)


@pytest.mark.parametrize(
    "family,outputs",
    [
        (mlnll.Poisson(), np.log([0.01, 0.5, 10.0, 700.0, 3000.0, 1e4])),
        (mlnll.Geometric(), np.array([-4.0, -2.0, 0.0, 5.0, 12.0])),
        (mlnll.NegativeBinomial(), (np.log([100.0, 20.0, 1.0, 50.0, 1e-3]), np.log([5.0, 1.0, 0.1, 1e3, 1e-3]))),
    ],
    ids=["poisson", "geometric", "negative_binomial"],
)
def test_truncated_supports_hold_all_but_1e_16_of_the_mass(family, outputs):
    """The documented ranges of expectation_nodes: the mass outside the window, from scipy's cdf
    and survival function, is below 1e-16."""
    outputs = jax.tree.map(jnp.asarray, outputs)
    nodes, weights = jitted(family, "expectation_nodes")(outputs)
    lo, hi = f64(nodes[0]), f64(nodes[-1])
    np.testing.assert_array_equal(f64(nodes[1:] - nodes[:-1]), 1.0)
    if isinstance(family, mlnll.Poisson):
        dist = scipy.stats.poisson(np.exp(f64(outputs)))
    elif isinstance(family, mlnll.Geometric):
        dist = scipy.stats.nbinom(1, scipy.special.expit(f64(outputs)))
    else:
        mu, r = np.exp(f64(outputs[0])), np.exp(f64(outputs[1]))
        dist = scipy.stats.nbinom(r, r / (r + mu))
    outside = np.where(lo > 0, dist.cdf(lo - 1), 0.0) + dist.sf(hi)
    if isinstance(family, mlnll.Geometric):  # scipy's sf rounds 1 - p; the tail is (1 - p)^(hi + 1)
        outside = np.exp((hi + 1) * scipy.special.log_expit(-f64(outputs)))
    assert np.all(outside < 1e-16), outside
    # the weights are the probabilities of those counts: they sum to 1 - outside (2048 roundings)
    np.testing.assert_allclose(f64(jnp.sum(weights, axis=0)), 1 - outside, rtol=0, atol=2048 * 2.2e-16)


# -- entropy, KL ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family,outputs,scipy_entropy",
    [
        (mlnll.Binomial(total_count=20), np.array([-3.0, 0.0, 0.7, 5.0]),
         lambda z: scipy.stats.binom.entropy(20, scipy.special.expit(z))),
        (mlnll.Binomial(total_count=3000), np.array([-6.0, 0.2, 2.0]),  # > 1024 counts: chunked sum
         lambda z: scipy.stats.binom.entropy(3000, scipy.special.expit(z))),
        (mlnll.Geometric(), np.array([-6.0, -1.0, 0.0, 2.0, 9.0]),
         lambda z: scipy.stats.geom.entropy(scipy.special.expit(z))),
        (mlnll.Multinomial(total_count=6), np.array([[0.0, 1.0, -2.0, 0.5], [3.0, -1.0, 0.0, 0.0]]),
         lambda z: np.array([scipy.stats.multinomial.entropy(6, p) for p in scipy.special.softmax(z, axis=-1)])),
        (mlnll.Multinomial(total_count=1500), np.array([[0.0, 1.0, -2.0], [4.0, -1.0, 0.0]]),
         lambda z: np.array([scipy.stats.multinomial.entropy(1500, p) for p in scipy.special.softmax(z, axis=-1)])),
    ],
    ids=["binomial", "binomial-chunked", "geometric", "multinomial", "multinomial-chunked"],
)
def test_entropy_matches_scipy(family, outputs, scipy_entropy, dtype):
    got = jitted(family, "entropy")(jnp.asarray(outputs, dtype))
    assert got.dtype == dtype
    want = scipy_entropy(f64(jnp.asarray(outputs, dtype)))
    np.testing.assert_allclose(f64(got), want, rtol=RTOL[dtype] * 4, atol=0)


def test_geometric_entropy_at_extreme_logits_matches_mpmath(dtype):
    z = [-80.0, -30.0, 30.0, 80.0]
    got = f64(jitted(mlnll.Geometric(), "entropy")(jnp.asarray(z, dtype)))
    for g, zi in zip(got, z):
        zi = mpmath.mpf(zi)
        want = -_mp_log_sigmoid(zi) - mpmath.exp(-zi) * _mp_log_sigmoid(-zi)
        assert abs(float((g - want) / want)) <= RTOL[dtype] * 4


@pytest.mark.parametrize("family", [mlnll.Poisson(), mlnll.NegativeBinomial()], ids=["poisson", "negative_binomial"])
def test_entropy_without_closed_form_raises(family):
    outputs = jnp.zeros(3) if isinstance(family, mlnll.Poisson) else (jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(NotImplementedError, match="no closed form"):
        family.entropy(outputs)


# Sampling tests share one sample shape and these outputs (float64), so each sampler compiles once.
S = 8000
SAMPLED = {
    "poisson": (mlnll.Poisson(), np.array([-2.0, 0.5, 13.8])),
    "binomial": (mlnll.Binomial(total_count=30), np.array([-2.0, 0.5, 3.0])),
    "geometric": (mlnll.Geometric(), np.array([-2.0, 0.5, 3.0])),
    "negative_binomial": (mlnll.NegativeBinomial(), (np.array([-1.0, 1.5, 3.0]), np.array([-1.5, 0.5, 2.0]))),
    "multinomial": (mlnll.Multinomial(total_count=12), np.array([[0.3, 2.0, -1.0], [0.0, 0.0, 0.0]])),
}
KL_Q = {
    "poisson": np.array([-1.5, 0.2, 13.801]),
    "binomial": np.array([-1.5, 1.5, 2.5]),
    "geometric": np.array([-2.5, 1.5, 2.0]),
    "multinomial": np.array([[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]]),
}


def _draws(name, key, dtype=np.dtype("float64")):
    family, outputs = SAMPLED[name]
    outputs = jax.tree.map(lambda x: jnp.asarray(x, dtype), outputs)
    return family, outputs, jitted(family, "sample")(jax.random.PRNGKey(key), outputs, sample_shape=(S,))


@pytest.mark.parametrize("name", list(KL_Q))
def test_kl_matches_monte_carlo(name):
    """KL(p || q) against the mean of log p(y) - log q(y) over 8000 seeded draws from p, within
    5 standard errors of that mean."""
    family, zp, y = _draws(name, 7)
    zq = jnp.asarray(KL_Q[name])
    kl = f64(jitted(family, "kl")(zp, zq))
    log_prob = jitted(family, "log_prob")
    log_ratio = f64(log_prob(jnp.broadcast_to(zp, y.shape), y) - log_prob(jnp.broadcast_to(zq, y.shape), y))
    mc, se = log_ratio.mean(axis=0), log_ratio.std(axis=0) / math.sqrt(log_ratio.shape[0])
    assert np.all(np.abs(kl - mc) <= 5 * se), (kl, mc, se)


@pytest.mark.parametrize("name", list(KL_Q))
def test_kl_matches_exact_sum(name):
    """KL as sum_y p(y) (log p(y) - log q(y)) over scipy's pmf (Geometric truncated where the
    remaining mass is below 1e-30); for the Poisson, whose rate-1e6 column defeats scipy's log-pmf
    (1e-9), the sum's closed form rate_p log(rate_p/rate_q) - rate_p + rate_q at 60 digits."""
    family, zp = SAMPLED[name]
    zq = KL_Q[name]
    kl = f64(jitted(family, "kl")(jnp.asarray(zp), jnp.asarray(zq)))
    if name == "multinomial":
        n = family.total_count
        ys = compositions(n, zp.shape[-1]).astype(np.float64)
        pp, pq = scipy.special.softmax(zp, axis=-1), scipy.special.softmax(zq, axis=-1)
        logp = [scipy.stats.multinomial.logpmf(ys, n, pp[i]) for i in range(2)]
        want = [math.fsum(np.exp(logp[i]) * (logp[i] - scipy.stats.multinomial.logpmf(ys, n, pq[i]))) for i in range(2)]
    else:
        if name == "poisson":  # at rate 1e6 scipy's log-pmf differences lose 1e-9: 60 digits
            pairs = zip(map(mpmath.mpf, zp), map(mpmath.mpf, zq))
            want = [mpmath.exp(a) * (a - b) - mpmath.exp(a) + mpmath.exp(b) for a, b in pairs]
            np.testing.assert_allclose(kl, [float(w) for w in want], rtol=1e-12)
            return
        if name == "binomial":
            n = family.total_count
            p, q = scipy.stats.binom(n, scipy.special.expit(zp)), scipy.stats.binom(n, scipy.special.expit(zq))
            ys = np.arange(0, n + 1.0)[:, None]
        else:
            p, q = scipy.stats.nbinom(1, scipy.special.expit(zp)), scipy.stats.nbinom(1, scipy.special.expit(zq))
            ys = np.arange(0, 2000.0)[:, None]
        assert np.all(p.sf(ys[-1]) < 1e-30)
        logp = p.logpmf(ys)
        terms = np.exp(logp) * (logp - q.logpmf(ys))
        want = [math.fsum(terms[:, i]) for i in range(terms.shape[1])]
    np.testing.assert_allclose(kl, want, rtol=1e-12)


@pytest.mark.parametrize("gap", [1e-7, -3e-5, 0.4, -2.0, 30.0])
@pytest.mark.parametrize("zp", [-80.0, -30.0, -2.0, 0.0, 1.5, 30.0, 80.0])
def test_binomial_and_geometric_kl_are_accurate_for_close_and_extreme_logits(zp, gap, dtype):
    """Against the textbook KL at 60 digits: nearly equal logits keep their tiny KL (no first-order
    cancellation), and p -> 0 or 1 neither overflows nor loses digits."""
    zq = zp + gap
    zp_r, zq_r = float(np.asarray(zp, dtype)), float(np.asarray(zq, dtype))
    mzp, mzq = mpmath.mpf(zp_r), mpmath.mpf(zq_r)
    lp, lq, l1p, l1q = _mp_log_sigmoid(mzp), _mp_log_sigmoid(mzq), _mp_log_sigmoid(-mzp), _mp_log_sigmoid(-mzq)
    bernoulli = mpmath.exp(lp) * (lp - lq) + mpmath.exp(l1p) * (l1p - l1q)
    geometric = (lp - lq) + mpmath.exp(-mzp) * (l1p - l1q)
    got_b = float(jitted(mlnll.Binomial(total_count=1), "kl")(jnp.asarray(zp_r, dtype), jnp.asarray(zq_r, dtype)))
    got_g = float(jitted(mlnll.Geometric(), "kl")(jnp.asarray(zp_r, dtype), jnp.asarray(zq_r, dtype)))
    tiny = np.finfo(dtype).tiny
    for got, want in [(got_b, bernoulli), (got_g, geometric)]:
        want = float(want)
        if abs(want) < tiny:
            assert abs(got) < 4 * tiny
        else:
            assert abs(got - want) <= RTOL[dtype] * 8 * abs(want), (got, want)


def test_poisson_kl_of_nearly_equal_rates_is_not_lost():
    got = float(mlnll.Poisson().kl(jnp.asarray(3.0), jnp.asarray(3.0 + 1e-7)))
    lp, lq = mpmath.mpf(3.0), mpmath.mpf(3.0 + 1e-7)
    want = mpmath.exp(lp) * (lp - lq) - mpmath.exp(lp) + mpmath.exp(lq)
    assert abs(got / float(want) - 1) <= 1e-12


def test_negative_binomial_kl_raises():
    with pytest.raises(NotImplementedError, match="no closed form"):
        mlnll.NegativeBinomial().kl((jnp.zeros(2), jnp.zeros(2)), (jnp.ones(2), jnp.ones(2)))


# -- mean, sample, params, constant_terms ---------------------------------------------------------

MOMENTS = {
    "poisson": lambda o: (np.exp(o), np.exp(o)),
    "binomial": lambda o: (30 * scipy.special.expit(o), 30 * scipy.special.expit(o) * scipy.special.expit(-o)),
    "geometric": lambda o: (np.exp(-o), np.exp(-o) * (1 + np.exp(-o))),
    "negative_binomial": lambda o: (np.exp(o[0]), np.exp(o[0]) + np.exp(2 * o[0] - o[1])),
    "multinomial": lambda o: (12 * scipy.special.softmax(o, -1),
                              12 * scipy.special.softmax(o, -1) * (1 - scipy.special.softmax(o, -1))),
}


@pytest.mark.parametrize("name", list(MOMENTS))
def test_sample_moments_match_mean_and_variance(name, dtype):
    """8000 seeded draws: mean() equals the known mean; the sample mean is within 5 standard
    errors of it, and the sample variance within 5 standard errors (from the sample fourth
    moment) of the known variance. (The draws are float64; in float32 only their dtype and shape
    are checked, since the samplers draw identically.)"""
    family, outputs, y = _draws(name, 8)
    mean, var = MOMENTS[name](jax.tree.map(f64, outputs))
    cast = jax.tree.map(lambda x: x.astype(dtype), outputs)
    np.testing.assert_allclose(f64(jitted(family, "mean")(cast)), mean, rtol=RTOL[dtype] * 4)
    batch = jax.tree.leaves(outputs)[0].shape
    drawn = jax.eval_shape(functools.partial(family.sample, sample_shape=(S,)), jax.random.PRNGKey(8), cast)
    assert drawn.shape == (S,) + batch and drawn.dtype == dtype
    if dtype == np.float32:
        return
    y = f64(y)
    assert np.all(y == np.floor(y)) and np.all(y >= 0)
    m = y.mean(axis=0)
    centered = y - m
    v = (centered**2).mean(axis=0)
    m4 = (centered**4).mean(axis=0)
    assert np.all(np.abs(m - mean) <= 5 * np.sqrt(var / S)), (m, mean)
    assert np.all(np.abs(v - var) <= 5 * np.sqrt((m4 - v**2) / S)), (v, var)


def test_params():
    z = jnp.array([-1.0, 0.5])
    p = scipy.special.expit(f64(z))
    b = mlnll.Binomial(total_count=7).params(z)
    np.testing.assert_allclose(b["probs"], p, rtol=1e-15)
    np.testing.assert_array_equal(b["total_count"], [7.0, 7.0])
    np.testing.assert_array_equal(b["logits"], z)
    np.testing.assert_allclose(mlnll.Geometric().params(z)["probs"], p, rtol=1e-15)
    np.testing.assert_allclose(mlnll.Poisson().params(z)["rate"], np.exp(f64(z)), rtol=1e-15)
    nb = mlnll.NegativeBinomial().params((z, 2 * z))
    np.testing.assert_allclose(nb["mean"], np.exp(f64(z)), rtol=1e-15)
    np.testing.assert_allclose(nb["concentration"], np.exp(2 * f64(z)), rtol=1e-15)
    zm = jnp.array([[0.0, 1.0, -1.0]])
    m = mlnll.Multinomial(total_count=5).params(zm)
    np.testing.assert_allclose(m["probs"], scipy.special.softmax(f64(zm), -1), rtol=1e-15)
    np.testing.assert_array_equal(m["total_count"], [5.0])


@pytest.mark.parametrize(
    "family,y,want",
    [
        (mlnll.Poisson(), [0, 1, 7, 10**6], lambda y: -scipy.special.gammaln(np.asarray(y, float) + 1)),
        (mlnll.NegativeBinomial(), [0, 1, 7, 10**6], lambda y: -scipy.special.gammaln(np.asarray(y, float) + 1)),
        (mlnll.Geometric(), [0, 1, 7, 10**6], lambda y: np.zeros(4)),
        (mlnll.Binomial(total_count=20), [0, 1, 7, 20], lambda y: np.log([float(math.comb(20, k)) for k in y])),
        (mlnll.Binomial(total_count=10**6), [1, 3, 500_000, 999_999],
         lambda y: np.array([float(mpmath.log(mpmath.binomial(10**6, k))) for k in y])),
        (mlnll.Multinomial(total_count=6), [[6, 0, 0], [1, 2, 3], [0, 6, 0], [2, 2, 2]],
         lambda y: np.array([math.log(math.factorial(6) / math.prod(math.factorial(k) for k in row)) for row in y])),
        (mlnll.Multinomial(total_count=10**6), [[10**6, 0, 0], [1, 2, 999_997], [400_000, 300_000, 300_000]],
         lambda y: np.array([float(mpmath.loggamma(10**6 + 1) - mpmath.fsum(mpmath.loggamma(k + 1) for k in row))
                             for row in y])),
    ],
    ids=["poisson", "negative_binomial", "geometric", "binomial", "binomial-1e6", "multinomial", "multinomial-1e6"],
)
def test_constant_terms(family, y, want):
    """The target-only part of log_prob: -log(y!) or the (multi)nomial coefficient, accurate at
    n = 1e6 for float64 targets; integer targets give float32 (the dtype rule for targets alone)."""
    got = jitted(family, "constant_terms")(jnp.asarray(y, jnp.float64))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(f64(got), want(y), rtol=1e-13, atol=1e-300)
    assert jax.eval_shape(family.constant_terms, jnp.asarray(y, jnp.int32)).dtype == jnp.float32


def test_poisson_log_prob_minus_constant_terms_is_y_log_rate_minus_rate():
    fam = mlnll.Poisson()
    lr, y = jnp.array([0.3, -1.0, 2.0]), jnp.array([4.0, 0.0, 9.0])
    np.testing.assert_allclose(fam.log_prob(lr, y) - fam.constant_terms(y), y * lr - jnp.exp(lr), rtol=1e-13)


# -- maximum likelihood ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["poisson", "geometric", "binomial", "multinomial"])
def test_mle_zeroes_the_gradient_of_the_summed_nll(name):
    family, truth, y = _draws(name, 9)
    est = mlnll.mle(family, y, axis=0)
    assert est.shape == truth.shape
    g = jax.jit(jax.grad(lambda o: -jnp.sum(family.log_prob(jnp.broadcast_to(o, y.shape[:1] + o.shape), y))))(est)
    per_example = jitted(family, "grad")(jnp.broadcast_to(est, y.shape[:1] + est.shape), y)
    scale = np.sum(np.abs(f64(per_example)), axis=0)
    assert np.all(np.abs(f64(g)) <= 1e-12 * scale), (g, scale)


def _scipy_fit(dist, data, bounds):
    def optimizer(fun, bounds, *, integrality):
        return scipy.optimize.differential_evolution(
            fun, bounds, integrality=integrality, tol=1e-14, atol=0, polish=True, rng=np.random.default_rng(0))

    return scipy.stats.fit(dist, data, bounds=bounds, optimizer=optimizer)


@pytest.mark.parametrize("name", ["poisson", "geometric", "binomial"])
def test_mle_matches_scipy_fit(name):
    """scipy.stats.fit (a numerical optimiser, run to tol=1e-14) agrees to 1e-7, the accuracy to
    which minimising a smooth objective to ~1e-16 locates its argmin (sqrt(1e-16)); our summed NLL
    is no larger than at scipy's estimate (up to the rounding of the sum)."""
    family, _, y = _draws(name, 10)
    y = y[:, 1]  # the column with outputs 0.5
    est = family.mle(y)
    data = f64(y).astype(int)
    if name == "poisson":
        theirs = _scipy_fit(scipy.stats.poisson, data, {"mu": (0, 50)}).params.mu
        ours, theirs_out = math.exp(float(est)), math.log(theirs)
    elif name == "geometric":
        theirs = _scipy_fit(scipy.stats.geom, data + 1, {"p": (0, 1)}).params.p
        ours, theirs_out = float(scipy.special.expit(float(est))), float(scipy.special.logit(theirs))
    else:
        n = family.total_count
        theirs = _scipy_fit(scipy.stats.binom, data, {"n": (n, n), "p": (0, 1)}).params.p
        ours, theirs_out = float(scipy.special.expit(float(est))), float(scipy.special.logit(theirs))
    assert abs(ours / theirs - 1) <= 1e-7
    nll = lambda o: -math.fsum(f64(jitted(family, "log_prob")(jnp.full(y.shape, o), y)))  # noqa: E731
    assert nll(float(est)) <= nll(theirs_out) * (1 + 1e-13)  # 1e-13: rounding of the log-pmfs


def test_negative_binomial_has_no_closed_form_mle():
    assert not hasattr(mlnll.NegativeBinomial(), "mle")
    with pytest.raises(NotImplementedError):
        mlnll.mle(mlnll.NegativeBinomial(), jnp.array([1, 2, 3]))


def test_multinomial_mle_rejects_the_class_axis():
    with pytest.raises(ValueError, match="sample axis"):
        mlnll.Multinomial(total_count=2).mle(jnp.array([[1, 1], [2, 0]]), axis=-1)


# -- bad inputs -------------------------------------------------------------------------------------

BAD_TARGETS = [
    (mlnll.Poisson(), jnp.zeros(5), [-1.0, 2.5, np.nan, np.inf, -np.inf]),
    (mlnll.NegativeBinomial(), (jnp.zeros(5), jnp.zeros(5)), [-1.0, 2.5, np.nan, np.inf, -0.5]),
    (mlnll.Geometric(), jnp.zeros(5), [-1.0, 2.5, np.nan, np.inf, -3.0]),
    (mlnll.Binomial(total_count=4), jnp.zeros(5), [-1.0, 2.5, np.nan, 5.0, 1e6]),
    (mlnll.Multinomial(total_count=4), jnp.zeros((5, 3)),
     [[1.0, 1.0, 1.0], [-1.0, 5.0, 0.0], [1.5, 2.5, 0.0], [np.nan, 4.0, 0.0], [5.0, 0.0, 0.0]]),
]


@pytest.mark.parametrize(
    "family,outputs,bad", BAD_TARGETS, ids=["poisson", "negative_binomial", "geometric", "binomial", "multinomial"])
def test_invalid_targets_give_minus_inf_and_nan_gradients(family, outputs, bad):
    """log_prob is exactly -inf (never NaN); jax.grad of it is NaN there (the convention of
    ``closed_form.minus_inf_off_support``), as the closed-form grad is; the loss with constants
    dropped is inf (not NaN)."""
    lp = f64(jitted(family, "log_prob")(outputs, jnp.asarray(bad)))
    assert np.all(lp == -np.inf), lp
    g = jax.jit(jax.grad(lambda o: jnp.sum(family.log_prob(o, jnp.asarray(bad)))))(outputs)
    assert all(np.all(np.isnan(f64(leaf))) for leaf in jax.tree.leaves(g))
    loss = jax.jit(mlnll.nll(family, reduction="none", drop_constants=True))(outputs, jnp.asarray(bad))
    assert np.all(f64(loss) == np.inf), loss
    closed = jax.tree.leaves(jitted(family, "grad")(outputs, jnp.asarray(bad)))
    assert all(np.all(np.isnan(f64(leaf))) for leaf in closed)


@pytest.mark.parametrize("name", NAMES)
def test_integer_and_float_targets_agree(name):
    spec, outputs, y = _spec_inputs(name, np.dtype("float64"), 11)
    y_int = jnp.asarray(y).astype(jnp.int32)
    log_prob = jitted(spec.family, "log_prob")
    np.testing.assert_array_equal(log_prob(outputs, y_int), log_prob(outputs, y_int.astype(jnp.float64)))


@pytest.mark.parametrize("make", [mlnll.Binomial, mlnll.Multinomial])
@pytest.mark.parametrize("bad", [-1, 2.5, float("nan"), float("inf"), True, "3", None, -2.0])
def test_total_count_must_be_a_whole_number(make, bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        make(total_count=bad)


@pytest.mark.parametrize("make", [mlnll.Binomial, mlnll.Multinomial])
def test_total_count_accepts_whole_floats_and_is_static(make):
    fam = make(total_count=10.0)
    assert fam.total_count == 10 and isinstance(fam.total_count, int)
    assert hash(fam) == hash(make(total_count=10))
    with pytest.raises(TypeError):
        make(10)  # keyword-only


def test_zero_total_count_is_a_point_mass_at_zero():
    z = jnp.array([0.3, -2.0])
    np.testing.assert_array_equal(mlnll.Binomial(total_count=0).log_prob(z, jnp.array([0, 1])), [0.0, -np.inf])
    zm = jnp.zeros((2, 3))
    got = mlnll.Multinomial(total_count=0).log_prob(zm, jnp.array([[0, 0, 0], [1, 0, 0]]))
    np.testing.assert_array_equal(got, [0.0, -np.inf])
    np.testing.assert_array_equal(mlnll.Binomial(total_count=0).entropy(z), [0.0, 0.0])


def test_wrong_dtypes_and_shapes_are_named():
    with pytest.raises(TypeError, match="floating"):
        mlnll.Poisson().log_prob(jnp.array([1, 2]), jnp.array([1, 2]))
    with pytest.raises(ValueError, match="shape"):
        mlnll.Binomial(total_count=3).log_prob(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="C = 3"):
        mlnll.Multinomial(total_count=3).log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="class axis"):
        mlnll.Multinomial(total_count=3).log_prob(jnp.zeros(()), jnp.zeros(3))
    with pytest.raises(TypeError, match="log_mean, log_concentration"):
        mlnll.NegativeBinomial().log_prob(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(TypeError, match="real"):
        mlnll.Geometric().log_prob(jnp.zeros(2), jnp.array([1 + 1j, 2.0]))

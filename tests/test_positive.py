"""Exponential, Gamma, Beta, Dirichlet and VonMises: what is specific to each, against mpmath,
scipy.stats, autodiff and Monte Carlo.

The generic promises (scipy parity of log_prob, entropy and mean at the check table's inputs, the
closed-form gradient and jax.grad against autodiff of the textbook formula, Hessians, extreme
inputs, 16-bit outputs, frozen families, samples in the support) are tested for these families by
tests/test_conformance.py from their ``check_cases``. Here: mpmath at extreme parameters (where
scipy itself is less accurate than 1e-12: concentrations of 1e6 cancel 9 digits in the textbook
formulas), the regions the check table leaves out (Beta concentrations below 1, Dirichlet float32
concentrations up to e^2.5), gradients on a stricter scale than the table's, the Fisher information against the Hessian of the plain
log-partition functions and the quadrature rules, KL, sampling, MLE, bad inputs and the special
functions.

Tolerances come from ``conftest.RTOL`` (float64 1e-12, float32 2e-6), times a small factor, and
are applied relative to the size of what is compared: ``max(|value|, 1)`` for log-densities and
entropies (a log-density crossing 0 is a difference of O(1) terms), and for gradients the sum of
the magnitudes of the textbook terms' gradients, ``T`` below: a score that crosses zero is a
difference of those terms, which no evaluation, autodiff included, resolves better than eps T.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.special
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64, jitted, maybe_jit
from mlnll._src import numerics
from mlnll._src.numerics import gamma_bessel as numerics_gb
from helpers import expected_hessian
from mlnll._src.families.beta import Beta
from mlnll._src.families.dirichlet import Dirichlet
from mlnll._src.families.exponential import Exponential
from mlnll._src.families.gamma import Gamma
from mlnll._src.families.von_mises import VonMises
from mlnll._src.mle import mle

N = 16
K = 4
F64 = jnp.float64
LOG_2PI = math.log(2 * math.pi)
mpmath.mp.dps = max(mpmath.mp.dps, 50)  # never lowered by another module (one process imports them all)
gammaln = jax.scipy.special.gammaln


# -- plain textbook formulas: lists of additive terms of log p (float64), the autodiff oracle of the
# -- regions the check table leaves out --------------------------------------------------------------


def terms_gamma(o, y):
    log_a, log_b = o
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    return [a * log_b, -gammaln(a), (a - 1) * jnp.log(y), -b * y]


def terms_beta(o, y):
    log_a, log_b = o
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    return [(a - 1) * jnp.log(y), (b - 1) * jnp.log(1 - y), -gammaln(a), -gammaln(b), gammaln(a + b)]


def terms_dirichlet(log_a, y):
    a = jnp.exp(log_a)
    return [(a[k] - 1) * jnp.log(y[k]) for k in range(a.shape[-1])] + [-gammaln(a[k]) for k in range(a.shape[-1])] + [gammaln(jnp.sum(a))]




def terms_von_mises(o, y):
    loc, log_k = o
    k = jnp.exp(log_k)
    # log I0(k) = log(i0e(k)) + k.
    return [k * jnp.cos(y - loc), -LOG_2PI * jnp.ones_like(k), -jnp.log(jax.scipy.special.i0e(k)), -k]


TERMS = {"Gamma": terms_gamma, "Beta": terms_beta, "Dirichlet": terms_dirichlet, "VonMises": terms_von_mises}


# -- plain log-partition functions A(eta) and natural parameters eta(outputs): F = J^T A'' J -------


def natural_exponential(eta):
    return -jnp.exp(eta)[None]  # eta = -rate, T = y


def partition_exponential(eta):
    return -jnp.log(-eta[0])


def natural_gamma(o):
    return jnp.stack([jnp.exp(o[0]) - 1, -jnp.exp(o[1])])  # T = (log y, y)


def partition_gamma(eta):
    return gammaln(eta[0] + 1) - (eta[0] + 1) * jnp.log(-eta[1])


def natural_beta(o):
    return jnp.stack([jnp.exp(o[0]) - 1, jnp.exp(o[1]) - 1])  # T = (log y, log(1 - y))


def partition_beta(eta):
    return gammaln(eta[0] + 1) + gammaln(eta[1] + 1) - gammaln(eta[0] + eta[1] + 2)


def natural_dirichlet(log_a):
    return jnp.exp(log_a) - 1  # T = log y


def partition_dirichlet(eta):
    return jnp.sum(gammaln(eta + 1)) - gammaln(jnp.sum(eta + 1))


def natural_von_mises(o):
    k = jnp.exp(o[1])
    return jnp.stack([k * jnp.cos(o[0]), k * jnp.sin(o[0])])  # T = (cos y, sin y)


def partition_von_mises(eta):
    r = jnp.sqrt(jnp.sum(eta * eta))
    return LOG_2PI + jnp.log(jax.scipy.special.i0e(r)) + r


# -- the table --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    """A family with moderate random inputs and its exponential-family form.

    ``outputs(rng)`` returns float64 numpy outputs for N examples; ``targets(rng, outputs)``
    float64 numpy targets drawn with scipy; ``natural``/``partition`` the natural parameters and
    the log-partition function (the Fisher information's oracle).
    """

    id: str
    family: object
    outputs: Callable
    targets: Callable
    natural: Callable
    partition: Callable


def _pair(rng, lo, hi):
    return rng.uniform(lo, hi, N), rng.uniform(lo, hi, N)


SPECS = [
    Spec("Exponential", Exponential(),
         lambda rng: rng.normal(0.0, 2.0, N),
         lambda rng, eta: scipy.stats.expon.rvs(scale=np.exp(-eta), random_state=rng),
         natural_exponential, partition_exponential),
    Spec("Gamma", Gamma(),
         lambda rng: (rng.uniform(-2.0, 4.0, N), rng.normal(0.0, 2.0, N)),
         lambda rng, o: scipy.stats.gamma.rvs(np.exp(o[0]), scale=np.exp(-o[1]), random_state=rng),
         natural_gamma, partition_gamma),
    Spec("Beta", Beta(),
         lambda rng: _pair(rng, -1.5, 3.0),
         lambda rng, o: scipy.stats.beta.rvs(np.exp(o[0]), np.exp(o[1]), random_state=rng),
         natural_beta, partition_beta),
    Spec("Dirichlet", Dirichlet(),
         lambda rng: rng.uniform(-1.0, 2.5, (N, K)),
         lambda rng, la: np.stack([scipy.stats.dirichlet.rvs(np.exp(r), random_state=rng)[0] for r in la]),
         natural_dirichlet, partition_dirichlet),
    Spec("VonMises", VonMises(),
         # k <= e^3.5 = 33: the log-partition oracle's autodiff Hessian of log i0e cancels ~k^2 ulp
         # (1e-11 at k = 150); larger k meet the quadrature and mpmath below.
         lambda rng: (rng.normal(0.0, 1.0, N), rng.uniform(-3.0, 3.5, N)),
         lambda rng, o: scipy.stats.vonmises.rvs(np.exp(o[1]), loc=o[0], random_state=rng),
         natural_von_mises, partition_von_mises),
]
BY_ID = {s.id: s for s in SPECS}
WITH_NODES = [s for s in SPECS if hasattr(s.family, "expectation_nodes")]


def ids(specs):
    return [s.id for s in specs]


def _inputs(spec: Spec, seed: int, dtype):
    """``(outputs, targets)`` in ``dtype`` (drawn in float64, then rounded), and the float64 copies
    of the rounded values, which the oracles see."""
    rng = np.random.default_rng(seed)
    o = spec.outputs(rng)
    y = spec.targets(rng, o)
    cast = lambda x: jnp.asarray(np.asarray(x), F64).astype(dtype)  # noqa: E731
    o_d = jax.tree.map(cast, o) if isinstance(o, tuple) else cast(o)
    y_d = cast(y)
    if spec.id == "Dirichlet":  # renormalise in the dtype so that the rounded row is a simplex
        y_d = y_d / jnp.sum(y_d, axis=-1, keepdims=True)
    if spec.id == "Beta":
        y_d = jnp.clip(y_d, jnp.finfo(dtype).tiny, 1 - jnp.finfo(dtype).epsneg)
    if spec.id in ("Gamma", "Exponential"):
        y_d = jnp.maximum(y_d, jnp.finfo(dtype).tiny)
    o64 = tuple(f64(x) for x in o_d) if isinstance(o_d, tuple) else f64(o_d)
    return o_d, y_d, o64, f64(y_d)


def _assert_close_scaled(got, want, scale, rtol, what=""):
    """|got - want| <= rtol * scale elementwise (scale > 0), with a readable failure message."""
    got, want, scale = f64(got), f64(want), f64(scale)
    err = np.abs(got - want) / scale
    assert np.all(np.isfinite(got)), f"{what}: non-finite values {got}"
    assert err.max() <= rtol, f"{what}: worst scaled error {err.max():.2e} > {rtol:.1e} at {np.argmax(err)}"


@functools.cache
def _plain_grad_oracle(spec_id: str):
    """Jitted: jax.grad of the plain -log p per example, and T = sum over terms of |grad of each term|."""
    terms = TERMS[spec_id]

    def per_example(o, y):
        return jax.grad(lambda oo: -sum(terms(oo, y)))(o)

    def scale(o, y):
        jac = jax.jacrev(lambda oo: jnp.stack([jnp.sum(t) for t in terms(oo, y)]))(o)
        return jax.tree.map(lambda j: jnp.sum(jnp.abs(j), axis=0), jac)

    return jax.jit(lambda o, y: (jax.vmap(per_example)(o, y), jax.vmap(scale)(o, y)))


def _as_f64(o64):
    return tuple(jnp.asarray(x, F64) for x in o64) if isinstance(o64, tuple) else jnp.asarray(o64, F64)


def _plain_grad_and_scale(spec: Spec, o64, y64):
    return _plain_grad_oracle(spec.id)(_as_f64(o64), jnp.asarray(y64, F64))


# -- the regions the check table leaves out: scipy and autodiff of the textbook formula --------------


def _scipy_dirichlet_logpdf(la, y):
    """scipy.stats.dirichlet.logpdf, or for rows that sum to 1 only in float32 (scipy demands 1e-9)
    the same formula from scipy.special at the given y."""
    a = np.exp(la)
    formula = np.sum(scipy.special.xlogy(a - 1, y), -1) - np.sum(scipy.special.gammaln(a), -1) + scipy.special.gammaln(a.sum(-1))
    exact = [abs(yy.sum() - 1) <= 1e-9 for yy in y]
    return np.array([scipy.stats.dirichlet.logpdf(yy, aa) if ok else f for yy, aa, ok, f in zip(y, a, exact, formula)])


@dataclasses.dataclass(frozen=True)
class Beyond:
    """A family's inputs outside its check-table row (``Spec`` of the same id), with scipy's
    log-density and entropy (the textbook terms are ``TERMS``): Beta's check row keeps b >= 1 (its Fisher
    rule's domain), where b < 1 puts a singular density at y = 1; Dirichlet's float32 row keeps
    log-concentrations within 0.7 N(0, 1), these reach 2.5."""

    id: str
    dtypes: tuple
    logpdf: Callable
    entropy: Callable


BEYOND = [
    Beyond("Beta", ("float32", "float64"),
           lambda o, y: scipy.stats.beta.logpdf(y, np.exp(o[0]), np.exp(o[1])),
           lambda o: scipy.stats.beta.entropy(np.exp(o[0]), np.exp(o[1]))),
    Beyond("Dirichlet", ("float32",),
           _scipy_dirichlet_logpdf,
           lambda la: np.array([scipy.stats.dirichlet.entropy(np.exp(r)) for r in la])),
]
BEYOND_BY_ID = {b.id: b for b in BEYOND}
BEYOND_CASES = [pytest.param(b.id, np.dtype(d), id=f"{b.id}-{d}") for b in BEYOND for d in b.dtypes]
# The gradient test also keeps Gamma and VonMises at every dtype: its scale |w| + T is up to 12x
# tighter than the check table's max(|w|, sqrt(F_ii)) where a score crosses 0 with small terms
# (VonMises' -k sin(y - loc) near y = loc, Gamma's z - a at small a).
GRAD_CASES = BEYOND_CASES + [pytest.param(s, np.dtype(d), id=f"{s}-{d}")
                             for s in ("Gamma", "VonMises") for d in ("float32", "float64")]


# -- log_prob ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec_id, dtype", BEYOND_CASES)
def test_log_prob_matches_scipy_beyond_the_check_table(spec_id, dtype, use_jit):
    spec, beyond = BY_ID[spec_id], BEYOND_BY_ID[spec_id]
    o, y, o64, y64 = _inputs(spec, 0, dtype)
    got = maybe_jit(spec.family.log_prob, use_jit)(o, y)
    assert got.dtype == dtype and got.shape == (N,)
    want = beyond.logpdf(o64, y64)
    _assert_close_scaled(got, want, np.maximum(np.abs(want), 1.0), 4 * RTOL[dtype], spec.id)


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("spec_id, dtype", GRAD_CASES)
def test_grad_matches_autodiff_of_plain_formula_on_the_scale_of_its_terms(spec_id, dtype, use_jit):
    spec = BY_ID[spec_id]
    o, y, o64, y64 = _inputs(spec, 1, dtype)
    got = maybe_jit(spec.family.grad, use_jit)(o, y)
    want, scale = _plain_grad_and_scale(spec, o64, y64)
    for g, w, s in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(scale)):
        assert g.dtype == dtype and g.shape == w.shape
        _assert_close_scaled(g, w, np.abs(f64(w)) + f64(s), 8 * RTOL[dtype], spec.id)


@pytest.mark.parametrize("spec_id, dtype", BEYOND_CASES)
def test_entropy_matches_scipy_beyond_the_check_table(spec_id, dtype):
    spec, beyond = BY_ID[spec_id], BEYOND_BY_ID[spec_id]
    o, _, o64, _ = _inputs(spec, 5, dtype)
    got = jitted(spec.family, "entropy")(o)
    assert got.dtype == dtype
    want = beyond.entropy(o64)
    _assert_close_scaled(got, want, np.maximum(np.abs(want), 1.0), 8 * RTOL[dtype], spec.id)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_entropy_mean_fisher_and_kl_are_returned_in_the_outputs_dtype(spec, dtype):
    o, _, _, _ = _inputs(spec, 5, dtype)
    fam = spec.family
    for method in ("entropy", "mean", "fisher"):
        assert jitted(fam, method)(o).dtype == dtype, method
    assert jitted(fam, "kl")(o, o).dtype == dtype
    assert all(v.dtype == dtype for v in fam.params(o).values())


def _mp_gamma(la, lb, y):
    a, b, y = mpmath.exp(la), mpmath.exp(lb), mpmath.mpf(y)
    return a * lb - mpmath.loggamma(a) + (a - 1) * mpmath.log(y) - b * y


def _mp_beta(la, lb, y):
    a, b, y = mpmath.exp(la), mpmath.exp(lb), mpmath.mpf(y)
    return (a - 1) * mpmath.log(y) + (b - 1) * mpmath.log(1 - y) - mpmath.log(mpmath.beta(a, b))


def _mp_von_mises(loc, lk, y):
    k = mpmath.exp(lk)
    return k * mpmath.cos(mpmath.mpf(y) - loc) - mpmath.log(2 * mpmath.pi * mpmath.besseli(0, k))


def _mp_dirichlet(la, y):
    a = [mpmath.exp(x) for x in la]
    y = [mpmath.mpf(v) for v in y]
    return sum((ak - 1) * mpmath.log(yk) for ak, yk in zip(a, y)) - sum(mpmath.loggamma(ak) for ak in a) + mpmath.loggamma(sum(a))


LN = math.log
EXTREMES = {
    # (outputs as float64 tuples/lists, targets): concentrations 1e-3 .. 1e10 and e^-80 .. e^80.
    "Exponential": ([80.0, -80.0, 0.0, 30.0, -30.0], [1e-35, 1e30, 0.0, 1e-13, 1e20]),
    "Gamma": (([LN(1e-3), LN(1e-3), LN(1e6), LN(1e6), 80.0, -80.0, 0.0, LN(1e10), LN(1e6)],
               [0.0, 80.0, 0.0, LN(1e6), 80.0, -80.0, -80.0, LN(1e10), LN(1e6) - 5.0]),
              [1e-200, 1e-300, 1e6 + 1e3, 1.0003, 1.5, 1e-30, 1e30, 1.00001, 150.0]),
    "Beta": (([LN(1e6), LN(2.0), LN(1e-3), LN(1e-3), LN(1e6), 80.0, -80.0, LN(1e10), LN(0.5)],
              [LN(1e6), LN(1e6), LN(1e-3), 0.0, LN(1.0), 80.0, 0.0, LN(1e10), LN(1e6)]),
             [0.5003, 3e-6, 1e-250, 0.7, 1 - 1e-6, 0.5, 1e-300, 0.5001, 1e-8]),
    "VonMises": (([0.3, 0.0, 0.0, -1.0, 0.5, 0.0, 100.0, 0.2, 1.0], [LN(1e6), LN(1e-3), LN(1e10), LN(25.0), LN(24.99), -80.0, 0.0, 80.0, LN(700.0)]),
                 [0.303, 3.0, 3e-5, -0.8, 2.0, 1.0, 101.0, 0.2, 1.5]),
}


def _mp_log_prob(spec_id, o, y):
    if spec_id == "Exponential":
        return [mpmath.mpf(e) - mpmath.exp(e) * mpmath.mpf(t) for e, t in zip(o, y)]
    f = {"Gamma": _mp_gamma, "Beta": _mp_beta, "VonMises": _mp_von_mises}[spec_id]
    return [f(mpmath.mpf(p), mpmath.mpf(q), t) for p, q, t in zip(*o, y)]


@pytest.mark.parametrize("spec_id", list(EXTREMES))
def test_log_prob_matches_mpmath_at_extreme_parameters(spec_id):
    o, y = EXTREMES[spec_id]
    fam = BY_ID[spec_id].family
    outputs = tuple(jnp.asarray(x, F64) for x in o) if isinstance(o, tuple) else jnp.asarray(o, F64)
    got = f64(jitted(fam, "log_prob")(outputs, jnp.asarray(y, F64)))
    want = np.array([float(v) for v in _mp_log_prob(spec_id, o, y)])
    _assert_close_scaled(got, want, np.maximum(np.abs(want), 1.0), RTOL[np.dtype("float64")], spec_id)


def test_dirichlet_log_prob_matches_mpmath_at_extreme_concentrations():
    la = np.array([[LN(1e6)] * 3, [LN(1e-3), 0.0, 3.0], [-80.0, 2.0, 1.0], [LN(1e6), LN(2.0), LN(0.5)], [80.0, 80.0, 79.0]])
    y = np.array([[0.3334, 0.3333, 0.3333], [1e-250, 0.2, 0.8], [1e-30, 0.6, 0.4], [0.99, 7e-3, 3e-3], [0.4, 0.4, 0.2]])
    y = y / y.sum(-1, keepdims=True)
    got = f64(jitted(Dirichlet(), "log_prob")(jnp.asarray(la), jnp.asarray(y)))
    want = np.array([float(_mp_dirichlet(r, t)) for r, t in zip(la, y)])
    _assert_close_scaled(got, want, np.maximum(np.abs(want), 1.0), RTOL[np.dtype("float64")], "Dirichlet")


def test_scipy_itself_loses_digits_at_concentration_1e6():
    # Why the saddle-point form: the textbook formula (scipy's) keeps ~1e-10 here, mlnll ~1e-15.
    la, lb, y = LN(1e6), LN(1e6), 1.0003
    want = float(_mp_gamma(mpmath.mpf(la), mpmath.mpf(lb), y))
    got = float(jitted(Gamma(), "log_prob")((jnp.asarray(la, F64), jnp.asarray(lb, F64)), jnp.asarray(y, F64)))
    scipy_value = float(scipy.stats.gamma.logpdf(y, math.exp(la), scale=math.exp(-lb)))
    assert abs(got - want) <= 1e-14 * abs(want)
    assert abs(scipy_value - want) > 1e-13 * abs(want)


# -- closed-form gradients ---------------------------------------------------------------------------



def _mp_grads(spec_id, o, y):
    """The textbook scores d(-log p)/d(outputs) at 50 digits."""
    psi = mpmath.digamma
    out = []
    if spec_id == "Exponential":
        return [[mpmath.exp(e) * mpmath.mpf(t) - 1 for e, t in zip(o, y)]]
    for p, q, t in zip(*o, y):
        p, q, t = mpmath.mpf(p), mpmath.mpf(q), mpmath.mpf(t)
        if spec_id == "Gamma":
            a, b = mpmath.exp(p), mpmath.exp(q)
            out.append((a * (psi(a) - mpmath.log(b * t)), b * t - a))
        elif spec_id == "Beta":
            a, b = mpmath.exp(p), mpmath.exp(q)
            out.append((a * (psi(a) - psi(a + b) - mpmath.log(t)), b * (psi(b) - psi(a + b) - mpmath.log(1 - t))))
        else:
            k = mpmath.exp(q)
            ratio = mpmath.besseli(1, k) / mpmath.besseli(0, k)
            out.append((-k * mpmath.sin(t - p), k * (ratio - mpmath.cos(t - p))))
    return list(zip(*out))


@pytest.mark.parametrize("spec_id", list(EXTREMES))
def test_grad_matches_mpmath_at_extreme_parameters(spec_id):
    o, y = EXTREMES[spec_id]
    fam = BY_ID[spec_id].family
    outputs = tuple(jnp.asarray(x, F64) for x in o) if isinstance(o, tuple) else jnp.asarray(o, F64)
    got = jax.tree.leaves(jitted(fam, "grad")(outputs, jnp.asarray(y, F64)))
    for g, w in zip(got, _mp_grads(spec_id, o, y)):
        w = np.array([float(v) for v in w])
        # Relative, with an absolute floor of 1e-12 for scores that vanish to ~1e-16 (VonMises at k = e^-80).
        _assert_close_scaled(g, w, np.maximum(np.abs(w), 1e-3), 4 * RTOL[np.dtype("float64")], spec_id)


def test_dirichlet_grad_matches_mpmath_at_extreme_concentrations():
    la = np.array([[LN(1e6)] * 3, [LN(1e-3), 0.0, 3.0], [-80.0, 2.0, 1.0], [LN(1e4), LN(2.0), LN(0.5)]])
    y = np.array([[0.3334, 0.3333, 0.3333], [1e-250, 0.2, 0.8], [1e-30, 0.6, 0.4], [0.99, 7e-3, 3e-3]])
    y = y / y.sum(-1, keepdims=True)
    got = f64(jitted(Dirichlet(), "grad")(jnp.asarray(la), jnp.asarray(y)))
    for i, (r, t) in enumerate(zip(la, y)):
        a = [mpmath.exp(mpmath.mpf(x)) for x in r]
        n = sum(a)
        want = np.array([float(ak * (mpmath.digamma(ak) - mpmath.digamma(n) - mpmath.log(mpmath.mpf(tk)))) for ak, tk in zip(a, t)])
        _assert_close_scaled(got[i], want, np.maximum(np.abs(want), 1e-3), 4 * RTOL[np.dtype("float64")], f"row {i}")


def _in_rule_domain(spec_id, o):
    """Outputs moved into the domain where the expectation rules reach 1e-12 (see the families'
    ``expectation_nodes``): Gamma a >= 0.1, Beta a >= 0.1 and b >= 1."""
    if spec_id == "Gamma":
        return jnp.maximum(o[0], LN(0.1)), o[1]
    if spec_id == "Beta":
        return jnp.maximum(o[0], LN(0.1)), jnp.maximum(o[1], 0.0)
    return o


# -- Fisher information ------------------------------------------------------------------------------


def _matrix_error(got, want):
    """Largest |got_ij - want_ij| / sqrt(want_ii want_jj) over a stack of [P, P] matrices."""
    got, want = f64(got), f64(want)
    d = np.sqrt(np.abs(np.diagonal(want, axis1=-2, axis2=-1)))
    return float(np.max(np.abs(got - want) / (d[..., :, None] * d[..., None, :])))


@functools.cache
def _partition_fisher_oracle(spec_id: str):
    """Jitted: ``J^T hessian(A)(eta) J`` with J = d eta / d outputs, per example, [N, P, P]."""
    spec = BY_ID[spec_id]

    def one(o):
        eta = spec.natural(o)
        jac = jax.jacfwd(spec.natural)(o)
        jac = jnp.concatenate([jnp.reshape(j, (eta.shape[0], -1)) for j in jax.tree.leaves(jac)], axis=1)
        return jac.T @ jax.hessian(spec.partition)(eta) @ jac

    return jax.jit(jax.vmap(one))


def _fisher_from_partition(spec: Spec, o64):
    return _partition_fisher_oracle(spec.id)(_as_f64(o64))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_fisher_equals_hessian_of_the_log_partition_function(spec, dtype):
    o, _, o64, _ = _inputs(spec, 3, dtype)
    got = jitted(spec.family, "fisher")(o)
    assert got.dtype == dtype
    want = _fisher_from_partition(spec, o64)
    got = f64(got).reshape(want.shape)
    if want.shape[-1] == 1:
        np.testing.assert_allclose(got, f64(want), rtol=4 * RTOL[dtype])
    else:
        assert _matrix_error(got, want) <= 8 * RTOL[dtype]


FISHER_EXTREMES = {
    "Exponential": [[80.0, -80.0, 0.0]],
    "Gamma": [[LN(0.1), LN(1e6), 80.0, LN(1e10)], [80.0, LN(1e6), -80.0, 3.0]],
    "Beta": [[LN(1e6), LN(2.0), LN(0.1), LN(1e4), LN(50.0)], [LN(1e6), LN(1e6), LN(2.0), LN(30.0), LN(1.5)]],
    "VonMises": [[0.3, 0.0, 0.0, -1.0, 0.5], [LN(1e6), LN(1e-3), LN(1e10), LN(25.0), LN(24.99)]],
}


@pytest.mark.parametrize("spec", WITH_NODES, ids=ids(WITH_NODES))
def test_fisher_equals_expected_hessian_by_quadrature(spec):
    # The check's oracle: autodiff Hessians of log_prob averaged over the family's own rule.
    o, _, _, _ = _inputs(spec, 4, np.dtype("float64"))
    o = _in_rule_domain(spec.id, o)
    extreme = FISHER_EXTREMES[spec.id]
    extreme = tuple(jnp.asarray(x, F64) for x in extreme) if len(extreme) > 1 else jnp.asarray(extreme[0], F64)
    for outputs in (o, extreme):
        got = f64(jitted(spec.family, "fisher")(outputs))
        want = f64(expected_hessian(spec.family, outputs)).reshape(got.shape)
        if got.ndim == 1:
            np.testing.assert_allclose(got, want, rtol=4 * RTOL[np.dtype("float64")])
        else:
            assert _matrix_error(got, want) <= 4 * RTOL[np.dtype("float64")], spec.id


def test_dirichlet_fisher_at_extreme_concentrations_matches_mpmath():
    # One concentration dominating (1e6 against 1e-3) is where a^2 (trigamma(a) - trigamma(n))
    # would cancel; scaled_trigamma_difference keeps it.
    la = np.array([[LN(1e6), LN(1e-3), 0.0], [-80.0, 2.0, 1.0], [30.0, 30.0, 29.0]])
    got = f64(jitted(Dirichlet(), "fisher")(jnp.asarray(la)))
    for i, r in enumerate(la):
        a = [mpmath.exp(mpmath.mpf(x)) for x in r]
        n = sum(a)
        t = mpmath.polygamma(1, n)
        want = np.array([[float((a[p] ** 2 * mpmath.polygamma(1, a[p]) if p == q else 0) - a[p] * a[q] * t)
                          for q in range(3)] for p in range(3)])
        assert _matrix_error(got[i], want) <= 4 * RTOL[np.dtype("float64")], i


def _expect(spec_id, outputs, f):
    """Sum of w_k f(y_k) over the rule; nodes of weight 0 (rounded to 0 or 1) are left out."""
    nodes, weights = jitted(BY_ID[spec_id].family, "expectation_nodes")(outputs)
    used = weights > 0
    values = f(jnp.where(used, nodes, 0.5))
    return f64(jnp.sum(jnp.where(used, weights * values, 0.0), axis=0))


def test_quadrature_rules_integrate_the_sufficient_statistics():
    # The rules are oracles for the Fisher check; here they meet digamma and Bessel ratios.
    la = np.array([LN(0.1), LN(0.5), 0.0, LN(7.0), LN(1e3), LN(1e6), LN(1e10)])
    lb = np.array([0.0, 2.0, -3.0, 1.0, 80.0, LN(1e6), 5.0])
    a = np.exp(la)
    out = (jnp.asarray(la), jnp.asarray(lb))
    e_log = _expect("Gamma", out, jnp.log)
    want = np.array([float(mpmath.digamma(mpmath.exp(mpmath.mpf(x))) - mpmath.mpf(y)) for x, y in zip(la, lb)])
    assert np.all(np.abs(e_log - want) <= 1e-13 * np.sqrt(scipy.special.polygamma(1, a)) * 10)
    np.testing.assert_allclose(_expect("Gamma", out, lambda y: y), np.exp(la - lb), rtol=1e-13)

    la = np.array([LN(0.1), 0.0, LN(3.0), LN(1e6), LN(2.0), LN(50.0)])
    lb = np.array([LN(2.0), 0.0, LN(1.5), LN(1e6), LN(1e6), LN(30.0)])
    out = (jnp.asarray(la), jnp.asarray(lb))
    a, b = np.exp(la), np.exp(lb)
    for stat, mine, other in [(jnp.log, la, lb), (lambda y: jnp.log(1 - y), lb, la)]:
        got = _expect("Beta", out, stat)
        want = np.array([float(mpmath.digamma(mpmath.exp(mpmath.mpf(x))) - mpmath.digamma(mpmath.exp(mpmath.mpf(x)) + mpmath.exp(mpmath.mpf(z))))
                         for x, z in zip(mine, other)])
        spread = np.sqrt(scipy.special.polygamma(1, np.exp(mine)) - scipy.special.polygamma(1, a + b))
        # Plus the rounding of the statistic itself: 1 - y is a float64, within 1.1e-16 of the truth.
        assert np.all(np.abs(got - want) <= 1e-12 * spread + 2.3e-16), (got - want) / spread

    loc = np.array([0.3, 0.0, -2.0, 1.0, 0.0])
    lk = np.array([LN(1e-3), 0.0, LN(22.0), LN(1e3), LN(1e6)])
    out = (jnp.asarray(loc), jnp.asarray(lk))
    # E[1 - cos(y - loc)] = 1 - I1/I0, integrated as 2 sin^2((y - loc)/2) (no cancellation near 1).
    got = _expect("VonMises", out, lambda y: 2 * jnp.square(jnp.sin(0.5 * (y - jnp.asarray(loc)[None]))))
    want = np.array([float(1 - mpmath.besseli(1, mpmath.exp(mpmath.mpf(x))) / mpmath.besseli(0, mpmath.exp(mpmath.mpf(x)))) for x in lk])
    np.testing.assert_allclose(got, want, rtol=1e-11)
    # E[sin(y - loc)] = 0: the rule is symmetric up to the rounding of 64 terms of size <= 1.
    np.testing.assert_allclose(_expect("VonMises", out, lambda y: jnp.sin(y - jnp.asarray(loc)[None])), 0.0, atol=1e-15)


# -- entropy, KL, mean, sample, params ---------------------------------------------------------------


def test_entropy_matches_mpmath_at_extreme_concentrations():
    def mp_gamma(a):
        return a + mpmath.loggamma(a) + (1 - a) * mpmath.digamma(a)

    def mp_beta(a, b):
        psi = mpmath.digamma
        return mpmath.log(mpmath.beta(a, b)) - (a - 1) * psi(a) - (b - 1) * psi(b) + (a + b - 2) * psi(a + b)

    def mp_vm(k):
        return mpmath.log(2 * mpmath.pi * mpmath.besseli(0, k)) - k * mpmath.besseli(1, k) / mpmath.besseli(0, k)

    big = [1e-3, 0.5, 1e6, 1e10]
    for a in big:
        got = float(jitted(Gamma(), "entropy")((jnp.asarray(LN(a), F64), jnp.asarray(0.0, F64))))
        want = float(mp_gamma(mpmath.mpf(a)))
        assert abs(got - want) <= 1e-12 * max(abs(want), 1), (a, got, want)
        got = float(jitted(VonMises(), "entropy")((jnp.asarray(0.0, F64), jnp.asarray(LN(a), F64))))
        want = float(mp_vm(mpmath.mpf(a)))
        assert abs(got - want) <= 1e-12 * max(abs(want), 1), (a, got, want)
    for a, b in [(1e6, 1e6), (1e-3, 1e-3), (1e6, 1e-3), (2.0, 1e6)]:
        got = float(jitted(Beta(), "entropy")((jnp.asarray(LN(a), F64), jnp.asarray(LN(b), F64))))
        want = float(mp_beta(mpmath.mpf(a), mpmath.mpf(b)))
        assert abs(got - want) <= 1e-12 * max(abs(want), 1), (a, b, got, want)
        got = float(jitted(Dirichlet(), "entropy")(jnp.asarray([LN(a), LN(b)], F64)))
        assert abs(got - want) <= 1e-12 * max(abs(want), 1), (a, b, got, want)


def test_kl_matches_mpmath_textbook_formulas():
    psi, lg = mpmath.digamma, mpmath.loggamma
    cases = [(0.3, 2.0, 1.1, -0.5), (LN(1e6), 0.0, LN(1e6) + 1e-3, 1e-3), (LN(1e-3), 1.0, LN(2e-3), 0.0)]
    for la_p, lb_p, la_q, lb_q in cases:
        ap, bp, aq, bq = (mpmath.exp(mpmath.mpf(x)) for x in (la_p, lb_p, la_q, lb_q))
        want = (ap - aq) * psi(ap) - lg(ap) + lg(aq) + aq * (mpmath.log(bp) - mpmath.log(bq)) + ap * (bq - bp) / bp
        got = float(jitted(Gamma(), "kl")((jnp.asarray(la_p, F64), jnp.asarray(lb_p, F64)), (jnp.asarray(la_q, F64), jnp.asarray(lb_q, F64))))
        assert abs(got - float(want)) <= 1e-12 * max(float(want), 1e-3), (got, float(want))
        want_b = (lg(aq) + lg(bq) - lg(aq + bq)) - (lg(ap) + lg(bp) - lg(ap + bp)) + (ap - aq) * psi(ap) + (bp - bq) * psi(bp) + (aq - ap + bq - bp) * psi(ap + bp)
        got_b = float(jitted(Beta(), "kl")((jnp.asarray(la_p, F64), jnp.asarray(lb_p, F64)), (jnp.asarray(la_q, F64), jnp.asarray(lb_q, F64))))
        assert abs(got_b - float(want_b)) <= 1e-12 * max(float(want_b), 1e-3), (got_b, float(want_b))
    for k_p, k_q, d in [(2.0, 3.0, 0.5), (1e6, 1.1e6, 1e-3), (1e-3, 5.0, 3.0)]:
        kp, kq = mpmath.mpf(k_p), mpmath.mpf(k_q)
        ratio = mpmath.besseli(1, kp) / mpmath.besseli(0, kp)
        want = kp * ratio - kq * ratio * mpmath.cos(d) + mpmath.log(mpmath.besseli(0, kq)) - mpmath.log(mpmath.besseli(0, kp))
        got = float(jitted(VonMises(), "kl")((jnp.asarray(d, F64), jnp.asarray(LN(k_p), F64)), (jnp.asarray(0.0, F64), jnp.asarray(LN(k_q), F64))))
        assert abs(got - float(want)) <= 1e-12 * max(float(want), 1e-3), (got, float(want))
    # Exponential: KL = expm1mx(d) keeps a KL of ~d^2/2 = 5e-15 to full precision.
    got = float(jitted(Exponential(), "kl")(jnp.asarray(0.0, F64), jnp.asarray(1e-7, F64)))
    assert abs(got - float(mpmath.exp(mpmath.mpf(1e-7)) - 1 - mpmath.mpf(1e-7))) <= 1e-15 * got


# p (also sampled) and q for each family; Gamma's first column has a = 1e-3, half of whose mass lies
# below 1e-300 (it is left out of the Monte Carlo KL, whose log-ratio is -inf - -inf at y = 0).
SAMPLE_PAIRS = {
    "Exponential": (jnp.array([-1.0, 0.0, 2.0]), jnp.array([-0.5, 1.0, 1.5])),
    "Gamma": ((jnp.array([LN(1e-3), 0.0, LN(50.0)]), jnp.array([0.0, 1.0, -2.0])),
              (jnp.array([LN(2e-3), 0.5, LN(45.0)]), jnp.array([0.5, 0.5, -2.1]))),
    "Beta": ((jnp.array([LN(0.5), 1.0, LN(200.0)]), jnp.array([LN(0.5), 0.0, LN(50.0)])),
             (jnp.array([0.0, 1.5, LN(150.0)]), jnp.array([0.0, 0.5, LN(60.0)]))),
    "Dirichlet": (jnp.array([[LN(0.5), 0.0, 1.0], [LN(100.0), LN(50.0), LN(20.0)]]),
                  jnp.array([[0.0, 0.5, 1.0], [LN(80.0), LN(60.0), LN(20.0)]])),
    "VonMises": ((jnp.array([0.5, -3.0, 2.0]), jnp.array([LN(1e-3), 0.5, LN(1e6)])),
                 (jnp.array([0.0, -2.5, 2.001]), jnp.array([0.0, 1.0, LN(9e5)]))),
}
N_DRAWS = 30_000


def _scipy_frozen(spec_id, o):
    o = jax.tree.map(f64, o)
    if spec_id == "Exponential":
        return [scipy.stats.expon(scale=math.exp(-e)) for e in o]
    if spec_id == "Gamma":
        return [scipy.stats.gamma(math.exp(p), scale=math.exp(-q)) for p, q in zip(*o)]
    if spec_id == "Beta":
        return [scipy.stats.beta(math.exp(p), math.exp(q)) for p, q in zip(*o)]
    return None


def _check_moments(spec_id, fam, o, y):
    n = y.shape[0]
    frozen = _scipy_frozen(spec_id, o)
    if frozen is not None:  # mean and variance against scipy, within 5 standard errors
        mean, var = np.array([d.mean() for d in frozen]), np.array([d.var() for d in frozen])
        kurt = np.array([d.stats(moments="k") for d in frozen], np.float64)
        np.testing.assert_allclose(f64(fam.mean(o)), mean, rtol=1e-13)
        assert np.all(np.abs(y.mean(0) - mean) < 5 * np.sqrt(var / n))
        assert np.all(np.abs(y.var(0) - var) < 5 * var * np.sqrt((kurt + 2) / n))
    elif spec_id == "Dirichlet":
        a = np.exp(f64(o))
        p = a / a.sum(-1, keepdims=True)
        np.testing.assert_allclose(f64(fam.mean(o)), p, rtol=1e-13)
        np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-13)
        var = p * (1 - p) / (a.sum(-1, keepdims=True) + 1)
        assert np.all(np.abs(y.mean(0) - p) < 5 * np.sqrt(var / n))
        np.testing.assert_allclose(f64(fam.params(o)["concentration"]), a, rtol=1e-15)
    else:  # VonMises: angles in [-pi, pi), E[cos(y - loc)] = I1/I0, E[sin(y - loc)] = 0
        loc, k = f64(o[0]), np.exp(f64(o[1]))
        assert np.all((y >= -math.pi) & (y < math.pi))
        np.testing.assert_array_equal(f64(fam.mean(o)), loc)
        c, s = np.cos(y - loc), np.sin(y - loc)
        ratio = scipy.special.i1e(k) / scipy.special.i0e(k)
        assert np.all(np.abs(c.mean(0) - ratio) < 5 * c.std(0) / math.sqrt(n) + 1e-12)
        assert np.all(np.abs(s.mean(0)) < 5 * s.std(0) / math.sqrt(n) + 1e-12)
        np.testing.assert_allclose(f64(fam.params(o)["concentration"]), k, rtol=1e-15)


@pytest.mark.parametrize("spec_id", list(SAMPLE_PAIRS))
def test_samples_match_moments_and_the_closed_form_kl(spec_id):
    fam = BY_ID[spec_id].family
    p, q = jax.tree.map(lambda x: x.astype(F64), SAMPLE_PAIRS[spec_id])
    y = jax.jit(functools.partial(fam.sample, sample_shape=(N_DRAWS,)))(jax.random.PRNGKey(7), p)
    y64 = f64(y)
    assert not np.any(np.isnan(y64))
    _check_moments(spec_id, fam, p, y64)
    # KL(p || q) against the Monte Carlo mean of log p - log q, within 5 standard errors.
    ratio = f64(jax.jit(lambda a, b, t: fam.log_prob(a, t) - fam.log_prob(b, t))(p, q, y))
    keep = slice(1, None) if spec_id == "Gamma" else slice(None)
    ratio = ratio[:, keep]
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(N_DRAWS)
    kl = f64(fam.kl(p, q))[keep]
    assert np.all(np.abs(kl - mc) < 5 * se), (kl, mc, se)
    np.testing.assert_allclose(f64(fam.kl(p, p)), 0.0, atol=1e-15)
    if spec_id == "Gamma":  # a = 1e-3: the fraction of draws below 1e-300 is scipy's cdf there
        frac = np.mean(y64[:, 0] < 1e-300)
        assert abs(frac - scipy.stats.gamma.cdf(1e-300, 1e-3)) < 5 * math.sqrt(0.25 / N_DRAWS)
    if spec_id == "VonMises":  # its own rejection sampler, in float32 too (k from 1e-3 to 1e6)
        y32 = jax.jit(fam.sample)(jax.random.PRNGKey(8), jax.tree.map(lambda x: x.astype(jnp.float32), p))
        assert y32.dtype == jnp.float32 and np.all(np.abs(f64(y32)) <= math.pi)


def test_params():
    o = (jnp.array([0.0, LN(2.0)], F64), jnp.array([LN(3.0), 0.0], F64))
    np.testing.assert_allclose(f64(Gamma().params(o)["concentration"]), [1.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(f64(Gamma().params(o)["rate"]), [3.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(f64(Beta().params(o)["concentration1"]), [1.0, 2.0], rtol=1e-15)
    np.testing.assert_allclose(f64(Beta().params(o)["concentration0"]), [3.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(f64(VonMises().params(o)["loc"]), [0.0, LN(2.0)], rtol=1e-15)
    np.testing.assert_allclose(f64(Exponential().params(o[1])["rate"]), [3.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(f64(Exponential().mean(o[1])), [1 / 3, 1.0], rtol=1e-15)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_constant_terms_are_the_output_free_part(spec):
    o, y, o64, y64 = _inputs(spec, 6, np.dtype("float64"))
    const = f64(jitted(spec.family, "constant_terms")(y))
    want = {
        "Exponential": lambda: np.zeros(N),
        "Gamma": lambda: -np.log(y64),
        "Beta": lambda: -np.log(y64) - np.log1p(-y64),
        "Dirichlet": lambda: -np.log(y64).sum(-1),
        "VonMises": lambda: np.full(N, -LOG_2PI),
    }[spec.id]()
    np.testing.assert_allclose(const, want, rtol=1e-14)


# -- MLE ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [100, 101])
def test_exponential_mle_zeroes_the_gradient_and_matches_scipy_fit(n):
    y = scipy.stats.expon.rvs(scale=2.5, size=n, random_state=np.random.default_rng(n))
    eta = mle(Exponential(), jnp.asarray(y, F64))
    _, scale = scipy.stats.expon.fit(y, floc=0)
    np.testing.assert_allclose(float(eta), -math.log(scale), rtol=1e-13)
    g = f64(Exponential().grad(jnp.broadcast_to(eta, (n,)), jnp.asarray(y, F64)))
    assert abs(g.sum()) <= 1e-12 * np.abs(g).sum()
    # Along another axis, one estimate per column.
    y2 = jnp.asarray(np.stack([y, 2 * y]), F64)
    np.testing.assert_allclose(f64(mle(Exponential(), y2, axis=1)), [-math.log(scale), -math.log(2 * scale)], rtol=1e-13)


@pytest.mark.parametrize("family", [Gamma(), Beta(), Dirichlet(), VonMises()], ids=repr)
def test_no_closed_form_mle(family):
    assert not hasattr(family, "mle")
    with pytest.raises(NotImplementedError):
        mle(family, jnp.ones(3, F64))


# -- bad input ---------------------------------------------------------------------------------------

BAD = {
    "Exponential": (jnp.zeros(4), jnp.array([-1.0, -1e-30, -jnp.inf, jnp.nan])),
    "Gamma": ((jnp.zeros(5), jnp.zeros(5)), jnp.array([0.0, -1.0, jnp.inf, -jnp.inf, jnp.nan])),
    "Beta": ((jnp.zeros(5), jnp.zeros(5)), jnp.array([0.0, 1.0, -0.5, 1.5, jnp.nan])),
    "Dirichlet": (jnp.zeros((5, 3)), jnp.array([[-0.1, 0.6, 0.5], [0.0, 0.5, 0.5], [0.2, 0.3, 0.6], [0.2, 0.3, 0.4], [jnp.nan, 0.5, 0.5]])),
    "VonMises": ((jnp.zeros(3), jnp.zeros(3)), jnp.array([jnp.inf, -jnp.inf, jnp.nan])),
}


@pytest.mark.parametrize("spec_id", list(BAD))
def test_targets_outside_the_support_give_minus_inf_never_nan(spec_id, dtype):
    fam = BY_ID[spec_id].family
    o, y = jax.tree.map(lambda x: x.astype(dtype), BAD[spec_id])
    lp = f64(jitted(fam, "log_prob")(o, y))
    np.testing.assert_array_equal(lp, -np.inf)
    # A bad row masked out by nll's ``where`` leaves the gradient finite (exactly 0 there): nll stops
    # its derivatives before they reach the family, whose own jax.grad there is NaN (the convention).
    loss = mlnll.nll(fam, reduction="sum")
    g = jax.jit(jax.grad(lambda oo: loss(oo, y, where=jnp.zeros(lp.shape, bool))))(o)
    assert all(np.all(f64(x) == 0) for x in jax.tree.leaves(g))


def test_dirichlet_simplex_tolerance_is_keyed_by_dtype():
    fam = Dirichlet()
    la = jnp.zeros(3, jnp.float32)
    y32 = jnp.array([0.1, 0.2, 0.7], jnp.float32)
    y32 = y32 / jnp.sum(y32)  # normalised in float32: sums to 1 within a few float32 ulp
    assert np.isfinite(float(jitted(fam, "log_prob")(la, y32)))
    off = jnp.array([0.1, 0.2, 0.7 + 1e-10], F64)  # 1e-10 off: fine for float32, not for float64
    assert float(jitted(fam, "log_prob")(la.astype(F64), off)) == -np.inf
    assert np.isfinite(float(jitted(fam, "log_prob")(la, off.astype(jnp.float32))))


def test_wrong_outputs_and_shapes_raise_naming_the_argument():
    with pytest.raises(TypeError, match="Gamma outputs"):
        Gamma().log_prob(jnp.zeros(3), jnp.ones(3))
    # One-output families take their array alone, not in a tuple (the message of ``unpack``).
    with pytest.raises(TypeError, match="Exponential takes log_rate alone as outputs; got a tuple of length 1"):
        Exponential().log_prob((jnp.zeros(3),), jnp.ones(3))
    with pytest.raises(TypeError, match="Dirichlet takes log_concentration alone as outputs; got a tuple"):
        Dirichlet().log_prob((jnp.zeros((2, 3)),), jnp.full((2, 3), 1 / 3))
    with pytest.raises(TypeError, match=r"Gamma.kl q outputs must be a tuple \(log_concentration, log_rate\)"):
        Gamma().kl((jnp.zeros(3), jnp.zeros(3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        Beta().log_prob((jnp.zeros(3), jnp.zeros(4)), jnp.full(3, 0.5))
    with pytest.raises(ValueError, match="K >= 2"):
        Dirichlet().log_prob(jnp.zeros((3, 1)), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="K = 3"):
        Dirichlet().log_prob(jnp.zeros((2, 3)), jnp.full((2, 4), 0.25))
    with pytest.raises(TypeError, match="VonMises outputs"):
        VonMises().log_prob((jnp.zeros(3),), jnp.zeros(3))


def test_shapes_broadcast_and_low_precision_is_returned_in_its_dtype():
    # Outputs [4, 1] over rows of 3 targets; an outer product ([4, 1] against [3]) is refused.
    lp = jitted(Gamma(), "log_prob")((jnp.zeros((4, 1)), jnp.zeros(())), jnp.ones((4, 3)))
    assert lp.shape == (4, 3)
    with pytest.raises(ValueError, match="outer product"):
        Gamma().log_prob((jnp.zeros((4, 1)), jnp.zeros(())), jnp.ones(3))
    g = jitted(VonMises(), "grad")((jnp.zeros((2, 1)), jnp.zeros((2, 3))), jnp.ones(()))
    assert g[0].shape == (2, 3) and g[1].shape == (2, 3)
    assert jitted(Dirichlet(), "log_prob")(jnp.zeros((2, 1, 3)), jnp.full((2, 5, 3), 1 / 3)).shape == (2, 5)
    y = jitted(Beta(), "log_prob")((jnp.zeros(3, jnp.bfloat16), jnp.zeros(3, jnp.bfloat16)), jnp.full(3, 0.25, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(f64(y), math.log(1.0), atol=1e-2)


# -- the numerical building blocks, against mpmath ---------------------------------------------------


def test_stirling_and_bessel_pieces_match_mpmath():
    xs = [1e-30, 1e-3, 0.1, 1.0, 3.0, 9.99, 10.0, 50.0, 1e3, 1e6, 1e12]
    mp = lambda x: mpmath.mpf(x)  # noqa: E731

    def check(f, g, points, tol):
        got = f64(f(jnp.asarray(points, F64)))
        want = np.array([float(g(mp(x))) for x in points])
        err = np.abs(got - want) / np.abs(want)
        assert err.max() <= tol, (f.__name__, err)

    check(numerics.stirling_remainder, lambda x: mpmath.loggamma(x) - (x - 0.5) * mpmath.log(x) + x - 0.5 * mpmath.log(2 * mpmath.pi), xs, 5e-13)
    check(numerics.stirling_remainder_grad, lambda x: mpmath.digamma(x) - mpmath.log(x) + 1 / (2 * x), xs, 1e-14)
    check(numerics.scaled_trigamma, lambda x: x * x * mpmath.polygamma(1, x), xs, 1e-14)
    ks = [1e-3, 0.5, 1.0, 10.0, 24.9, 25.0, 30.0, 1e3, 1e6, 1e10]
    i = mpmath.besseli
    check(numerics.log_i0e, lambda k: mpmath.log(i(0, k)) - k, ks, 1e-13)
    check(numerics.bessel_ratio_complement, lambda k: 1 - i(1, k) / i(0, k), ks, 1e-14)
    # in float32 too: below k = 25 the complement is a quadrature of a positive integrand, not
    # 1 - i1e/i0e (which lost up to 2k ulps: 4e-6 at k = 20)
    k32 = np.geomspace(1e-3, 24.9, 25).astype(np.float32)
    got32 = f64(numerics.bessel_ratio_complement(jnp.asarray(k32)))
    want32 = np.array([float(1 - i(1, mp(float(k))) / i(0, mp(float(k)))) for k in k32])
    np.testing.assert_allclose(got32, want32, rtol=8 * np.finfo(np.float32).eps, atol=0)
    # delta'(x) in float32 across the shifted range [1/2, 10), where digamma(x) - log x + 1/(2x)
    # cancelled (2.4e-4 relative near 10): now a sum of terms of one sign
    x32 = np.geomspace(0.5, 12.0, 30).astype(np.float32)
    got32 = f64(numerics.stirling_remainder_grad(jnp.asarray(x32)))
    want32 = np.array([float(mpmath.digamma(mp(float(x))) - mpmath.log(mp(float(x))) + 1 / (2 * mp(float(x)))) for x in x32])
    np.testing.assert_allclose(got32, want32, rtol=16 * np.finfo(np.float32).eps, atol=0)
    check(numerics.bessel_ratio, lambda k: i(1, k) / i(0, k), ks, 1e-15)
    check(numerics.scaled_bessel_ratio_grad, lambda k: k * k * (1 - i(1, k) / (k * i(0, k)) - (i(1, k) / i(0, k)) ** 2), ks, 1e-14)
    x = jnp.asarray([0.5, 5.0, 12.0, 1e3, 1e6, 1e-3, 55.0, 1e10], F64)
    d = jnp.asarray([0.2, 0.5, 1e-3, 1.0, 1.0, 5.0, 1.0, 1e-6], F64)
    got = f64(numerics.scaled_trigamma_difference(x, d))
    want = np.array([float(mp(a) ** 2 * (mpmath.polygamma(1, mp(a)) - mpmath.polygamma(1, mp(a) + mp(b)))) for a, b in zip(f64(x), f64(d))])
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_arithmetic_stirling_remainder_and_scaled_grad_match_mpmath(dtype):
    # delta(x) and x delta'(x) without lgamma or digamma (Gamma's and Dirichlet's log_prob): every
    # branch (the polynomials below 1, the one-sign unit steps up to x0 = 4 in float32 and 10 in
    # float64, Stirling's series above) and their edges, to a few ulps of their own size; where
    # stirling_remainder subtracts gammaln from x log x below 10 (49 ulps of 1 at x = 9).
    x = np.concatenate([np.geomspace(1e-30, 1e12, 80), np.linspace(0.3, 12.0, 120),
                        [1.0, 1.0 - 1e-7, 1.0 + 1e-7, 4.0, 4.0 - 1e-6, 10.0, 10.0 - 1e-6, 2.0, 0.5]])
    xd = jnp.asarray(x, dtype)
    log_x = jnp.asarray(np.log(x), dtype)
    delta, scaled = jax.jit(numerics_gb.stirling_remainder_and_scaled_grad)(xd, log_x)
    assert delta.dtype == dtype and scaled.dtype == dtype
    xs = [mpmath.mpf(float(v)) for v in f64(xd)]
    want_delta = np.array([float(mpmath.loggamma(v) - (v - 0.5) * mpmath.log(v) + v - mpmath.log(2 * mpmath.pi) / 2) for v in xs])
    want_scaled = np.array([float(v * (mpmath.digamma(v) - mpmath.log(v)) + 0.5) for v in xs])
    eps = float(np.finfo(dtype).eps)
    _assert_close_scaled(delta, want_delta, np.abs(want_delta), 16 * eps, "delta")
    _assert_close_scaled(scaled, want_scaled, np.abs(want_scaled), 16 * eps, "x delta'")


def test_stirling_remainder_derivatives_hold_at_the_branch_edges(dtype):
    # Gamma's and Beta's Hessians differentiate x delta'(x): its derivative
    # d/dx [x delta'(x)] = x psi'(x) + psi(x) - log x - 1 must hold on the edges of the branches too
    # (x = 1 and x0 exactly, where a clamp by maximum(x, 1) would halve it), and the value-only
    # stirling_remainder_in_dtype must equal delta with and without its x < 1 branch.
    x = np.array([0.5, 1.0, 1.0 + 2 ** -20, 2.0, 4.0, 7.0, 10.0, 30.0])
    xd = jnp.asarray(x, dtype)
    d_scaled = jax.jit(jax.vmap(jax.grad(lambda t: numerics_gb.stirling_remainder_and_scaled_grad(t, jnp.log(t))[1])))(xd)
    mp = [mpmath.mpf(float(v)) for v in f64(xd)]
    want = np.array([float(v * mpmath.polygamma(1, v) + mpmath.digamma(v) - mpmath.log(v) - 1) for v in mp])
    _assert_close_scaled(d_scaled, want, np.abs(want), 64 * float(np.finfo(dtype).eps), "d/dx x delta'")
    delta, _ = numerics_gb.stirling_remainder_and_scaled_grad(xd, jnp.log(xd))
    alone = numerics_gb.stirling_remainder_in_dtype(xd, jnp.log(xd))
    np.testing.assert_array_equal(f64(alone), f64(delta))
    at_least_one = f64(xd) >= 1
    np.testing.assert_array_equal(f64(numerics_gb.stirling_remainder_in_dtype(xd))[at_least_one], f64(delta)[at_least_one])


def test_lgamma_below_two_keeps_relative_accuracy_near_one_and_two(dtype):
    # log Gamma(x) = t (t - 1) h(t) on [1, 2) (t = x - 1 = expm1(log x)), and log Gamma(1 + x) - log x
    # below 1: exactly 0 at x = 1, relative accuracy within 1e-4 of log x = 0 and down to x = e^-40.
    log_x = np.concatenate([np.linspace(-40.0, math.log(1.8), 400), np.linspace(-1e-4, 1e-4, 40), [0.0]])
    ld = jnp.asarray(log_x, dtype)
    got = f64(jax.jit(numerics_gb.lgamma_below_two)(jnp.exp(ld), jnp.expm1(ld), ld))
    want = np.array([float(mpmath.loggamma(mpmath.exp(mpmath.mpf(float(v))))) for v in f64(ld)])
    assert got[-1] == 0.0
    _assert_close_scaled(got[:-1], want[:-1], np.abs(want[:-1]), 8 * float(np.finfo(dtype).eps), "lgamma")


def test_lgamma_exp_derivatives_match_mpmath(dtype):
    # lgamma1p states its derivative digamma(1 + t) (the series' derivative near t = 0 and 1)
    # rather than tracing the 55-term series: first and second derivatives of lgamma(exp(log x)),
    # x digamma(x) and x digamma(x) + x^2 trigamma(x), against mpmath around x = 1/2 .. 5/2 (the
    # series branches) and beyond (lgamma).
    x = np.concatenate([np.linspace(0.45, 2.6, 300), np.geomspace(1e-3, 30, 100), [1.0, 2.0, 1.4616321449683622]])
    log_x = jnp.asarray(np.log(x), dtype)
    xs = [mpmath.exp(mpmath.mpf(float(v))) for v in f64(log_x)]
    first = jax.jit(jax.vmap(jax.grad(numerics.lgamma_exp)))(log_x)
    second = jax.jit(jax.vmap(jax.grad(jax.grad(numerics.lgamma_exp))))(log_x)
    assert first.dtype == dtype and second.dtype == dtype
    want1 = np.array([float(v * mpmath.digamma(v)) for v in xs])
    want2 = np.array([float(v * mpmath.digamma(v) + v * v * mpmath.polygamma(1, v)) for v in xs])
    eps = float(np.finfo(dtype).eps)  # the second derivative is a forward-mode pass over the series
    _assert_close_scaled(first, want1, np.maximum(np.abs(want1), 1.0), 16 * eps, "d/dlog_x")
    _assert_close_scaled(second, want2, np.maximum(np.abs(want2), 1.0), 64 * eps, "d2/dlog_x2")


def test_xla_log1p_is_avoided_where_it_is_inaccurate():
    # XLA's CPU log1p is off by up to ~3e-14 on (-0.5, -0.3); Beta's log(1 - y) goes around it.
    y = np.random.default_rng(0).uniform(0.3, 0.5, 10_000)
    got = f64(jitted(Beta(), "constant_terms")(jnp.asarray(y, F64)))
    want = -np.log(y) - np.log1p(-y)
    np.testing.assert_allclose(got, want, rtol=1e-15)


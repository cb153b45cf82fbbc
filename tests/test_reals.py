"""Laplace, Cauchy, Logistic, StudentT and LogNormal against scipy.stats, mpmath and autodiff.

What every family promises (frozen and hashable, log_prob vs scipy at the check cases' inputs,
extremes, dtypes, sampling support, jit/vmap properties) is checked for the rows of the check
table by tests/test_conformance.py; this file keeps what is specific to these families, what the
conformance suite does not reach (the fixed-parameter variants, StudentT against mpmath, df up to
1e6) and what it checks more loosely (the gradient and entropy tolerances below are tighter).

Oracles: scipy.stats (log-densities, entropies, fits, quantiles), mpmath at 40-50 digits (where
scipy itself is less accurate than 1e-12, and for StudentT at nu = 1e6), ``jax.grad`` /
``jax.hessian`` of the PLAIN textbook formulas (each family's ``plain_log_prob`` reference in its
check case), and seeded Monte Carlo.

Tolerances. Closed forms are compared with a relative tolerance from ``conftest.RTOL`` on top of an
absolute floor of the same relative size times the natural scale of the quantity: a gradient
component that crosses zero (``1 - r^2`` at |r| = 1) is a difference of terms of size ~1, so no
evaluation of it, autodiff included, is more accurate than ~eps times that size. The scale used is
``sqrt(F_ii)``, the standard deviation of that score component (e.g. 1/s for loc, ~1 for log_scale).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

import mlnll
import pytest
import scipy.special
import scipy.stats

from conftest import RTOL
from helpers import f64 as _f64
from helpers import jitted as _j
from helpers import maybe_jit as _maybe_jit
from mlnll._src.verify import registry
from mlnll._src.verify.check_grad import check_grad
from mlnll._src.families.cauchy import Cauchy
from mlnll._src.families.laplace import Laplace
from mlnll._src.families.log_normal import LogNormal
from mlnll._src.families.logistic import Logistic
from mlnll._src.families.student_t import StudentT
from mlnll._src.family import Family
from mlnll._src.mle import mle

N = 16
LOG_2PI = math.log(2 * math.pi)


# -- plain textbook formulas (jax.numpy, float64): the autodiff oracle ------------------------------
#
# The check cases' ``plain_log_prob`` (the textbook formula of each family, at raw outputs
# ``(loc, log_scale)`` or ``(loc, log_scale, log_df)``): one copy of each, shared with the
# conformance suite.

_CASES = {case.name: case for case in registry.builtin_cases()}
PLAIN = {kind: _CASES[name].plain_log_prob for kind, name in
         [("laplace", "Laplace"), ("cauchy", "Cauchy"), ("logistic", "Logistic"), ("t", "StudentT"),
          ("lognormal", "LogNormal")]}


# -- the table ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    """A family with its scipy counterpart and plain formula; ``fixed`` holds scale / df options."""

    id: str
    kind: str
    family: Family
    scale: float | None = None
    df: float | None = None

    @property
    def free(self) -> tuple[str, ...]:
        names = ["loc"] + ([] if self.scale else ["log_scale"])
        if self.kind == "t" and self.df is None:
            names.append("log_df")
        return tuple(names)

    def pack(self, full: dict):
        """The family's raw outputs from full parameters (loc, log_scale, log_df)."""
        out = tuple(full[n] for n in self.free)
        return out[0] if len(out) == 1 else out

    def full(self, outputs) -> dict:
        """Full raw parameters from the family's outputs (fixed ones filled in), as arrays."""
        leaves = (outputs,) if len(self.free) == 1 else tuple(outputs)
        full = dict(zip(self.free, leaves))
        like = jnp.asarray(full["loc"])
        if "log_scale" not in full:
            full["log_scale"] = jnp.full_like(like, math.log(self.scale))
        if self.kind == "t" and "log_df" not in full:
            full["log_df"] = jnp.full_like(like, math.log(self.df))
        return full

    def nu(self, full) -> jax.Array | None:
        if self.kind != "t":
            return None
        return jnp.full_like(full["loc"], self.df) if self.df is not None else jnp.exp(full["log_df"])

    def plain(self, outputs, y):
        """The plain log-density at the family's outputs (autodiff goes through the free ones)."""
        full = self.full(outputs)
        raw = (full["loc"], full["log_scale"]) + ((full["log_df"],) if self.kind == "t" else ())
        return PLAIN[self.kind](raw, y)

    def scipy(self, outputs):
        """The frozen scipy.stats distribution at these outputs (float64)."""
        full = {k: np.asarray(v, np.float64) for k, v in self.full(outputs).items()}
        loc, scale = full["loc"], np.exp(full["log_scale"])
        if self.kind == "laplace":
            return scipy.stats.laplace(loc, scale)
        if self.kind == "cauchy":
            return scipy.stats.cauchy(loc, scale)
        if self.kind == "logistic":
            return scipy.stats.logistic(loc, scale)
        if self.kind == "t":
            return scipy.stats.t(np.asarray(self.nu(self.full(outputs)), np.float64), loc, scale)
        return scipy.stats.lognorm(scale, scale=np.exp(loc))

    def draw(self, key, dtype, n=N, log_df=(math.log(0.7), math.log(30.0))):
        """Random outputs and targets drawn from the family, in ``dtype``.

        df stays below 30 by default: beyond, the plain formula's (di/tri)gamma differences lose
        digits themselves; large df is tested against mpmath.
        """
        kl, ks, kd, ky = jax.random.split(key, 4)
        full = {"loc": jax.random.normal(kl, (n,), jnp.float64),
                "log_scale": 0.7 * jax.random.normal(ks, (n,), jnp.float64),
                "log_df": jax.random.uniform(kd, (n,), jnp.float64, *log_df)}
        if self.scale is not None:
            full["log_scale"] = jnp.full((n,), math.log(self.scale))
        if self.df is not None:
            full["log_df"] = jnp.full((n,), math.log(self.df))
        s = jnp.exp(full["log_scale"])
        noise = {
            "laplace": lambda: jax.random.laplace(ky, (n,), jnp.float64),
            "cauchy": lambda: jax.random.cauchy(ky, (n,), jnp.float64),
            "logistic": lambda: jax.random.logistic(ky, (n,), jnp.float64),
            "t": lambda: jax.random.t(ky, jnp.exp(full["log_df"]), (n,), jnp.float64),
            "lognormal": lambda: jax.random.normal(ky, (n,), jnp.float64),
        }[self.kind]()
        y = full["loc"] + s * noise
        if self.kind == "lognormal":
            y = jnp.exp(y)
        return jax.tree.map(lambda a: a.astype(dtype), self.pack(full)), y.astype(dtype)


SPECS = [
    Spec("Laplace", "laplace", Laplace()),
    Spec("Laplace(scale=0.5)", "laplace", Laplace(scale=0.5), scale=0.5),
    Spec("Cauchy", "cauchy", Cauchy()),
    Spec("Cauchy(scale=2.0)", "cauchy", Cauchy(scale=2.0), scale=2.0),
    Spec("Logistic", "logistic", Logistic()),
    Spec("Logistic(scale=0.3)", "logistic", Logistic(scale=0.3), scale=0.3),
    Spec("StudentT", "t", StudentT()),
    Spec("StudentT(df=4.0)", "t", StudentT(df=4.0), df=4.0),
    Spec("StudentT(scale=1.5)", "t", StudentT(scale=1.5), scale=1.5),
    Spec("StudentT(df=2.5,scale=0.5)", "t", StudentT(df=2.5, scale=0.5), df=2.5, scale=0.5),
    Spec("LogNormal", "lognormal", LogNormal()),
    Spec("LogNormal(scale=0.7)", "lognormal", LogNormal(scale=0.7), scale=0.7),
]
BY_ID = {s.id: s for s in SPECS}
FREE = [s for s in SPECS if s.scale is None and s.df is None]
SMOOTH = [s for s in FREE if s.kind != "laplace"]  # the Laplace Hessian has a point mass
FIXED = [s for s in SPECS if s.scale is not None or s.df is not None]
ids = lambda specs: [s.id for s in specs]  # noqa: E731


def _wide(tree):
    return jax.tree.map(lambda a: jnp.asarray(a).astype(jnp.float64), tree)


def _score_scales(spec: Spec, outputs) -> list[np.ndarray]:
    """sqrt of the Fisher diagonal per free output: the natural size of each score component."""
    fisher = _f64(_j(spec.family, "fisher")(_wide(outputs)))
    diag = fisher[..., None] if fisher.ndim == 1 else np.diagonal(fisher, axis1=-2, axis2=-1)
    return [np.sqrt(diag[..., i]) for i in range(diag.shape[-1])]


def _mp_t_logpdf(y, loc, scale, nu):
    y, loc, scale, nu = (mpmath.mpf(float(v)) for v in (y, loc, scale, nu))
    r = (y - loc) / scale
    return (mpmath.loggamma((nu + 1) / 2) - mpmath.loggamma(nu / 2) - mpmath.log(nu * mpmath.pi) / 2
            - mpmath.log(scale) - (nu + 1) / 2 * mpmath.log1p(r * r / nu))


# -- log_prob equals scipy ----------------------------------------------------------------------


def _assert_log_prob_matches(spec: Spec, outputs, y, got, rtol):
    """|got - oracle| <= rtol (|oracle| + 1 + |log_scale|): every term carries its own rounding."""
    got, want = _f64(got), spec.scipy(outputs).logpdf(_f64(y))
    floor = rtol * (1 + np.abs(_f64(spec.full(outputs)["log_scale"])))
    if spec.kind == "t":
        # scipy.stats.t.logpdf is itself off by up to ~7e-12 (relative) for df in 1..10 (its
        # log-gamma difference cancels): mpmath is the oracle, and scipy is allowed its own error.
        full = spec.full(outputs)
        with mpmath.workdps(40):
            exact = np.array([float(_mp_t_logpdf(yy, m, math.exp(ls), nu)) for yy, m, ls, nu in
                              zip(_f64(y), _f64(full["loc"]), _f64(full["log_scale"]), _f64(spec.nu(full)))])
        assert np.all(np.abs(got - exact) <= rtol * np.abs(exact) + floor), (got, exact)
        floor = floor + np.abs(want - exact)
    assert np.all(np.abs(got - want) <= rtol * np.abs(want) + floor), (got, want)


# jit on and off for the families with free parameters; the fixed variants run under jit only
# (they differ from the free ones only in how outputs are unpacked).
JIT_CASES = [(s, j) for s in SPECS for j in ([False, True] if s in FREE else [True])]
JIT_IDS = [f"{s.id}-{'jit' if j else 'eager'}" for s, j in JIT_CASES]
# The conformance suite compares log_prob with scipy for the check cases (Laplace, Laplace(scale=1.0),
# Cauchy, Logistic, StudentT, LogNormal; eager and jit, float32 and float64) within
# 4 RTOL max(|log p|, 1), tighter than here; what it does not cover stays: the other fixed-parameter
# variants, and StudentT, judged here against mpmath as well as scipy.
LOG_PROB_CASES = [(s, j) for s, j in JIT_CASES if s.kind == "t" or s not in FREE]
LOG_PROB_IDS = [f"{s.id}-{'jit' if j else 'eager'}" for s, j in LOG_PROB_CASES]


@pytest.mark.parametrize(("spec", "use_jit"), LOG_PROB_CASES, ids=LOG_PROB_IDS)
def test_log_prob_matches_scipy(spec, dtype, use_jit):
    outputs, y = spec.draw(jax.random.PRNGKey(0), dtype)
    got = _maybe_jit(spec.family.log_prob, use_jit)(outputs, y)
    assert got.dtype == dtype and got.shape == (N,)
    _assert_log_prob_matches(spec, outputs, y, got, RTOL[dtype] * 4)


EXTREME = {
    # (loc, log_scale, y): tiny and huge scales, targets far away in scale units.
    "loc": [0.0, 1e4, 1e30, -5.0, 0.0, 2.0, 3.0],
    "log_scale": [-80.0, 80.0, 60.0, 0.0, 30.0, 0.5, -700.0],
    "y": [1e-35, -1e4, -1e30, 5.0, 1e13, 2.0, 3.0 + 1e-300],
}


MP_LOG_PDF = {
    "laplace": lambda r, ls: -abs(r) - ls - mpmath.log(2),
    "cauchy": lambda r, ls: -mpmath.log(mpmath.pi) - ls - mpmath.log1p(r * r),
    "logistic": lambda r, ls: -r - ls - 2 * mpmath.log1p(mpmath.exp(-r)),
}


@pytest.mark.parametrize("kind", ["laplace", "cauchy", "logistic"])
def test_log_prob_matches_mpmath_at_extreme_scales(kind):
    # mpmath, not scipy: scipy.stats.laplace.logpdf takes log(pdf), so it returns -inf at r = -1.8e4
    # (pdf underflows), and scipy.stats.logistic.logpdf overflows exp(-r) at r = -1e4.
    spec = next(s for s in SPECS if s.kind == kind and s.scale is None)
    outputs = (jnp.array(EXTREME["loc"]), jnp.array(EXTREME["log_scale"]))
    y = jnp.array(EXTREME["y"])
    got = _f64(_j(spec.family, "log_prob")(outputs, y))
    with mpmath.workdps(60):
        want = []
        for yy, m, ls in zip(EXTREME["y"], EXTREME["loc"], EXTREME["log_scale"]):
            r = (mpmath.mpf(yy) - mpmath.mpf(m)) * mpmath.exp(-mpmath.mpf(ls))
            want.append(float(MP_LOG_PDF[kind](r, mpmath.mpf(ls))))
    np.testing.assert_allclose(got, np.array(want), rtol=1e-14)


@pytest.mark.parametrize("nu", [0.5, 1.0, 3.0, 7.0, 29.9, 30.0, 1e3, 1e6])
def test_student_t_log_prob_matches_mpmath_for_every_df(nu):
    # At df = 1e6 the log-gamma difference of the textbook formula loses ~10 digits; ours does not.
    y = np.array([0.0, 0.3, 1.7, 25.0, -1e5, 1e30])
    loc, log_scale = np.array([0.0, 0.1, -0.5, 0.0, 2.0, 0.0]), np.array([0.0, -80.0, 0.3, 5.0, 0.0, 80.0])
    outputs = (jnp.asarray(loc), jnp.asarray(log_scale), jnp.full(6, math.log(nu)))
    got = _f64(_j(StudentT(), "log_prob")(outputs, jnp.asarray(y)))
    with mpmath.workdps(40):
        want = np.array([float(_mp_t_logpdf_raw(a, mpmath.mpf(b), mpmath.mpf(c), mpmath.mpf(math.log(nu))))
                         for a, b, c in zip(y, loc, log_scale)])
    np.testing.assert_allclose(got, want, rtol=1e-14)
    fixed = _f64(_j(StudentT(df=nu), "log_prob")(outputs[:2], jnp.asarray(y)))
    with mpmath.workdps(40):
        want_fixed = np.array([float(_mp_t_logpdf(a, b, mpmath.exp(c), nu)) for a, b, c in zip(y, loc, log_scale)])
    np.testing.assert_allclose(fixed, want_fixed, rtol=1e-14)


def test_log_normal_log_prob_at_extreme_scales():
    loc = [0.0, 50.0, -50.0, 0.0, 80.0, 1.0]
    log_scale = [-80.0, 80.0, 0.0, 2.0, -30.0, 700.0]
    y = [1.0 + 1e-12, 1e-30, 1e30, 3e-300, 1e35, 1e300]
    got = _f64(_j(LogNormal(), "log_prob")((jnp.array(loc), jnp.array(log_scale)), jnp.array(y)))
    with mpmath.workdps(60):  # (scipy's lognorm overflows squaring at log_scale = 700)
        want = []
        for m, ls, yy in zip(loc, log_scale, y):
            ly = mpmath.log(mpmath.mpf(yy))
            r = (ly - m) * mpmath.exp(-mpmath.mpf(ls))
            want.append(float(-r * r / 2 - ls - mpmath.log(2 * mpmath.pi) / 2 - ly))
    # rtol 1e-12: at y = 1e35, loc = 80 the difference log y - loc = 0.59 is conditioned ~1e2.
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12)


def test_cauchy_and_student_t_survive_float32_overflow_of_r_squared():
    # r = 1e30: r^2 overflows float32, log(1 + r^2) = 138.16 does not.
    loc, ls, y = jnp.zeros(2, jnp.float32), jnp.zeros(2, jnp.float32), jnp.array([1e30, -1e36], jnp.float32)
    got = _f64(_j(Cauchy(), "log_prob")((loc, ls), y))
    np.testing.assert_allclose(got, scipy.stats.cauchy.logpdf(_f64(y)), rtol=RTOL[np.dtype("float32")])
    got_t = _f64(StudentT(df=3.0).log_prob((loc, ls), y))
    np.testing.assert_allclose(got_t, scipy.stats.t.logpdf(_f64(y), 3.0), rtol=RTOL[np.dtype("float32")])
    for fam, out in [(Cauchy(), (loc, ls)), (StudentT(), (loc, ls, jnp.zeros(2, jnp.float32)))]:
        for g in jax.tree.leaves(_j(fam, "grad")(out, y)):
            assert np.all(np.isfinite(_f64(g)))


# -- closed-form gradients equal jax.grad of the plain formula ----------------------------------


def _assert_grad_matches(spec, outputs, got, want, rtol):
    scales = _score_scales(spec, outputs)
    for g, w, scale in zip(jax.tree.leaves(got), jax.tree.leaves(want), scales):
        g, w = _f64(g), _f64(w)
        assert np.all(np.abs(g - w) <= rtol * (np.abs(w) + scale)), (spec.id, g, w)


# Kept for every variant: the conformance suite judges the same comparison within
# 8 RTOL max(|w|, sqrt(F_ii)), up to twice this test's 4 RTOL (|w| + sqrt(F_ii)).
@pytest.mark.parametrize(("spec", "use_jit"), JIT_CASES, ids=JIT_IDS)
def test_grad_matches_autodiff_of_plain_formula(spec, dtype, use_jit):
    outputs, y = spec.draw(jax.random.PRNGKey(1), dtype)
    got = _maybe_jit(spec.family.grad, use_jit)(outputs, y)
    for g in jax.tree.leaves(got):
        assert g.dtype == dtype and g.shape == (N,)
    want = jax.jit(jax.vmap(jax.grad(lambda o, b: -spec.plain(o, b))))(_wide(outputs), _wide(y))
    _assert_grad_matches(spec, outputs, got, want, RTOL[dtype] * 4)


@pytest.mark.parametrize("spec", FREE, ids=ids(FREE))
def test_check_grad_passes_on_random_inputs(spec):
    # check_grad: the closed form against jax.grad of the family's own (stable) formula, fourth-order
    # finite differences, and fisher against its expected-Hessian quadrature, in float64.
    outputs, y = spec.draw(jax.random.PRNGKey(2), np.dtype("float64"))
    result = check_grad(spec.family, outputs, y)
    assert result.grad_rel_err <= 1e-12 and result.fd_rel_err <= 1e-7, result
    if spec.kind != "laplace":
        assert result.fisher_rel_err <= 1e-12, result


def test_laplace_grad_at_the_kink_is_the_least_norm_subgradient():
    loc, ls = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    y = loc  # y = loc exactly
    d_loc, d_ls = _j(Laplace(), "grad")((loc, ls), y)
    np.testing.assert_array_equal(d_loc, [0.0, 0.0])
    np.testing.assert_array_equal(d_ls, [1.0, 1.0])
    # log_prob writes |r| as r sign(r): autodiff picks the same subgradient (jnp.abs would give +1/b).
    auto = jax.jit(jax.vmap(jax.grad(lambda o, b: -Laplace().log_prob(o, b))))((loc, ls), y)
    np.testing.assert_array_equal(auto[0], [0.0, 0.0])
    assert float(jax.grad(lambda m: -PLAIN["laplace"]((m, 0.5), 2.0))(2.0)) == -math.exp(-0.5)


@pytest.mark.parametrize("nu", [30.0, 1e3, 1e6])
def test_student_t_grad_matches_mpmath_at_large_df(nu):
    # The plain formula's digamma difference cancels at large df; mpmath differentiates exactly.
    y = np.array([0.0, 0.5, 1.3, 2.0, 7.0, -40.0])
    loc, log_scale = np.zeros(6), np.array([0.0, 0.2, -0.1, 0.0, 0.0, 1.0])
    outputs = (jnp.asarray(loc), jnp.asarray(log_scale), jnp.full(6, math.log(nu)))
    got = _j(StudentT(), "grad")(outputs, jnp.asarray(y))
    want = np.zeros((3, 6))
    with mpmath.workdps(50):
        for j, (yy, m, s) in enumerate(zip(y, loc, log_scale)):
            point = (mpmath.mpf(m), mpmath.mpf(s), mpmath.mpf(math.log(nu)))
            for i in range(3):
                order = tuple(int(k == i) for k in range(3))
                want[i, j] = -float(mpmath.diff(lambda a, b, c: _mp_t_logpdf_raw(yy, a, b, c), point, order))
    _assert_grad_matches(BY_ID["StudentT"], outputs, got, tuple(want), 1e-13)


def _mp_t_logpdf_raw(y, loc, log_scale, log_df):
    """The t log-density in mpmath at raw outputs (loc, log_scale, log_df)."""
    nu, r = mpmath.exp(log_df), (mpmath.mpf(float(y)) - loc) / mpmath.exp(log_scale)
    return (mpmath.loggamma((nu + 1) / 2) - mpmath.loggamma(nu / 2) - mpmath.log(nu * mpmath.pi) / 2
            - log_scale - (nu + 1) / 2 * mpmath.log1p(r * r / nu))


# -- Fisher information ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SMOOTH, ids=ids(SMOOTH))
def test_fisher_equals_expected_hessian_of_plain_formula(spec):
    # df <= 10: beyond, the plain formula's trigamma difference loses ~1e-12 itself (the large-df
    # information is checked against mpmath below).
    outputs, _ = spec.draw(jax.random.PRNGKey(3), np.dtype("float64"), log_df=(math.log(0.7), math.log(10.0)))
    nodes, weights = _j(spec.family, "expectation_nodes")(outputs)
    flat = lambda o: jnp.stack(jax.tree.leaves(o))  # noqa: E731
    unflat = lambda v: v[0] if len(spec.free) == 1 else tuple(v)  # noqa: E731
    hess = jax.jit(jax.vmap(jax.vmap(jax.hessian(lambda v, b: -spec.plain(unflat(v), b))), in_axes=(None, 0)))
    h = hess(flat(outputs).T, nodes)  # [K, n, P, P]
    h = jnp.where(weights[:, :, None, None] > 0, h, 0.0)
    want = _f64(jnp.einsum("kn,knpq->npq", weights, h))
    got = _f64(_j(spec.family, "fisher")(outputs)).reshape(want.shape)
    root = np.sqrt(np.abs(np.diagonal(want, axis1=1, axis2=2)))
    assert np.all(np.abs(got - want) <= 1e-12 * root[:, :, None] * root[:, None, :]), (got, want)


@pytest.mark.parametrize("spec", FIXED, ids=ids(FIXED))
def test_fixed_parameters_keep_the_sub_matrix_of_the_free_fisher(spec):
    # A known parameter drops its row and column (the information of the rest is unchanged).
    outputs, _ = spec.draw(jax.random.PRNGKey(13), np.dtype("float64"))
    free_spec = next(s for s in FREE if s.kind == spec.kind)
    full = spec.full(outputs)
    big = _f64(_j(free_spec.family, "fisher")(free_spec.pack(full)))
    keep = [free_spec.free.index(n) for n in spec.free]
    want = big[:, keep][:, :, keep]
    got = _f64(_j(spec.family, "fisher")(outputs)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-15)


@pytest.mark.parametrize("spec", [BY_ID["Laplace"], BY_ID["Laplace(scale=0.5)"]], ids=lambda s: s.id)
def test_laplace_fisher_equals_expected_outer_product_of_scores(spec):
    # The Hessian of |y - loc| in loc is a point mass at y = loc that autodiff sees as 0, so the
    # information is checked as E[grad grad^T] (with the autodiff gradient of the plain formula).
    outputs, _ = spec.draw(jax.random.PRNGKey(4), np.dtype("float64"))
    nodes, weights = _j(spec.family, "score_nodes")(outputs)
    score = jax.jit(jax.vmap(jax.vmap(jax.grad(lambda o, b: -spec.plain(o, b))), in_axes=(None, 0)))(outputs, nodes)
    s = jnp.stack(jax.tree.leaves(score), -1)  # [K, n, P]
    want = _f64(jnp.einsum("kn,knp,knq->npq", weights, s, s))
    got = _f64(_j(spec.family, "fisher")(outputs)).reshape(want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    # and the autodiff expected Hessian misses exactly the loc-loc point mass 1/b^2
    hess_ll = jax.jit(jax.vmap(jax.vmap(jax.hessian(lambda o, b: -spec.plain(o, b))), in_axes=(None, 0)))(outputs, nodes)
    first = jax.tree.leaves(hess_ll)[0]
    np.testing.assert_array_equal(_f64(first), 0.0)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_quadrature_rules_integrate_known_moments(spec):
    # The rule behind fisher's check, against scipy: total mass 1, and E[f(y)] for an f with a
    # known closed form: E|r| for Laplace (1), E[1 / (1 + r^2)] for Cauchy (1/2), E[r^2] for
    # Logistic (pi^2/3), E[log1p(r^2/nu)] for t (digamma((nu+1)/2) - digamma(nu/2)), E[log y] for
    # LogNormal (loc).
    outputs, _ = spec.draw(jax.random.PRNGKey(5), np.dtype("float64"))
    rule = "score_nodes" if spec.kind == "laplace" else "expectation_nodes"
    nodes, weights = _j(spec.family, rule)(outputs)
    np.testing.assert_allclose(_f64(jnp.sum(weights, 0)), 1.0, rtol=1e-14)
    full = {k: _f64(v) for k, v in spec.full(outputs).items()}
    r = (_f64(nodes) - full["loc"]) / np.exp(full["log_scale"])
    w = _f64(weights)
    if spec.kind == "laplace":
        got, want = np.sum(w * np.abs(r), 0), 1.0
    elif spec.kind == "cauchy":
        got, want = np.sum(w / (1 + r * r), 0), 0.5
    elif spec.kind == "logistic":
        got, want = np.sum(w * r * r, 0), math.pi**2 / 3
    elif spec.kind == "t":
        nu = _f64(spec.nu(spec.full(outputs)))
        got = np.sum(w * np.log1p(r * r / nu), 0)
        want = scipy.special.digamma((nu + 1) / 2) - scipy.special.digamma(nu / 2)
    else:
        got, want = np.sum(w * np.log(_f64(nodes)), 0), full["loc"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("nu", [0.5, 1.0, 2.0, 7.5, 59.0, 60.5, 1e3, 1e6])
def test_student_t_fisher_matches_mpmath(nu):
    # The log_df entry x^2 (trigamma(x) - trigamma(x + 1/2)) - x (2x + 5)/((2x + 1)(2x + 3)), x = nu/2,
    # is ~7/(2 nu^2) out of two terms near 1/2: evaluated in mpmath at 50 digits as the oracle.
    log_scale = 0.3
    got = _f64(_j(StudentT(), "fisher")((jnp.zeros(1), jnp.full(1, log_scale), jnp.full(1, math.log(nu)))))[0]
    with mpmath.workdps(50):
        x = mpmath.mpf(nu) / 2
        i_dd = x**2 * (mpmath.polygamma(1, x) - mpmath.polygamma(1, x + 0.5)) - x * (2 * x + 5) / ((2 * x + 1) * (2 * x + 3))
        v = mpmath.mpf(nu)
        want = np.array([[float((v + 1) / (v + 3) * mpmath.exp(-2 * log_scale)), 0, 0],
                         [0, float(2 * v / (v + 3)), float(-2 * v / ((v + 1) * (v + 3)))],
                         [0, float(-2 * v / ((v + 1) * (v + 3))), float(i_dd)]])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


def test_student_t_fisher_at_df_1e6_equals_expected_score_outer_product():
    # At nu = 1e6 the expected Hessian cancels ~1e6-fold, E[grad grad^T] does not: quadrature of the
    # closed-form gradient (itself checked against mpmath above) over the expectation nodes.
    # (A tiny scale sits at loc = 0: at loc = -1 the nodes -1 + 4e-18 t could not be told apart.)
    outputs = (jnp.array([0.5, 0.0]), jnp.array([0.2, -40.0]), jnp.log(jnp.array([1e6, 3e5])))
    nodes, weights = _j(StudentT(), "expectation_nodes")(outputs)
    g = jnp.stack(_j(StudentT(), "grad")(jax.tree.map(lambda a: jnp.broadcast_to(a, nodes.shape), outputs), nodes), -1)
    want = _f64(jnp.einsum("kn,knp,knq->npq", weights, g, g))
    got = _f64(_j(StudentT(), "fisher")(outputs))
    root = np.sqrt(np.diagonal(want, axis1=1, axis2=2))
    assert np.all(np.abs(got - want) <= 1e-12 * root[:, :, None] * root[:, None, :]), (got, want)


# -- entropy, KL -------------------------------------------------------------------------------------


# Kept for every variant: df up to 1e6 (the check cases stop at 200), the fixed variants, and a
# tolerance that is tighter than the conformance suite's 8 RTOL max(|H|, 1) where |H| > 1 + |log_scale|.
@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_entropy_matches_scipy(spec, dtype):
    outputs, _ = spec.draw(jax.random.PRNGKey(6), dtype, log_df=(math.log(0.5), math.log(1e6)))
    got = _j(spec.family, "entropy")(outputs)
    assert got.dtype == dtype and got.shape == (N,)
    want = spec.scipy(outputs).entropy()
    floor = 1 + np.abs(_f64(spec.full(outputs)["log_scale"]))
    assert np.all(np.abs(_f64(got) - want) <= RTOL[dtype] * 4 * (np.abs(want) + floor))


MC_SAMPLES = 200_000


@pytest.mark.parametrize("kind", ["laplace", "cauchy", "lognormal"])
def test_kl_matches_monte_carlo(kind):
    spec = next(s for s in SPECS if s.kind == kind and s.scale is None)
    p = (jnp.array([0.0, 1.0, 0.2, -3.0]), jnp.array([0.0, -0.5, 0.4, 1.0]))
    q = (jnp.array([0.5, -1.0, 0.2, 2.0]), jnp.array([0.3, 0.2, -0.6, 0.0]))
    fam = spec.family
    y = _j(fam, "sample")(jax.random.PRNGKey(7), p, sample_shape=(MC_SAMPLES,))
    ratio = _f64(_j(fam, "log_prob")(p, y) - _j(fam, "log_prob")(q, y))
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(MC_SAMPLES)
    assert np.all(np.abs(_f64(fam.kl(p, q)) - mc) < 5 * se), (fam.kl(p, q), mc, se)


def _mp_kl(kind, mp_, lp, mq, lq):
    """KL(p || q) from the textbook closed forms, in mpmath."""
    sp, sq, d = mpmath.exp(lp), mpmath.exp(lq), abs(mp_ - mq)
    if kind == "laplace":
        return mpmath.log(sq / sp) + d / sq + sp / sq * mpmath.exp(-d / sp) - 1
    if kind == "cauchy":
        return mpmath.log(((sp + sq) ** 2 + d**2) / (4 * sp * sq))
    return mpmath.log(sq / sp) + (sp**2 + d**2) / (2 * sq**2) - mpmath.mpf(1) / 2


@pytest.mark.parametrize("kind", ["laplace", "cauchy", "lognormal"])
@pytest.mark.parametrize("gap", [0.0, 1e-7, 1e-3, 0.5, 3.0, 60.0])
def test_kl_is_accurate_when_close_and_when_far(kind, gap):
    # Nearly equal distributions have KL ~ gap^2 (1e-14): the textbook forms lose it to cancellation.
    fam = next(s for s in SPECS if s.kind == kind and s.scale is None).family
    mp_, lp = np.array([0.0, 1.0, -2.0, 0.0]), np.array([0.0, -1.0, 2.0, -80.0])
    mq, lq = mp_ + gap * np.array([1.0, 0.0, 1.0, 0.5]), lp + gap * np.array([0.0, 1.0, -1.0, 0.5])
    for dtype, tol in [(jnp.float64, 1e-13), (jnp.float32, 4e-6)]:
        cast = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        got = _f64(fam.kl((cast(mp_), cast(lp)), (cast(mq), cast(lq))))
        with mpmath.workdps(60):
            rounded = [[mpmath.mpf(float(v)) for v in _f64(cast(a))] for a in (mp_, lp, mq, lq)]
            want = np.array([float(_mp_kl(kind, *args)) for args in zip(*rounded)])
        # A KL beyond the dtype's range (4e53 at log_scale -58 in float32) is inf, correctly.
        want = np.where(want > np.finfo(dtype).max, np.inf, want)
        np.testing.assert_allclose(got, want, rtol=tol, atol=0)


@pytest.mark.parametrize("family", [Logistic(), StudentT(), StudentT(df=3.0)], ids=repr)
def test_kl_without_closed_form_raises(family):
    outputs = BY_ID["Logistic" if isinstance(family, Logistic) else "StudentT"].draw(jax.random.PRNGKey(8), np.dtype("float64"))[0]
    if isinstance(family, StudentT) and family.df is not None:
        outputs = outputs[:2]
    with pytest.raises(NotImplementedError, match="no closed form"):
        family.kl(outputs, outputs)


# -- mean, sample, params --------------------------------------------------------------------------


# Fixed-parameter variants share the sampling code; one of them (loc alone) stays in the table.
SAMPLED = FREE + [BY_ID["Laplace(scale=0.5)"]]


@pytest.mark.parametrize("spec", SAMPLED, ids=ids(SAMPLED))
def test_mean_params_and_sample_moments(spec):
    outputs, _ = spec.draw(jax.random.PRNGKey(9), np.dtype("float64"), log_df=(math.log(5.0), math.log(40.0)))
    fam, dist = spec.family, spec.scipy(outputs)
    full = spec.full(outputs)
    params = _j(fam, "params")(outputs)
    np.testing.assert_allclose(_f64(params["scale"]), np.exp(_f64(full["log_scale"])), rtol=1e-15)
    np.testing.assert_allclose(_f64(params["loc"]), _f64(full["loc"]), rtol=0)
    if spec.kind == "t":
        np.testing.assert_allclose(_f64(params["df"]), _f64(spec.nu(full)), rtol=1e-15)
    n = 50_000
    draws = _f64(_j(fam, "sample")(jax.random.PRNGKey(10), outputs, sample_shape=(n,)))
    assert draws.shape == (n, N)
    if spec.kind == "cauchy":
        assert np.all(np.isnan(_f64(_j(fam, "mean")(outputs))))
    else:
        np.testing.assert_allclose(_f64(_j(fam, "mean")(outputs)), dist.mean(), rtol=1e-14)
    if spec.kind == "cauchy" or (spec.df is not None and spec.df <= 4):
        # No (finite fourth) moments: compare quartiles, with standard error sqrt(q (1 - q) / n) / density.
        for qq in (0.25, 0.5, 0.75):
            x_q = dist.ppf(qq)
            se = math.sqrt(qq * (1 - qq) / n) / dist.pdf(x_q)
            assert np.all(np.abs(np.quantile(draws, qq, axis=0) - x_q) < 5 * se)
        return
    mean, var = dist.mean(), dist.var()
    if spec.kind == "lognormal":  # heavy right tail: check the moments of log y instead
        draws, mean, var = np.log(draws), _f64(full["loc"]), np.exp(2 * _f64(full["log_scale"]))
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(var / n))
    # var of the sample variance = (mu4 - var^2) / n; mu4 from scipy's excess kurtosis
    kurt = 0.0 if spec.kind == "lognormal" else dist.stats(moments="k")
    assert np.all(np.abs(draws.var(0) - var) < 5 * var * np.sqrt((kurt + 2) / n))


def test_mean_is_nan_where_it_does_not_exist():
    outputs = (jnp.zeros(3), jnp.zeros(3), jnp.log(jnp.array([0.5, 1.0, 1.5])))
    np.testing.assert_array_equal(np.isnan(_f64(_j(StudentT(), "mean")(outputs))), [True, True, False])
    assert np.all(np.isnan(_f64(StudentT(df=1.0).mean(outputs[:2]))))


# -- constant terms and the closed-form MLE --------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_constant_terms_are_the_output_free_part(spec):
    outputs, y = spec.draw(jax.random.PRNGKey(11), np.dtype("float64"))
    rest = lambda o: _j(spec.family, "log_prob")(o, y) - _j(spec.family, "constant_terms")(y)  # noqa: E731
    const = _f64(_j(spec.family, "constant_terms")(y))
    assert const.shape == (N,)
    # gradients unchanged, and the constant does not move with the outputs
    g1 = jax.grad(lambda o: jnp.sum(rest(o)))(outputs)
    g2 = jax.grad(lambda o: jnp.sum(_j(spec.family, "log_prob")(o, y)))(outputs)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(a, b)
    shifted = jax.tree.map(lambda a: a + 0.37, outputs)
    np.testing.assert_array_equal(_f64(_j(spec.family, "constant_terms")(y)), const)
    assert not np.allclose(_f64(rest(shifted)), _f64(rest(outputs)))


def test_constant_terms_leave_the_familiar_losses():
    loc, y = jnp.array([0.5, -1.0, 3.0]), jnp.array([1.0, 1.0, -2.0])
    fam = Laplace(scale=1.0)
    np.testing.assert_allclose(_j(fam, "log_prob")(loc, y) - _j(fam, "constant_terms")(y), -jnp.abs(y - loc), rtol=1e-15)
    t = StudentT(df=5.0, scale=1.0)
    np.testing.assert_allclose(_j(t, "log_prob")(loc, y) - _j(t, "constant_terms")(y), -3 * jnp.log1p((y - loc) ** 2 / 5), rtol=1e-14)
    # LogNormal at y <= 0: log_prob is -inf and stays -inf (not NaN) once the constant is removed
    ln = LogNormal()
    yy = jnp.array([-1.0, 0.0, 2.0])
    out = (jnp.zeros(3), jnp.zeros(3))
    np.testing.assert_array_equal(_f64(_j(ln, "log_prob")(out, yy) - _j(ln, "constant_terms")(yy))[:2], -np.inf)


MLE_SPECS = [s for s in SPECS if s.kind in ("laplace", "lognormal")]


@pytest.mark.parametrize("spec", MLE_SPECS, ids=ids(MLE_SPECS))
@pytest.mark.parametrize("n", [101, 100])
def test_mle_zeroes_the_gradient_and_matches_scipy_fit(spec, n):
    outputs, _ = spec.draw(jax.random.PRNGKey(12), np.dtype("float64"), n=1)
    y = _j(spec.family, "sample")(jax.random.PRNGKey(13), outputs, sample_shape=(n, 3))[..., 0]  # [n, 3]
    est = jax.jit(lambda t: mle(spec.family, t, axis=0))(y)
    grads = _j(spec.family, "grad")(jax.tree.map(lambda a: a[None], est), y)
    for g in jax.tree.leaves(grads):
        np.testing.assert_allclose(_f64(jnp.sum(g, 0)), 0.0, atol=1e-10 * n)
    est_loc = _f64(jax.tree.leaves(est)[0])
    for j in range(3):
        col = _f64(y[:, j])
        if spec.kind == "laplace":
            # scipy's Laplace fit is the median and the mean absolute deviation from it.
            fit_loc, fit_scale = scipy.stats.laplace.fit(col)
        else:
            fit_sigma, _, fit_exp_loc = scipy.stats.lognorm.fit(col, floc=0)
            fit_loc, fit_scale = math.log(fit_exp_loc), fit_sigma
        np.testing.assert_allclose(est_loc[j], fit_loc, rtol=1e-12, atol=1e-14)
        if spec.scale is None:
            np.testing.assert_allclose(math.exp(_f64(est[1])[j]), fit_scale, rtol=1e-12)


@pytest.mark.parametrize("family", [Cauchy(), Logistic(), StudentT(), StudentT(df=3.0)], ids=repr)
def test_no_closed_form_mle(family):
    with pytest.raises(NotImplementedError, match="no closed-form"):
        mle(family, jnp.ones(5))


# -- bad inputs ---------------------------------------------------------------------------------------


def test_log_normal_outside_the_support_is_minus_inf_never_nan():
    fam = LogNormal()
    y = jnp.array([0.0, -1.0, -jnp.inf, -1e-300, 2.0])
    out = (jnp.zeros(5), jnp.zeros(5))
    lp = _f64(_j(fam, "log_prob")(out, y))
    np.testing.assert_array_equal(lp[:4], -np.inf)
    assert np.isfinite(lp[4])
    # Off the support every derivative is NaN (the one convention); masked out by nll, exactly 0.
    g = jax.grad(lambda o: mlnll.nll(fam, reduction="sum")(o, y, where=y > 0))(out)
    assert all(np.all(_f64(a)[:4] == 0) and np.isfinite(_f64(a)[4]) for a in g)
    g_raw = jax.grad(lambda o: jnp.sum(_j(fam, "log_prob")(o, y)))(out)
    assert all(np.all(np.isnan(_f64(a))[:4]) for a in g_raw)
    assert all(np.all(np.isnan(_f64(a))[:4]) for a in _j(fam, "grad")(out, y))  # closed form: NaN off the support


@pytest.mark.parametrize("cls", [Laplace, Cauchy, Logistic, StudentT, LogNormal])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), True])
def test_bad_fixed_scale_raises(cls, bad):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\(scale=\.\.\.\) must be a finite positive number; got {bad!r}"):
        cls(scale=bad)


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, -3, float("inf"), float("nan")])
def test_bad_df_raises(bad):
    with pytest.raises(ValueError, match=rf"StudentT\(df=\.\.\.\) must be a finite positive number; got {bad!r}"):
        StudentT(df=bad)


def test_wrong_outputs_raise_naming_the_argument():
    with pytest.raises(TypeError, match="outputs must be a tuple"):
        Cauchy().log_prob(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(TypeError, match="takes loc alone"):
        Cauchy(scale=1.0).log_prob((jnp.zeros(3), jnp.zeros(3)), jnp.zeros(3))
    with pytest.raises(TypeError, match="log_df"):
        StudentT().log_prob((jnp.zeros(3), jnp.zeros(3), jnp.zeros(3, jnp.int32)), jnp.zeros(3))
    with pytest.raises(TypeError, match="must be a tuple \\(loc, log_scale\\)"):
        StudentT(df=3.0).log_prob((jnp.zeros(3), jnp.zeros(3), jnp.zeros(3)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"loc shape \(3,\), log_scale shape \(4,\)"):
        Laplace().log_prob((jnp.zeros(3), jnp.zeros(4)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"outputs shape \(3,\), targets shape \(2,\)"):
        Logistic().log_prob((jnp.zeros(3), jnp.zeros(3)), jnp.zeros(2))
    with pytest.raises(TypeError, match="targets must be real"):
        LogNormal().log_prob((jnp.zeros(3), jnp.zeros(3)), jnp.zeros(3, jnp.complex64))


# -- shapes, dtypes, protocol --------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SAMPLED, ids=ids(SAMPLED))
def test_shapes_broadcast_and_dtypes_are_kept(spec):
    k = len(spec.free)
    leaves = [jnp.zeros((4, 1), jnp.float32)] + [jnp.zeros((), jnp.float32)] * (k - 1)
    outputs = leaves[0] if k == 1 else tuple(leaves)
    y = jnp.ones((4, 3), jnp.float32)  # outputs [4, 1] over a row of 3 targets each (not an outer product)
    fam = spec.family
    assert _j(fam, "log_prob")(outputs, y).shape == (4, 3)
    assert all(g.shape == (4, 3) for g in jax.tree.leaves(_j(fam, "grad")(outputs, y)))
    fisher = _j(fam, "fisher")(outputs)
    assert fisher.shape == ((4, 1) if k == 1 else (4, 1, k, k)) and fisher.dtype == jnp.float32
    bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), outputs)
    assert _j(fam, "log_prob")(bf, y.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    sample = _j(fam, "sample")
    assert sample(jax.random.PRNGKey(0), bf, sample_shape=(2,)).shape == (2, 4, 1)

"""Weibull, Gumbel, AsymmetricLaplace and NormalInverseGamma: what is specific to these families.

The generic promises (frozen and hashable, log_prob against scipy and autodiff of the textbook
formula in float32 and float64 at the check cases' inputs, jacfwd and hessian, extremes, samples in
the support, targets off the support) are checked for their rows of the check table by
tests/test_conformance.py, and their Fisher information against quadrature by the check command
(tests/test_verify.py). This file keeps what is specific: scipy beyond the check table (other
quantile levels and concentrations, entropy and mean), the extremes against mpmath (huge and tiny
scales and concentrations, subnormal targets, Gumbel's doubly exponential left tail), the KL
divergences against mpmath's textbook closed forms and against quadrature, the pinball-loss
identity and quantile regression, the reductions to other families, and NormalInverseGamma's
hierarchy (its Student t marginal against quadrature), evidence regulariser and rank-3 information.

Tolerances: ``conftest.RTOL`` (the one dtype-keyed table) times a small factor for the roundings a
comparison chains, judged against the size of the terms the quantity is a difference of.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64 as _f64

F32, F64 = np.dtype("float32"), np.dtype("float64")
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
EULER = float(mp.euler)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64), dtype), tree)


def _rounded(values, dtype) -> list[float]:
    return [float(v) for v in np.asarray(np.asarray(values, np.float64), dtype)]


# -- scipy beyond the check table -------------------------------------------------------------------

# (family, raw outputs, targets, scipy frozen distribution at float64 raw outputs)
LOC = np.array([0.0, 1.5, -2.0, 0.3, 4.0])
LOG_SCALE = np.array([0.0, -1.0, 0.7, 2.0, -2.5])
Y_REAL = np.array([0.2, 1.0, -6.0, 30.0, 3.9])
LOG_K = np.array([math.log(0.3), 0.0, math.log(2.0), math.log(8.0), math.log(40.0)])
Y_POSITIVE = np.array([0.5, 0.3, 4.0, 7.3, 0.08])


def _al_scipy(tau):
    def dist(loc, log_scale):
        return scipy.stats.laplace_asymmetric(math.sqrt(tau / (1 - tau)), loc, np.exp(log_scale) / math.sqrt(tau * (1 - tau)))
    return dist


SCIPY_ROWS = [
    ("Weibull", mlnll.Weibull(), (LOG_SCALE, LOG_K), Y_POSITIVE,
     lambda ls, lk: scipy.stats.weibull_min(np.exp(lk), scale=np.exp(ls))),
    ("Weibull(concentration=0.5)", mlnll.Weibull(concentration=0.5), LOG_SCALE, Y_POSITIVE,  # fixed: log_scale alone
     lambda ls: scipy.stats.weibull_min(0.5, scale=np.exp(ls))),
    ("Gumbel", mlnll.Gumbel(), (LOC, LOG_SCALE), Y_REAL, lambda loc, ls: scipy.stats.gumbel_r(loc, np.exp(ls))),
    ("AsymmetricLaplace(quantile=0.05)", mlnll.AsymmetricLaplace(quantile=0.05), (LOC, LOG_SCALE), Y_REAL,
     _al_scipy(0.05)),
]


@DTYPES
@pytest.mark.parametrize("row", SCIPY_ROWS, ids=[r[0] for r in SCIPY_ROWS])
def test_log_prob_entropy_and_mean_match_scipy_beyond_the_check_table(row, dtype):
    _, family, outputs, y, make = row
    outputs, y = _cast(outputs, dtype), _cast(y, dtype)
    dist = make(*[_f64(a) for a in jax.tree.leaves(outputs)])
    got = family.log_prob(outputs, y)
    assert got.dtype == dtype
    want = dist.logpdf(_f64(y))
    assert np.all(np.abs(_f64(got) - want) <= 4 * RTOL[dtype] * np.maximum(np.abs(want), 1.0)), (got, want)
    for method in ("entropy", "mean"):
        got, want = _f64(getattr(family, method)(outputs)), getattr(dist, method)()
        assert np.all(np.abs(got - want) <= 8 * RTOL[dtype] * np.maximum(np.abs(want), 1.0)), (method, got, want)


# -- the extremes against mpmath ----------------------------------------------------------------------


def _mp_weibull(ls, lk, y):
    k = mp.exp(lk)
    big_l = mp.log(y) - ls
    return lk - ls + (k - 1) * big_l - mp.exp(k * big_l)


def _mp_gumbel(loc, ls, y):
    z = (y - loc) * mp.exp(-ls)
    return -z - mp.exp(-z) - ls


def _mp_asymmetric_laplace(tau):
    def log_prob(loc, ls, y):
        u = (y - loc) * mp.exp(-ls)
        return mp.log(tau * (1 - tau)) - ls - u * (tau - (1 if u < 0 else 0))
    return log_prob


# Points (raw outputs..., target); "min" is the dtype's smallest subnormal. Each row's points are
# chosen where the exact value and gradient are normal numbers of both dtypes, or the exact value
# is below minus the largest float (then -inf is the answer).
EXTREME_ROWS = [
    ("Weibull", mlnll.Weibull(), _mp_weibull, [
        (0.0, 0.0, "min"),  # the Exponential at a subnormal target: log p = -y, d/dy = -1
        (0.0, math.log(0.5), "min"), (2.0, math.log(3.0), "min"),  # (y/lam)^k underflows, finite value
        (0.0, -10.0, 1e-30),  # k = 4.5e-5: nearly log-uniform, t = -3.1e-3
        (0.0, -10.0, 1e30),
        (0.0, 15.0, 1.0000001),  # k = 3.3e6: t = 0.33
        (0.0, 15.0, 0.9999),  # t = -327: (y/lam)^k = 5e-143 (below float32's range), value -327 - ...
        (80.0, 0.0, 1e30), (-80.0, math.log(2.0), 1e-35), (60.0, 0.5, 1e27),
        (0.0, 2.0, 5e4),  # t = 80: e^t = 5e34, finite in float32 with its gradients (t e^t = 4e36)
        (0.0, 3.0, 1e30),  # t = 1388: the exact value -e^1388 is below every float: -inf
        (0.0, 100.0, 1.0),  # k = e^100 overflows float32, at y = lam: log p = 100 - 1, gradient (0, 1)
        (0.0, 100.0, 0.5),  # there below the scale: (k - 1) L = -1.9e43, -inf in float32
        (2.0, -100.0, 3.0),  # k = e^-100 flushes to 0 in float32: log p = log k - log y - 1
    ]),
    ("Gumbel", mlnll.Gumbel(), _mp_gumbel, [
        (0.0, 0.0, -60.0),  # e^60 = 1.1e26
        (0.0, 0.0, -80.0),  # e^80 = 5.5e34, finite in float32 with its gradients
        (0.0, 0.0, -800.0),  # e^800: below every float, -inf
        (0.0, 0.0, 1e30), (1e30, 60.0, 3e30), (0.0, -1e4, 0.0), (5.0, 1e4, 1e30),
        (-3e38, 88.0, 3e38),  # y - loc overflows float32: computed from halves
        (0.0, -80.0, 1e-35), (2.0, 80.0, -1e30),
    ]),
    ("AsymmetricLaplace(quantile=0.9)", mlnll.AsymmetricLaplace(quantile=0.9), _mp_asymmetric_laplace(0.9), [
        (0.0, -1e4, 1e-30),  # u = 1e-30 e^1e4: the exact value is below every float, -inf
        (5.0, 1e4, 1e30), (1e30, 60.0, -1e30), (0.0, -80.0, 1e-35), (0.0, 80.0, -1e30),
        (-3e38, 88.0, 3e38), (1.0, 0.0, 1.0 + 2**-20), (1.0, 0.0, 1.0 - 2**-20),
    ]),
]


def _target(spec, dtype):
    return float(np.finfo(dtype).smallest_subnormal) if spec == "min" else spec


def _mp_grad(log_prob, raw, y, loc_first: bool):
    """``d log p / d raw_i`` at 50 digits: mpmath's central difference of the textbook formula, with
    a step of 1e-20 in a log-parameter and 1e-20 scales in a location (``loc_first``)."""
    with mp.workdps(50):
        raw = [mp.mpf(v) for v in raw]
        grads = []
        for i in range(len(raw)):
            h = mp.mpf(1e-20) * (mp.exp(raw[1]) if loc_first and i == 0 else 1)
            grads.append(mp.diff(lambda t, i=i: log_prob(*(raw[:i] + [t] + raw[i + 1:]), mp.mpf(y)), raw[i], h=h))
        return [float(g) for g in grads]


@DTYPES
@pytest.mark.parametrize("row", EXTREME_ROWS, ids=[r[0] for r in EXTREME_ROWS])
def test_extremes_give_the_exact_value_and_gradient(row, dtype):
    _, family, log_prob, points = row
    info = np.finfo(dtype)
    columns = [_rounded([p[i] for p in points], dtype) for i in range(2)]
    ys = _rounded([_target(p[2], dtype) for p in points], dtype)
    # The targets through numpy (a conversion by XLA on a CPU would flush a subnormal one to 0).
    outputs, y = _cast(tuple(columns), dtype), jnp.asarray(np.asarray(ys, dtype))

    def value_and_grad(o, t):
        return family.log_prob(o, t), jax.grad(lambda o: jnp.sum(family.log_prob(o, t)))(o)

    with mp.workdps(50):
        want = [float(log_prob(*(mp.mpf(c[j]) for c in columns), mp.mpf(ys[j]))) for j in range(len(points))]
    # Value and gradient jitted; the Weibull's value eagerly too (XLA's eager kernels flush its
    # subnormal targets as well).
    got, grads = jax.jit(value_and_grad)(outputs, y)
    if isinstance(family, mlnll.Weibull):
        np.testing.assert_array_equal(_f64(family.log_prob(outputs, y)), _f64(got))
    for name in ("jit",):
        got, grads = _f64(got), [_f64(g) for g in grads]
        for j in range(len(points)):
            where = f"{name} {dtype} at {[c[j] for c in columns]}, y = {ys[j]}"
            if want[j] < -float(info.max):
                assert got[j] == -np.inf, (where, got[j])
                continue
            assert abs(got[j] - want[j]) <= 16 * RTOL[dtype] * max(abs(want[j]), 1.0), (where, got[j], want[j])
            exact = _mp_grad(log_prob, [c[j] for c in columns], ys[j], loc_first=not isinstance(family, mlnll.Weibull))
            for g, e in zip(grads, exact):
                assert np.isfinite(g[j]), (where, g[j], e)
                assert abs(g[j] - e) <= 16 * RTOL[dtype] * max(abs(e), 1.0), (where, g[j], e)


def test_a_subnormal_weibull_target_has_the_exact_target_gradient():
    # k = 1 at a subnormal target: d log p / dy = (k - 1)/y - k e^t / y = -1/lam exactly, where e^t / y
    # formed as a quotient would be 0/0 (XLA on a CPU flushes e^t = y / lam to 0).
    family = mlnll.Weibull()
    for dtype in (F32, F64):
        y = jnp.asarray(np.array([np.finfo(dtype).smallest_subnormal] * 2, dtype))
        outputs = _cast((np.array([0.0, math.log(2.0)]), np.zeros(2)), dtype)
        grad = jax.jit(jax.grad(lambda t: jnp.sum(family.log_prob(outputs, t))))
        np.testing.assert_allclose(_f64(grad(y)), [-1.0, -0.5], rtol=RTOL[dtype])


def test_weibull_hessian_at_the_scale_matches_the_plain_formula():
    # y = lam exactly (L = 0, a node of the expectation rule): the guards for an overflowing k must
    # leave the derivatives there alone.
    from mlnll._src.families.weibull import _textbook_log_prob

    outputs = (jnp.array([0.0, 1.5]), jnp.array([0.3, -0.7]))
    y = jnp.exp(outputs[0])
    flat = jnp.concatenate(outputs)
    unravel = lambda v: (v[:2], v[2:])  # noqa: E731
    got, want = (jax.jit(jax.hessian(lambda v, f=f: jnp.sum(f(unravel(v), y))))(flat)
                 for f in (mlnll.Weibull().log_prob, _textbook_log_prob))
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=1e-12, atol=1e-12)


# -- KL divergences ---------------------------------------------------------------------------------


def _mp_weibull_kl(ls_p, lk_p, ls_q, lk_q):
    """Bauckhage (2013), the textbook form."""
    kp, kq, lp, lq = mp.exp(lk_p), mp.exp(lk_q), mp.exp(ls_p), mp.exp(ls_q)
    return (mp.log(kp / lp**kp) - mp.log(kq / lq**kq) + (kp - kq) * (mp.log(lp) - mp.euler / kp)
            + (lp / lq) ** kq * mp.gamma(kq / kp + 1) - 1)


def _mp_gumbel_kl(mu_p, ls_p, mu_q, ls_q):
    bp, bq = mp.exp(ls_p), mp.exp(ls_q)
    return (mp.log(bq / bp) + mp.euler * (bp / bq - 1) + (mu_p - mu_q) / bq
            + mp.exp((mu_q - mu_p) / bq) * mp.gamma(bp / bq + 1) - 1)


def _mp_al_kl(tau):
    """``E_p[log p - log q]`` term by term: with ``y = mu_p + s_p u``, ``a = s_p / s_q``,
    ``c = (mu_q - mu_p) / s_p`` and ``rho_tau(v) = tau v + (-v)_+``,
    ``KL = log(s_q / s_p) - 1 + tau a (E[u] - c) + a E[(c - u)_+]``, ``E[u] = (1 - 2 tau) / (tau (1 - tau))``
    and ``E[(c - u)_+] = int_(-inf)^c F`` from the CDF F (``tau e^((1 - tau) u)`` below 0,
    ``1 - (1 - tau) e^(-tau u)`` above)."""
    def kl(mu_p, ls_p, mu_q, ls_q):
        tau_ = mp.mpf(tau)
        a, c = mp.exp(ls_p - ls_q), (mu_q - mu_p) * mp.exp(-ls_p)
        mean = (1 - 2 * tau_) / (tau_ * (1 - tau_))
        if c <= 0:
            integral = tau_ / (1 - tau_) * mp.exp((1 - tau_) * c)
        else:
            integral = tau_ / (1 - tau_) + c - (1 - tau_) / tau_ * (1 - mp.exp(-tau_ * c))
        return (ls_q - ls_p) - 1 + tau_ * a * (mean - c) + a * integral
    return kl


KL_ROWS = [("Weibull", mlnll.Weibull(), _mp_weibull_kl), ("Gumbel", mlnll.Gumbel(), _mp_gumbel_kl),
           ("AsymmetricLaplace(quantile=0.8)", mlnll.AsymmetricLaplace(quantile=0.8), _mp_al_kl(0.8))]


@pytest.mark.parametrize("row", KL_ROWS, ids=[r[0] for r in KL_ROWS])
def test_kl_is_accurate_when_close_and_when_far(row):
    # Nearly equal distributions have KL ~ gap^2 (1e-14): the textbook forms lose it to cancellation.
    # Four pairs at each gap, the gaps in one batch.
    _, family, reference = row
    gaps = np.repeat([0.0, 1e-7, 1e-3, 0.5, 3.0], 4)
    a, b = np.tile([0.0, 1.0, -2.0, 0.0], 5), np.tile([0.0, -1.0, 1.5, -3.0], 5)
    a_q, b_q = a + gaps * np.tile([1.0, 0.0, 1.0, 0.5], 5), b + gaps * np.tile([0.0, 1.0, -1.0, 0.5], 5)
    for dtype, tol in [(F64, 1e-13), (F32, 4e-6)]:
        p, q = _cast((a, b), dtype), _cast((a_q, b_q), dtype)
        kl = jax.jit(family.kl)(p, q)
        assert kl.dtype == dtype
        got = _f64(kl)
        with mp.workdps(30):
            rounded = [[mp.mpf(float(v)) for v in _f64(x)] for x in (*p, *q)]
            want = np.array([float(reference(*args)) for args in zip(*rounded)])
        # Judged against eps times the condition number: a KL far apart grows like e^x
        # (``expm1mx(x)``), whose relative error is that of x's absolute error, x ~ log KL.
        rtol = tol * np.maximum(1.0, np.log(np.maximum(want, 1.0)))
        assert np.all(np.abs(got - want) <= rtol * np.abs(want)), (dtype, got, want)


@pytest.mark.parametrize("row", KL_ROWS, ids=[r[0] for r in KL_ROWS])
def test_kl_matches_quadrature_of_the_log_densities(row):
    # scipy's adaptive quadrature of p (log p - log q), the log-densities mlnll's (the oracle of the
    # closed form is the integral itself), split at the kinks of the asymmetric Laplace.
    _, family, _ = row
    p, q = (np.array([0.3, -1.0]), np.array([0.2, 0.9])), (np.array([-0.5, 0.4]), np.array([-0.3, 0.1]))
    got = _f64(family.kl(_cast(p, F64), _cast(q, F64)))
    log_densities = jax.jit(lambda o_p, o_q, y: (family.log_prob(o_p, y), family.log_prob(o_q, y)))
    for i in range(2):
        o_p, o_q = (tuple(jnp.asarray(x[i], F64) for x in o) for o in (p, q))

        def integrand(y):
            lp, lq = (float(v) for v in log_densities(o_p, o_q, jnp.asarray(y, F64)))
            return 0.0 if lp == -math.inf else math.exp(lp) * (lp - lq)  # p = 0: no mass, whatever q is

        if isinstance(family, mlnll.Weibull):
            pieces = [0.0, np.inf]
        elif isinstance(family, mlnll.Gumbel):  # p's mass: e^-e^6 (1e-175) below, e^-80 above
            s_p = math.exp(p[1][i])
            pieces = [p[0][i] - 6 * s_p, p[0][i], p[0][i] + 10 * s_p, p[0][i] + 80 * s_p]
        else:
            pieces = [-np.inf, *sorted([p[0][i], q[0][i]]), np.inf]
        want = sum(scipy.integrate.quad(integrand, lo, hi, epsabs=1e-12, epsrel=1e-10, limit=200)[0]
                   for lo, hi in zip(pieces[:-1], pieces[1:]))
        assert abs(got[i] - want) <= 1e-8 * max(abs(want), 1e-3), (got[i], want)


# -- the pinball loss and quantile regression ---------------------------------------------------------


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_asymmetric_laplace_nll_with_unit_scale_is_the_pinball_loss_plus_a_constant(tau):
    rng = np.random.default_rng(0)
    loc, y = rng.normal(size=64), rng.normal(size=64) * 2
    y[:4] = loc[:4]  # at the kink
    u = y - loc
    pinball = u * (tau - (u < 0))
    family = mlnll.AsymmetricLaplace(quantile=tau, scale=1.0)

    @jax.jit
    def losses(m, t):
        full = mlnll.nll(family, reduction="none")
        grad = jax.grad(lambda m: jnp.sum(full(m, t)))(m)
        return full(m, t), mlnll.nll(family, reduction="none", drop_constants=True)(m, t), grad, family.grad(m, t)

    full, dropped, grad, closed = (_f64(a) for a in losses(jnp.asarray(loc), jnp.asarray(y)))
    np.testing.assert_allclose(full, pinball - math.log(tau * (1 - tau)), rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(dropped, pinball)  # the constant is never added
    # The gradient in loc is the pinball loss's: -(tau - 1[u < 0]), and 0 at the kink (least norm).
    np.testing.assert_array_equal(grad, np.where(u == 0, 0.0, -(tau - (u < 0))))
    np.testing.assert_array_equal(closed, grad)


def _lp_quantile_regression(design, y, tau):
    """The exact linear quantile regression: ``min_beta sum rho_tau(y - design @ beta)`` as the
    linear program ``min tau 1'u + (1 - tau) 1'v`` subject to ``design beta + u - v = y``,
    ``u, v >= 0`` (Koenker and Bassett 1978), solved by scipy's HiGHS simplex: a vertex."""
    n, p = design.shape
    cost = np.concatenate([np.zeros(p), np.full(n, tau), np.full(n, 1 - tau)])
    bounds = [(None, None)] * p + [(0, None)] * (2 * n)
    result = scipy.optimize.linprog(cost, A_eq=np.hstack([design, np.eye(n), -np.eye(n)]), b_eq=y,
                                    bounds=bounds, method="highs")
    assert result.status == 0, result.message
    return result.x[:p]


def _fit_quantile_line(x, y, tau):
    """``(intercept, slope)`` fit by minimising ``nll(AsymmetricLaplace(quantile=tau, scale=1))`` of
    the linear model ``loc = a + b x``, and the model's objective at a given line.

    Adam (cosine-decayed steps, 3000 of them in one jitted ``lax.scan``) on standardized x; its
    iterates approach the minimiser, a vertex of the piecewise-linear NLL where the line
    interpolates two observations, to ~1e-4 in the coefficients. Those two are among the four
    observations closest to the fitted line: of the six lines through two of them, the one of least
    NLL is returned (the simplex's last step, taken from where the gradient descent stopped).
    """
    family = mlnll.AsymmetricLaplace(quantile=tau, scale=1.0)
    loss = mlnll.nll(family)
    x_std = (x - x.mean()) / x.std()
    design = jnp.asarray(np.column_stack([np.ones_like(x), x_std]))
    targets = jnp.asarray(y)
    steps = 3000
    optimizer = optax.adam(optax.cosine_decay_schedule(10.0, steps))

    @jax.jit
    def fit(start):
        def step(carry, _):
            beta, state = carry
            updates, state = optimizer.update(jax.grad(lambda b: loss(design @ b, targets))(beta), state, beta)
            return (optax.apply_updates(beta, updates), state), None

        (beta, _), _ = jax.lax.scan(step, (start, optimizer.init(start)), None, length=steps)
        return beta, targets - design @ beta

    # optax mixes its int32 step count with Python floats, which the suite's strict promotion refuses.
    with jax.numpy_dtype_promotion("standard"):
        _, residuals = fit(jnp.array([float(np.quantile(y, tau)), 0.0]))
    raw = np.column_stack([np.ones_like(x), x])
    objective = jax.jit(jax.vmap(lambda b: loss(jnp.asarray(raw) @ b, targets)))
    closest = np.argsort(np.abs(_f64(residuals)))[:4]
    lines = np.stack([np.linalg.solve(raw[list(pair)], y[list(pair)]) for pair in itertools.combinations(closest, 2)])
    return lines[np.argmin(_f64(objective(jnp.asarray(lines))))], lambda b: objective(b[None])[0]


def _check_quantile_line(x, y, tau, line, objective):
    """The fitted line is the LP's vertex and a tau-quantile line: with an intercept, at most
    ``n tau`` residuals below 0 and at least ``n tau`` at or below (Koenker 2005, Theorem 2.2); its
    NLL is the mean pinball loss plus ``-log(tau (1 - tau))``, the LP's optimum."""
    exact = _lp_quantile_regression(np.column_stack([np.ones_like(x), x]), y, tau)
    np.testing.assert_allclose(line, exact, rtol=1e-10)
    residuals = y - (line[0] + line[1] * x)
    at_line = np.abs(residuals) <= 1e-9 * np.abs(y)
    below = int(np.sum((residuals < 0) & ~at_line))
    assert below <= tau * len(y) <= below + int(np.sum(at_line)), (below, int(np.sum(at_line)))
    r = y - (exact[0] + exact[1] * x)
    pinball = np.mean(r * (tau - (r < 0)))
    np.testing.assert_allclose(_f64(objective(jnp.asarray(line))), pinball - math.log(tau * (1 - tau)), rtol=1e-13)


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_minimising_the_asymmetric_laplace_nll_is_linear_quantile_regression(tau):
    # Heteroscedastic data, whose quantile lines fan out: the exact answer is scipy's linear program.
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 4.0, size=150)
    y = 1.0 + 2.0 * x + (0.5 + x) * rng.standard_t(3, size=150)
    line, objective = _fit_quantile_line(x, y, tau)
    _check_quantile_line(x, y, tau, line, objective)


def test_the_asymmetric_laplace_reproduces_statsmodels_quantreg_on_engel():
    # Koenker's Engel food-expenditure data (bundled with statsmodels), food expenditure against
    # income, at quantiles 0.1, 0.5 and 0.9. statsmodels' QuantReg runs iteratively reweighted least
    # squares and stops when a step moves the coefficients by less than p_tol = 1e-6: its answers
    # are within 3.2e-7 (relative) of the exact vertex here, hence rtol 1e-6 against it; the line
    # fit by mlnll is checked against the exact vertex (the linear program) to 1e-10.
    pytest.importorskip("statsmodels")
    import statsmodels.api as sm
    from statsmodels.datasets import engel

    data = engel.load_pandas().data
    x, y = data["income"].to_numpy(np.float64), data["foodexp"].to_numpy(np.float64)
    for tau in (0.1, 0.5, 0.9):
        line, objective = _fit_quantile_line(x, y, tau)
        _check_quantile_line(x, y, tau, line, objective)
        quantreg = sm.QuantReg(y, np.column_stack([np.ones_like(x), x])).fit(q=tau).params
        np.testing.assert_allclose(line, quantreg, rtol=1e-6)


def test_asymmetric_laplace_at_the_median_is_the_laplace_with_twice_the_scale():
    loc, ls, y = jnp.asarray(LOC), jnp.asarray(LOG_SCALE), jnp.asarray(Y_REAL)
    half = mlnll.AsymmetricLaplace(quantile=0.5)
    laplace = mlnll.Laplace()
    np.testing.assert_allclose(half.log_prob((loc, ls), y), laplace.log_prob((loc, ls + math.log(2.0)), y), rtol=1e-15)
    np.testing.assert_allclose(half.kl((loc, ls), (y, ls[::-1])),
                               laplace.kl((loc, ls + math.log(2.0)), (y, ls[::-1] + math.log(2.0))), rtol=1e-13)


def test_asymmetric_laplace_mle_is_the_sample_quantile_and_its_mean_pinball_loss():
    tau = 0.25
    y = jnp.asarray(np.random.default_rng(1).standard_t(3, size=(101, 3)))
    family = mlnll.AsymmetricLaplace(quantile=tau)
    loc, log_scale = mlnll.mle(family, y)
    # The NLL in loc is minimal there (a kink: compare with neighbours), the log-scale gradient is 0,
    # and loc is a tau-quantile: at most tau n targets below it, at least tau n at or below it.
    @jax.jit
    def nll_and_grad(m, s):
        outputs = (jnp.broadcast_to(m, y.shape), jnp.broadcast_to(s, y.shape))
        return jnp.sum(-family.log_prob(outputs, y), axis=0), jnp.sum(family.grad(outputs, y)[1], axis=0)

    best, grad_log_scale = (_f64(a) for a in nll_and_grad(loc, log_scale))
    for step in (1e-6, -1e-6, 1e-2, -1e-2):
        assert np.all(_f64(nll_and_grad(loc + step, log_scale)[0]) >= best)
    np.testing.assert_allclose(grad_log_scale, 0.0, atol=1e-12)
    below, at_or_below = _f64(jnp.sum(y < loc[None], 0)), _f64(jnp.sum(y <= loc[None], 0))
    assert np.all(below <= tau * 101) and np.all(at_or_below >= tau * 101)
    assert _f64(mlnll.mle(mlnll.AsymmetricLaplace(quantile=tau, scale=1.0), y)).shape == (3,)


# -- reductions to other families, samples, options ----------------------------------------------------


def test_weibull_with_concentration_one_is_the_exponential_and_two_the_rayleigh():
    ls, y = jnp.asarray(LOG_SCALE), jnp.asarray(Y_POSITIVE)
    one = mlnll.Weibull(concentration=1.0)
    np.testing.assert_allclose(one.log_prob(ls, y), mlnll.Exponential().log_prob(-ls, y), rtol=1e-14)
    np.testing.assert_allclose(one.grad(ls, y), -mlnll.Exponential().grad(-ls, y), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(one.kl(ls, ls[::-1]), mlnll.Exponential().kl(-ls, -ls[::-1]), rtol=1e-14)
    rayleigh = scipy.stats.rayleigh(scale=np.exp(_f64(ls)) / math.sqrt(2.0))
    np.testing.assert_allclose(mlnll.Weibull(concentration=2.0).log_prob(ls, y), rayleigh.logpdf(_f64(y)), rtol=1e-13)


SAMPLE_ROWS = [
    (mlnll.Weibull(), (np.array([0.0, 80.0, -80.0, 0.0, 3.0]), np.array([-5.0, 0.0, 1.0, 10.0, -3.0]))),
    (mlnll.Gumbel(), (np.array([0.0, 1e30, -5.0]), np.array([-80.0, 60.0, 30.0]))),
    (mlnll.AsymmetricLaplace(quantile=0.01), (np.array([0.0, 1e30, -5.0]), np.array([-80.0, 60.0, 30.0]))),
]


@pytest.mark.parametrize("family, outputs", SAMPLE_ROWS, ids=["Weibull", "Gumbel", "AsymmetricLaplace"])
def test_samples_at_extreme_parameters_stay_inside_the_support(family, outputs):
    # Weibull k = e^-5 puts draws at e^(-42 e^5) and e^(4 e^5): clamped to the smallest normal and
    # the largest float, never 0 or inf (where log_prob is -inf).
    @jax.jit
    def draw_and_score(key, o):
        draws = family.sample(key, o, sample_shape=(512,))
        return draws, jax.vmap(family.log_prob, in_axes=(None, 0))(o, draws)

    for dtype in ((F32, F64) if isinstance(family, mlnll.Weibull) else (F32,)):
        draws, log_prob = draw_and_score(jax.random.PRNGKey(3), _cast(outputs, dtype))
        assert draws.dtype == dtype
        assert np.all(np.isfinite(_f64(log_prob)))


MEAN_ROWS = [
    (mlnll.Weibull(), (np.array([0.0, 1.0, -0.5]), np.array([math.log(0.7), 0.0, math.log(3.0)]))),
    (mlnll.Gumbel(), (np.array([0.0, 1.0, -0.5]), np.array([0.0, -1.0, 0.5]))),
    (mlnll.AsymmetricLaplace(quantile=0.2), (np.array([0.0, 1.0, -0.5]), np.array([0.0, -1.0, 0.5]))),
]


@pytest.mark.parametrize("family, outputs", MEAN_ROWS, ids=["Weibull", "Gumbel", "AsymmetricLaplace"])
def test_sample_means_match_the_closed_form_mean(family, outputs):
    n = 100_000
    o = _cast(outputs, F64)
    draws = _f64(jax.jit(lambda k: family.sample(k, o, sample_shape=(n,)))(jax.random.PRNGKey(4)))
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    assert np.all(np.abs(mean - _f64(family.mean(o))) < 5 * se), (mean, family.mean(o), se)


def test_constant_terms_are_the_output_free_part():
    y, ypos = jnp.asarray(Y_REAL), jnp.asarray(Y_POSITIVE)
    cases = [(mlnll.Gumbel(), (jnp.asarray(LOC), jnp.asarray(LOG_SCALE)), y),
             (mlnll.Gumbel(scale=3.0), jnp.asarray(LOC), y),
             (mlnll.AsymmetricLaplace(quantile=0.3), (jnp.asarray(LOC), jnp.asarray(LOG_SCALE)), y),
             (mlnll.AsymmetricLaplace(quantile=0.3, scale=2.0), jnp.asarray(LOC), y),
             (mlnll.Weibull(), (jnp.asarray(LOG_SCALE), jnp.asarray(LOG_K)), ypos),
             (mlnll.Weibull(concentration=3.0), jnp.asarray(LOG_SCALE), ypos)]
    for family, outputs, targets in cases:
        @jax.jit
        def both(o, t, family=family):
            per = [mlnll.nll(family, reduction="none", drop_constants=d) for d in (False, True)]
            grads = [jax.grad(lambda o, d=d: mlnll.nll(family, drop_constants=d)(o, t))(o) for d in (False, True)]
            return [f(o, t) for f in per], family.constant_terms(t), grads

        (full, dropped), constant, grads = both(outputs, targets)
        np.testing.assert_allclose(_f64(dropped), _f64(full) + _f64(constant), rtol=1e-13, atol=1e-13)
        # The gradients are unchanged.
        for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
            np.testing.assert_allclose(_f64(a), _f64(b), rtol=1e-13, atol=1e-15)


def test_weibull_and_gumbel_have_no_closed_form_mle():
    for family in (mlnll.Weibull(), mlnll.Gumbel()):
        with pytest.raises(NotImplementedError, match="no closed-form"):
            mlnll.mle(family, jnp.ones(3))


@pytest.mark.parametrize("make, match", [
    (lambda: mlnll.AsymmetricLaplace(quantile=0.0), "strictly between 0 and 1"),
    (lambda: mlnll.AsymmetricLaplace(quantile=1.0), "strictly between 0 and 1"),
    (lambda: mlnll.AsymmetricLaplace(quantile=float("nan")), "strictly between 0 and 1"),
    (lambda: mlnll.AsymmetricLaplace(quantile=True), "strictly between 0 and 1"),
    (lambda: mlnll.AsymmetricLaplace(quantile=0.5, scale=0.0), "finite positive"),
    (lambda: mlnll.Weibull(concentration=-1.0), "finite positive"),
    (lambda: mlnll.Gumbel(scale=float("inf")), "finite positive"),
])
def test_bad_options_raise_naming_the_option(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_the_quantile_is_required_and_keyword_only():
    with pytest.raises(TypeError):
        mlnll.AsymmetricLaplace()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        mlnll.AsymmetricLaplace(0.5)  # type: ignore[misc]


def test_wrong_outputs_raise_naming_the_family_and_the_argument():
    with pytest.raises(TypeError, match=r"Weibull\(concentration=2.0\) fixes log_concentration and takes log_scale alone"):
        mlnll.Weibull(concentration=2.0).log_prob((jnp.zeros(2), jnp.zeros(2)), jnp.ones(2))
    with pytest.raises(TypeError, match=r"AsymmetricLaplace\(quantile=0.9, scale=1.0\) fixes log_scale"):
        mlnll.AsymmetricLaplace(quantile=0.9, scale=1.0).log_prob((jnp.zeros(2), jnp.zeros(2)), jnp.ones(2))
    with pytest.raises(ValueError, match="Gumbel"):
        mlnll.Gumbel().log_prob((jnp.zeros(2), jnp.zeros(3)), jnp.ones(2))


# -- NormalInverseGamma (deep evidential regression) -------------------------------------------------

NIG_OUTPUTS = (np.array([0.3, -1.0, 2.0, 0.0]), np.array([0.5, -2.0, 1.0, 3.0]),
               np.array([-1.0, 0.0, 2.5, -4.0]), np.array([0.2, 1.0, -1.5, 0.0]))
NIG_Y = np.array([1.1, -3.0, 2.2, 0.4])


def test_normal_inverse_gamma_is_the_marginal_of_its_hierarchy():
    # sigma^2 ~ InvGamma(alpha, beta), mu | sigma^2 ~ N(loc, sigma^2 / nu), y | mu ~ N(mu, sigma^2):
    # integrating mu out is the normal convolution y | sigma^2 ~ N(loc, sigma^2 (1 + 1/nu)), and
    # sigma^2 = e^s is integrated by scipy's adaptive quadrature in s, between scipy's inverse-gamma
    # quantiles 1e-15 and 1 - 1e-15 (the densities written out: scipy.stats' per-call cost would
    # make the quadrature slow).
    got = _f64(jax.jit(mlnll.NormalInverseGamma().log_prob)(_cast(NIG_OUTPUTS, F64), _cast(NIG_Y, F64)))
    for i in range(len(NIG_Y)):
        loc, nu, alpha, beta = (NIG_OUTPUTS[0][i], math.exp(NIG_OUTPUTS[1][i]), 1 + math.exp(NIG_OUTPUTS[2][i]),
                                math.exp(NIG_OUTPUTS[3][i]))
        log_norm_ig = alpha * math.log(beta) - math.lgamma(alpha)

        def integrand(s, i=i, loc=loc, nu=nu, alpha=alpha, beta=beta, log_norm_ig=log_norm_ig):
            v = math.exp(s)
            variance = v * (1 + 1 / nu)
            log_normal = -0.5 * (NIG_Y[i] - loc) ** 2 / variance - 0.5 * math.log(2 * math.pi * variance)
            log_prior_times_v = log_norm_ig - alpha * s - beta / v  # InvGamma density times dv/ds = v
            return math.exp(log_normal + log_prior_times_v)

        prior = scipy.stats.invgamma(alpha, scale=beta)
        lo, mid, hi = (math.log(prior.ppf(q)) for q in (1e-15, 0.5, 1 - 1e-15))
        want = math.log(sum(scipy.integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
                            for a, b in ((lo, mid), (mid, hi))))
        assert abs(got[i] - want) <= 1e-9 * max(abs(want), 1.0), (i, got[i], want)


def _nig_plain_regularized(lam):
    from mlnll._src.families.normal_inverse_gamma import _plain_log_prob

    def loss(o, y):
        nu, alpha = jnp.exp(o[1]), 1 + jnp.exp(o[2])
        return -_plain_log_prob(o, y) + lam * jnp.abs(y - o[0]) * (2 * nu + alpha)

    return loss


@DTYPES
def test_the_evidence_regularizer_adds_amini_et_al_s_term_with_its_closed_form_gradient(dtype):
    lam = 0.3
    outputs, y = _cast(NIG_OUTPUTS, dtype), _cast(NIG_Y, dtype)
    y = y.at[0].set(outputs[0][0])  # y = loc: the penalty's kink, subgradient 0 in loc
    loss = mlnll.nll(mlnll.NormalInverseGamma(), reduction="sum", evidence_regularizer=lam)
    plain = _nig_plain_regularized(lam)

    @jax.jit
    def everything(o, t):
        per = mlnll.nll(mlnll.NormalInverseGamma(), reduction="none", evidence_regularizer=lam)(o, t)
        plain_nll = mlnll.nll(mlnll.NormalInverseGamma(), reduction="none")
        zero = mlnll.nll(mlnll.NormalInverseGamma(), reduction="none", evidence_regularizer=0.0)
        return (per, loss.grad(o, t), jax.grad(loss)(o, t), plain(o, t), jax.grad(lambda o: jnp.sum(plain(o, t)))(o),
                plain_nll.grad(o, t)[0], zero(o, t), plain_nll(o, t))

    per, closed, through, want, want_grad, nll_only, zero, unregularized = everything(outputs, y)
    assert per.dtype == dtype
    np.testing.assert_allclose(_f64(per), _f64(want), rtol=8 * RTOL[dtype])
    for i, (c, t, w) in enumerate(zip(closed, through, want_grad)):
        c, t, w = _f64(c), _f64(t), _f64(w)
        off_kink = slice(1, None) if i == 0 else slice(None)  # autodiff of |d| takes +1 at d = 0
        assert np.all(np.abs(c - w)[off_kink] <= 16 * RTOL[dtype] * np.maximum(np.abs(w), 1.0)[off_kink]), (c, w)
        np.testing.assert_allclose(t, c, rtol=4 * RTOL[dtype], atol=4 * RTOL[dtype])
    # At y = loc the penalty's loc subgradient is 0 (least norm): the loc gradient is the NLL's alone.
    assert float(closed[0][0]) == float(nll_only[0])
    np.testing.assert_array_equal(_f64(zero), _f64(unregularized))  # lam = 0 is the plain NLL


def test_normal_inverse_gamma_fisher_has_the_unidentified_direction():
    # The marginal depends on nu and beta only through beta (1 + nu) / nu: the direction
    # (d log_nu, d log_beta) = (1, sigmoid(-log_nu)) leaves it unchanged and carries no information;
    # the other three eigenvalues are positive.
    outputs = _cast(NIG_OUTPUTS, F64)
    fisher = _f64(jax.jit(mlnll.NormalInverseGamma().fisher)(outputs))
    assert fisher.shape == (4, 4, 4)
    direction = np.stack([np.zeros(4), np.ones(4), np.zeros(4), 1 / (1 + np.exp(NIG_OUTPUTS[1]))], -1)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", fisher, direction), 0.0, atol=1e-15)
    eigenvalues = np.linalg.eigvalsh(fisher)
    assert np.all(eigenvalues[:, 1:] > 1e-6 * eigenvalues[:, -1:])


def test_normal_inverse_gamma_options_and_kl_raise_clearly():
    with pytest.raises(ValueError, match="evidence_regularizer"):
        mlnll.nll(mlnll.NormalInverseGamma(), evidence_regularizer=-0.1)
    with pytest.raises(TypeError, match="evidence_regularizer"):
        mlnll.nll(mlnll.NormalInverseGamma(), evidence_regulariser=0.1)
    with pytest.raises(NotImplementedError, match="no closed form"):
        mlnll.NormalInverseGamma().kl(_cast(NIG_OUTPUTS, F64), _cast(NIG_OUTPUTS, F64))
    params = mlnll.NormalInverseGamma().params(_cast(NIG_OUTPUTS, F64))
    np.testing.assert_allclose(_f64(params["alpha"]), 1 + np.exp(NIG_OUTPUTS[2]), rtol=1e-15)

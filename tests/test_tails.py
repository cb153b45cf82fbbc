"""``log_cdf`` and ``log_survival`` of the continuous families, against 50-digit mpmath in both tails.

The oracle evaluates each family's CDF at the very inputs the dtype holds (the float32 inputs
widened exactly), so what is measured is the family's own rounding. Tolerance: the dtype's ``value``
entry of the one table (``RTOL``: 2e-6 in float32, 1e-12 in float64), widened where the value is
ill-conditioned: the relative error a relative ulp of z causes is ``|z d log F / dz / log F|`` ulps
(81 at log F of z = 9 in float32, where log F ~ -1e-19), the roundings of ``(y - loc) e^(-log_scale)``
are a few such ulps, so the bound is ``max(RTOL, 8 eps (1 + condition))``.

The derivatives are compared with the exact ones, ``d log F / dz = f/F`` from mpmath, through the
chain rule in (loc, log_scale, y); ``jax.grad`` of the plain textbook formula (``log`` of
``jax.scipy.stats``' cdf) in float64 is the second oracle at ordinary inputs, and scipy's
``logcdf`` / ``logsf`` the third.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.stats

import mlnll
from conftest import RTOL

mp.mp.dps = max(mp.mp.dps, 50)  # never lowered by another module (one process imports them all)
F32, F64 = np.dtype("float32"), np.dtype("float64")
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


def _normal_cdf(z):
    return mp.ncdf(z)


def _logistic_cdf(z):
    return 1 / (1 + mp.exp(-z))


def _laplace_cdf(z):
    return mp.exp(z) / 2 if z < 0 else 1 - mp.exp(-z) / 2


def _cauchy_cdf(z):
    return mp.atan(-1 / z) / mp.pi if z < 0 else (mp.mpf(1) / 2 if z == 0 else 1 - mp.atan(1 / z) / mp.pi)


# family, its mpmath standard CDF (symmetric laws: S(z) = F(-z)), its standard pdf, scipy's law, and
# standardized points that reach both tails (float32's own ends where float64's are out of its range)
REAL = {
    "Normal": (mlnll.Normal(), _normal_cdf, mp.npdf, scipy.stats.norm,
               {F64: [-40.0, -37.9, -20.5, -19.5, -8.5, -3.0, -0.5, 0.0, 0.5, 3.0, 8.0, 37.0],
                F32: [-13.0, -9.5, -8.5, -7.5, -3.0, -0.5, 0.0, 0.5, 3.0, 5.5, 9.0]}),
    "Logistic": (mlnll.Logistic(), _logistic_cdf, lambda z: _logistic_cdf(z) * _logistic_cdf(-z), scipy.stats.logistic,
                 {F64: [-700.0, -40.0, -3.0, -1e-8, 0.0, 0.7, 20.0, 700.0],
                  F32: [-87.0, -20.0, -3.0, -1e-4, 0.0, 0.7, 15.0, 80.0]}),
    "Laplace": (mlnll.Laplace(), _laplace_cdf, lambda z: mp.exp(-abs(z)) / 2, scipy.stats.laplace,
                {F64: [-700.0, -5.0, -1e-9, 0.0, 1e-9, 2.0, 30.0, 700.0],
                 F32: [-80.0, -5.0, -1e-5, 0.0, 1e-5, 2.0, 15.0, 80.0]}),
    "Cauchy": (mlnll.Cauchy(), _cauchy_cdf, lambda z: 1 / (mp.pi * (1 + z * z)), scipy.stats.cauchy,
               {F64: [-1e300, -1e17, -1e5, -2.0, 0.0, 0.3, 1e8, 1e17, 1e300],
                F32: [-1e38, -1e10, -1e5, -2.0, 0.0, 0.3, 1e4, 1e7, 1e30]}),
}


def _al_cdf(tau):
    def cdf(z):
        return tau * mp.exp((1 - tau) * z) if z < 0 else 1 - (1 - tau) * mp.exp(-tau * z)
    return cdf


def _al_sf(tau):
    def sf(z):
        return 1 - tau * mp.exp((1 - tau) * z) if z < 0 else (1 - tau) * mp.exp(-tau * z)
    return sf


def _al_pdf(tau):
    return lambda z: tau * (1 - tau) * mp.exp(-z * (tau - (1 if z < 0 else 0)))


# Laws that are not symmetric: family, mpmath CDF, its survival function (not F(-z)), pdf, points.
ASYMMETRIC = {
    "Gumbel": (mlnll.Gumbel(), lambda z: mp.exp(-mp.exp(-z)), lambda z: -mp.expm1(-mp.exp(-z)),
               lambda z: mp.exp(-z - mp.exp(-z)),
               {F64: [-700.0, -30.0, -3.0, -0.5, 0.0, 0.5, 3.0, 30.0, 700.0],
                F32: [-80.0, -20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0, 86.0]}),
    "AsymmetricLaplace(quantile=0.9)": (
        mlnll.AsymmetricLaplace(quantile=0.9), _al_cdf(0.9), _al_sf(0.9), _al_pdf(0.9),
        {F64: [-7000.0, -30.0, -1.0, -1e-9, 0.0, 1e-9, 0.5, 3.5, 50.0, 700.0],
         F32: [-800.0, -30.0, -1.0, -1e-5, 0.0, 1e-5, 0.5, 3.5, 50.0, 90.0]}),
}


def _rtol(dtype, value, slope_z):
    """``max(RTOL, 8 eps (1 + |z d value/dz / value|))`` (the module docstring)."""
    eps = float(np.finfo(dtype).eps)
    condition = float(abs(slope_z / value)) if value != 0 else 0.0
    return max(RTOL[dtype], 8 * eps * (1 + condition))


def _outputs(dtype, n, loc=0.75, log_scale=-0.4):
    return jnp.full(n, loc, dtype), jnp.full(n, log_scale, dtype)


def _exact(cdf, pdf, z, upper, sf=None):
    """``(log tail, d log tail / dz)`` at the mpmath value z (S(z) = F(-z) for the symmetric laws,
    ``sf`` for the others), at 400 digits: a CDF of 1 - 1e-300 must not round to 1 before its log is taken."""
    with mp.workdps(400):
        tail = (sf(z) if sf is not None else cdf(-z)) if upper else cdf(z)
        slope = (-pdf(z) if upper else pdf(z)) / tail
        return +mp.log(tail), +slope


def _log_derivative(f, z):
    """``|z f'(z) / f(z)|`` by a central difference of relative step 1e-40 at 400 digits."""
    if z == 0:
        return mp.mpf(0)
    with mp.workdps(400):
        step = z * mp.mpf("1e-40")
        return abs(z * (f(z + step) - f(z - step)) / (2 * step) / f(z))


@DTYPES
@pytest.mark.parametrize("upper", [False, True], ids=["log_cdf", "log_survival"])
@pytest.mark.parametrize("name", list(REAL) + list(ASYMMETRIC))
def test_location_scale_tails_match_mpmath_with_their_closed_form_derivatives(name, upper, dtype):
    if name in ASYMMETRIC:
        family, cdf, sf, pdf, points = ASYMMETRIC[name]
    else:
        (family, cdf, pdf, _, points), sf = REAL[name], None
    loc, log_scale = _outputs(dtype, len(points[dtype]))
    scale = mp.exp(mp.mpf(float(log_scale[0])))
    # targets y = loc + z scale, rounded to the dtype; the oracle's z is computed from the rounded y
    y = (np.float64(loc[0]) + np.asarray(points[dtype]) * float(scale)).astype(dtype)
    method = family.log_survival if upper else family.log_cdf
    value = jax.jit(method)((loc, log_scale), y)
    grads = jax.jit(jax.grad(lambda o, t: jnp.sum(method(o, t)), argnums=(0, 1)))((loc, log_scale), jnp.asarray(y))
    (g_loc, g_log_scale), g_y = grads
    assert value.dtype == dtype
    for i, yi in enumerate(y):
        z = (mp.mpf(float(yi)) - mp.mpf(float(loc[0]))) / scale
        want, slope = _exact(cdf, pdf, z, upper, sf)
        if not mp.mpf(float(np.finfo(dtype).tiny)) < abs(want) < mp.mpf(float(np.finfo(dtype).max)):
            continue  # not a normal number of the dtype: nothing to compare to
        tol = _rtol(dtype, want, slope * z)
        assert abs(float(value[i]) / float(want) - 1) <= tol, (name, float(z), float(value[i]), float(want))
        # d/dloc = -slope/scale, d/dlog_scale = -slope z, d/dy = slope/scale; a relative ulp of z
        # moves them by 1 + |z slope'(z) / slope(z)| ulps (z^2 in the Normal's thin tail, ~2 in the others)
        slope_condition = _log_derivative(lambda t: _exact(cdf, pdf, t, upper, sf)[1], z)
        g_tol = max(RTOL[dtype], 8 * float(np.finfo(dtype).eps) * (2 + float(slope_condition)))
        for got, exact in ((g_loc[i], -slope / scale), (g_log_scale[i], -slope * z), (g_y[i], slope / scale)):
            if abs(exact) < mp.mpf(float(np.finfo(dtype).tiny)) * 1e6:
                continue  # the exact derivative is below the dtype's normal range (subnormal or 0)
            assert abs(float(got) - float(exact)) <= g_tol * abs(float(exact)), (name, float(z), float(got), float(exact))


@pytest.mark.parametrize("name", list(REAL))
def test_tails_match_scipy_and_autodiff_of_the_plain_formula_at_ordinary_inputs(name):
    family, _, _, law, _ = REAL[name]
    key = jax.random.PRNGKey(7)
    k1, k2, k3 = jax.random.split(key, 3)
    loc = jax.random.normal(k1, (64,), F64)
    log_scale = 0.5 * jax.random.normal(k2, (64,), F64)
    y = loc + jnp.exp(log_scale) * 2.0 * jax.random.normal(k3, (64,), F64)
    ref = law(loc=np.asarray(loc), scale=np.exp(np.asarray(log_scale)))
    np.testing.assert_allclose(family.log_cdf((loc, log_scale), y), ref.logcdf(np.asarray(y)), rtol=RTOL[F64])
    np.testing.assert_allclose(family.log_survival((loc, log_scale), y), ref.logsf(np.asarray(y)), rtol=RTOL[F64])
    plain = getattr(jax.scipy.stats, {"Normal": "norm"}.get(name, name.lower()))

    def plain_log_cdf(outputs, t):
        return jnp.sum(jnp.log(plain.cdf(t, outputs[0], jnp.exp(outputs[1]))))

    def ours(outputs, t):
        return jnp.sum(family.log_cdf(outputs, t))

    got = jax.grad(ours, argnums=(0, 1))((loc, log_scale), y)
    want = jax.grad(plain_log_cdf, argnums=(0, 1))((loc, log_scale), y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
    # second order runs through the closed-form partials' own derivatives (one example)
    one = lambda f: lambda o: f((o[0][None], o[1][None]), y[:1])  # noqa: E731
    hessian = jax.hessian(one(ours))((loc[0], log_scale[0]))
    np.testing.assert_allclose(np.asarray(hessian, np.float64), np.asarray(jax.hessian(one(plain_log_cdf))((loc[0], log_scale[0]))),
                               rtol=1e-9, atol=1e-12)


def test_the_ends_of_the_line_and_nan():
    """``log F(-inf) = -inf``, ``log F(inf) = 0`` and the reverse for ``log S``, derivatives 0 there;
    NaN stays NaN. LogNormal and Exponential: below the support, log F = -inf and log S = 0."""
    y = jnp.array([-jnp.inf, jnp.inf, jnp.nan])
    for family in (mlnll.Normal(), mlnll.Logistic(), mlnll.Laplace(), mlnll.Cauchy(), mlnll.Normal(scale=2.0)):
        outputs = jnp.zeros(3) if family.scale is not None else (jnp.zeros(3), jnp.zeros(3))
        np.testing.assert_array_equal(family.log_cdf(outputs, y), [-np.inf, 0.0, np.nan])
        np.testing.assert_array_equal(family.log_survival(outputs, y), [0.0, -np.inf, np.inf * 0])
        g = jax.grad(lambda o: jnp.sum(family.log_cdf(o, y[:2]) - family.log_survival(o, y[:2])[::-1]))(
            jax.tree.map(lambda a: a[:2], outputs))
        for leaf in jax.tree.leaves(g):
            np.testing.assert_array_equal(leaf, 0.0)
    positive = jnp.array([-1.0, 0.0, jnp.inf, jnp.nan])
    for family, outputs in ((mlnll.LogNormal(), (jnp.zeros(4), jnp.zeros(4))), (mlnll.Exponential(), jnp.zeros(4))):
        np.testing.assert_array_equal(family.log_cdf(outputs, positive), [-np.inf, -np.inf, 0.0, np.nan])
        np.testing.assert_array_equal(family.log_survival(outputs, positive), [0.0, 0.0, -np.inf, np.nan])


@DTYPES
def test_log_normal_tails_are_the_normal_tails_of_log_y(dtype):
    loc, log_scale = _outputs(dtype, 6, loc=1.5, log_scale=0.3)
    y = jnp.asarray([1e-30, 1e-3, 0.5, 4.48, 1e3, 1e30], dtype)
    for upper in (False, True):
        got = (mlnll.LogNormal().log_survival if upper else mlnll.LogNormal().log_cdf)((loc, log_scale), y)
        scale = mp.exp(mp.mpf(float(log_scale[0])))
        for i, yi in enumerate(np.asarray(y)):
            z = (mp.log(mp.mpf(float(yi))) - mp.mpf(float(loc[0]))) / scale
            want, slope = _exact(_normal_cdf, mp.npdf, z, upper)
            if abs(want) < mp.mpf(float(np.finfo(dtype).tiny)):
                continue
            tol = _rtol(dtype, want, slope * z)
            assert abs(float(got[i]) / float(want) - 1) <= tol, (float(yi), float(got[i]), float(want))
    ref = scipy.stats.lognorm(s=np.exp(0.3), scale=np.exp(1.5))
    y64 = np.asarray([0.3, 2.0, 4.48, 30.0])
    np.testing.assert_allclose(mlnll.LogNormal().log_cdf((1.5, 0.3), y64), ref.logcdf(y64), rtol=RTOL[F64])
    np.testing.assert_allclose(mlnll.LogNormal().log_survival((1.5, 0.3), y64), ref.logsf(y64), rtol=RTOL[F64])


@DTYPES
def test_exponential_tails_match_mpmath_and_their_closed_form_derivatives(dtype):
    """``log F = log(1 - e^-x)``, x = rate y: ``log x`` at tiny x (2e-39, subnormal in float32, read
    from the logs), ``-e^-x`` near F = 1; ``log S = -x``."""
    log_rate = jnp.asarray([-20.0, 0.4, 0.4, 0.4, 0.4, 0.4, 3.0], dtype)
    y = jnp.asarray([1e-30, 1e-30, 1e-7, 0.2, 1.0, 20.0, 60.0], dtype)
    family = mlnll.Exponential()
    for method, tail in ((family.log_cdf, lambda x: mp.log(-mp.expm1(-x))), (family.log_survival, lambda x: -x)):
        value = jax.jit(method)(log_rate, y)
        g_rate, g_y = jax.grad(lambda o, t: jnp.sum(method(o, t)), argnums=(0, 1))(log_rate, y)
        for i, yi in enumerate(np.asarray(y)):
            rate = mp.exp(mp.mpf(float(log_rate[i])))
            x = rate * mp.mpf(float(yi))
            want = tail(x)
            if abs(want) < mp.mpf(float(np.finfo(dtype).tiny)):
                continue
            slope = mp.diff(tail, x)  # d tail / dx
            assert abs(float(value[i]) / float(want) - 1) <= _rtol(dtype, want, slope * x), (float(yi), float(value[i]))
            for got, exact in ((g_rate[i], slope * x), (g_y[i], slope * rate)):
                if not mp.mpf(float(np.finfo(dtype).tiny)) < abs(exact) < mp.mpf(float(np.finfo(dtype).max)):
                    continue
                assert abs(float(got) / float(exact) - 1) <= 8 * RTOL[dtype], (float(yi), float(got), float(exact))
    ref = scipy.stats.expon(scale=np.exp(-0.4))
    y64 = np.asarray([1e-12, 0.3, 2.0, 30.0])
    np.testing.assert_allclose(family.log_cdf(0.4, y64), ref.logcdf(y64), rtol=RTOL[F64])
    np.testing.assert_allclose(family.log_survival(0.4, y64), ref.logsf(y64), rtol=RTOL[F64])
    # rate y overflowing: log F = 0, log S = -inf, and the log F derivative 0 (not inf / inf)
    np.testing.assert_array_equal(jax.grad(lambda o: family.log_cdf(o, jnp.float32(3e38)))(jnp.float32(80.0)), 0.0)


def _weibull_exact(log_scale, log_k, y, upper):
    """``(log tail, d log tail / dt)`` at ``t = k log(y / lam)``, from ``x = e^t`` at 400 digits:
    ``log S = -x``, ``log F = log(1 - e^-x)`` with slope ``x e^-x / (1 - e^-x)``."""
    with mp.workdps(400):
        t = mp.exp(log_k) * (mp.log(y) - log_scale)
        x = mp.exp(t)
        if upper:
            return t, -x, -x
        return t, mp.log(-mp.expm1(-x)), x * mp.exp(-x) / -mp.expm1(-x)


@DTYPES
def test_weibull_tails_match_mpmath_and_their_closed_form_derivatives(dtype):
    """``log S = -(y/lam)^k``; ``log F = log1mexp((y/lam)^k)``, and ``t = k log(y/lam)`` itself at
    tiny y (y = 1e-300, and a subnormal y in float32); concentrations from e^-3 to e^3."""
    big = 1e300 if dtype == F64 else 1e30
    small = 1e-300 if dtype == F64 else 1e-40
    log_scale = jnp.asarray([0.3, 0.3, 0.3, 0.3, 0.3, -2.0, 5.0, 0.0, 0.0, 1.0], dtype)
    log_k = jnp.asarray([0.5, 0.5, 0.5, 0.5, 0.5, -3.0, 3.0, 0.0, 1.2, -1.0], dtype)
    y = jnp.asarray([small, 1e-6, 0.9, 1.3498588, 3.0, big, 148.0, 1e-20, 30.0, 2.0], dtype)
    family = mlnll.Weibull()

    @jax.jit
    def everything(o, t):  # values and the derivatives in (log_scale, log_k, y), both tails, one program
        out = []
        for method in (family.log_cdf, family.log_survival):
            (g_o, g_t) = jax.grad(lambda o, t: jnp.sum(method(o, t)), argnums=(0, 1))(o, t)
            out.append((method(o, t), (*g_o, g_t)))
        return out

    for upper, (value, (g_ls, g_lk, g_y)) in zip((False, True), everything((log_scale, log_k), y)):
        for i in range(len(y)):
            ls, lk, yi = (mp.mpf(float(a[i])) for a in (log_scale, log_k, y))
            t, want, slope = _weibull_exact(ls, lk, yi, upper)
            if not mp.mpf(float(np.finfo(dtype).tiny)) < abs(want) < mp.mpf(float(np.finfo(dtype).max)):
                continue
            k = mp.exp(lk)
            # a relative ulp of each input moves t by |k log y| and |k log_scale| ulps (and t by t in log_k)
            t_ulps = 1 + abs(k * mp.log(yi)) + abs(k * ls) + abs(t)
            tol = max(RTOL[dtype], 8 * float(np.finfo(dtype).eps) * (1 + float(abs(slope / want) * t_ulps)))
            assert abs(float(value[i]) / float(want) - 1) <= tol, (upper, i, float(value[i]), float(want))
            with mp.workdps(400):  # the slope's own sensitivity to t, d log|g| / dt (y moved by e^(step / k) moves t by step)
                step = mp.mpf("1e-40")
                slope_condition = abs((_weibull_exact(ls, lk, yi * mp.exp(step / k), upper)[2] - slope) / (step * slope))
            # the partial in log_k is t g: t's own absolute error over |t| counts too (t ~ 0 at y ~ lam)
            t_relative = float(t_ulps / abs(t)) if t != 0 else 0.0
            for got, exact, extra in ((g_ls[i], -k * slope, 0.0), (g_lk[i], t * slope, t_relative),
                                      (g_y[i], k * slope / yi, 0.0)):
                if not mp.mpf(float(np.finfo(dtype).tiny)) * 1e6 < abs(exact) < mp.mpf(float(np.finfo(dtype).max)):
                    continue
                g_tol = max(RTOL[dtype], 8 * float(np.finfo(dtype).eps) * (2 + float(slope_condition * t_ulps) + extra))
                assert abs(float(got) / float(exact) - 1) <= g_tol, (upper, i, float(got), float(exact))
    ends = jnp.asarray([-1.0, 0.0, jnp.inf, jnp.nan], dtype)
    four = (jnp.zeros(4, dtype), jnp.zeros(4, dtype))
    np.testing.assert_array_equal(family.log_cdf(four, ends), [-np.inf, -np.inf, 0.0, np.nan])
    np.testing.assert_array_equal(family.log_survival(four, ends), [0.0, 0.0, -np.inf, np.nan])


def test_new_tails_match_scipy_and_autodiff_of_the_plain_formula_at_ordinary_inputs():
    """Weibull, Gumbel and AsymmetricLaplace at 0.1 and 0.9 against scipy's logcdf / logsf, and
    ``jax.grad`` through their closed forms against autodiff of ``log`` of the textbook CDF."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(8), 3)
    a = jax.random.normal(k1, (32,), F64)
    b = 0.4 * jax.random.normal(k2, (32,), F64)
    e = jax.random.normal(k3, (32,), F64)

    def al_cdf(tau):
        def cdf(o, t):
            u = (t - o[0]) / jnp.exp(o[1])
            return jnp.where(u < 0, tau * jnp.exp((1 - tau) * u), 1 - (1 - tau) * jnp.exp(-tau * u))
        return cdf

    def al_law(tau):
        return lambda o: scipy.stats.laplace_asymmetric(np.sqrt(tau / (1 - tau)), loc=np.asarray(o[0]),
                                                        scale=np.exp(np.asarray(o[1])) / np.sqrt(tau * (1 - tau)))

    cases = [
        (mlnll.Weibull(), jnp.exp(b + 0.5 * e), lambda o, t: 1 - jnp.exp(-((t / jnp.exp(o[0])) ** jnp.exp(o[1]))),
         lambda o: scipy.stats.weibull_min(np.exp(np.asarray(o[1])), scale=np.exp(np.asarray(o[0]))), (b, 0.5 * a)),
        (mlnll.Gumbel(), a + jnp.exp(b) * 2 * e, lambda o, t: jnp.exp(-jnp.exp(-(t - o[0]) / jnp.exp(o[1]))),
         lambda o: scipy.stats.gumbel_r(np.asarray(o[0]), np.exp(np.asarray(o[1]))), (a, b)),
        *[(mlnll.AsymmetricLaplace(quantile=tau), a + jnp.exp(b) * 2 * e, al_cdf(tau), al_law(tau), (a, b))
          for tau in (0.1,)],  # (0.9 is in the mpmath table above)
    ]
    for family, y, plain_cdf, law, outputs in cases:

        @jax.jit
        def everything(o, t, family=family, plain_cdf=plain_cdf):  # one program per family
            pairs = ((family.log_cdf, lambda o, t: jnp.log(plain_cdf(o, t))),
                     (family.log_survival, lambda o, t: jnp.log1p(-plain_cdf(o, t))))
            grads = [(jax.grad(lambda o, t: jnp.sum(ours(o, t)), argnums=(0, 1))(o, t),
                      jax.grad(lambda o, t: jnp.sum(plain(o, t)), argnums=(0, 1))(o, t)) for ours, plain in pairs]
            return family.log_cdf(o, t), family.log_survival(o, t), grads

        log_cdf, log_survival, grads = everything(outputs, y)
        ref = law(outputs)
        np.testing.assert_allclose(log_cdf, ref.logcdf(np.asarray(y)), rtol=RTOL[F64])
        np.testing.assert_allclose(log_survival, ref.logsf(np.asarray(y)), rtol=RTOL[F64])
        for got, want in grads:
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


# -- Gamma: the regularized incomplete gamma functions P(a, x) and Q(a, x), x = b y ---------------

# (log_concentration, log_rate, y): a from 1e-3 to 1e6, both tails (P ~ 1e-300 to Q ~ 1e-200), the
# plateau of a small concentration (x << a), x = a and a + 1 (where the forms hand over), y subnormal.
GAMMA_POINTS = {
    F64: [(-6.9, 0.0, 1e-30), (-6.9, 0.0, 1e-3), (-6.9, 0.0, 2.0), (-2.3, 0.5, 1e-8), (-2.3, 0.0, 0.2), (-0.7, 0.0, 1e-290),
          (-0.7, 0.0, 0.5), (-0.7, 0.0, 40.0), (0.0, 0.0, 1e-5), (0.0, 1.0, 10.0), (1.1, -2.0, 3.0), (1.1, 0.0, 3.0),
          (1.1, 0.0, 4.0), (3.4, 0.0, 5.0), (3.4, 0.0, 30.0), (3.4, 0.0, 200.0), (6.9, 0.0, 900.0), (6.9, 0.0, 1000.0),
          (6.9, 0.0, 1100.0), (11.5, 0.0, 9.9e4), (11.5, 0.0, 1.0005e5), (13.8, -3.0, 49.6), (1.5, 0.0, 5e-320)],
    F32: [(-6.9, 0.0, 1e-30), (-6.9, 0.0, 2.0), (-2.3, 0.0, 0.2), (-0.7, 0.0, 1e-30), (-0.7, 0.0, 0.5), (-0.7, 0.0, 40.0),
          (0.0, 0.0, 1e-5), (1.1, 0.0, 3.0), (1.1, 0.0, 4.0), (3.4, 0.0, 5.0), (3.4, 0.0, 30.0), (3.4, 0.0, 80.0),
          (6.9, 0.0, 1000.0), (6.9, 0.0, 1100.0), (1.5, 0.0, 5e-40)],
}


def _gamma_exact(log_a, log_b, y, upper):
    """``(log T, d log T / d log a, d log T / d log x)`` at 50+ digits: the smaller tail from mpmath's
    regularized gammainc, the other as ``log1p(-smaller)``; the a-derivative by ``mp.diff``."""
    with mp.workdps(60):
        x = mp.exp(mp.mpf(log_b)) * mp.mpf(y)

        def log_tail(la, lx):
            a, xx = mp.exp(la), mp.exp(lx)
            lower = mp.gammainc(a, 0, xx, regularized=True) if xx < a else None
            small = lower if lower is not None else mp.gammainc(a, xx, mp.inf, regularized=True)
            lower_is_small = lower is not None
            if upper == (not lower_is_small):
                return mp.log(small)
            return mp.log1p(-small)

        la, lx = mp.mpf(log_a), mp.log(x)
        return log_tail(la, lx), mp.diff(lambda t: log_tail(t, lx), la), mp.diff(lambda t: log_tail(la, t), lx)


def _both_tails_and_grads(family):
    """One jitted program: ``log_cdf`` and ``log_survival`` and the gradients of each in the outputs
    and the targets (compiled once per dtype)."""
    def run(outputs, y):
        def tail(method):
            return method(outputs, y), jax.grad(lambda o, t: jnp.sum(method(o, t)), argnums=(0, 1))(outputs, y)
        return tail(family.log_cdf), tail(family.log_survival)
    return jax.jit(run)


@DTYPES
def test_gamma_tails_and_their_closed_form_gradients_match_mpmath(dtype):
    """Values against mpmath within ``max(RTOL, 8 eps (1 + condition))``, the condition number of
    the value in its raw inputs, ``sum_i |d log T / d theta_i| max(|theta_i|, 1) / |log T|`` (an ulp
    of log a = 13.8 moves log S at a = 1e6 by ~1e4 of its ulps in float32); the gradients in
    (log_concentration, log_rate, y) within ``8 eps (2 + sum_i (s_i + s'_i + 1) max(|theta_i|, 1))``,
    s and s' the slopes of this tail and of the other (``d log(1 - T') = -T'/(1 - T') d log T'``
    moves with T''s slope)."""
    points = GAMMA_POINTS[dtype]
    log_a, log_b, y = (jnp.asarray(np.asarray(col, np.float64), dtype) for col in zip(*points))
    results = _both_tails_and_grads(mlnll.Gamma())((log_a, log_b), y)
    eps, tiny, big = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny), float(np.finfo(dtype).max)
    checked = 0
    for i in range(len(points)):
        la, lb, yi = float(log_a[i]), float(log_b[i]), float(y[i])
        exact = {upper: _gamma_exact(la, lb, yi, upper) for upper in (False, True)}
        for upper, (value, ((g_a, g_b), g_y)) in zip((False, True), results):
            assert value.dtype == dtype
            want, d_la, d_lx = exact[upper]
            other = exact[not upper][0]
            if not tiny < abs(want) < big:
                continue
            scales = (max(abs(la), 1.0), max(abs(lb), 1.0), 1.0)
            slopes = (abs(d_la), abs(d_lx), abs(d_lx))  # d/dlog_rate = d/dlog y = d/dlog x
            condition = float(sum(s * c for s, c in zip(slopes, scales)) / abs(want))
            tol = max(RTOL[dtype], 8 * eps * (1 + condition))
            assert abs(float(value[i]) / float(want) - 1) <= tol, (upper, points[i], float(value[i]), float(want), tol)
            other_slopes = [s * mp.exp(want - other) for s in slopes]  # |d log T'| = |d log T| T / T'
            g_tol = max(RTOL[dtype], 8 * eps * (2 + float(sum((s + t + 1) * c for s, t, c in zip(slopes, other_slopes, scales)))))
            for got, want_g in ((g_a[i], d_la), (g_b[i], d_lx), (g_y[i], d_lx / mp.mpf(yi))):
                if not tiny * 1e6 < abs(want_g) < big:
                    continue
                assert abs(float(got) / float(want_g) - 1) <= g_tol, (upper, points[i], float(got), float(want_g), g_tol)
            checked += 1
    assert checked >= 2 * len(points) - 4


def test_gamma_tails_match_scipy_autodiff_and_the_ends():
    """scipy's logcdf / logsf and autodiff of ``log(gammainc)`` in (log_rate, y) at ordinary
    inputs (jax's gammainc has no usable derivative in a: the mpmath test covers that one), a
    finite gradient in the far tails, and the limits at the ends of the support."""
    key = jax.random.PRNGKey(3)
    k1, k2 = jax.random.split(key)
    n = 26  # and six far-tail rows: one program
    log_a = jax.random.uniform(k1, (n,), F64, -1.0, 4.0)
    log_b = 0.5 * jax.random.normal(k2, (n,), F64)
    a, b = np.exp(np.asarray(log_a)), np.exp(np.asarray(log_b))
    ref = scipy.stats.gamma(a, scale=1 / b)
    y = ref.ppf(np.linspace(0.02, 0.98, n))
    # far in both tails (P = 1e-300 at a = 1; Q = e^-7000): finite values and gradients
    far_a, far_y = np.array([0.0, 3.0, 8.0, 0.0, 3.0, 8.0]), np.array([1e-300, 1e-100, 100.0, 700.0, 500.0, 7e3])
    outputs = (jnp.concatenate([log_a, jnp.asarray(far_a)]), jnp.concatenate([log_b, jnp.zeros(6)]))
    (log_f, ((_, g_f), g_f_y)), (log_s, ((_, g_s), g_s_y)) = _both_tails_and_grads(mlnll.Gamma())(outputs, jnp.asarray(np.r_[y, far_y]))
    np.testing.assert_allclose(log_f[:n], ref.logcdf(y), rtol=RTOL[F64])
    np.testing.assert_allclose(log_s[:n], ref.logsf(y), rtol=RTOL[F64])

    @jax.jit
    def plain(lb, t):
        def grad_of(fn):
            return jax.grad(lambda lb, t: jnp.sum(jnp.log(fn(jnp.exp(log_a), jnp.exp(lb) * t))), argnums=(0, 1))(lb, t)
        return grad_of(jax.scipy.special.gammainc), grad_of(jax.scipy.special.gammaincc)

    for got, want in zip((g_f, g_f_y, g_s, g_s_y), jax.tree.leaves(plain(log_b, jnp.asarray(y)))):
        np.testing.assert_allclose(got[:n], want, rtol=1e-10)
    for leaf in (log_f[n:n + 3], log_s[n + 3:], g_f[n:n + 3], g_f_y[n:n + 3], g_s[n + 3:], g_s_y[n + 3:]):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    family = mlnll.Gamma()
    ends = jnp.asarray([-1.0, 0.0, jnp.inf, jnp.nan])
    outputs = (jnp.zeros(4), jnp.zeros(4))
    np.testing.assert_array_equal(family.log_cdf(outputs, ends), [-np.inf, -np.inf, 0.0, np.nan])
    np.testing.assert_array_equal(family.log_survival(outputs, ends), [0.0, 0.0, -np.inf, np.nan])


def test_censored_interval_and_truncated_gamma_match_scipy():
    """The wrappers over Gamma's tails: a right-censored row is scipy's logsf, an interval
    scipy's ``log(cdf(u) - cdf(l))``, a truncated row ``logpdf - log(cdf(h) - cdf(l))``."""
    log_a, log_b = jnp.asarray([0.7, 2.0, -0.5]), jnp.asarray([0.3, 0.0, -1.0])
    ref = scipy.stats.gamma(np.exp(np.asarray(log_a)), scale=np.exp(-np.asarray(log_b)))
    y, observed = jnp.asarray([4.0, 30.0, 0.01]), jnp.asarray([False, False, True])
    lower, upper = jnp.asarray([1.0, 5.0, 0.001]), jnp.asarray([2.0, 40.0, 0.1])
    inside = jnp.asarray([1.0, 10.0, 0.6])
    censored = mlnll.Censored(mlnll.Gamma())

    @jax.jit
    def wrappers(outputs):
        return (censored.log_prob(outputs, (y, observed)),
                mlnll.IntervalCensored(mlnll.Gamma()).log_prob(outputs, (lower, upper)),
                mlnll.Truncated(mlnll.Gamma(), low=0.5, high=20.0).log_prob(outputs, inside),
                jax.grad(lambda o: jnp.sum(censored.log_prob(o, (y, ~observed))))(outputs))

    got_censored, interval, truncated, g = wrappers((log_a, log_b))
    np.testing.assert_allclose(got_censored, np.r_[ref.logsf(np.asarray(y))[:2], ref.logpdf(0.01)[2]], rtol=RTOL[F64])
    # scipy's difference of two CDFs: accurate here (no row is far in a tail), to its own rounding
    np.testing.assert_allclose(interval, np.log(ref.cdf(np.asarray(upper)) - ref.cdf(np.asarray(lower))), rtol=1e-11)
    want = ref.logpdf(np.asarray(inside)) - np.log(ref.cdf(20.0) - ref.cdf(0.5))
    np.testing.assert_allclose(truncated, want, rtol=1e-11)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in g)


# -- StudentT (and NormalInverseGamma, its marginal): df from 0.5 to 1e6 ---------------------------

# (df, standardized r) at loc = 0.25, log_scale = -0.5: both tails, the centre, the Cauchy-like far
# tail of df = 0.5 and the normal limit at df = 1e6
STUDENT_T_POINTS = {
    F64: [(0.5, -1e30), (0.5, -3.0), (0.5, 0.3), (0.5, 1e4), (1.0, -1e6), (1.0, -0.1), (3.0, 6.0), (3.0, -40.0),
          (30.0, -8.0), (30.0, 2.0), (1e3, -40.0), (1e6, -8.0), (1e6, 0.3), (1e6, 30.0)],
    F32: [(0.5, -1e20), (0.5, 0.3), (1.0, -1e6), (3.0, 6.0), (30.0, -8.0), (1e3, -1.0), (1e6, -5.0), (1e6, 2.0)],
}


def _student_t_exact(nu, r):
    """``(log S(|r|), d log S / d log nu)`` of the standard t at 50+ digits: quadrature of the
    textbook density ``Gamma((nu+1)/2) / (Gamma(nu/2) sqrt(nu pi)) (1 + t^2/nu)^-((nu+1)/2)`` over
    ``[|r|, inf)`` in ``t = sqrt(nu) sinh(theta)``, and of the density times its textbook log_df score
    ``(nu/2) (digamma((nu+1)/2) - digamma(nu/2) - 1/nu - log1p(t^2/nu) + (nu + 1) t^2 / (nu (nu + t^2)))``."""
    with mp.workdps(60):
        nu = mp.mpf(nu)
        theta0 = mp.asinh(abs(r) / mp.sqrt(nu))
        c = mp.exp(mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2)) / mp.sqrt(mp.pi)  # c0 sqrt(nu)
        lead = nu / 2 * (mp.digamma((nu + 1) / 2) - mp.digamma(nu / 2) - 1 / nu)

        def weight(theta):  # p0(t) dt / dtheta = c cosh(theta)^-nu, relative to theta0
            return mp.exp(-nu * (mp.log(mp.cosh(theta)) - mp.log(mp.cosh(theta0))))

        def score(theta):
            w = mp.sinh(theta) ** 2  # t^2 / nu
            return lead + nu / 2 * (-mp.log1p(w) + (nu + 1) / nu * w / (1 + w))

        cuts = sorted({theta0, *(theta0 + k / mp.sqrt(nu) for k in (0.5, 2, 8, 32)), *(theta0 + k / nu for k in (1, 10, 60)), mp.inf})
        mass = mp.quad(weight, cuts)
        moment = mp.quad(lambda t: weight(t) * score(t), cuts)
        return mp.log(c) - nu * mp.log(mp.cosh(theta0)) + mp.log(mass), moment / mass


@DTYPES
def test_student_t_tails_and_their_closed_form_gradients_match_mpmath(dtype):
    """log_cdf and log_survival within ``max(RTOL, 8 eps (1 + condition))`` (the condition number in
    r and log_df as for Gamma); d/dloc, d/dlog_scale and d/dy against ``p0 / F`` from mpmath, and
    d/dlog_df against the quadrature of the score, judged against ``max(|exact|, sqrt(I_ldf,ldf))``
    (the score's natural scale: it crosses 0 at r = 0, where S = 1/2 for every df)."""
    from mlnll._src.families.student_t import df_information

    points = STUDENT_T_POINTS[dtype]
    n = len(points)
    loc, log_scale = jnp.full(n, 0.25, dtype), jnp.full(n, -0.5, dtype)
    log_df = jnp.asarray(np.log([p[0] for p in points]), dtype)
    scale = mp.exp(mp.mpf(float(log_scale[0])))
    y = jnp.asarray(np.array([0.25 + r * float(scale) for _, r in points]), dtype)
    results = _both_tails_and_grads(mlnll.StudentT())((loc, log_scale, log_df), y)
    eps, tiny = float(np.finfo(dtype).eps), float(np.finfo(dtype).tiny)
    for i in range(n):
        nu = mp.exp(mp.mpf(float(log_df[i])))
        r = (mp.mpf(float(y[i])) - mp.mpf(0.25)) / scale
        log_small, d_small = _student_t_exact(nu, r)
        log_p0 = (mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2) - mp.log(nu * mp.pi) / 2
                  - (nu + 1) / 2 * mp.log1p(r * r / nu))
        natural = float(np.sqrt(df_information(np.float64(float(nu)) / 2)))
        for upper, (value, ((g_loc, g_ls, g_df), g_y)) in zip((False, True), results):
            own = (r >= 0) == upper
            odds = 1 if own else mp.exp(log_small) / -mp.expm1(log_small)
            want = log_small if own else mp.log1p(-mp.exp(log_small))
            d_df = d_small if own else -odds * d_small
            slope = (-1 if upper else 1) * mp.exp(log_p0 - want)  # d log T / dr = +-p0 / T
            if not tiny < abs(want):
                continue
            condition = float((abs(slope * r) * (1 + abs(float(log_scale[i]))) + abs(d_df) * max(abs(float(log_df[i])), 1)) / abs(want))
            tol = max(RTOL[dtype], 8 * eps * (1 + condition))
            assert abs(float(value[i]) / float(want) - 1) <= tol, (upper, points[i], float(value[i]), float(want), tol)
            g_tol = max(RTOL[dtype], 8 * eps * (3 + condition * abs(float(want)) + abs(float(r * r))))
            for got, exact in ((g_loc[i], -slope / scale), (g_ls[i], -slope * r), (g_y[i], slope / scale)):
                if abs(exact) > tiny * 1e6:
                    assert abs(float(got) / float(exact) - 1) <= g_tol, (upper, points[i], float(got), float(exact))
            assert abs(float(g_df[i]) - float(d_df)) <= g_tol * max(abs(float(d_df)), natural), (upper, points[i], float(g_df[i]), float(d_df))


def test_student_t_and_normal_inverse_gamma_tails_match_scipy_and_the_chain_rule():
    """scipy's t.logcdf / logsf at ordinary inputs for StudentT, StudentT(df=4) and the
    NormalInverseGamma marginal; NormalInverseGamma's gradients equal autodiff through its map to
    StudentT's outputs (``student_t_outputs``); the ends of the line."""
    key = jax.random.PRNGKey(5)
    k = jax.random.split(key, 5)
    n = 24
    loc, log_nu, log_amo, log_beta = (jax.random.normal(k[i], (n,), F64) for i in range(4))
    nig = mlnll.NormalInverseGamma()
    outputs = (loc, log_nu, log_amo, log_beta)
    t_outputs = nig.student_t_outputs(outputs)
    ref = scipy.stats.t(np.exp(np.asarray(t_outputs[2])), np.asarray(t_outputs[0]), np.exp(np.asarray(t_outputs[1])))
    y = jnp.asarray(ref.ppf(np.linspace(0.01, 0.99, n)))

    @jax.jit
    def both(outputs, y):
        def via_student_t(o, t, method):
            return jnp.sum(method(nig.student_t_outputs(o), t))
        student_t = mlnll.StudentT()
        return [(getattr(nig, m)(outputs, y), getattr(student_t, m)(nig.student_t_outputs(outputs), y),
                 jax.grad(lambda o: jnp.sum(getattr(nig, m)(o, y)))(outputs),
                 jax.grad(lambda o: via_student_t(o, y, getattr(student_t, m)))(outputs),
                 mlnll.StudentT(df=4.0).log_cdf(nig.student_t_outputs(outputs)[:2], y) if m == "log_cdf" else y)
                for m in ("log_cdf", "log_survival")]

    (f_nig, f_t, g_f, g_f_t, f_df4), (s_nig, s_t, g_s, g_s_t, _) = both(outputs, y)
    np.testing.assert_allclose(f_nig, ref.logcdf(np.asarray(y)), rtol=1e-12)
    np.testing.assert_allclose(s_nig, ref.logsf(np.asarray(y)), rtol=1e-12)
    np.testing.assert_allclose(f_nig, f_t, rtol=1e-14)
    np.testing.assert_allclose(s_nig, s_t, rtol=1e-14)
    df4 = scipy.stats.t(4.0, np.asarray(t_outputs[0]), np.exp(np.asarray(t_outputs[1])))
    np.testing.assert_allclose(f_df4, df4.logcdf(np.asarray(y)), rtol=1e-12)
    for got, want in zip(jax.tree.leaves((g_f, g_s)), jax.tree.leaves((g_f_t, g_s_t))):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    ends = jnp.asarray([-jnp.inf, jnp.inf, jnp.nan])
    o3 = (jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))
    np.testing.assert_array_equal(mlnll.StudentT().log_cdf(o3, ends), [-np.inf, 0.0, np.nan])
    np.testing.assert_array_equal(mlnll.StudentT().log_survival(o3, ends), [0.0, -np.inf, np.nan])

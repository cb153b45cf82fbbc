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

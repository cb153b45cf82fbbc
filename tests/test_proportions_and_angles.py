"""Beta and VonMises: the pieces their closed-form derivatives are built from, against mpmath.

VonMises' gradient needs ``B(k) = 1 - I1(k)/I0(k)`` without cancellation (two Chebyshev series,
truncated per float type, whose derivatives Hessians take);
Beta's states the derivative of Stirling's remainder pair ``(delta, x delta')`` in log x and forms
``sigmoid(log a - log b)`` from one exp, with one branch for every piece at a = b. Each is
checked here on its own, and at the points where a branch switches, through ``jax.hessian`` of
``log_prob`` against the textbook formula. The generic promises (scipy parity, jax.grad, jacfwd
and hessian at the check table's inputs, targets, extremes) are in tests/test_conformance.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from jax.scipy import special

from helpers import f64
from mlnll._src.families import beta as beta_module
from mlnll._src.families import von_mises as von_mises_module
from mlnll._src.families.beta import Beta
from mlnll._src.families.von_mises import VonMises

mpmath.mp.dps = max(mpmath.mp.dps, 40)  # never lowered by another module (one process imports them all)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
# A few ulps of each float type: the accuracy asked of B(k) and of its derivative.
B_RTOL = {F32: 8 * float(np.finfo(np.float32).eps), F64: 8 * float(np.finfo(np.float64).eps)}


def _mp_b(k) -> mpmath.mpf:
    k = mpmath.mpf(float(k))
    return 1 - mpmath.besseli(1, k) / mpmath.besseli(0, k)


def _concentrations(dtype) -> np.ndarray:
    """k from 1e-30 to 1e12, dense around the switch (8) and at its float neighbours."""
    switch = np.asarray(von_mises_module._SWITCH, dtype)
    zero, inf = np.asarray(0, dtype), np.asarray(np.inf, dtype)
    near = [switch, np.nextafter(switch, zero), np.nextafter(switch, inf)]
    ks = np.concatenate([np.geomspace(1e-30, 1e12, 120), np.linspace(0.25, 30.0, 120), near])
    return np.asarray(ks, dtype)


def _b(k: jax.Array) -> jax.Array:
    return von_mises_module._bessel_ratio_complement(k)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_bessel_ratio_complement_has_relative_accuracy_at_every_concentration(dtype):
    k = _concentrations(dtype)
    got = f64(jax.jit(_b)(jnp.asarray(k)))
    want = np.array([float(_mp_b(x)) for x in k])
    np.testing.assert_allclose(got, want, rtol=B_RTOL[dtype], atol=0)


def test_bessel_ratio_complement_derivative_is_minus_the_derivative_of_the_ratio():
    """``dB/dk = -(1 - A/k - A^2)``, float64 (it enters Hessians, whose oracle runs in float64):
    autodiff of the two polynomials is as accurate as the closed form would be."""
    k = _concentrations(F64)
    got = f64(jax.jit(jax.vmap(jax.grad(_b)))(jnp.asarray(k)))
    # A' = 1 - A/k - A^2 (I0' = I1, I1' = I0 - I1/k), with A = I1/I0 at 40 digits.
    ratios = [(mpmath.mpf(float(x)), mpmath.besseli(1, float(x)) / mpmath.besseli(0, float(x))) for x in k]
    want = np.array([float(-(1 - a / x - a * a)) for x, a in ratios])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_bessel_series_truncated_for_the_dtype_match_mpmath_on_their_ranges(dtype):
    """The two Chebyshev series of von_mises.py, truncated for ``dtype`` and turned into monomials
    (evaluated here exactly, in math.fsum): within twice the dtype's tolerance of mpmath, and four
    float64 ulps (their coefficients are rounded to float64), on k in [0, 8] and [8, inf)."""
    vm = von_mises_module
    tol = vm._tolerance(dtype)
    j1, j2 = mpmath.mpf(vm._J1), mpmath.mpf(vm._J2)
    small, large = vm._monomials(vm._SMALL_CHEBYSHEV, dtype), vm._monomials(vm._LARGE_CHEBYSHEV, dtype)
    for x in np.linspace(-1, 1, 41):
        k = 4 * (mpmath.mpf(x) + 1)  # x = k/4 - 1 on [0, 8]; then t = 16/k - 1 on (-1, 1]
        want_small = _mp_b(k) * (1 + (k / j1) ** 2) * (1 + (k / j2) ** 2)
        got_small = math.fsum(d * x**j for j, d in enumerate(small))
        assert abs(got_small - want_small) <= (2 * tol + 2.0**-50) * want_small, (x, got_small, want_small)
        if x > -1:
            k = 2 * vm._SWITCH / (mpmath.mpf(x) + 1)
            want_large = k * _mp_b(k)
            got_large = math.fsum(d * x**j for j, d in enumerate(large))
            assert abs(got_large - want_large) <= (2 * tol + 2.0**-50) * want_large, (x, got_large)


def _von_mises_textbook(outputs, y):
    loc, k = outputs[0], jnp.exp(outputs[1])
    return k * jnp.cos(y - loc) - jnp.log(2 * jnp.pi) - (jnp.log(special.i0e(k)) + k)


def _beta_textbook(outputs, y):
    a, b = jnp.exp(outputs[0]), jnp.exp(outputs[1])
    gammaln = jax.scipy.special.gammaln
    return (a - 1) * jnp.log(y) + (b - 1) * jnp.log1p(-y) - (gammaln(a) + gammaln(b) - gammaln(a + b))


def _hessians(log_prob, outputs, y):
    """``jax.hessian`` of the summed log-density in (outputs..., y), one example at a time."""
    def one(o, t):
        return jax.hessian(lambda v: log_prob(tuple(v[:-1]), v[-1]))(jnp.stack([*o, t]))

    return jax.jit(jax.vmap(one))(outputs, y)


def _assert_hessians_close(got, want):
    got, want = f64(got), f64(want)
    d = np.sqrt(np.abs(np.diagonal(want, axis1=-2, axis2=-1)))
    scale = d[..., :, None] * d[..., None, :] + np.abs(want)
    assert np.all(np.abs(got - want) <= 1e-9 * np.maximum(scale, 1e-300)), (got, want)


def test_von_mises_hessian_at_the_switch_matches_the_textbook_formula():
    """At k = 8 (the switch) and its neighbours, in (loc, log k, y): the branch taken carries all of
    the derivative in k."""
    switch = von_mises_module._SWITCH
    k = np.array([switch, np.nextafter(switch, 0), np.nextafter(switch, np.inf), 25.0, 1e-3, 1e3])
    loc = np.array([0.3, -1.0, 2.0, 0.0, 0.5, 3.0])
    y = np.array([0.5, -0.7, 2.3, 1.0, -2.0, 0.1])
    outputs = (jnp.asarray(loc), jnp.asarray(np.log(k)))
    got = _hessians(VonMises().log_prob, outputs, jnp.asarray(y))
    want = _hessians(_von_mises_textbook, outputs, jnp.asarray(y))
    _assert_hessians_close(got, want)


def test_beta_hessian_at_equal_concentrations_matches_the_textbook_formula():
    """At a = b the saddle-point pieces sit on the branch point of sigmoid(log a - log b); the
    derivatives of p, q and log n must not vanish there (jnp.abs would give sign(0) = 0)."""
    log_a = np.log(np.array([2.0, 0.5, 30.0, 7.0, 1.0, 3.0]))
    log_b = np.array([log_a[0], log_a[1], log_a[2], np.nextafter(log_a[3], 0), 0.0, np.log(9.5)])
    y = np.array([0.3, 0.8, 0.45, 0.6, 0.5, 0.2])
    outputs = (jnp.asarray(log_a), jnp.asarray(log_b))
    got = _hessians(Beta().log_prob, outputs, jnp.asarray(y))
    want = _hessians(_beta_textbook, outputs, jnp.asarray(y))
    _assert_hessians_close(got, want)


def _mp_delta(x):
    return mpmath.loggamma(x) - ((x - mpmath.mpf(1) / 2) * mpmath.log(x) - x + mpmath.log(2 * mpmath.pi) / 2)


def test_stirling_pair_derivative_in_log_x_is_the_stated_one():
    """``d delta / d log x = x delta'`` and ``d (x delta') / d log x = x delta' + x^2 delta''``,
    across both branches of ``x^2 delta''`` (10) and from tiny to huge x, float64."""
    x = np.concatenate([np.geomspace(1e-8, 1e8, 60), [9.999, 10.0, 10.001, 0.5, 1.0, 2.0]])
    log_x = jnp.asarray(np.log(x))

    def pair(t):
        return beta_module._stirling_pair(jnp.exp(t), t)

    got = np.stack([f64(g) for g in jax.jit(jax.vmap(jax.jacfwd(pair)))(log_x)], axis=-1)
    for xi, (d_delta, d_scaled) in zip(x, got):
        xm = mpmath.mpf(float(xi))
        grad = mpmath.diff(_mp_delta, xm)  # delta'(x)
        hess = mpmath.diff(_mp_delta, xm, 2)  # delta''(x)
        want_delta, want_scaled = float(xm * grad), float(xm * grad + xm**2 * hess)
        # Relative to the larger of the result and the terms it is a sum of.
        scale = float(abs(xm * grad) + abs(xm**2 * hess))
        assert abs(d_delta - want_delta) <= 1e-13 * abs(want_delta), (xi, d_delta, want_delta)
        assert abs(d_scaled - want_scaled) <= 1e-12 * scale, (xi, d_scaled, want_scaled)


def test_beta_saddle_sigmoids_and_log_n_are_exact_identities():
    """``p = sigmoid(d)``, ``q = 1 - p``, ``log q`` and ``log n = logaddexp(log a, log b)`` from one
    exp and one log1p, at ratios from e^-700 to e^700 (float64)."""
    d = np.concatenate([np.linspace(-700, 700, 141), [0.0, 1e-300, -1e-300]])
    log_a, log_b = jnp.asarray(d / 2), jnp.asarray(-d / 2)
    half = jnp.full(d.shape, 0.5)
    t = jax.jit(beta_module._saddle)(log_a, log_b, jnp.log(half), jnp.log(half))
    want_p = [float(mpmath.mpf(1) / (1 + mpmath.exp(-mpmath.mpf(x)))) for x in d]
    want_q = [float(mpmath.mpf(1) / (1 + mpmath.exp(mpmath.mpf(x)))) for x in d]
    want_log_q = [float(-mpmath.log1p(mpmath.exp(mpmath.mpf(x)))) for x in d]
    want_log_n = [float(mpmath.log(2 * mpmath.cosh(mpmath.mpf(x) / 2))) for x in d]
    for got, want in ((t.p, want_p), (t.q, want_q), (t.log_q, want_log_q), (t.log_n, want_log_n)):
        np.testing.assert_allclose(f64(got), want, rtol=4 * np.finfo(np.float64).eps, atol=1e-300)


@pytest.mark.parametrize("family", [Beta(), VonMises()], ids=repr)
def test_grad_and_jax_grad_are_the_same_partials(family):
    """``grad`` is the negated partials of ``log_prob``'s custom_jvp: equal to the last bit."""
    case = family.check_cases()[0]
    outputs, y = case.random(jax.random.PRNGKey(3), F64, 32)
    closed = jax.jit(family.grad)(outputs, y)
    through = jax.jit(jax.grad(lambda o: -jnp.sum(family.log_prob(o, y))))(outputs)
    for c, t in zip(jax.tree.leaves(closed), jax.tree.leaves(through)):
        np.testing.assert_array_equal(f64(c), f64(t))


def test_von_mises_target_derivative_is_minus_the_loc_derivative():
    loc, y = jnp.asarray([0.3, 100.0, -2.0]), jnp.asarray([0.31, 101.0, 1.0])
    log_k = jnp.asarray([math.log(1e6), 0.0, -3.0])
    summed = lambda l, t: jnp.sum(VonMises().log_prob((l, log_k), t))  # noqa: E731
    d_loc, d_y = jax.jit(jax.grad(summed, argnums=(0, 1)))(loc, y)
    np.testing.assert_array_equal(f64(d_loc), -f64(d_y))
    np.testing.assert_allclose(f64(d_y), -np.exp(f64(log_k)) * np.sin(f64(y) - f64(loc)), rtol=1e-12)

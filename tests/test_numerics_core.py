"""Extreme inputs, relative accuracy and bad input for the core families."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import optax
import pytest

import mlnll

from mlnll._src import numerics

F32, F64 = jnp.float32, jnp.float64


def test_confident_prediction_keeps_relative_accuracy_in_float32():
    z = jnp.array([[20.0, 0.0, 0.0]], F32)
    y = jnp.array([0])
    want = float(mpmath.log1p(2 * mpmath.exp(-20)))  # 4.1223e-9
    loss = mlnll.nll(mlnll.Categorical())
    value, g = jax.value_and_grad(loss)(z, y)
    assert float(value) == pytest.approx(want, rel=1e-6)
    assert float(g[0, 0]) == pytest.approx(-want, rel=1e-6)  # -(1 - p_0), by jax.grad of the loss
    assert float(mlnll.Categorical().grad(z, y)[0, 0]) == pytest.approx(-want, rel=1e-6)
    # optax's plain lse - z_y rounds the same loss to exactly 0.
    assert float(optax.softmax_cross_entropy_with_integer_labels(z, y)[0]) == 0.0
    b = jax.grad(mlnll.nll(mlnll.Bernoulli()))(jnp.array([20.0], F32), jnp.array([1.0], F32))
    assert float(b[0]) == pytest.approx(-float(mpmath.exp(-20) / (1 + mpmath.exp(-20))), rel=1e-6)


@pytest.mark.parametrize("big", [1e4, 3e38])
def test_huge_logits_give_finite_values_and_gradients(big):
    z = jnp.array([[big, -big, 0.0], [-big, big, 0.0], [0.0, big, -big]], F32)
    y = jnp.array([0, 0, 2])
    loss = mlnll.nll(mlnll.Categorical(), reduction="none")
    values = loss(z, y)
    # Exact values: 0, 2 big, 2 big (finite when big = 1e4; 6e38 overflows float32, so inf).
    assert float(values[0]) == 0.0
    if big == 1e4:
        np.testing.assert_allclose(values[1:], [2e4, 2e4], rtol=1e-6)
    else:
        assert np.all(np.isposinf(np.asarray(values[1:])))
    g = jax.jacrev(lambda a: jnp.sum(loss(a, y)))(z)
    assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, mlnll.Categorical().grad(z, y))
    zb = jnp.array([big, -big, big, -big], F32)
    yb = jnp.array([1.0, 0.0, 0.0, 1.0], F32)
    vb, gb = jax.value_and_grad(lambda a: mlnll.nll(mlnll.Bernoulli(), reduction="sum")(a, yb))(zb)
    assert np.all(np.isfinite(gb))
    np.testing.assert_array_equal(gb, [0.0, 0.0, 1.0, -1.0])
    assert float(vb) == pytest.approx(2 * big, rel=1e-6) or (big == 3e38 and math.isinf(float(vb)))


def test_minus_inf_logit_on_a_non_target_class_is_allowed():
    z = jnp.array([[-jnp.inf, 0.0, 1.0]], F32)
    y = jnp.array([2])
    value, g = jax.value_and_grad(mlnll.nll(mlnll.Categorical()))(z, y)
    assert float(value) == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    assert float(g[0, 0]) == 0.0 and np.all(np.isfinite(g))
    assert np.all(np.isfinite(jax.hessian(lambda a: mlnll.nll(mlnll.Categorical())(a, y))(z)))
    assert np.isfinite(float(mlnll.Categorical().entropy(z)[0]))
    assert np.all(np.isfinite(jax.grad(lambda a: mlnll.Categorical().entropy(a)[0])(z)))


def test_minus_inf_logit_on_the_target_is_an_infinite_loss():
    z = jnp.array([[-jnp.inf, 0.0]], F32)
    assert math.isinf(float(mlnll.nll(mlnll.Categorical())(z, jnp.array([0]))))


def test_normal_at_extreme_log_scales():
    fam = mlnll.Normal()
    loc = jnp.array([0.0, 0.0], F32)
    log_scale = jnp.array([80.0, -80.0], F32)
    y = jnp.array([1e30, 1e-36], F32)
    values = fam.log_prob((loc, log_scale), y)
    want = [
        float(-0.5 * (mpmath.mpf(1e30) * mpmath.exp(-80)) ** 2 - 80 - mpmath.log(2 * mpmath.pi) / 2),
        float(-0.5 * (mpmath.mpf(float(jnp.float32(1e-36))) * mpmath.exp(80)) ** 2 + 80 - mpmath.log(2 * mpmath.pi) / 2),
    ]
    np.testing.assert_allclose(np.asarray(values, np.float64), want, rtol=1e-6)
    g = jax.grad(lambda o: jnp.sum(fam.log_prob(o, y)))((loc, log_scale))
    assert all(np.all(np.isfinite(x)) for x in g)


@pytest.mark.parametrize(
    "fn, x, exact",
    [
        (numerics.expm1mx, 1e-5, lambda x: mpmath.expm1(x) - x),
        (numerics.expm1mx, -0.7, lambda x: mpmath.expm1(x) - x),
        (numerics.expm1mx, 5.0, lambda x: mpmath.expm1(x) - x),
        (numerics.log1pmx, 1e-5, lambda x: mpmath.log1p(x) - x),
        (numerics.log1pmx, -0.2, lambda x: mpmath.log1p(x) - x),
        (numerics.log1pmx, 3.0, lambda x: mpmath.log1p(x) - x),
    ],
)
def test_series_primitives_against_mpmath(fn, x, exact):
    with mpmath.workdps(50):
        want = float(exact(mpmath.mpf(x)))
    assert float(fn(jnp.asarray(x, F64))) == pytest.approx(want, rel=4e-16)
    x32 = float(jnp.asarray(x, F32))
    with mpmath.workdps(50):
        want32 = float(exact(mpmath.mpf(x32)))
    assert float(fn(jnp.asarray(x, F32))) == pytest.approx(want32, rel=1e-6)


def test_bernoulli_kl_keeps_relative_accuracy_for_close_logits():
    fam = mlnll.Bernoulli()
    for zp, zq in [(0.3, 0.3 + 1e-4), (-7.0, -7.01), (9.0, 8.5), (2.0, -3.0)]:
        zp32, zq32 = float(jnp.float32(zp)), float(jnp.float32(zq))
        with mpmath.workdps(50):
            p = 1 / (1 + mpmath.exp(-mpmath.mpf(zp32)))
            q = 1 / (1 + mpmath.exp(-mpmath.mpf(zq32)))
            want = float(p * mpmath.log(p / q) + (1 - p) * mpmath.log((1 - p) / (1 - q)))
        got = float(fam.kl(jnp.asarray(zp, F32), jnp.asarray(zq, F32)))
        assert got == pytest.approx(want, rel=2e-6), (zp, zq)


# -- bad input -------------------------------------------------------------------------------


def test_integer_logits_raise_type_error():
    with pytest.raises(TypeError, match="Categorical outputs \\(logits\\) must be a floating array.*int32"):
        mlnll.Categorical().log_prob(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2,), jnp.int32))
    with pytest.raises(TypeError, match="Bernoulli outputs \\(logits\\) must be a floating array"):
        mlnll.nll(mlnll.Bernoulli())(jnp.zeros((2,), jnp.int32), jnp.zeros((2,), jnp.int32))
    with pytest.raises(TypeError, match="Normal outputs\\[1\\] \\(log_scale\\) must be a floating array"):
        mlnll.Normal().log_prob((jnp.zeros(2, F32), jnp.zeros(2, jnp.int32)), jnp.zeros(2, F32))


def test_shapes_that_do_not_fit_raise_value_error_naming_both():
    with pytest.raises(ValueError, match=r"outputs\[..., :-1\] \(batch\) shape \(4,\), targets \(labels\) shape \(3,\)"):
        jax.jit(mlnll.nll(mlnll.Categorical()))(jnp.zeros((4, 5), F32), jnp.zeros((3,), jnp.int32))
    with pytest.raises(ValueError, match=r"outputs shape \(4,\), targets shape \(3,\)"):
        mlnll.Bernoulli().log_prob(jnp.zeros((4,), F32), jnp.zeros((3,), F32))
    with pytest.raises(ValueError, match=r"floating targets are probability vectors \[..., C\] with C = 5"):
        mlnll.Categorical().log_prob(jnp.zeros((4, 5), F32), jnp.zeros((4,), F32))
    with pytest.raises(TypeError, match=r"Normal outputs must be a tuple \(loc, log_scale\); got a single"):
        mlnll.Normal().log_prob(jnp.zeros((4,), F32), jnp.zeros((4,), F32))
    with pytest.raises(TypeError, match=r"Normal\(scale=1.0\) fixes log_scale and takes loc alone"):
        mlnll.Normal(scale=1.0).log_prob((jnp.zeros(4, F32), jnp.zeros(4, F32)), jnp.zeros(4, F32))


def test_out_of_support_targets_give_minus_inf_and_leave_the_rest_alone():
    z = jnp.zeros((3, 4), F32)
    lp = mlnll.Categorical().log_prob(z, jnp.array([0, 4, -1]))
    assert float(lp[0]) == pytest.approx(-math.log(4), rel=1e-6)
    assert math.isinf(float(lp[1])) and math.isinf(float(lp[2])) and float(lp[1]) < 0
    lb = mlnll.Bernoulli().log_prob(jnp.zeros((3,), F32), jnp.array([1.0, 1.5, -0.1], F32))
    assert float(lb[0]) == pytest.approx(-math.log(2), rel=1e-6)
    assert np.all(np.isneginf(np.asarray(lb[1:])))
    assert np.all(np.isnan(np.asarray(mlnll.Categorical().grad(z, jnp.array([5, 0, 0]))[0])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lgamma1p_keeps_relative_accuracy_near_the_zeros_of_lgamma(dtype):
    # XLA's float32 lgamma(1) is 4.8e-7 and lgamma(1 + 1e-6) is off by 13%; lgamma1p(t) is
    # log Gamma(1 + t) to a few ulps across (-1/2, 3/2], exactly 0 at t = 0 and t = 1.
    t = np.array([0.0, 1e-7, 1e-3, -1e-3, 0.3, -0.45, 0.5, 0.50001, 0.9, 1.0, 1 + 1e-6, 1.2, 1.5], dtype)
    with mpmath.workdps(40):
        want = np.array([float(mpmath.loggamma(1 + mpmath.mpf(float(v)))) for v in t])
    got = np.asarray(numerics.lgamma1p(jnp.asarray(t)), np.float64)
    assert got[0] == 0.0 and got[9] == 0.0
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(dtype).eps, atol=0)
    # lgamma_exp(log x): the same near x = 1 and 2, and lgamma of x itself for tiny x (e^-80).
    # (x = 2 itself has no exact log: expm1 of the rounded log(2) carries an absolute error of
    # ~eps, which lgamma's slope there turns into a value of size eps instead of 0.)
    log_x = np.array([0.0, 0.3, 1e-6, -80.0, 1.5, 5.0], dtype)
    with mpmath.workdps(40):
        want = np.array([float(mpmath.loggamma(mpmath.exp(mpmath.mpf(float(v))))) for v in log_x])
    got = np.asarray(numerics.lgamma_exp(jnp.asarray(log_x)), np.float64)
    assert got[0] == 0.0
    np.testing.assert_allclose(got[1:], want[1:], rtol=8 * np.finfo(dtype).eps, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_pieces_against_mpmath(dtype):
    """Loader's pieces: ``bd0(x, t, m) = x t + m - x`` on both sides of its branch points |t| = 1
    (series inside, ``m - x (1 - t)`` outside), ``log_ratio`` with and without m, and the stirlerr
    table picked by selects, each to a few ulps of 40-digit mpmath."""
    eps = np.finfo(dtype).eps
    x = np.array([1.0, 3.0, 17.0, 1e3, 1e6], dtype)[:, None]
    t = np.array([-6.0, -1.0001, -1.0, -0.9999, -0.3, -1e-4, 0.0, 2e-3, 0.7, 1.0, 1.0001, 4.0], dtype)[None]
    with mpmath.workdps(40):
        m_exact = [[mpmath.mpf(float(a)) * mpmath.exp(-mpmath.mpf(float(b))) for b in t[0]] for a in x[:, 0]]
        want = np.array([[float(a * b + m - a) for b, m in zip(map(mpmath.mpf, map(float, t[0])), row)]
                         for a, row in zip(map(mpmath.mpf, map(float, x[:, 0])), m_exact)])
    m = np.array([[float(v) for v in row] for row in m_exact], dtype)  # m rounded to dtype: <= 4 eps
    xb, tb = np.broadcast_to(x, m.shape), np.broadcast_to(t, m.shape)
    got = np.asarray(numerics.bd0(jnp.asarray(xb), jnp.asarray(tb), jnp.asarray(m)), np.float64)
    assert np.all(got[:, 6] == 0.0)  # t = 0: exactly 0
    np.testing.assert_allclose(got, want, rtol=8 * eps, atol=0)
    assert float(numerics.bd0(jnp.asarray(0.0, dtype), jnp.asarray(-np.inf, dtype), jnp.asarray(2.5, dtype))) == 2.5

    y = np.array([1.0, 7.0, 12345.0, 1e6 + 3, 1e6, 2e7], dtype)
    log_m = np.array([0.3, 2.0, 9.42, np.log(1e6), 13.9, 17.0], dtype)
    with mpmath.workdps(40):
        want = np.array([float(mpmath.log(mpmath.mpf(float(a))) - mpmath.mpf(float(b))) for a, b in zip(y, log_m)])
    for got in (numerics.log_ratio(jnp.asarray(y), jnp.asarray(log_m)),
                numerics.log_ratio(jnp.asarray(y), jnp.asarray(log_m), jnp.exp(jnp.asarray(log_m)))):
        # absolute error of a few eps (the relative error of the ratio near 1), not eps * log y
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=4 * eps, atol=4 * eps)

    k = np.arange(1.0, 13.0, dtype=dtype)
    with mpmath.workdps(40):
        want = np.array([float(mpmath.loggamma(v + 1) - ((v + 0.5) * mpmath.log(v) - v + mpmath.log(2 * mpmath.pi) / 2))
                         for v in map(mpmath.mpf, map(float, k))])
    got = np.asarray(numerics.stirlerr(jnp.asarray(k)), np.float64)
    np.testing.assert_allclose(got, want, rtol=4 * eps, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_subnormal_helpers_read_the_bits_under_jit(dtype):
    """nonzero_subnormal, widen and multiply_by_positive (numerics/positive.py) against the exact
    values numpy computes (numpy does not flush subnormals), jitted (XLA:CPU flushes them)."""
    info = np.finfo(dtype)
    sub = info.smallest_subnormal
    y = np.asarray([0.0, -0.0, sub, -sub, 3 * sub, info.tiny / 2, info.tiny, 1.0, np.inf], dtype)
    flags = jax.jit(numerics.nonzero_subnormal)(jnp.asarray(y))
    assert flags.tolist() == [False, False, True, True, True, True, False, False, False]
    if dtype == np.float32:
        wide = jax.jit(lambda v: numerics.widen(v, np.float64))(jnp.asarray(y))
        assert wide.dtype == np.float64
        assert np.array_equal(np.asarray(wide), y.astype(np.float64))  # exact, subnormals included
        # d widen / dy = 1
        assert float(jax.jit(jax.grad(lambda v: numerics.widen(v, np.float64)))(jnp.float32(sub))) == 1.0
    # x y with y subnormal: inf stays inf (inf * 0 would be NaN), 1e30 y is a normal number.
    x = np.asarray([np.inf, 1e30, 1.0, 2.0], dtype)
    ys = np.asarray([sub, 3 * sub, info.tiny / 2, 0.25], dtype)
    got = np.asarray(jax.jit(numerics.multiply_by_positive)(jnp.asarray(x), jnp.asarray(ys)))
    with np.errstate(under="ignore"):
        want = (x.astype(np.longdouble) * ys.astype(np.longdouble))
    want = np.where(np.abs(want) < info.tiny, 0.0, want).astype(dtype)  # XLA flushes a subnormal result
    assert np.array_equal(got, want), (got, want)
    # d(x y) = y dx + x dy
    dx, dy = jax.jit(jax.grad(numerics.multiply_by_positive, argnums=(0, 1)))(jnp.asarray(1e30, dtype), jnp.asarray(3 * sub, dtype))
    assert float(dy) == pytest.approx(1e30, rel=4 * info.eps) and float(dx) == 0.0  # 3 sub flushes as a tangent product


def test_scaled_expm1mx_is_inf_where_scale_exp_u_overflows():
    """``c (e^u - 1 - u)`` given ``c e^u`` = inf with c = inf itself (a concentration of e^1e4): the
    deviance is +inf (u > 1: e^u - 1 - u > 0), where ``c e^u - c (1 + u)`` was inf - inf = NaN."""
    f = jax.jit(numerics.scaled_expm1mx)
    for dtype in (np.float32, np.float64):
        inf = jnp.asarray(np.inf, dtype)
        assert float(f(inf, jnp.asarray(3.0, dtype), inf)) == math.inf
        # ordinary inputs unchanged: 2 (e^3 - 1 - 3)
        got = float(f(jnp.asarray(2.0, dtype), jnp.asarray(3.0, dtype), jnp.asarray(2 * math.exp(3.0), dtype)))
        assert got == pytest.approx(2 * (math.exp(3.0) - 4), rel=8 * np.finfo(dtype).eps)

"""Information theory on arrays, with the worked numbers these ideas are taught with."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import mlnll

F64 = jnp.float64


def test_weather_entropy_is_1_0297_nats():
    assert float(mlnll.entropy(jnp.array([0.5, 0.2, 0.3], F64))) == pytest.approx(1.0297, abs=5e-5)
    np.testing.assert_allclose(mlnll.entropy(jnp.array([0.5, 0.2, 0.3], F64)), scipy.stats.entropy([0.5, 0.2, 0.3]), rtol=1e-15)


def test_cat_dog_horse_kl_equals_cross_entropy_0_3567():
    p = jnp.array([1.0, 0.0, 0.0], F64)
    q = jnp.array([0.7, 0.2, 0.1], F64)
    kl = float(mlnll.kl_divergence(p, q))
    ce = float(mlnll.cross_entropy(p, q))
    assert kl == pytest.approx(0.3567, abs=5e-5)
    assert ce == pytest.approx(-math.log(0.7), rel=1e-15)
    assert kl == pytest.approx(ce, rel=1e-15)  # H(p) = 0 for a one-hot p


def test_bits():
    assert float(mlnll.entropy(jnp.array([0.5, 0.5], F64), base=2)) == pytest.approx(1.0, rel=1e-15)
    uniform16 = jnp.full((2**16,), 2.0**-16, F64)
    assert float(mlnll.entropy(uniform16, base=2)) == pytest.approx(16.0, rel=1e-13)
    assert float(mlnll.information_content(jnp.array(1 / 8, F64), base=2)) == pytest.approx(3.0, rel=1e-15)
    # "reaches the final (1/4), then wins it (1/2)": information adds up over independent steps.
    both = mlnll.information_content(jnp.array(1 / 8, F64), base=2)
    steps = mlnll.information_content(jnp.array(1 / 4, F64), base=2) + mlnll.information_content(jnp.array(1 / 2, F64), base=2)
    assert float(both) == pytest.approx(float(steps), rel=1e-15)


def test_seven_heads_in_ten_tosses_give_mle_0_7():
    tosses = jnp.array([1, 1, 1, 0, 1, 1, 0, 1, 1, 0], F64)
    logit = mlnll.mle(mlnll.Bernoulli(), tosses)
    assert float(jax.nn.sigmoid(logit)) == pytest.approx(0.7, rel=1e-15)
    loss = mlnll.nll(mlnll.Bernoulli())
    z = jnp.zeros((), F64)
    step = jax.jit(jax.grad(lambda a: loss(jnp.broadcast_to(a, (10,)), tosses)))
    for _ in range(200):  # plain gradient descent on the mean NLL
        z = z - 2.0 * step(z)
    assert float(jax.nn.sigmoid(z)) == pytest.approx(0.7, abs=1e-10)


def test_kl_is_cross_entropy_minus_entropy_and_nonnegative():
    key = jax.random.PRNGKey(0)
    p = jax.nn.softmax(jax.random.normal(key, (20, 6), F64))
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(1), (20, 6), F64))
    kl = mlnll.kl_divergence(p, q)
    np.testing.assert_allclose(kl, mlnll.cross_entropy(p, q) - mlnll.entropy(p), rtol=1e-12)
    assert np.all(np.asarray(kl) >= 0)
    np.testing.assert_allclose(kl, scipy.stats.entropy(np.asarray(p), np.asarray(q), axis=-1), rtol=1e-12)
    np.testing.assert_array_equal(mlnll.kl_divergence(p, p), 0.0)


def test_logits_variants_agree_with_probability_versions():
    zp = jax.random.normal(jax.random.PRNGKey(2), (5, 4), F64)
    zq = jax.random.normal(jax.random.PRNGKey(3), (5, 4), F64)
    p, q = jax.nn.softmax(zp), jax.nn.softmax(zq)
    np.testing.assert_allclose(mlnll.entropy_with_logits(zp), mlnll.entropy(p), rtol=1e-13)
    np.testing.assert_allclose(mlnll.cross_entropy_with_logits(p, zq), mlnll.cross_entropy(p, q), rtol=1e-13)
    np.testing.assert_allclose(mlnll.kl_divergence_with_logits(zp, zq), mlnll.kl_divergence(p, q), rtol=1e-12)
    np.testing.assert_allclose(mlnll.entropy_with_logits(zp, base=2), mlnll.entropy(p) / math.log(2), rtol=1e-13)


def test_axis_argument():
    p = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(4), (3, 7), F64), axis=0)
    np.testing.assert_allclose(mlnll.entropy(p, axis=0), mlnll.entropy(p.T), rtol=1e-15)


def test_zero_log_zero_is_zero_in_values_and_gradients():
    p = jnp.array([0.5, 0.5, 0.0], F64)
    q = jnp.array([0.25, 0.75, 0.0], F64)
    assert float(mlnll.entropy(p)) == pytest.approx(math.log(2), rel=1e-15)
    g = jax.grad(lambda a: mlnll.entropy(a))(p)
    assert np.all(np.isfinite(g)) and float(g[2]) == 0.0
    np.testing.assert_allclose(g[:2], -(np.log(0.5) + 1), rtol=1e-15)
    gp, gq = jax.grad(mlnll.cross_entropy, argnums=(0, 1))(p, q)
    assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gq))
    np.testing.assert_allclose(gq, [-2.0, -0.5 / 0.75, 0.0], rtol=1e-15)
    gk = jax.grad(mlnll.kl_divergence, argnums=(0, 1))(p, q)
    assert all(np.all(np.isfinite(x)) for x in gk)
    # d/dp_i of -sum p log q at p_i = 0 is -log q_i: kept where q_i > 0.
    g0 = jax.grad(lambda a: mlnll.cross_entropy(a, jnp.array([0.5, 0.25, 0.25], F64)))(p)
    np.testing.assert_allclose(g0, -np.log([0.5, 0.25, 0.25]), rtol=1e-15)
    gl = jax.grad(mlnll.entropy_with_logits)(jnp.array([0.0, 1.0, -jnp.inf], F64))
    assert np.all(np.isfinite(gl)) and float(gl[2]) == 0.0


def test_mismatched_support_gives_infinite_kl():
    assert math.isinf(float(mlnll.kl_divergence(jnp.array([0.5, 0.5], F64), jnp.array([1.0, 0.0], F64))))


def test_bad_base_and_dtype():
    with pytest.raises(ValueError, match="base must be a positive number other than 1"):
        mlnll.entropy(jnp.array([0.5, 0.5], F64), base=1)
    with pytest.raises(TypeError, match="p must be a floating array"):
        mlnll.entropy(jnp.array([1, 0], jnp.int32))
    with pytest.raises(ValueError, match=r"p shape \(3,\), q shape \(2,\)"):
        mlnll.cross_entropy(jnp.ones((3,), F64) / 3, jnp.ones((2,), F64) / 2)


def test_float32_accumulates_and_returns_float32():
    p = jnp.full((1000,), 1e-3, jnp.float32)
    h = mlnll.entropy(p)
    assert h.dtype == jnp.float32
    assert float(h) == pytest.approx(math.log(1000), rel=2e-6)

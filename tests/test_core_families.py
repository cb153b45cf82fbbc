"""Bernoulli, Categorical and Normal against scipy.stats and autodiff of the plain formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import mlnll
from conftest import RTOL
from helpers import expected_hessian, jitted

N = 16
F64 = np.dtype("float64")
C = 5


# -- plain textbook formulas, differentiated by jax.grad / jax.hessian as the oracle --------------


def plain_bernoulli(z, y):
    p = 1 / (1 + jnp.exp(-z))
    return y * jnp.log(p) + (1 - y) * jnp.log(1 - p)


def plain_categorical(z, y):
    return z[y] - jnp.log(jnp.sum(jnp.exp(z)))


def plain_categorical_soft(z, q):
    return jnp.sum(q * (z - jnp.log(jnp.sum(jnp.exp(z)))))


def plain_normal(params, y):
    loc, log_scale = params
    return -0.5 * ((y - loc) / jnp.exp(log_scale)) ** 2 - log_scale - 0.5 * jnp.log(2 * jnp.pi)


def _bernoulli_inputs(key, dtype, soft=False):
    kz, ky = jax.random.split(key)
    z = (3 * jax.random.normal(kz, (N,))).astype(dtype)
    y = jax.random.uniform(ky, (N,)) if soft else jax.random.bernoulli(ky, 0.5, (N,))
    return z, y.astype(dtype)


def _categorical_inputs(key, dtype):
    kz, ky = jax.random.split(key)
    return (2 * jax.random.normal(kz, (N, C))).astype(dtype), jax.random.randint(ky, (N,), 0, C)


def _normal_inputs(key, dtype):
    k1, k2, k3 = jax.random.split(key, 3)
    loc = jax.random.normal(k1, (N,)).astype(dtype)
    log_scale = jax.random.normal(k2, (N,)).astype(dtype)
    y = (loc + jnp.exp(log_scale) * jax.random.normal(k3, (N,)).astype(dtype)).astype(dtype)
    return (loc, log_scale), y


# The float64 oracles, each one compiled program (op by op, jax.grad of a vmap compiles every
# primitive on its own); every case calls them with the same float64 shapes.
_plain_bernoulli_grad = jax.jit(jax.vmap(jax.grad(lambda a, b: -plain_bernoulli(a, b))))
_plain_categorical_grad = jax.jit(jax.vmap(jax.grad(lambda a, b: -plain_categorical(a, b))))
_plain_categorical_soft_grad = jax.jit(jax.vmap(jax.grad(lambda a, b: -plain_categorical_soft(a, b))))
_plain_normal_grad = jax.jit(jax.vmap(jax.grad(lambda p, b: -plain_normal(p, b))))


def _maybe_jit(f, use_jit):
    return jax.jit(f) if use_jit else f


def _f64(x):
    return np.asarray(x, np.float64)


# -- log_prob equals scipy ---------------------------------------------------------------------


def test_bernoulli_log_prob_matches_scipy(dtype, use_jit):
    z, y = _bernoulli_inputs(jax.random.PRNGKey(0), dtype)
    got = _maybe_jit(mlnll.Bernoulli().log_prob, use_jit)(z, y)
    assert got.dtype == dtype and got.shape == (N,)
    want = scipy.stats.bernoulli.logpmf(_f64(y), scipy.special.expit(_f64(z)))
    np.testing.assert_allclose(_f64(got), want, rtol=RTOL[dtype], atol=0)


def test_categorical_log_prob_matches_scipy(dtype, use_jit):
    z, y = _categorical_inputs(jax.random.PRNGKey(1), dtype)
    got = _maybe_jit(mlnll.Categorical().log_prob, use_jit)(z, y)
    assert got.dtype == dtype and got.shape == (N,)
    p = scipy.special.softmax(_f64(z), axis=-1)
    want = scipy.stats.multinomial.logpmf(np.eye(C)[np.asarray(y)], 1, p)
    np.testing.assert_allclose(_f64(got), want, rtol=RTOL[dtype], atol=0)


def test_categorical_soft_targets_equal_cross_entropy(dtype, use_jit):
    z, _ = _categorical_inputs(jax.random.PRNGKey(2), dtype)
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(3), (N, C))).astype(dtype)
    got = _maybe_jit(mlnll.Categorical().log_prob, use_jit)(z, q)
    want = np.sum(_f64(q) * scipy.special.log_softmax(_f64(z), axis=-1), axis=-1)
    np.testing.assert_allclose(_f64(got), want, rtol=RTOL[dtype] * 4, atol=0)


def test_soft_one_hot_targets_equal_labels(dtype):
    z, y = _categorical_inputs(jax.random.PRNGKey(4), dtype)
    fam = mlnll.Categorical()
    # Labels take their own kernel (no one-hot built), so the two agree to rounding, not bitwise:
    # each is a handful of correctly rounded operations on the same terms.
    eps = np.finfo(dtype).eps
    log_prob, grad = jitted(fam, "log_prob"), jitted(fam, "grad")
    np.testing.assert_allclose(log_prob(z, jax.nn.one_hot(y, C, dtype=dtype)), log_prob(z, y), rtol=4 * eps, atol=0)
    np.testing.assert_allclose(grad(z, jax.nn.one_hot(y, C, dtype=dtype)), grad(z, y), rtol=4 * eps, atol=0)


@pytest.mark.parametrize("scale", [None, 1.0, 0.25])
def test_normal_log_prob_matches_scipy(dtype, use_jit, scale):
    (loc, log_scale), y = _normal_inputs(jax.random.PRNGKey(5), dtype)
    fam = mlnll.Normal(scale=scale)
    outputs = (loc, log_scale) if scale is None else loc
    got = _maybe_jit(fam.log_prob, use_jit)(outputs, y)
    sd = np.exp(_f64(log_scale)) if scale is None else scale
    want = scipy.stats.norm.logpdf(_f64(y), _f64(loc), sd)
    np.testing.assert_allclose(_f64(got), want, rtol=RTOL[dtype] * 4, atol=0)


def test_unit_normal_nll_is_half_squared_error_plus_constant():
    loc = jnp.array([0.5, -1.0, 3.0], jnp.float64)
    y = jnp.array([1.0, 1.0, -2.0], jnp.float64)
    got = -jitted(mlnll.Normal(scale=1.0), "log_prob")(loc, y)
    np.testing.assert_allclose(got, 0.5 * (y - loc) ** 2 + 0.5 * math.log(2 * math.pi), rtol=1e-15)


# -- closed-form gradients equal jax.grad of the plain formula ----------------------------------


@pytest.mark.parametrize("soft", [False, True])
def test_bernoulli_grad_is_sigmoid_minus_y(dtype, use_jit, soft):
    z, y = _bernoulli_inputs(jax.random.PRNGKey(6), dtype, soft)
    got = _maybe_jit(mlnll.Bernoulli().grad, use_jit)(z, y)
    want = _plain_bernoulli_grad(z.astype(jnp.float64), y.astype(jnp.float64))
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=RTOL[dtype] * 4, atol=RTOL[dtype] * 1e-3)


def test_categorical_grad_is_softmax_minus_onehot(dtype, use_jit):
    z, y = _categorical_inputs(jax.random.PRNGKey(7), dtype)
    got = _maybe_jit(mlnll.Categorical().grad, use_jit)(z, y)
    want = _plain_categorical_grad(z.astype(jnp.float64), y)
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=RTOL[dtype] * 4, atol=RTOL[dtype] * 1e-3)


def test_categorical_soft_grad_is_softmax_minus_q(dtype, use_jit):
    z, _ = _categorical_inputs(jax.random.PRNGKey(8), dtype)
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(9), (N, C))).astype(dtype)
    got = _maybe_jit(mlnll.Categorical().grad, use_jit)(z, q)
    want = _plain_categorical_soft_grad(z.astype(jnp.float64), q.astype(jnp.float64))
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 1e-3)


def test_normal_grad_closed_form(dtype, use_jit):
    (loc, log_scale), y = _normal_inputs(jax.random.PRNGKey(10), dtype)
    got = _maybe_jit(mlnll.Normal().grad, use_jit)((loc, log_scale), y)
    f64 = lambda a: a.astype(jnp.float64)  # noqa: E731
    want = _plain_normal_grad((f64(loc), f64(log_scale)), f64(y))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        np.testing.assert_allclose(_f64(g), _f64(w), rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 1e-3)


def test_normal_fixed_scale_grad(dtype):
    (loc, _), y = _normal_inputs(jax.random.PRNGKey(11), dtype)
    got = jitted(mlnll.Normal(scale=0.5), "grad")(loc, y)
    want = jax.jit(jax.vmap(jax.grad(lambda m, b: -plain_normal((m, jnp.log(0.5)), b))))(loc.astype(jnp.float64), y.astype(jnp.float64))
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=RTOL[dtype] * 4, atol=RTOL[dtype] * 1e-3)


def test_normal_custom_jvp_matches_autodiff_of_plain_formula(dtype):
    """Normal.log_prob differentiates through a closed-form custom_jvp: jax.grad in every argument
    (targets included), jacfwd and hessian all equal autodiff of the plain formula."""
    (loc, log_scale), y = _normal_inputs(jax.random.PRNGKey(12), dtype)
    fam = mlnll.Normal()
    fixed = mlnll.Normal(scale=0.5)
    f64 = lambda a: a.astype(jnp.float64)
    ours = lambda a, b, c: jnp.sum(fam.log_prob((a, b), c))
    plain = lambda a, b, c: jnp.sum(plain_normal((a, b), c))
    k = 5  # per-example second derivatives: jacfwd over jacrev of one example at a time

    # Every derivative below in one compiled program (the custom_jvp rules are what jit stages too;
    # op by op this test compiled some 290 programs).
    @jax.jit
    def derivatives(loc, log_scale, y):
        got = jax.grad(ours, argnums=(0, 1, 2))(loc, log_scale, y)
        want = jax.grad(plain, argnums=(0, 1, 2))(f64(loc), f64(log_scale), f64(y))
        r_sq = jnp.square((f64(y) - f64(loc)) * jnp.exp(-f64(log_scale)))
        h_got = jax.vmap(jax.hessian(lambda p, c: fam.log_prob(p, c)))((loc[:k], log_scale[:k]), y[:k])
        h_want = jax.vmap(jax.hessian(lambda p, c: plain_normal(p, c)))((f64(loc[:k]), f64(log_scale[:k])), f64(y[:k]))
        j_got = jax.jacfwd(lambda c: fixed.log_prob(loc, c))(y)
        j_want = jax.jacfwd(lambda c: plain_normal((f64(loc), jnp.log(0.5)), c))(f64(y))
        return got, want, r_sq, h_got, h_want, j_got, j_want

    got, want, r_sq, h_got, h_want, j_got, j_want = derivatives(loc, log_scale, y)
    # d/dlog_scale = r^2 - 1 cancels near |r| = 1: its error is measured against r^2 + 1, the size
    # of the terms that cancel (r itself carries a few roundings of the inputs).
    r_sq = _f64(r_sq)
    for g, w, size in zip(got, want, (np.abs(_f64(want[0])), r_sq + 1, np.abs(_f64(want[2])))):
        assert g.dtype == dtype
        assert np.all(np.abs(_f64(g) - _f64(w)) <= RTOL[dtype] * 8 * size), (g, w)
    for g, w in zip(jax.tree.leaves(h_got), jax.tree.leaves(h_want)):
        # every entry is a product of r, r^2 and 1/scale^2 without cancellation
        np.testing.assert_allclose(_f64(g), _f64(w), rtol=RTOL[dtype] * 8)
    np.testing.assert_allclose(_f64(j_got), _f64(j_want), rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 1e-3)


# -- Fisher information equals the expected Hessian of the plain formula --------------------------


def test_bernoulli_and_categorical_fisher_equal_hessian_of_plain_formula(dtype):
    z, _ = _bernoulli_inputs(jax.random.PRNGKey(12), dtype)
    # The Hessian of an exponential family's NLL in its natural parameter does not depend on y.
    hess = jax.jit(jax.vmap(jax.hessian(lambda a: -plain_bernoulli(a, 1.0))))(z.astype(jnp.float64))
    np.testing.assert_allclose(_f64(jitted(mlnll.Bernoulli(), "fisher")(z)), _f64(hess), rtol=RTOL[dtype] * 4)
    zc, _ = _categorical_inputs(jax.random.PRNGKey(13), dtype)
    hess_c = jax.jit(jax.vmap(jax.hessian(lambda a: -plain_categorical(a, 0))))(zc.astype(jnp.float64))
    np.testing.assert_allclose(_f64(jitted(mlnll.Categorical(), "fisher")(zc)), _f64(hess_c), rtol=RTOL[dtype] * 8, atol=RTOL[dtype] * 1e-3)


def test_normal_fisher_equals_expected_hessian_of_plain_formula(dtype):
    (loc, log_scale), _ = _normal_inputs(jax.random.PRNGKey(14), dtype)
    x, w = np.polynomial.hermite.hermgauss(10)
    params = (loc.astype(jnp.float64), log_scale.astype(jnp.float64))
    hess = jax.vmap(jax.hessian(lambda p, b: -plain_normal(p, b)), in_axes=(None, 0))

    def expected(loc_i, log_scale_i):
        nodes = loc_i + math.sqrt(2) * jnp.exp(log_scale_i) * jnp.asarray(x)
        h = hess((loc_i, log_scale_i), nodes)
        mat = jnp.array([[h[0][0], h[0][1]], [h[1][0], h[1][1]]])  # [2, 2, nodes]
        return jnp.sum(mat * jnp.asarray(w / math.sqrt(math.pi))[None, None, :], axis=-1)

    # each example's quadrature, all N in one compiled program
    want = _f64(jax.jit(jax.vmap(expected))(*params))
    got = _f64(jitted(mlnll.Normal(), "fisher")((loc, log_scale)))
    assert got.shape == (N, 2, 2)
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype] * 8, atol=1e-10)


def test_fisher_of_core_families_matches_check_quadrature():
    z = jnp.array([[0.3, -1.0, 2.0], [5.0, 0.0, -5.0]], jnp.float64)
    np.testing.assert_allclose(jitted(mlnll.Categorical(), "fisher")(z), expected_hessian(mlnll.Categorical(), z), rtol=1e-12, atol=1e-15)


# -- entropy, KL, mean, sample, params -----------------------------------------------------------


def test_entropy_matches_scipy(dtype):
    z, _ = _bernoulli_inputs(jax.random.PRNGKey(15), dtype)
    np.testing.assert_allclose(_f64(jitted(mlnll.Bernoulli(), "entropy")(z)), scipy.stats.bernoulli.entropy(scipy.special.expit(_f64(z))), rtol=RTOL[dtype] * 4)
    zc, _ = _categorical_inputs(jax.random.PRNGKey(16), dtype)
    p = scipy.special.softmax(_f64(zc), axis=-1)
    np.testing.assert_allclose(_f64(jitted(mlnll.Categorical(), "entropy")(zc)), scipy.stats.entropy(p, axis=-1), rtol=RTOL[dtype] * 4)
    (loc, log_scale), _ = _normal_inputs(jax.random.PRNGKey(17), dtype)
    np.testing.assert_allclose(_f64(jitted(mlnll.Normal(), "entropy")((loc, log_scale))), scipy.stats.norm.entropy(_f64(loc), np.exp(_f64(log_scale))), rtol=RTOL[dtype] * 4)


def test_kl_matches_exact_sums(dtype):
    k1, k2 = jax.random.split(jax.random.PRNGKey(18))
    zp, zq = (2 * jax.random.normal(k1, (N, C))).astype(dtype), (2 * jax.random.normal(k2, (N, C))).astype(dtype)
    p, q = scipy.special.softmax(_f64(zp), -1), scipy.special.softmax(_f64(zq), -1)
    np.testing.assert_allclose(_f64(jitted(mlnll.Categorical(), "kl")(zp, zq)), scipy.stats.entropy(p, q, axis=-1), rtol=RTOL[dtype] * 8)
    bp, bq = scipy.special.expit(_f64(zp[:, 0])), scipy.special.expit(_f64(zq[:, 0]))
    want = scipy.stats.entropy(np.stack([bp, 1 - bp]), np.stack([bq, 1 - bq]), axis=0)
    np.testing.assert_allclose(_f64(jitted(mlnll.Bernoulli(), "kl")(zp[:, 0], zq[:, 0])), want, rtol=RTOL[dtype] * 8)


def test_normal_kl_matches_monte_carlo():
    p = (jnp.array([0.0, 1.0], jnp.float64), jnp.array([0.0, -0.5], jnp.float64))
    q = (jnp.array([0.5, -1.0], jnp.float64), jnp.array([0.3, 0.2], jnp.float64))
    fam = mlnll.Normal()

    @jax.jit  # draws, log-ratios and the closed form in one compiled program
    def ratio_and_kl(p, q):
        y = fam.sample(jax.random.PRNGKey(19), p, sample_shape=(200_000,))
        return fam.log_prob(p, y) - fam.log_prob(q, y), fam.kl(p, q)

    ratio, kl = ratio_and_kl(p, q)
    mc, se = np.mean(ratio, 0), np.std(ratio, 0) / math.sqrt(ratio.shape[0])
    assert np.all(np.abs(_f64(kl) - mc) < 5 * se)


def test_normal_kl_stays_accurate_when_scales_are_close():
    # KL(N(0, 1) || N(0, e^-d)) = (exp(2d) - 1 - 2d) / 2 ~ d^2: the naive form loses it in float32.
    import mpmath

    fam = mlnll.Normal()
    for d in [1e-7, 1e-4, 1e-2, 0.5, 3.0]:
        for dtype, tol in [(jnp.float32, 4e-7), (jnp.float64, 1e-14)]:
            zero = jnp.zeros((), dtype)
            got = float(jitted(fam, "kl")((zero, jnp.asarray(d, dtype)), (zero, zero)))
            d_rounded = mpmath.mpf(float(jnp.asarray(d, dtype)))  # the input the dtype can represent
            with mpmath.workdps(50):
                want = float(0.5 * (mpmath.exp(2 * d_rounded) - 1 - 2 * d_rounded))
            assert abs(got - want) <= tol * want, (d, dtype, got, want)


def test_mean_params_and_sample_moments():
    key = jax.random.PRNGKey(20)
    z = jnp.array([-1.0, 0.0, 2.0], jnp.float64)
    fam = mlnll.Bernoulli()
    np.testing.assert_allclose(fam.mean(z), scipy.special.expit(np.asarray(z)), rtol=1e-15)
    np.testing.assert_allclose(fam.params(z)["probs"], fam.mean(z))
    draws = jitted(fam, "sample")(key, z, sample_shape=(100_000,))
    assert draws.shape == (100_000, 3) and draws.dtype == jnp.float64
    p = np.asarray(fam.mean(z))
    assert np.all(np.abs(np.mean(draws, 0) - p) < 5 * np.sqrt(p * (1 - p) / 100_000))

    zc = jnp.array([[0.0, 1.0, -1.0]], jnp.float64)
    cat = mlnll.Categorical()
    labels = jitted(cat, "sample")(key, zc, sample_shape=(100_000,))
    assert labels.shape == (100_000, 1) and labels.dtype == jnp.int32
    freq = np.bincount(np.asarray(labels[:, 0]), minlength=3) / 100_000
    pc = np.asarray(cat.mean(zc))[0]
    assert np.all(np.abs(freq - pc) < 5 * np.sqrt(pc * (1 - pc) / 100_000))

    nrm = mlnll.Normal()
    out = (jnp.array([1.0, -2.0], jnp.float64), jnp.array([0.0, math.log(3.0)], jnp.float64))
    ys = jitted(nrm, "sample")(key, out, sample_shape=(100_000,))
    np.testing.assert_allclose(nrm.params(out)["scale"], [1.0, 3.0], rtol=1e-15)
    assert np.all(np.abs(np.mean(ys, 0) - np.array([1.0, -2.0])) < 5 * np.array([1.0, 3.0]) / math.sqrt(100_000))
    assert np.all(np.abs(np.std(ys, 0) / np.array([1.0, 3.0]) - 1) < 5 / math.sqrt(2 * 100_000))


def test_families_are_frozen_and_hashable():
    assert hash(mlnll.Normal(scale=2.0)) == hash(mlnll.Normal(scale=2.0))
    assert mlnll.Normal() != mlnll.Normal(scale=1.0)
    with pytest.raises(Exception):
        mlnll.Normal().scale = 3.0  # type: ignore[misc]
    for fam in (mlnll.Bernoulli(), mlnll.Categorical(), mlnll.Normal()):
        assert isinstance(fam, mlnll.Family)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_normal_rejects_bad_fixed_scale(bad):
    with pytest.raises(ValueError, match="Normal\\(scale=...\\)"):
        mlnll.Normal(scale=bad)


# -- shapes and broadcasting ------------------------------------------------------------------


def test_batch_shapes_broadcast_when_one_side_keeps_its_shape_and_an_outer_product_is_refused():
    z = jnp.zeros((4, 1, C), jnp.float32)
    y = jnp.zeros((3,), jnp.int32)
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(3,\) would broadcast to \(4, 3\).*outer product"):
        mlnll.Categorical().log_prob(z, y)
    # Meant as an outer product: broadcast explicitly.
    assert mlnll.Categorical().log_prob(jnp.broadcast_to(z, (4, 3, C)), y).shape == (4, 3)
    normal_outputs = (jnp.zeros((4, 1), jnp.float32), jnp.zeros((), jnp.float32))
    with pytest.raises(ValueError, match="outer product"):
        mlnll.Normal().log_prob(normal_outputs, jnp.ones((3,), jnp.float32))
    # The example: loc [4, 1] against y [4] would average a [4, 4] outer product.
    with pytest.raises(ValueError, match="outer product"):
        mlnll.nll(mlnll.Normal(scale=1.0))(jnp.zeros((4, 1), jnp.float32), jnp.ones((4,), jnp.float32))
    with pytest.raises(ValueError, match="outer product"):
        mlnll.nll(mlnll.Bernoulli(), reduction="none")(jnp.zeros((4, 1), jnp.float32), jnp.ones((4,), jnp.float32))
    # One side keeps its shape: a shared scale, per-row outputs against a row of targets.
    assert mlnll.Normal().log_prob((jnp.zeros((3,), jnp.float32), jnp.zeros((), jnp.float32)), jnp.ones((3,), jnp.float32)).shape == (3,)
    assert mlnll.Bernoulli().log_prob(jnp.zeros((2, 3), jnp.float32), jnp.ones((3,), jnp.float32)).shape == (2, 3)
    assert mlnll.Bernoulli().log_prob(jnp.zeros((), jnp.float32), jnp.ones((5,), jnp.float32)).shape == (5,)


def test_bfloat16_is_computed_in_float32_and_returned_in_bfloat16():
    z, y = _categorical_inputs(jax.random.PRNGKey(21), np.dtype("float32"))
    got = mlnll.Categorical().log_prob(z.astype(jnp.bfloat16), y)
    assert got.dtype == jnp.bfloat16
    want = mlnll.Categorical().log_prob(z.astype(jnp.bfloat16).astype(jnp.float32), y)
    np.testing.assert_allclose(_f64(got), _f64(want), rtol=2**-8)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), temperature=st.floats(0.1, 20.0))
def test_categorical_information_identities(seed, temperature):
    ce, entropy, kl, g_sum = _categorical_identities(jax.random.PRNGKey(seed), jnp.asarray(temperature, F64))
    # CE = H + KL, H <= log C, KL >= 0.
    np.testing.assert_allclose(ce, entropy + kl, rtol=1e-10, atol=1e-12)
    assert np.all(np.asarray(entropy) <= math.log(6) + 1e-12)
    assert np.all(np.asarray(kl) >= 0)
    # The gradient sums to 0 over classes: softmax and onehot both sum to 1.
    np.testing.assert_allclose(g_sum, 0.0, atol=1e-15)


@jax.jit  # one program for every hypothesis example (the same shapes each time)
def _categorical_identities(key, temperature):
    kp, kq, ky = jax.random.split(key, 3)
    zp = temperature * jax.random.normal(kp, (8, 6), F64)
    zq = temperature * jax.random.normal(kq, (8, 6), F64)
    fam = mlnll.Categorical()
    p = jax.nn.softmax(zp)
    g = fam.grad(zp, jax.random.randint(ky, (8,), 0, 6))
    return mlnll.cross_entropy_with_logits(p, zq), fam.entropy(zp), fam.kl(zp, zq), jnp.sum(g, axis=-1)

"""nll(family): reductions, masks, weights, transformations, and training with optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlnll

F64 = jnp.float64


def _categorical_batch(key, n=8, c=4, dtype=F64):
    kz, ky = jax.random.split(key)
    return jax.random.normal(kz, (n, c), dtype), jax.random.randint(ky, (n,), 0, c)


def test_reductions_mean_sum_none():
    z, y = _categorical_batch(jax.random.PRNGKey(0))
    per = -mlnll.Categorical().log_prob(z, y)
    np.testing.assert_allclose(mlnll.nll(mlnll.Categorical(), reduction="none")(z, y), per, rtol=1e-15)
    np.testing.assert_allclose(mlnll.nll(mlnll.Categorical(), reduction="sum")(z, y), jnp.sum(per), rtol=1e-14)
    np.testing.assert_allclose(mlnll.nll(mlnll.Categorical())(z, y), jnp.mean(per), rtol=1e-14)


def test_mask_mean_is_sum_over_kept_divided_by_count():
    z, y = _categorical_batch(jax.random.PRNGKey(1))
    keep = jnp.array([True, False, True, True, False, False, True, True])
    per = -mlnll.Categorical().log_prob(z, y)
    got = mlnll.nll(mlnll.Categorical())(z, y, where=keep)
    np.testing.assert_allclose(got, jnp.sum(jnp.where(keep, per, 0.0)) / 5, rtol=1e-14)
    none = mlnll.nll(mlnll.Categorical(), reduction="none")(z, y, where=keep)
    np.testing.assert_array_equal(np.asarray(none)[~np.asarray(keep)], 0.0)


def test_weights_give_weighted_mean():
    z, y = _categorical_batch(jax.random.PRNGKey(2))
    w = jnp.linspace(0.0, 2.0, 8, dtype=F64)
    per = -mlnll.Categorical().log_prob(z, y)
    np.testing.assert_allclose(mlnll.nll(mlnll.Categorical())(z, y, weights=w), jnp.sum(w * per) / jnp.sum(w), rtol=1e-14)
    keep = jnp.arange(8) % 2 == 0
    wk = jnp.where(keep, w, 0.0)
    np.testing.assert_allclose(
        mlnll.nll(mlnll.Categorical())(z, y, where=keep, weights=w), jnp.sum(wk * per) / jnp.sum(wk), rtol=1e-14
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_unweighted_path_equals_unit_weights_and_an_empty_batch_gives_zero(reduction):
    # Without where/weights nll reduces by a plain sum or mean; it must agree with explicit unit
    # weights (the weighted path) in value and gradient, and keep mean([]) = 0, not 0/0.
    z, y = _categorical_batch(jax.random.PRNGKey(4))
    loss = mlnll.nll(mlnll.Categorical(), reduction=reduction)
    ones = jnp.ones((8,), F64)
    np.testing.assert_allclose(loss(z, y), loss(z, y, weights=ones), rtol=1e-15)
    total = lambda a, **kw: jnp.sum(loss(a, y, **kw))  # noqa: E731
    np.testing.assert_allclose(jax.grad(total)(z), jax.grad(lambda a: total(a, weights=ones))(z), rtol=1e-15)
    empty = loss(jnp.zeros((0, 4), F64), jnp.zeros((0,), jnp.int32))
    assert empty.shape == ((0,) if reduction == "none" else ()) and np.all(np.asarray(empty) == 0.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nothing_kept_gives_zero_and_zero_gradient(reduction):
    z, y = _categorical_batch(jax.random.PRNGKey(3))
    loss = mlnll.nll(mlnll.Categorical(), reduction=reduction)
    nothing = jnp.zeros((8,), bool)
    assert float(loss(z, y, where=nothing)) == 0.0
    g = jax.grad(lambda a: loss(a, y, where=nothing))(z)
    np.testing.assert_array_equal(g, 0.0)
    g_w = jax.grad(lambda a: loss(a, y, weights=jnp.zeros((8,), F64)))(z)
    np.testing.assert_array_equal(g_w, 0.0)


def test_masked_examples_with_infinite_loss_do_not_poison_the_batch():
    z = jnp.array([[0.0, -jnp.inf], [1.0, 2.0]], F64)
    y = jnp.array([1, 0])  # the first example has probability 0: its loss is inf
    loss = mlnll.nll(mlnll.Categorical())
    keep = jnp.array([False, True])
    value, g = jax.value_and_grad(lambda a: loss(a, y, where=keep))(z)
    assert np.isfinite(value) and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g[0], 0.0)


@pytest.mark.parametrize("mask", ["where", "weights"])
def test_a_masked_row_contributes_exactly_zero_to_the_gradient_whatever_it_holds(mask):
    """Padding rows hold garbage: extreme outputs (an exp overflow in the closed form) and targets
    off the support (NaN derivatives) must not reach the kept rows' gradient or the shared scale."""
    keep = jnp.array([False, True, False])
    kw = {"where": keep} if mask == "where" else {"weights": keep.astype(jnp.float32)}
    loss = mlnll.nll(mlnll.Poisson())
    log_rate, counts = jnp.array([100.0, 0.3, 0.0]), jnp.array([1.0, 2.0, -1.0])
    g = jax.grad(lambda o: loss(o, counts, **kw))(log_rate)
    assert g[0] == 0 and g[2] == 0
    np.testing.assert_allclose(g[1], np.exp(0.3) - 2.0, rtol=1e-6)
    # A shared log-scale (a scalar leaf) gets the sum over the kept rows only.
    normal = mlnll.nll(mlnll.Normal(), reduction="sum")
    loc, y = jnp.array([0.0, 1.0, 0.0]), jnp.array([jnp.inf, 2.0, jnp.nan])
    g_loc, g_scale = jax.grad(lambda o: normal(o, y, **kw))((loc, jnp.float32(0.5)))
    assert g_loc[0] == 0 and g_loc[2] == 0 and np.isfinite(g_scale)
    r2 = ((2.0 - 1.0) * np.exp(-0.5)) ** 2
    np.testing.assert_allclose(g_scale, 1 - r2, rtol=1e-6)


def test_jit_vmap_and_every_derivative_transformation():
    fam = mlnll.Normal()
    loss = mlnll.nll(fam)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
    loc, log_scale, y = (jax.random.normal(k, (6,), F64) for k in (k1, k2, k3))
    value = loss((loc, log_scale), y)  # eager: every transformation below is one jitted program
    zc, yc = _categorical_batch(jax.random.PRNGKey(5))
    closs = mlnll.nll(mlnll.Categorical())
    bloss = mlnll.nll(mlnll.Bernoulli(), reduction="sum")

    @jax.jit
    def transformed(loc, log_scale, y, zc, yc):
        f = lambda m: loss((m, log_scale), y)  # noqa: E731
        return {
            "jit": loss((loc, log_scale), y),
            "vmap": jax.vmap(lambda a, b, c: loss((a, b), c))(loc, log_scale, y),
            "grad": jax.grad(f)(loc), "jacfwd": jax.jacfwd(f)(loc), "jacrev": jax.jacrev(f)(loc),
            "hessian": jax.hessian(f)(loc),
            "c_grad": jax.grad(closs)(zc, yc), "c_jacfwd": jax.jacfwd(closs)(zc, yc),
            "c_hessian": jax.hessian(lambda a: closs(a[None], yc[:1]))(zc[0]),
            "b_hessian": jax.hessian(lambda a: bloss(a, jnp.ones((4,), F64)))(zc[0]),
        }

    got = transformed(loc, log_scale, y, zc, yc)
    np.testing.assert_allclose(got["jit"], value, rtol=1e-15)
    np.testing.assert_allclose(jnp.mean(got["vmap"]), value, rtol=1e-14)
    g = got["grad"]
    np.testing.assert_allclose(got["jacfwd"], g, rtol=1e-13)
    np.testing.assert_allclose(got["jacrev"], g, rtol=1e-13)
    np.testing.assert_allclose(g, fam.grad((loc, log_scale), y)[0] / 6, rtol=1e-13)
    np.testing.assert_allclose(got["hessian"], jnp.diag(jnp.exp(-2 * log_scale)) / 6, rtol=1e-13)
    np.testing.assert_allclose(got["c_jacfwd"], got["c_grad"], rtol=1e-13)
    np.testing.assert_allclose(got["c_hessian"], mlnll.Categorical().fisher(zc[0]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got["b_hessian"], jnp.diag(mlnll.Bernoulli().fisher(zc[0])), rtol=1e-12, atol=1e-15)


def test_loss_is_invariant_to_batch_permutation():
    z, y = _categorical_batch(jax.random.PRNGKey(6))
    perm = jax.random.permutation(jax.random.PRNGKey(7), 8)
    loss = mlnll.nll(mlnll.Categorical())
    np.testing.assert_allclose(loss(z[perm], y[perm]), loss(z, y), rtol=1e-14)


def test_bfloat16_loss_is_returned_in_bfloat16():
    z, y = _categorical_batch(jax.random.PRNGKey(8), dtype=jnp.float32)
    got = mlnll.nll(mlnll.Categorical())(z.astype(jnp.bfloat16), y)
    assert got.dtype == jnp.bfloat16
    want = mlnll.nll(mlnll.Categorical())(z.astype(jnp.bfloat16).astype(jnp.float32), y)
    np.testing.assert_allclose(float(got), float(want), rtol=2**-8)


def _logistic_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3))
    w_true, b_true = np.array([1.5, -2.0, 0.5]), 0.3
    p = 1 / (1 + np.exp(-(x @ w_true + b_true)))
    return x, (rng.uniform(size=256) < p).astype(np.float64)


def _newton_logistic_mle(x, y):
    """The float64 MLE by Newton's method (the oracle: no mlnll, no autodiff)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(xb.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-xb @ theta))
        grad = xb.T @ (p - y)
        hess = (xb * (p * (1 - p))[:, None]).T @ xb
        theta -= np.linalg.solve(hess, grad)
    return theta


def test_logistic_regression_with_optax_adam_lands_on_the_float64_mle():
    x, y = _logistic_data()
    want = _newton_logistic_mle(x, y)
    loss = mlnll.nll(mlnll.Bernoulli())
    xj, yj = jnp.asarray(x, F64), jnp.asarray(y, F64)

    def objective(theta):
        return loss(xj @ theta[:3] + theta[3], yj)

    opt = optax.adam(0.05)
    theta = jnp.zeros((4,), F64)
    state = opt.init(theta)

    @jax.jit
    def step(theta, state):
        g = jax.grad(objective)(theta)
        updates, state = opt.update(g, state)
        return optax.apply_updates(theta, updates), state

    with jax.numpy_dtype_promotion("standard"):  # optax's own bias correction mixes int and float
        for _ in range(3000):
            theta, state = step(theta, state)
    np.testing.assert_allclose(theta, want, rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(jax.grad(objective)(theta)))) < 1e-8


def test_unknown_reduction_names_the_choices():
    with pytest.raises(ValueError, match="'mean', 'sum', 'none'; got 'avg'"):
        mlnll.nll(mlnll.Bernoulli(), reduction="avg")


def test_nll_needs_a_family():
    with pytest.raises(TypeError, match="needs a family"):
        mlnll.nll("categorical")


def test_bad_mask_and_weights_raise_at_trace_time():
    z, y = _categorical_batch(jax.random.PRNGKey(9))
    loss = mlnll.nll(mlnll.Categorical())
    with pytest.raises(TypeError, match="where must be a boolean mask; got dtype int"):
        loss(z, y, where=jnp.ones((8,), jnp.int32))
    with pytest.raises(ValueError, match=r"where shape \(3,\) does not broadcast to the per-example loss shape \(8,\)"):
        jax.jit(loss)(z, y, where=jnp.ones((3,), bool))
    with pytest.raises(ValueError, match=r"weights shape \(8, 2\) does not broadcast"):
        loss(z, y, weights=jnp.ones((8, 2), F64))

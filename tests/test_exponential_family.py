"""ExponentialFamily: the builder against the hand-written families, scipy.stats and autodiff."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import mlnll
from helpers import f64, jitted
from mlnll import exponential_family as ef

N = 16
C = 5
F64 = jnp.float64
# The builder evaluates the textbook sums <eta, T> - A + log h and mean - T: each keeps an absolute
# error of a few ulps of its largest term. On these moderate inputs the terms are O(10), so 1e-12
# relative to the result's scale is that bound with room for the O(1) results.
TOL = 1e-12


def _hand_written(name):
    """The hand-written family a builder must agree with (Poisson, Exponential, Gamma: other modules)."""
    if name == "poisson":
        from mlnll._src.families.poisson import Poisson

        return Poisson()
    if name == "exponential":
        from mlnll._src.families.exponential import Exponential

        return Exponential()
    if name == "gamma":
        from mlnll._src.families.gamma import Gamma

        return Gamma()
    return {"bernoulli": mlnll.Bernoulli(), "categorical": mlnll.Categorical(), "normal": mlnll.Normal()}[name]


def _builder(name):
    return ef.categorical(C) if name == "categorical" else getattr(ef, name)()


@functools.partial(jax.jit, static_argnums=0)  # one program per family (op by op: one per primitive)
def _inputs(name, key):
    """Outputs p, outputs q and targets drawn from p (moderate parameters), in float64."""
    kp, kq, ky = jax.random.split(key, 3)
    if name == "categorical":
        p, q = jax.random.normal(kp, (N, C), F64), jax.random.normal(kq, (N, C), F64)
        return p, q, jax.random.categorical(ky, p).astype(jnp.int32)
    if name in ("gamma", "normal"):
        p = (0.5 * jax.random.normal(kp, (N,), F64), 0.5 * jax.random.normal(jax.random.fold_in(kp, 1), (N,), F64))
        q = (0.5 * jax.random.normal(kq, (N,), F64), 0.5 * jax.random.normal(jax.random.fold_in(kq, 1), (N,), F64))
        return p, q, _hand_written(name).sample(ky, p)
    p, q = jax.random.normal(kp, (N,), F64), jax.random.normal(kq, (N,), F64)
    if name == "bernoulli":
        return p, q, jax.random.bernoulli(ky, jax.nn.sigmoid(p)).astype(F64)
    if name == "poisson":
        return p, q, jax.random.poisson(ky, jnp.exp(p)).astype(F64)
    return p, q, jax.random.exponential(ky, (N,), F64) * jnp.exp(-p)


NAMES = ["bernoulli", "categorical", "poisson", "exponential", "gamma", "normal"]


def _close(got, want, tol=TOL):
    """Relative error judged on the leaf's scale: max |got - want| <= tol * max(|want|, 1)."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = f64(g), f64(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        scale = np.maximum(np.abs(w), 1.0)
        assert np.all(np.abs(g - w) <= tol * scale), np.max(np.abs(g - w) / scale)


@pytest.mark.parametrize("name", NAMES)
def test_builder_agrees_with_the_hand_written_family(name):
    built, hand = _builder(name), _hand_written(name)
    p, q, y = _inputs(name, jax.random.PRNGKey(NAMES.index(name)))

    @jax.jit  # both families' methods in one compiled program
    def evaluate(p, q, y):
        return [(f.log_prob(p, y), f.grad(p, y), f.fisher(p), f.kl(p, q),
                 None if name == "poisson" else f.entropy(p))  # E[log y!] has no closed form
                for f in (built, hand)]

    got, want = evaluate(p, q, y)
    for g, w in zip(got, want):
        _close(g, w)
    assert got[0].dtype == jnp.float64


@pytest.mark.parametrize("name", NAMES)
def test_builder_in_float32_returns_float32_and_agrees(name):
    built, hand = _builder(name), _hand_written(name)
    p, _, y = _inputs(name, jax.random.PRNGKey(10 + NAMES.index(name)))
    p32 = jax.tree.map(lambda x: x.astype(jnp.float32), p)
    y32 = y.astype(jnp.float32) if jnp.issubdtype(y.dtype, jnp.floating) else y
    # both families' log_prob and grad in one compiled program
    got, want, g, g_hand = jax.jit(lambda o, t: (built.log_prob(o, t), hand.log_prob(o, t), built.grad(o, t), hand.grad(o, t)))(p32, y32)
    assert got.dtype == jnp.float32
    _close(got, want, tol=2e-6)
    for leaf in jax.tree.leaves(g):
        assert leaf.dtype == jnp.float32
    _close(g, g_hand, tol=4e-6)


def test_log_prob_matches_scipy_directly():
    z, _, y = _inputs("bernoulli", jax.random.PRNGKey(20))
    np.testing.assert_allclose(jitted(ef.bernoulli(), "log_prob")(z, y), scipy.stats.bernoulli.logpmf(f64(y), scipy.special.expit(f64(z))), rtol=TOL)
    lr, _, k = _inputs("poisson", jax.random.PRNGKey(21))
    np.testing.assert_allclose(jitted(ef.poisson(), "log_prob")(lr, k), scipy.stats.poisson.logpmf(f64(k), np.exp(f64(lr))), rtol=TOL)
    (la, lb), _, t = _inputs("gamma", jax.random.PRNGKey(22))
    want = scipy.stats.gamma.logpdf(f64(t), np.exp(f64(la)), scale=np.exp(-f64(lb)))
    np.testing.assert_allclose(jitted(ef.gamma(), "log_prob")((la, lb), t), want, rtol=TOL)


def test_grad_is_mean_minus_statistic_for_the_identity_parametrisation():
    # The three closed forms of the module docstring, as one formula mean(eta) - T(y).
    z, _, y = _inputs("bernoulli", jax.random.PRNGKey(23))
    np.testing.assert_array_equal(ef.bernoulli().grad(z, y), jax.nn.sigmoid(z) - y)
    lr, _, k = _inputs("poisson", jax.random.PRNGKey(24))
    np.testing.assert_array_equal(ef.poisson().grad(lr, k), jnp.exp(lr) - k)
    zc, _, labels = _inputs("categorical", jax.random.PRNGKey(25))
    np.testing.assert_array_equal(ef.categorical(C).grad(zc, labels), jax.nn.softmax(zc) - jax.nn.one_hot(labels, C, dtype=F64))


def _rayleigh(with_mean: bool):
    """A family with no hand-written module, built by a user: Rayleigh(sigma) from log_sigma.

    ``p(y) = y / sigma^2 exp(-y^2 / (2 sigma^2))``: eta = -1/(2 sigma^2), T(y) = y^2, h(y) = y,
    A(eta) = -log(-2 eta). Without ``mean`` its gradient and Fisher come from autodiff of A.
    """
    def log_h(y):
        positive = y > 0
        return jnp.where(positive, jnp.log(jnp.where(positive, y, 1.0)), -jnp.inf)

    return mlnll.ExponentialFamily(
        natural_params=lambda log_sigma: -0.5 * jnp.exp(-2 * log_sigma),
        sufficient_statistic=jnp.square,
        log_partition=lambda eta: -jnp.log(-2 * eta),
        log_base_measure=log_h,
        mean=(lambda eta: -1 / eta) if with_mean else None,
        # E[log y] = log sigma + (log 2 - euler_gamma) / 2, and sigma^2 = -1 / (2 eta).
        expected_log_base_measure=lambda eta: 0.5 * (-jnp.log(-2 * eta) + math.log(2) - np.euler_gamma),
        name="rayleigh",
    )


def plain_rayleigh(log_sigma, y):
    sigma = jnp.exp(log_sigma)
    return jnp.log(y) - 2 * log_sigma - y**2 / (2 * sigma**2)


# Textbook log-densities (jax.scipy.stats), whose autodiff is the oracle for jax.grad and jax.hessian.
_PLAIN = {
    "gamma": lambda o, y: jax.scipy.stats.gamma.logpdf(y, jnp.exp(o[0]), scale=jnp.exp(-o[1])),
    "normal": lambda o, y: jax.scipy.stats.norm.logpdf(y, o[0], jnp.exp(o[1])),
    "exponential": lambda lr, y: jax.scipy.stats.expon.logpdf(y, scale=jnp.exp(-lr)),
}


@pytest.mark.parametrize("name", list(_PLAIN) + ["rayleigh, autodiff mean"])
def test_jax_grad_and_hessian_run_through_the_closed_form_in_outputs_and_targets(name):
    # log_prob holds a custom_jvp whose partial in eta is T - mean(eta) (J^T by autodiff of
    # natural_params) and whose partials in T(y), log h(y) are eta and 1 (the targets' derivative is
    # autodiff of the user's T and log h through them). First and second derivatives in the outputs
    # and the targets against autodiff of the textbook formula.
    if name.startswith("rayleigh"):
        fam, plain = _rayleigh(with_mean=False), plain_rayleigh
        p = 0.5 * jax.random.normal(jax.random.PRNGKey(40), (4,), F64)
        y = jnp.asarray(scipy.stats.rayleigh.rvs(scale=np.exp(f64(p)), random_state=np.random.default_rng(1)))
    else:
        fam, plain = _builder(name), _PLAIN[name]
        p, _, y = _inputs(name, jax.random.PRNGKey(41 + NAMES.index(name)))
    assert "custom_jvp_call" in str(jax.make_jaxpr(fam.log_prob)(p, y))
    ours = lambda o, t: jnp.sum(fam.log_prob(o, t))  # noqa: E731
    textbook = lambda o, t: jnp.sum(plain(o, t))  # noqa: E731
    first = jax.tree.map(lambda a: a[:1], (p, y))

    @jax.jit  # every derivative, ours and the textbook's, in one compiled program
    def derivatives(p, y, first):
        grads = [(jax.grad(ours, argnums)(p, y), jax.grad(textbook, argnums)(p, y)) for argnums in (0, 1)]
        return grads, (jax.hessian(ours, (0, 1))(*first), jax.hessian(textbook, (0, 1))(*first))

    grads, (h_ours, h_textbook) = derivatives(p, y, first)
    for g_ours, g_textbook in grads:
        _close(g_ours, g_textbook)
    _close(h_ours, h_textbook, tol=1e-10)


@pytest.mark.parametrize("with_mean", [True, False], ids=["closed-form mean", "autodiff mean"])
def test_a_user_built_family_against_scipy_and_autodiff(with_mean):
    fam = _rayleigh(with_mean)
    log_sigma = 0.5 * jax.random.normal(jax.random.PRNGKey(26), (N,), F64)
    sigma = np.exp(f64(log_sigma))
    y = jnp.asarray(scipy.stats.rayleigh.rvs(scale=sigma, random_state=np.random.default_rng(0)))
    # every method of the family, and the autodiff oracle, in one compiled program
    log_prob, grad, fisher, entropy, mean, want = jax.jit(lambda s, t: (
        fam.log_prob(s, t), fam.grad(s, t), fam.fisher(s), fam.entropy(s), fam.mean(s),
        jax.vmap(jax.grad(lambda a, b: -plain_rayleigh(a, b)))(s, t)))(log_sigma, y)
    np.testing.assert_allclose(log_prob, scipy.stats.rayleigh.logpdf(f64(y), scale=sigma), rtol=TOL)
    np.testing.assert_allclose(grad, want, rtol=TOL, atol=TOL)
    # Fisher: E[d^2(-log p)/d log_sigma^2] = E[2 y^2 / sigma^2] = 4 (E[y^2] = 2 sigma^2).
    np.testing.assert_allclose(fisher, np.full(N, 4.0), rtol=TOL)
    np.testing.assert_allclose(entropy, scipy.stats.rayleigh.entropy(scale=sigma), rtol=TOL)
    np.testing.assert_allclose(mean, 2 * sigma**2, rtol=TOL)  # E[T(y)] = E[y^2]
    check = mlnll.check_grad(fam, log_sigma, y)
    assert check.passed and check.fd_rel_err < 1e-8, check


def test_kl_is_the_bregman_divergence_and_matches_monte_carlo():
    fam, hand = ef.gamma(), _hand_written("gamma")
    p = (jnp.array([0.3, -0.5]), jnp.array([0.2, 1.0]))
    q = (jnp.array([-0.1, 0.4]), jnp.array([0.0, 0.5]))
    y = jitted(hand, "sample")(jax.random.PRNGKey(27), p, sample_shape=(100_000,))
    ratio = f64(jax.jit(lambda t: fam.log_prob(p, t) - fam.log_prob(q, t))(y))
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(y.shape[0])
    kl = jitted(fam, "kl")
    assert np.all(np.abs(f64(kl(p, q)) - mc) < 5 * se)
    np.testing.assert_allclose(kl(p, p), 0.0, atol=1e-15)


def test_outside_the_support_log_prob_is_minus_inf_and_grad_nan():
    cases = [(ef.bernoulli(), jnp.zeros(3), jnp.array([1.5, -0.1, 0.5])),
             (ef.poisson(), jnp.zeros(3), jnp.array([-1.0, 2.5, 3.0])),
             (ef.exponential(), jnp.zeros(3), jnp.array([-1.0, -1e-300, 2.0])),
             (ef.gamma(), (jnp.zeros(3), jnp.zeros(3)), jnp.array([0.0, -2.0, 2.0])),
             (ef.categorical(C), jnp.zeros((3, C)), jnp.array([-1.0, 5.0, 2.0]))]
    keep = jnp.array([False, False, True])
    for fam, outputs, y in cases:
        loss = mlnll.nll(fam)
        # log_prob, grad and the loss's gradient in one compiled program per family
        lp, grad, loss_grad = jax.jit(lambda o, t, fam=fam, loss=loss: (
            fam.log_prob(o, t), fam.grad(o, t), jax.grad(lambda oo: loss(oo, t, where=keep))(o)))(outputs, y)
        lp = f64(lp)
        assert np.all(np.isneginf(lp[:2])) and np.isfinite(lp[2]), (fam, lp)
        for g in jax.tree.leaves(grad):
            assert np.all(np.isnan(f64(g)[:2])) and np.all(np.isfinite(f64(g)[2])), (fam, g)
        # The gradient of the summed log_prob stays finite: invalid targets contribute no NaN.
        for g in jax.tree.leaves(loss_grad):
            assert np.all(np.isfinite(f64(g))), (fam, g)


def test_constant_terms_are_the_log_base_measure():
    k = jnp.array([0.0, 1.0, 4.0, -1.0])
    np.testing.assert_allclose(ef.poisson().constant_terms(k), [0.0, 0.0, -math.log(24), 0.0], rtol=1e-15)
    y = jnp.array([0.5, 2.0])
    np.testing.assert_allclose(ef.gamma().constant_terms(y), -np.log(f64(y)), rtol=1e-15)
    np.testing.assert_allclose(ef.normal().constant_terms(y), np.full(2, -0.5 * math.log(2 * math.pi)), rtol=1e-15)


def test_shared_outputs_get_per_example_gradients():
    loc = jnp.array([0.0, 1.0, -1.0])
    log_scale = jnp.asarray(0.3)  # one scale for every example
    y = jnp.array([0.5, 0.5, 0.5])
    d_loc, d_log_scale = ef.normal().grad((loc, log_scale), y)
    want_loc, want_log_scale = mlnll.Normal().grad((loc, log_scale), y)
    assert d_log_scale.shape == (3,)
    _close((d_loc, d_log_scale), (want_loc, want_log_scale))
    assert ef.categorical(C).log_prob(jnp.zeros(C), jnp.array([0, 1, 2])).shape == (3,)
    assert ef.categorical(C).grad(jnp.zeros(C), jnp.array([0, 1, 2])).shape == (3, C)


def test_mean_params_and_no_generic_sampler():
    lr = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(ef.poisson().mean(lr), np.exp(f64(lr)), rtol=1e-15)
    params = ef.normal().params((jnp.array([1.0]), jnp.array([0.0])))
    np.testing.assert_allclose(params["natural_params"], [[1.0, -0.5]], rtol=1e-15)
    np.testing.assert_allclose(params["mean_params"], [[1.0, 2.0]], rtol=1e-15)  # (E y, E y^2)
    with pytest.raises(NotImplementedError, match="no generic sampler"):
        _rayleigh(with_mean=True).sample(jax.random.PRNGKey(0), lr)
    with pytest.raises(NotImplementedError, match="expected_log_base_measure"):
        ef.poisson().entropy(lr)


@pytest.mark.parametrize("name", NAMES)
def test_builder_samples_lie_in_the_support_with_the_mean_statistic(name):
    # E[T(y)] = grad A(eta) = mean(eta): the sample mean of the statistic is within 5 standard errors.
    built = _builder(name)
    p, _, _ = _inputs(name, jax.random.PRNGKey(40 + NAMES.index(name)))
    p = jax.tree.map(lambda x: x[:4], p)
    @jax.jit  # the draws, their log-densities, statistics and the mean in one compiled program
    def draw(p):
        draws = built.sample(jax.random.PRNGKey(41), p, sample_shape=(20_000,))
        return (draws, jax.vmap(built.log_prob, in_axes=(None, 0))(p, draws),
                built.sufficient_statistic(jnp.asarray(draws).astype(F64)), built.mean(p))

    draws, log_prob, stat, mean = draw(p)
    assert draws.shape[:2] == (20_000, 4)
    assert np.all(np.isfinite(f64(log_prob)))
    stat = f64(stat)
    se = stat.std(0) / math.sqrt(stat.shape[0])
    assert np.all(np.abs(stat.mean(0) - f64(mean)) <= 5 * se + 1e-12), (stat.mean(0), mean)


def test_named_outputs_go_through_the_unpacking_layer():
    alone = r"ExponentialFamily\(name='poisson'\) takes log_rate alone as outputs; got a tuple of length 2"
    with pytest.raises(TypeError, match=alone):
        ef.poisson().log_prob((jnp.zeros(3), jnp.zeros(3)), jnp.zeros(3))
    with pytest.raises(TypeError, match=r"outputs must be a tuple \(log_concentration, log_rate\)"):
        ef.gamma().log_prob(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"do not broadcast: loc shape \(3,\), log_scale shape \(2,\)"):
        ef.normal().log_prob((jnp.zeros(3), jnp.zeros(2)), jnp.zeros(3))
    with pytest.raises(TypeError, match=r"outputs\[1\] \(log_scale\) must be a floating array"):
        ef.normal().grad((jnp.zeros(3), jnp.zeros(3, jnp.int32)), jnp.zeros(3))
    with pytest.raises(TypeError, match="output_names"):
        mlnll.ExponentialFamily(natural_params=jnp.exp, sufficient_statistic=jnp.exp, log_partition=jnp.exp,
                                log_base_measure=jnp.exp, output_names=("a", 1))


def test_replace_keeps_every_field_and_mean_params_is_the_same_argument_as_mean():
    fam = ef.gamma()
    copy = dataclasses.replace(fam)
    assert copy == fam and hash(copy) == hash(fam) and copy.mean_params is fam.mean_params
    renamed = dataclasses.replace(fam, name="gamma, renamed")
    assert repr(renamed) == "ExponentialFamily(name='gamma, renamed')" and renamed.sampler is fam.sampler
    pieces = dict(natural_params=jnp.exp, sufficient_statistic=jnp.exp, log_partition=jnp.exp,
                  log_base_measure=jnp.exp)
    spelled_as_the_field = mlnll.ExponentialFamily(**pieces, mean_params=jnp.exp)
    assert mlnll.ExponentialFamily(**pieces, mean=jnp.exp) == spelled_as_the_field
    with pytest.raises(TypeError, match="not both"):
        mlnll.ExponentialFamily(**pieces, mean=jnp.exp, mean_params=jnp.exp)


def test_families_are_frozen_hashable_and_cached():
    assert ef.poisson() is ef.poisson() and ef.categorical(3) == ef.categorical(3)
    assert ef.categorical(3) != ef.categorical(4)
    assert hash(ef.gamma()) == hash(ef.gamma())
    assert repr(ef.normal()) == "ExponentialFamily(name='normal')"
    assert isinstance(ef.bernoulli(), mlnll.Family)
    with pytest.raises(TypeError, match="log_partition=...\\) must be callable"):
        mlnll.ExponentialFamily(natural_params=jnp.exp, sufficient_statistic=jnp.exp, log_partition=3.0,
                                log_base_measure=jnp.exp)
    with pytest.raises(ValueError, match="num_classes"):
        ef.categorical(0)

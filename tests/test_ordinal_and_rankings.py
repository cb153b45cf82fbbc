"""OrderedLogistic and PlackettLuce against statsmodels, mpmath and autodiff of the plain formulas.

Oracles: statsmodels' ``OrderedModel(distr="logit")`` (a maximum-likelihood fit reproduced by
minimising mlnll's NLL, and its log-likelihood at its own estimate), mpmath at 60 digits (log-pmfs
and numerical derivatives at extreme inputs: eta = ±1e4, cutpoints 1e4 apart and exp(-30) apart,
Plackett-Luce scores up to ±1e4), and ``jax.grad`` of the plain textbook formulas.

The generic promises (log_prob and entropy against statsmodels' class probabilities, the closed
form and jax.grad against autodiff of the plain formula, hessian and jacfwd, the Fisher
information against the expected Hessian, extreme inputs, targets off the support, samples in the
support) are checked for every row of the check table by tests/test_conformance.py and
tests/test_verify.py; this file keeps what is specific to these families.
"""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import mlnll
from conftest import RTOL
from helpers import f64, jitted
from mlnll._src import numerics

mpmath.mp.dps = max(mpmath.mp.dps, 60)  # never lowered by another module (one process imports them all)
F32, F64 = np.dtype("float32"), np.dtype("float64")
ORDERED = mlnll.OrderedLogistic()


# -- numerics.log1mexp ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_log1mexp_has_relative_accuracy_on_both_sides_of_log_2(dtype):
    x = np.array([1e-30, 1e-8, 1e-3, 0.5, float(np.log(2.0)), 0.7, 3.0, 30.0, 700.0, 0.0, np.inf], dtype)
    got = f64(jax.jit(numerics.log1mexp)(jnp.asarray(x)))
    ends, got, x = got[-2:], got[:-2], x[:-2]
    # log1p(-e^-x) in mpmath: 60 digits of 1 - e^-700 would round to 1.
    want = np.array([float(mpmath.log1p(-mpmath.exp(-mpmath.mpf(float(v))))) for v in x])
    np.testing.assert_allclose(got, want, rtol=4 * RTOL[dtype], atol=np.finfo(dtype).tiny)  # -e^-700: 0 in float32
    assert ends[0] == -np.inf and ends[1] == 0.0


@functools.partial(jax.jit, static_argnames=("family", "fisher"))
def _everything(family, outputs, targets, fisher=True):
    """``(log_prob, grad, jax.grad of -log_prob, fisher)``: one program per family and shape."""
    through = jax.grad(lambda o: -jnp.sum(family.log_prob(o, targets)))(outputs)
    return (family.log_prob(outputs, targets), family.grad(outputs, targets), through,
            family.fisher(outputs) if fisher else None)


# -- OrderedLogistic: mpmath at the extremes ------------------------------------------------------


def _mp(values):
    """Floats (numpy's included) as exact mpmath numbers; mpmath numbers as they are."""
    return [v if isinstance(v, mpmath.mpf) else mpmath.mpf(float(v)) for v in values]


def _mp_cutpoints(raw):
    c = [raw[0]]
    for r in raw[1:]:
        c.append(c[-1] + mpmath.exp(r))
    return c


def _mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _mp_ordered_log_prob(eta, raw, k):
    """``log(F(c_k - eta) - F(c_{k-1} - eta))`` in mpmath, written so that 60 digits keep the
    tails: ``F(u) - F(l) = F(-l) - F(-u)`` above the median (where both F are 1 - tiny), and
    ``1 - F(-u) - F(l)`` by log1p when the class straddles it (p = 1 - tiny)."""
    c = [-mpmath.inf] + _mp_cutpoints(_mp(raw)) + [mpmath.inf]
    u, l = c[k + 1] - eta, c[k] - eta  # noqa: E741
    if l > 0:
        return mpmath.log(_mp_sigmoid(-l) - _mp_sigmoid(-u))
    if u < 0:
        return mpmath.log(_mp_sigmoid(u) - _mp_sigmoid(l))
    return mpmath.log1p(-(_mp_sigmoid(-u) + _mp_sigmoid(l)))


def _mp_ordered_grad(eta, raw, k):
    """``d log p / d(eta, raw_0, ...)`` by mpmath's numerical differentiation of the formula above."""
    x = _mp([eta, *raw])

    def f(i):
        return lambda t: _mp_ordered_log_prob(*(lambda v: (v[0], v[1:], k))(x[:i] + [t] + x[i + 1:]))

    return [mpmath.diff(f(i), x[i]) for i in range(len(x))]


ORDERED_EXTREMES = [
    # (eta, raw cutpoints, label): a dominated tail on each side, cutpoints 8103 apart,
    # cutpoints exp(-30) apart (a class of probability ~1e-13 that keeps its digits), a confident
    # middle class (-log p = e^-39.4 + e^-40, which 1 - sum of the others rounds to 0).
    (1e4, (0.0, 0.0, 0.0), 0), (1e4, (0.0, 0.0, 0.0), 2), (1e4, (0.0, 0.0, 0.0), 3),
    (-1e4, (0.0, 0.0, 0.0), 0), (-1e4, (0.0, 0.0, 0.0), 1), (-1e4, (0.0, 0.0, 0.0), 3),
    (3.0, (-50.0, 9.0, 9.0), 1), (3.0, (-50.0, 9.0, 9.0), 2), (8200.0, (-50.0, 9.0, 9.0), 2),
    (0.5, (0.0, -30.0, -30.0), 1), (0.5, (0.0, -30.0, -30.0), 2), (0.0, (-40.0, 4.375, 0.0), 1),
]  # every number exact in float32: one mpmath reference serves both dtypes


@functools.lru_cache(maxsize=None)
def _ordered_references():
    want_lp, want_grad = [], []
    for e, r, k in ORDERED_EXTREMES:
        want_lp.append(float(_mp_ordered_log_prob(mpmath.mpf(e), r, k)))
        want_grad.append([float(g) for g in _mp_ordered_grad(e, r, k)])
    return np.array(want_lp), -np.array(want_grad)


def _ordered_extreme_inputs(dtype):
    eta = np.array([e for e, _, _ in ORDERED_EXTREMES], dtype)
    raw = np.array([r for _, r, _ in ORDERED_EXTREMES], dtype)
    labels = np.array([k for _, _, k in ORDERED_EXTREMES], np.int32)
    return (jnp.asarray(eta), jnp.asarray(raw)), jnp.asarray(labels), *_ordered_references()


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_ordered_logistic_matches_mpmath_at_extreme_eta_and_cutpoints(dtype):
    outputs, labels, want_lp, want_grad = _ordered_extreme_inputs(dtype)
    got, closed, through, fisher = _everything(ORDERED, outputs, labels)
    got = f64(got)
    # Conditioning: the cutpoints' cumulative sum and eta - c round by eps (|eta| + sum |c steps|),
    # which moves log p by that times |d log p / d eta| <= 1 (a score of ~1e-17 in the confident
    # middle class, so its tiny loss keeps its relative accuracy).
    eta, raw = (f64(x) for x in outputs)
    reach = np.abs(eta) + np.abs(raw[:, 0]) + np.sum(np.exp(raw[:, 1:]), axis=1)
    scale = np.abs(want_lp) + np.abs(want_grad[:, 0]) * reach
    tiny = np.finfo(dtype).tiny  # -e^-147 underflows to 0 in float32
    assert np.all(np.abs(got - want_lp) <= 4 * RTOL[dtype] * scale + tiny), (got, want_lp)
    g_eta, g_raw = (f64(g) for g in closed)
    fisher = f64(fisher)
    natural = np.sqrt(np.abs(np.diagonal(fisher, axis1=1, axis2=2)))  # sqrt(F_ii): the score's scale
    for name, g in (("closed form", np.concatenate([g_eta[:, None], g_raw], axis=1)),
                    ("jax.grad", np.concatenate([f64(through[0])[:, None], f64(through[1])], axis=1))):
        assert np.all(np.isfinite(g)), name
        # + tiny: a score of e^-147 (eta = 8200 two cutpoints from the class) is 0 in float32.
        bound = 16 * RTOL[dtype] * np.maximum(np.abs(want_grad), natural) + tiny
        assert np.all(np.abs(g - want_grad) <= bound), (name, np.argwhere(np.abs(g - want_grad) > bound), g, want_grad)


def test_ordered_logistic_keeps_the_tiny_loss_of_a_confident_middle_class():
    """-log p = e^-40 + e^-41.45 (+ e^-81.45): the plain difference of sigmoids rounds it to 0 in float32."""
    outputs = (jnp.array([0.0], jnp.float32), jnp.array([[-40.0, 4.4, 0.0]], jnp.float32))
    got = -f64(jitted(ORDERED, "log_prob")(outputs, jnp.array([1])))[0]
    want = -float(_mp_ordered_log_prob(mpmath.mpf(0), np.array([-40.0, 4.4, 0.0], np.float32), 1))
    assert abs(got - want) <= 200 * RTOL[F32] * want  # 200: eps times the 121 units the cumsum spans
    from mlnll._src.families.ordered_logistic import _plain_log_prob

    assert -f64(jax.jit(_plain_log_prob)(outputs, jnp.array([1])))[0] == 0.0


# -- OrderedLogistic: statsmodels' OrderedModel fit ------------------------------------------------

FIT_N, FIT_BETA, FIT_RAW = 400, np.array([1.0, -0.5]), np.array([-1.0, 0.2, -0.3])


def _ordinal_data():
    """Features and labels drawn from the model (numpy's seeded generator)."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((FIT_N, 2))
    c = np.cumsum(np.concatenate([FIT_RAW[:1], np.exp(FIT_RAW[1:])]))
    latent = x @ FIT_BETA + rng.logistic(size=FIT_N)
    return x, np.sum(c[None, :] < latent[:, None], axis=1)


@jax.jit
def _ordered_nll_and_grad(theta, x, y):
    """The summed NLL of (beta, raw) with eta = x beta, and its gradient (through the closed form)."""
    def nll(t):
        eta = x @ t[:2]
        raw = jnp.broadcast_to(t[2:], (x.shape[0], t.shape[0] - 2))
        return -jnp.sum(ORDERED.log_prob((eta, raw), y))

    return jax.value_and_grad(nll)(theta)


def test_ordered_logistic_reproduces_statsmodels_ordered_model_fit():
    import scipy.optimize
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    x, y = _ordinal_data()
    model = OrderedModel(y, x, distr="logit")
    result = model.fit(method="bfgs", disp=False, maxiter=5000, gtol=1e-9)
    xs, ys = jnp.asarray(x), jnp.asarray(y)
    # At statsmodels' estimate, mlnll's log-likelihood is statsmodels' own.
    at_theirs = -float(_ordered_nll_and_grad(jnp.asarray(result.params), xs, ys)[0])
    assert at_theirs == pytest.approx(model.loglike(result.params), rel=1e-13)
    # Maximised from scratch with mlnll's value and closed-form gradient: the same maximum.
    evaluate = lambda t: tuple(np.asarray(a) for a in _ordered_nll_and_grad(jnp.asarray(t), xs, ys))  # noqa: E731
    ours = scipy.optimize.minimize(evaluate, np.zeros(5), jac=True, method="BFGS", options={"gtol": 1e-9})
    # At the maximum (BFGS may stop on "precision loss" there): a gradient of 1e-5 costs ~1e-12 in
    # the log-likelihood (half its square over the curvature, which is ~100 here).
    assert np.max(np.abs(ours.jac)) <= 1e-5, ours
    assert -ours.fun == pytest.approx(result.llf, rel=1e-7)
    assert -ours.fun >= result.llf - 1e-9 * abs(result.llf)  # never below statsmodels' maximum
    assert np.all(np.abs(ours.x - result.params) <= 1e-3 * result.bse)  # its standard errors


# -- OrderedLogistic: targets and errors -----------------------------------------------------------


def test_ordered_logistic_labels_may_be_floating_whole_numbers_and_anything_else_is_off_support():
    eta = jnp.zeros(7)
    raw = jnp.broadcast_to(jnp.array([-1.0, 0.0, 0.0]), (7, 3))
    log_prob = jitted(ORDERED, "log_prob")
    floats = f64(log_prob((eta, raw), jnp.array([0.0, 1.0, 3.0, 2.5, -1.0, 4.0, jnp.nan])))
    # int64 2**32 is off the support, never wrapped onto class 0 by a cast.
    ints = f64(log_prob((eta, raw), jnp.array([0, 1, 3, 2**32, -1, 4, 2], jnp.int64)))
    np.testing.assert_array_equal(floats[:3], ints[:3])
    assert np.all(np.isfinite(ints[:3])) and np.isfinite(ints[6])
    assert np.all(floats[3:] == -np.inf) and np.all(ints[3:6] == -np.inf)


def test_ordered_logistic_errors_name_the_argument():
    with pytest.raises(TypeError, match=r"OrderedLogistic outputs must be a tuple \(eta, raw_cutpoints\)"):
        ORDERED.log_prob(jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"raw_cutpoints\) need a class axis"):
        ORDERED.log_prob((jnp.zeros(3), jnp.zeros(())), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="OrderedLogistic.kl: p has 4 classes and q 3"):
        ORDERED.kl((jnp.zeros(2), jnp.zeros((2, 3))), (jnp.zeros(2), jnp.zeros((2, 2))))


def test_ordered_logistic_mean_params_and_samples_agree():
    eta = jnp.array([-1.0, 0.5, 2.0])
    raw = jnp.array([[-1.0, 0.0, 0.3], [0.0, -1.0, 1.0], [1.0, 0.5, -2.0]])
    params = jitted(ORDERED, "params")((eta, raw))
    probs = f64(params["probs"])
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(f64(jitted(ORDERED, "mean")((eta, raw))), probs @ np.arange(4), rtol=1e-13)
    np.testing.assert_allclose(f64(params["cutpoints"])[:, 1:] - f64(params["cutpoints"])[:, :-1],
                               np.exp(f64(raw)[:, 1:]), rtol=1e-13)
    draws = np.asarray(jitted(ORDERED, "sample")(jax.random.PRNGKey(3), (eta, raw), sample_shape=(4000,)))
    freq = np.stack([np.mean(draws == k, axis=0) for k in range(4)], axis=-1)
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / 4000) + 1e-12), (freq, probs)


# -- PlackettLuce: an mpmath loop -----------------------------------------------------------------

PL = mlnll.PlackettLuce()
PL_TOP2 = mlnll.PlackettLuce(top_k=2)


def _mp_plackett_luce(scores, ranking, picks):
    """``sum_{j < picks} (s_{pi_j} - log sum_{u >= j} exp(s_{pi_u}))`` in mpmath, a plain loop."""
    x = [scores[i] for i in ranking]
    return mpmath.fsum(x[j] - mpmath.log(mpmath.fsum(mpmath.exp(v) for v in x[j:])) for j in range(picks))


def _mp_plackett_luce_grad(scores, ranking, picks):
    """``d(-log p)/d s`` by mpmath's numerical differentiation of the loop above."""
    s = _mp(scores)

    def f(i):
        return lambda t: -_mp_plackett_luce(s[:i] + [t] + s[i + 1:], ranking, picks)

    return [mpmath.diff(f(i), s[i]) for i in range(len(s))]


PL_CASES = [  # every score exact in float32: one mpmath reference serves both dtypes
    # (scores, ranking): moderate, confident (-log p ~ e^-40, lost by lse - s), ±1e4, and 30-apart.
    ((0.25, -1.25, 2.0, 0.5, -0.125), (2, 3, 0, 4, 1)),
    ((0.25, -1.25, 2.0, 0.5, -0.125), (1, 4, 0, 3, 2)),
    ((80.0, 40.0, 0.0, -40.0, -80.0), (0, 1, 2, 3, 4)),
    ((1e4, -1e4, 0.0, 3.0, -3.0), (1, 3, 0, 4, 2)),
    ((1e4, -1e4, 0.0, 3.0, -3.0), (0, 3, 2, 4, 1)),
    ((30.0, 0.0, -30.0, 30.0, 0.0), (3, 0, 1, 4, 2)),
]


def _mp_plackett_luce_term_sizes(scores, ranking, picks):
    """Per item, the size of the terms its gradient sums: ``sum_{j < min(r_i, picks)} q_j(i)`` and
    ``1 - q_{r_i}(i)`` if it is picked. They can cancel to far below their size (an item picked
    second after a confident first pick: e^-40 - e^-40 = e^-80), which no formula resolves better
    than the rounding of the terms."""
    s = _mp(scores)
    x = [s[i] for i in ranking]
    pools = [mpmath.fsum(mpmath.exp(v) for v in x[j:]) for j in range(len(x))]
    sizes = [mpmath.mpf(0)] * len(x)
    for t, item in enumerate(ranking):
        earlier = mpmath.fsum(mpmath.exp(x[t]) / pools[j] for j in range(min(t, picks)))
        rest = (pools[t] - mpmath.exp(x[t])) / pools[t] if t < picks else 0
        sizes[item] = earlier + rest
    return sizes


@functools.lru_cache(maxsize=None)
def _pl_references(top_k):
    s = np.array([c[0] for c in PL_CASES])
    ranking = np.array([c[1] for c in PL_CASES], np.int32)
    picks = 4 if top_k is None else top_k  # 5 items: the last pick adds 0
    want = [float(_mp_plackett_luce(_mp(row), r, picks)) for row, r in zip(s, ranking)]
    grads = [[float(g) for g in _mp_plackett_luce_grad(row, r, picks)] for row, r in zip(s, ranking)]
    sizes = [[float(t) for t in _mp_plackett_luce_term_sizes(row, r, picks)] for row, r in zip(s, ranking)]
    return np.array(want), np.array(grads), np.array(sizes)


def _pl_inputs(dtype, top_k):
    s = jnp.asarray(np.array([c[0] for c in PL_CASES], dtype))
    return (s, jnp.asarray(np.array([c[1] for c in PL_CASES], np.int32))) + _pl_references(top_k)


@pytest.mark.parametrize("top_k", [None, 2])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_plackett_luce_matches_an_mpmath_loop(dtype, top_k):
    family = mlnll.PlackettLuce(top_k=top_k)
    s, ranking, want, want_grad, term_sizes = _pl_inputs(dtype, top_k)
    # The whole batch (its +-1e4 rows send it to the running shift), and row by row under vmap, where
    # each row whose scores lie within log(tiny)/2 of its maximum takes the one-shift form.
    batch = _everything(family, s, ranking, fisher=False)[:3]
    rowwise = jax.vmap(lambda o, t: [x[0] for x in _everything(family, o[None], t[None], fisher=False)[:3]])(s, ranking)
    spread = np.max(f64(s), axis=1) - np.min(f64(s), axis=1)
    assert np.sum(spread < -0.5 * np.log(np.finfo(dtype).tiny)) >= 2  # both forms are exercised
    # Conditioning: each pick's term moves by eps |s| times its softmax weights (<= 2 per pick): the
    # confident ranking's -log p of e^-40 is judged at its own size.
    scale = np.abs(want) + np.sum(np.abs(want_grad) * np.abs(f64(s)), axis=1)
    tiny = np.finfo(dtype).tiny  # a softmax weight of e^-2e4 is 0 in every dtype
    for got, closed, through in (batch, rowwise):
        got, closed, through = f64(got), f64(closed), f64(through)
        assert np.all(np.abs(got - want) <= 4 * RTOL[dtype] * scale), (got, want)
        for name, g in (("closed form", closed), ("jax.grad", through)):
            # Judged against the size of the terms each component sums (>= its own size).
            bound = 8 * RTOL[dtype] * np.maximum(np.abs(want_grad), term_sizes) + tiny
            assert np.all(np.abs(g - want_grad) <= bound), (name, np.argwhere(np.abs(g - want_grad) > bound), g, want_grad)


def test_plackett_luce_keeps_the_tiny_loss_of_a_confident_ranking_in_float32():
    s = jnp.array([[80.0, 40.0, 0.0, -40.0, -80.0]], jnp.float32)
    ranking = jnp.array([[0, 1, 2, 3, 4]])
    got = -f64(jitted(PL, "log_prob")(s, ranking))[0]
    want = -float(_mp_plackett_luce(_mp(f64(s[0])), (0, 1, 2, 3, 4), 4))  # e^-40 + ...: about 4.2e-18
    assert abs(got - want) <= 4 * RTOL[F32] * want
    from mlnll._src.families.plackett_luce import _plain

    assert -f64(jax.jit(_plain(None))(s, ranking))[0] == 0.0  # lse - s rounds it to 0


def test_plackett_luce_gives_minus_inf_for_anything_but_a_permutation():
    s = jnp.broadcast_to(jnp.array([0.5, -1.0, 2.0, 0.0]), (6, 4))
    rankings = jnp.array([[2, 0, 3, 1], [0, 0, 3, 1], [4, 0, 3, 1], [-1, 0, 2, 3], [3, 2, 1, 0], [1, 1, 1, 1]])
    # (NaN gradients off the support: tests/test_conformance.py, for both check rows.)
    floats = jnp.array([[2.0, 0.0, 3.0, 1.0], [2.0, 0.5, 3.0, 1.0], [2.0, 0.0, 3.0, jnp.nan]])
    # One program: full and top-2 rankings of the integer targets, and the floating ones.
    full, top2, floats = (f64(x) for x in jax.jit(lambda s, r, y: (PL.log_prob(s, r), PL_TOP2.log_prob(s, r),
                                                                      PL.log_prob(s[:3], y)))(s, rankings, floats))
    for lp in (full, top2):  # with top_k the whole permutation is still checked
        assert np.all(np.isfinite(lp[[0, 4]])) and np.all(lp[[1, 2, 3, 5]] == -np.inf), lp
    assert floats[0] == full[0] and np.all(floats[1:] == -np.inf)


def test_plackett_luce_top_1_is_categorical_on_the_top_item_and_errors_name_the_argument():
    s = jnp.array([[0.5, -1.0, 2.0, 0.0], [3.0, 1.0, -2.0, 0.0]])
    rankings = jnp.array([[2, 0, 3, 1], [1, 3, 0, 2]])
    top1, categorical = jax.jit(lambda s, r: (mlnll.PlackettLuce(top_k=1).log_prob(s, r),
                                              mlnll.Categorical().log_prob(s, r[:, 0])))(s, rankings)
    np.testing.assert_allclose(f64(top1), f64(categorical), rtol=1e-14)
    with pytest.raises(ValueError, match=r"PlackettLuce\(top_k=5\) scores more picks than the K = 4"):
        mlnll.PlackettLuce(top_k=5).log_prob(s, rankings)
    with pytest.raises(ValueError, match="top_k=...\\) must be None or a whole number >= 1; got 0"):
        mlnll.PlackettLuce(top_k=0)
    with pytest.raises(ValueError, match=r"targets are rankings \[..., K\].*K = 4.*got targets shape \(2, 3\)"):
        PL.log_prob(s, rankings[:, :3])
    with pytest.raises(NotImplementedError, match="closed-form entropy"):
        PL.entropy(s)


def test_plackett_luce_gumbel_top_k_samples_follow_the_ranking_probabilities():
    s = jnp.array([1.0, 0.0, -0.5])
    rankings = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    probs = np.exp(f64(jax.jit(PL.log_prob)(jnp.broadcast_to(s, (6, 3)), jnp.asarray(rankings))))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-13)
    draws = np.asarray(jitted(PL, "sample")(jax.random.PRNGKey(5), s, sample_shape=(6000,)))
    freq = np.array([np.mean(np.all(draws == r, axis=1)) for r in rankings])
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / 6000)), (freq, probs)


def test_plackett_luce_top_k_hessian_matches_autodiff_of_the_plain_formula():
    """Second order through the closed form with top_k (the check row covers top_k=None)."""
    from mlnll._src.families.plackett_luce import _plain

    s = jnp.array([[0.25, -1.25, 2.0, 0.5, -0.125], [3.0, 1.0, -2.0, 0.0, 0.5]])
    ranking = jnp.array([[2, 3, 0, 4, 1], [1, 4, 0, 3, 2]])

    @jax.jit
    def hessians(x):
        return tuple(jax.hessian(lambda v, f=f: jnp.sum(f(v, ranking)))(x) for f in (PL_TOP2.log_prob, _plain(2)))

    got, want = (f64(h) for h in hessians(s))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_plackett_luce_top_k_takes_the_top_items_alone_or_any_completion():
    s = jnp.array([[0.5, -1.0, 2.0, 0.0, 1.5], [3.0, 1.0, -2.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]])
    top = jnp.array([[2, 4], [1, 3], [0, 0]])  # the last repeats an item: -inf
    completions = (jnp.array([[2, 4, 0, 1, 3], [1, 3, 0, 2, 4], [0, 0, 1, 2, 3]]),
                   jnp.array([[2, 4, 3, 1, 0], [1, 3, 4, 2, 0], [0, 0, 4, 2, 1]]))

    @jax.jit
    def values_and_grads(s):
        return [(PL_TOP2.log_prob(s, y), PL_TOP2.grad(s, y)) for y in (top, *completions)]

    (lp, g), *rest = [(f64(a), f64(b)) for a, b in values_and_grads(s)]
    assert np.all(np.isfinite(lp[:2])) and lp[2] == -np.inf and np.all(np.isnan(g[2]))
    for lp_full, g_full in rest:
        np.testing.assert_allclose(lp_full[:2], lp[:2], rtol=1e-15)
        np.testing.assert_allclose(g_full[:2], g[:2], rtol=1e-14, atol=1e-16)
        assert lp_full[2] == -np.inf
    with pytest.raises(ValueError, match=r"or the top 2 items \[..., 2\]; got targets shape \(3, 3\)"):
        PL_TOP2.log_prob(s, completions[0][:, :3])

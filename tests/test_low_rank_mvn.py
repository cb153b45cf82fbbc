"""LowRankMultivariateNormal against scipy.stats, mpmath and the dense textbook formulas.

The generic promises (log_prob and entropy against scipy at d = 3, r = 2, the closed form and
jax.grad against autodiff of the dense formula, hessian and jacfwd, the Fisher information against
the expected Hessian, extreme inputs, targets off the support, samples in the support) are checked
for its row of the check table by tests/test_conformance.py and ``python -m mlnll check``; this file
keeps what is specific to the low-rank form: larger d and r, a factor far above the diagonal, KL
across ranks, the sample covariance, and that no d x d array is ever formed.
"""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.stats

import mlnll
from conftest import RTOL
from helpers import f64

mpmath.mp.dps = max(mpmath.mp.dps, 50)  # never lowered by another module (one process imports them all)
F32, F64 = np.dtype("float32"), np.dtype("float64")
FAMILY = mlnll.LowRankMultivariateNormal()


def _outputs(seed, n, d, r, factor_scale=0.7):
    rng = np.random.default_rng(seed)
    loc = rng.standard_normal((n, d))
    W = factor_scale * rng.standard_normal((n, d, r))
    log_diag = 0.5 * rng.standard_normal((n, d))
    y = loc + np.einsum("nij,nj->ni", W, rng.standard_normal((n, r))) + np.exp(0.5 * log_diag) * rng.standard_normal((n, d))
    return (loc, W, log_diag), y


def _dense(outputs, i):
    loc, W, log_diag = (np.asarray(x, np.float64)[i] for x in outputs)
    return loc, W @ W.T + np.diag(np.exp(log_diag))


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grads(family, outputs, y):
    return family.log_prob(outputs, y), family.grad(outputs, y), jax.grad(lambda o: -jnp.sum(family.log_prob(o, y)))(outputs)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_log_prob_and_grad_at_d_40_r_5_match_scipy_and_autodiff_of_the_dense_formula(dtype):
    """d = 40, r = 5: log_prob against scipy's dense multivariate_normal; grad (closed form and
    jax.grad) against jax.grad of the dense textbook formula in float64."""
    outputs, y = _outputs(0, 6, 40, 5)
    cast = jax.tree.map(lambda x: jnp.asarray(x, dtype), (outputs, y))
    lp, closed, through = _value_and_grads(FAMILY, *cast)
    want = np.array([scipy.stats.multivariate_normal(*_dense(cast[0], i)).logpdf(f64(cast[1][i])) for i in range(6)])
    # Condition: the Mahalanobis term and log det are each of size ~d; the rounding of the inputs
    # moves log p by about eps times their sum.
    assert np.all(np.abs(f64(lp) - want) <= 4 * RTOL[dtype] * 40 * np.maximum(np.abs(want) / 40, 1.0))
    from mlnll._src.families.low_rank_multivariate_normal import _plain_log_prob

    oracle = jax.jit(jax.grad(lambda o, t: -jnp.sum(_plain_log_prob(o, t))))(
        *jax.tree.map(lambda x: jnp.asarray(x, F64), cast))
    for c, t, w in zip(closed, through, oracle):
        w = f64(w)
        scale = np.max(np.abs(w))  # each leaf judged against its largest entry: components cross 0
        for g in (c, t):
            assert g.dtype == dtype
            assert np.all(np.abs(f64(g) - w) <= 64 * RTOL[dtype] * scale)


def test_a_factor_1e6_times_the_noise_keeps_the_mahalanobis_term_accurate():
    """W = 1e6 x a fixed shape against unit noise, the target along W's span and off it: the ridge form
    |e|^2 + |u|^2 against a 50-digit mpmath evaluation of the dense formula. The textbook
    |res|^2 - |C^{-1} Wh^T res|^2 would lose 12 digits to cancellation here (terms of size 1e12 - 1)."""
    rng = np.random.default_rng(3)
    d, r = 5, 2
    W = 1e6 * rng.standard_normal((d, r))
    loc = np.zeros(d)
    log_diag = np.zeros(d)
    along = W @ np.array([0.7, -0.2]) + rng.standard_normal(d)
    off = rng.standard_normal(d)
    ys = np.stack([along, off])
    outputs = (np.stack([loc] * 2), np.stack([W] * 2), np.stack([log_diag] * 2))
    got = f64(jax.jit(FAMILY.log_prob)(outputs, ys))
    d_loc, d_W, d_l = (f64(g) for g in jax.jit(FAMILY.grad)(outputs, ys))
    sigma = mpmath.matrix(W.tolist()) * mpmath.matrix(W.tolist()).T + mpmath.eye(d)
    log_det = mpmath.log(mpmath.det(sigma))
    for i, y in enumerate(ys):
        v = mpmath.matrix(y.tolist())
        maha = (v.T * mpmath.lu_solve(sigma, v))[0]
        want = float(-maha / 2 - log_det / 2 - d * mpmath.log(2 * mpmath.pi) / 2)
        # The value's conditioning: a rounding of each input x moves log p by eps |d log p/dx| |x|.
        # Along W's span |y| ~ 1e6 meets |Sigma^-1 (y - loc)| ~ 1, so ~1e6 eps: the dense formula's
        # own answer at the inputs rounded once more moves by that much.
        cond = (2 * np.sum(np.abs(d_loc[i]) * np.maximum(np.abs(y), 1.0)) + np.sum(np.abs(d_W[i]) * np.abs(W))
                + np.sum(np.abs(d_l[i])))
        assert abs(got[i] - want) <= 8 * np.finfo(F64).eps * max(cond, 64.0), (i, got[i], want, cond)


def test_kl_across_ranks_matches_the_dense_formula_and_kl_of_p_with_itself_is_zero():
    (loc_p, W_p, l_p), _ = _outputs(4, 5, 7, 3)
    (loc_q, W_q, l_q), _ = _outputs(5, 5, 7, 2, factor_scale=1.3)
    p, q = (loc_p, W_p, l_p), (loc_q, W_q, l_q)
    kl = jax.jit(FAMILY.kl)
    got = f64(kl(p, q))
    want = []
    for i in range(5):
        (mp_, sp), (mq, sq) = _dense(p, i), _dense(q, i)
        prec_q = np.linalg.inv(sq)
        m = mp_ - mq
        want.append(0.5 * (np.trace(prec_q @ sp) + m @ prec_q @ m - 7 + np.linalg.slogdet(sq)[1] - np.linalg.slogdet(sp)[1]))
    want = np.array(want)
    np.testing.assert_allclose(got, want, rtol=64 * RTOL[F64])
    # KL(p || p): the low-rank terms cancel to eps times tr(K) (of size ~10 here).
    np.testing.assert_allclose(f64(jax.jit(FAMILY.kl)(p, p)), 0.0, atol=64 * np.finfo(np.float64).eps * 10)


def test_samples_have_the_low_rank_plus_diagonal_covariance_and_moments_match_scipy():
    outputs, _ = _outputs(6, 1, 4, 2)
    n = 100_000
    draws = f64(jax.jit(FAMILY.sample, static_argnames="sample_shape")(jax.random.PRNGKey(0), outputs,
                                                                        sample_shape=(n,)))[:, 0]
    loc, sigma = _dense(outputs, 0)
    # Sample mean and covariance within 5 standard errors (the covariance entries' standard error is
    # sqrt((S_ii S_jj + S_ij^2) / n)).
    assert np.all(np.abs(draws.mean(0) - loc) <= 5 * np.sqrt(np.diag(sigma) / n))
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    assert np.all(np.abs(np.cov(draws.T) - sigma) <= 5 * se)
    ref = scipy.stats.multivariate_normal(loc, sigma)
    np.testing.assert_allclose(f64(FAMILY.entropy(outputs))[0], ref.entropy(), rtol=4 * RTOL[F64])
    np.testing.assert_allclose(f64(FAMILY.mean(outputs))[0], loc, rtol=0)
    params = FAMILY.params(outputs)
    np.testing.assert_allclose(f64(params["cov_diag"])[0], np.exp(outputs[2][0]), rtol=1e-15)


def test_value_and_grad_at_d_1024_never_form_a_d_by_d_array():
    """The traced program of value + grad (and of the Hessian-vector products jax.grad feeds it) holds
    no array with two axes of size d: the determinant lemma and Woodbury keep every step O(d r^2)."""
    d, r = 1024, 8
    outputs = (jnp.zeros((2, d)), jnp.zeros((2, d, r)), jnp.zeros((2, d)))
    y = jnp.ones((2, d))
    loss = mlnll.nll(FAMILY)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(loss))(outputs, y)

    def shapes(jaxpr):
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                yield tuple(getattr(v.aval, "shape", ()))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from shapes(sub)

    seen = list(shapes(jaxpr.jaxpr))
    assert any(s[-2:] == (d, r) for s in seen)  # the factor's gradient is there
    assert not [s for s in seen if sum(n == d for n in s) >= 2]


def test_a_zero_factor_is_the_diagonal_multivariate_normal_and_bad_shapes_name_the_argument():
    outputs, y = _outputs(7, 4, 3, 2)
    loc, W, log_diag = outputs
    zero = (loc, np.zeros_like(W), log_diag)
    diagonal = mlnll.MultivariateNormal()
    raw = np.zeros((4, 3, 3))
    raw[:, np.arange(3), np.arange(3)] = 0.5 * log_diag
    np.testing.assert_allclose(f64(FAMILY.log_prob(zero, y)), f64(diagonal.log_prob((loc, raw), y)), rtol=1e-14)
    with pytest.raises(ValueError, match="cov_factor"):
        FAMILY.log_prob((loc, W[:, :2], log_diag), y)
    with pytest.raises(ValueError, match="targets must have shape"):
        FAMILY.log_prob(outputs, y[:, :2])
    with pytest.raises(TypeError, match="tuple"):
        FAMILY.log_prob((loc, W), y)


# -- small variances under a factor of order 1: the capacitance's small direction (issue 12) --------


def _mp(x):
    return x if isinstance(x, mpmath.mpf) else mpmath.mpf(float(x))


def _mp_log_pdf(loc, W, log_diag, y):
    """50-digit log N(y; loc, W W^T + D) on the dense d x d covariance (Cholesky and a triangular solve)."""
    d = len(loc)
    Wm = mpmath.matrix([[_mp(x) for x in row] for row in W])
    sigma = Wm * Wm.T
    for i in range(d):
        sigma[i, i] += mpmath.exp(_mp(log_diag[i]))
    L = mpmath.cholesky(sigma)
    z = mpmath.lu_solve(L, mpmath.matrix([_mp(a) - _mp(b) for a, b in zip(y, loc)]))
    log_det = 2 * mpmath.fsum(mpmath.log(L[i, i]) for i in range(d))
    return -mpmath.fsum(t * t for t in z) / 2 - log_det / 2 - d * mpmath.log(2 * mpmath.pi) / 2


def _mp_gradient(loc, W, log_diag, y, which):
    """d log p / d(loc_i, log_cov_diag_i) by 50-digit central differences (step 1e-20)."""
    h = mpmath.mpf("1e-20")
    out = []
    for i in range(len(loc)):
        up = [np.array(loc, object), np.array(log_diag, object)]
        down = [np.array(loc, object), np.array(log_diag, object)]
        up[which][i] = _mp(up[which][i]) + h
        down[which][i] = _mp(down[which][i]) - h
        f = [_mp_log_pdf(a[0], W, a[1], y) for a in (up, down)]
        out.append((f[0] - f[1]) / (2 * h))
    return out


def _mp_gradient_W(loc, W, log_diag, y, rows):
    """d log p / d W_ij for the rows given, by 50-digit central differences (step 1e-20)."""
    h = mpmath.mpf("1e-20")
    out = []
    for i in rows:
        for j in range(len(W[i])):
            up, down = np.array(W, object), np.array(W, object)
            up[i, j], down[i, j] = _mp(W[i][j]) + h, _mp(W[i][j]) - h
            out.append((_mp_log_pdf(loc, up, log_diag, y) - _mp_log_pdf(loc, down, log_diag, y)) / (2 * h))
    return np.array([float(g) for g in out]).reshape(len(rows), -1)


# (d, r, seed, stiff coordinates, log_cov_diag there): variances e^-15 ... e^-40 under a factor of
# order 1 (1e-4 relative off in float32 at -15, 42% at -18.4, NaN from -25, float64 NaN at -40
# when K = I + Wh^T Wh was Cholesky-factored), up to as many stiff coordinates as the rank.
STIFF = [(3, 1, 10, (0,), -15.0), (4, 2, 11, (0, 2), -18.4), (5, 2, 12, (1,), -25.0), (4, 2, 13, (0, 3), -40.0),
         (3, 1, 14, (2,), -18.4), (5, 2, 15, (4,), -88.7)]


def _stiff_point(d, r, seed, stiff, level):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, r))
    loc = rng.standard_normal(d)
    log_diag = 0.3 * rng.standard_normal(d)
    log_diag[list(stiff)] = level
    # a target from the model: in the stiff coordinates it is (nearly) in the span of W
    y = loc + W @ rng.standard_normal(r) + np.exp(0.5 * log_diag) * rng.standard_normal(d)
    return loc, W, log_diag, y


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_small_variances_under_a_factor_match_mpmath(dtype):
    """Variances e^-15 ... e^-88.7 under a factor of order 1, one jit per (d, r) shape and dtype:
    values and closed-form derivatives (jax.grad runs the same partials) against 50-digit mpmath at
    the inputs as the dtype holds them. Tolerance: the value's conditioning, sum |d log p / dx| max(|x|, 1)
    over every input (the float64 derivatives), times 8 eps of the dtype (the sweep's rule; a rounding
    of each input moves log p by eps times that). Derivatives in loc: relative to the largest of the
    leaf's largest entry; in log_cov_diag: absolutely (``1 - h_i`` carries an absolute error of eps,
    the class docstring)."""
    eps = float(np.finfo(dtype).eps)
    for d, r, seed, stiff, level in STIFF:
        point = [np.asarray(np.asarray(x, dtype), np.float64) for x in _stiff_point(d, r, seed, stiff, level)]
        loc, W, log_diag, y = point
        args = [jnp.asarray(x, dtype)[None] for x in point]
        lp, closed, through = _value_and_grads(FAMILY, tuple(args[:3]), args[3])
        lp64, g64, _ = _value_and_grads(FAMILY, tuple(jnp.asarray(a, F64) for a in args[:3]), jnp.asarray(args[3], F64))
        cond = sum(float(np.sum(np.abs(f64(g)[0]) * np.maximum(np.abs(x), 1.0))) for g, x in zip(g64, point[:3]))
        cond += float(np.sum(np.abs(f64(g64[0])[0]) * np.abs(y)))  # d/dy = -d/dloc
        want = float(_mp_log_pdf(loc, W, log_diag, y))
        assert np.isfinite(f64(lp)[0]), (d, r, level, lp)
        assert abs(f64(lp)[0] - want) <= 8 * eps * cond, (d, r, level, f64(lp)[0], want, cond)
        d_loc = np.array([float(g) for g in _mp_gradient(loc, W, log_diag, y, 0)])
        d_l = np.array([float(g) for g in _mp_gradient(loc, W, log_diag, y, 1)])
        d_W_want = _mp_gradient_W(loc, W, log_diag, y, stiff)
        for g in (closed, through):
            # w = D^{-1/2} e: e_i to eps of the largest entries of the ridge residual, so relative to
            # the leaf's largest entry (measured: 6.4 eps at most)
            assert np.all(np.abs(-f64(g[0])[0] - d_loc) <= 16 * eps * np.max(np.abs(d_loc))), (level, g[0], d_loc)
            # (e_i^2 - (1 - h_i))/2: 1 - h_i to an absolute eps (measured: 8 eps at most, |d_l| ~ 3)
            assert np.all(np.abs(-f64(g[2])[0] - d_l) <= 16 * eps * max(1.0, np.max(np.abs(d_l)))), (level, g[2], d_l)
            # the stiff rows of d/dW = D^{-1/2} (e u^T - M): relative to the leaf's largest entry (5x off
            # at -88.7 in float64 when M was Wh C^{-T} C^{-1}: an error of eps |Wh_i|^2)
            d_W = -f64(g[1])[0][list(stiff)]
            leaf = max(np.max(np.abs(f64(g64[1]))), np.max(np.abs(d_W_want)))
            assert np.all(np.abs(d_W - d_W_want) <= 16 * eps * leaf), (level, d_W, d_W_want)


# More stiff coordinates than the rank: d = 3, r = 1, every variance e^level under a factor of
# order 1, the target at loc. log det Sigma then goes to -inf with the variances (Sigma tends to the
# rank-1 W W^T), so no floor may touch them: the value is ~ -(d - r) level / 2. Before the floor
# was moved to the overflow bound, float32 was 20% off from level = -32 (35.92 exact at -40) and
# float64 12% off at -80.
MORE_THAN_R = [(F32, (-40.0, -78.0)), (F64, (-80.0, -600.0))]
_W_RANK_1 = ((0.8,), (-1.3,), (2.1,))


@pytest.mark.parametrize("dtype, levels", MORE_THAN_R, ids=["float32", "float64"])
def test_more_stiff_coordinates_than_the_rank_match_mpmath(dtype, levels):
    """Value and closed-form ``d log p / d log_cov_diag = -D_i (Sigma^-1)_ii / 2`` (at y = loc)
    against mpmath on the dense covariance, at enough digits for its near-singular determinant
    (``|level|`` nats per stiff coordinate beyond the rank). Tolerance: 8 eps times the value's
    conditioning ``sum_i |d log p / d l_i| |l_i|`` (~ |level|), and 16 eps absolutely for the
    derivatives (``1 - h_i`` carries an absolute error of eps)."""
    eps = float(np.finfo(dtype).eps)
    n = len(levels)
    loc = jnp.asarray(np.tile([0.3, -1.2, 0.5], (n, 1)), dtype)
    W = jnp.asarray(np.tile(_W_RANK_1, (n, 1, 1)), dtype)
    log_diag = jnp.asarray(np.repeat(np.asarray(levels)[:, None], 3, 1), dtype)
    values, (_, _, d_l) = jax.jit(lambda o, y: (FAMILY.log_prob(o, y), FAMILY.grad(o, y)))((loc, W, log_diag), loc)
    for i, level in enumerate(levels):
        with mpmath.workdps(60 + int(abs(level))):
            Wm = mpmath.matrix([[_mp(x) for x in row] for row in f64(W[i])])
            sigma = Wm * Wm.T + mpmath.eye(3) * mpmath.exp(_mp(log_diag[i, 0]))
            want = -mpmath.log(mpmath.det(sigma)) / 2 - 3 * mpmath.log(2 * mpmath.pi) / 2
            want_d_l = [-mpmath.exp(_mp(log_diag[i, 0])) * mpmath.inverse(sigma)[k, k] / 2 for k in range(3)]
        cond = abs(level) * float(sum(abs(g) for g in want_d_l))
        assert abs(float(values[i]) - float(want)) <= 8 * eps * cond, (level, float(values[i]), float(want))
        # the closed form's sign convention: grad is d(-log p)
        np.testing.assert_allclose(-f64(d_l[i]), [float(g) for g in want_d_l], rtol=0, atol=16 * eps)


@pytest.mark.xfail(strict=True, reason="below the overflow floor (D_i < 16 (d + r) |W_i|^2 / max) the "
                   "variances are raised to it; with more stiff coordinates than the rank log det Sigma moves")
def test_more_stiff_coordinates_than_the_rank_below_the_floor_is_known_wrong():
    """float32 at log_cov_diag = -86 (exact 81.92, the floor gives 79.47): documented in
    ``_stiffness_floor``; a column scaling of [Wh; I] before the QR would remove the floor."""
    loc = jnp.zeros((1, 3), jnp.float32)
    W = jnp.asarray([_W_RANK_1], jnp.float32)
    value = FAMILY.log_prob((loc, W, jnp.full((1, 3), -86.0, jnp.float32)), loc)
    with mpmath.workdps(150):
        Wm = mpmath.matrix([[_mp(x) for x in row] for row in f64(W[0])])
        want = -mpmath.log(mpmath.det(Wm * Wm.T + mpmath.eye(3) * mpmath.exp(-86))) / 2 - 3 * mpmath.log(2 * mpmath.pi) / 2
    assert abs(float(value[0]) - float(want)) <= 1e-4 * abs(float(want))


def test_fisher_and_kl_at_variances_below_the_floor_are_finite_and_take_its_limit():
    """A variance of e^-1e4 (float64; below the overflow floor) under a factor of order 1: fisher is
    finite, its log_cov_diag row and column of that coordinate are D_i / D_floor = 0 times the floored
    model's (as log_prob's derivative), and equal the fisher at e^-650 (above the floor) elsewhere to
    the floor's relative perturbation; KL(p || p) is 0 and KL against the e^-650 model is finite."""
    (loc, W, l), _ = _outputs(21, 1, 3, 2)
    loc, W, l = (jnp.asarray(x, F64) for x in (loc, W, l))
    stiff = l.at[..., 0].set(-1e4)
    above = l.at[..., 0].set(-650.0)
    fisher = jax.jit(FAMILY.fisher)
    f_stiff, f_above = f64(fisher((loc, W, stiff))), f64(fisher((loc, W, above)))
    assert np.all(np.isfinite(f_stiff)), f_stiff
    d, r = W.shape[-2:]
    l0 = d + d * r  # the first log_cov_diag index
    np.testing.assert_array_equal(f_stiff[0, l0, :], 0.0)
    np.testing.assert_array_equal(f_stiff[0, :, l0], 0.0)
    # the loc and W blocks (Sigma^-1; products of Sigma^-1 W) are continuous as D_0 -> 0 (at most r
    # stiff coordinates): within the floor's perturbation of the e^-650 model's. (With M = Wh K^-1 from
    # C^-1, this block was 1e263 at e^-650: an absolute error of eps B in a row of length B.)
    block = slice(0, l0)
    np.testing.assert_allclose(f_stiff[0, block, block], f_above[0, block, block], rtol=1e-13,
                               atol=1e-13 * np.max(np.abs(f_above[0, block, block])))
    kl = jax.jit(FAMILY.kl)
    np.testing.assert_allclose(f64(kl((loc, W, stiff), (loc, W, stiff))), 0.0, atol=1e-9)
    assert np.all(np.isfinite(f64(kl((loc, W, stiff), (loc, W, above)))))

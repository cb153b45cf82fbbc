"""MultivariateNormal and MixtureSameFamily against scipy.stats, mpmath and autodiff of the plain formulas."""

import itertools
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.special
import scipy.stats
from jax.flatten_util import ravel_pytree

import mlnll
from conftest import RTOL
from helpers import f64

N = 16
D = 3
K = 3
F64 = np.dtype("float64")


def _assert_within(got, want, bound):
    """|got - want| <= bound elementwise (bound broadcasts), with the worst offender in the message."""
    gap = np.abs(f64(got) - f64(want))
    bound = np.broadcast_to(bound, gap.shape)
    assert np.all(gap <= bound), f"max gap/bound {np.max(gap / np.maximum(bound, 1e-300)):.3g}"


# -- plain textbook formulas, differentiated by jax.grad / jax.hessian as the oracle --------------


def plain_cholesky(raw):
    """L from the raw scale_tril: strict lower triangle as is, diagonal exp(raw_ii)."""
    return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))


def plain_mvn(loc, raw, y):
    """log N(y; loc, Sigma) with Sigma = L L^T, via the inverse and log-determinant of Sigma."""
    L = plain_cholesky(raw)
    sigma = L @ L.T
    r = y - loc
    _, logdet = jnp.linalg.slogdet(sigma)
    return -0.5 * r @ jnp.linalg.inv(sigma) @ r - 0.5 * logdet - 0.5 * loc.shape[-1] * jnp.log(2 * jnp.pi)


def plain_mixture(logits, loc, log_scale, y):
    """log sum_k softmax(logits)_k N(y; loc_k, exp(log_scale_k)^2), densities exponentiated."""
    scale = jnp.exp(log_scale)
    density = jnp.exp(-0.5 * ((y - loc) / scale) ** 2) / (scale * jnp.sqrt(2 * jnp.pi))
    return jnp.log(jnp.sum(jax.nn.softmax(logits) * density))


# -- inputs ------------------------------------------------------------------------------------


def _mvn_inputs(key, dtype, n=N, d=D, spread=0.4):
    kl, ks, ky = jax.random.split(key, 3)
    loc = jax.random.normal(kl, (n, d), jnp.float64)
    raw = spread * jax.random.normal(ks, (n, d, d), jnp.float64)
    L = jax.vmap(plain_cholesky)(raw)
    y = loc + jnp.einsum("nij,nj->ni", L, jax.random.normal(ky, (n, d), jnp.float64))
    return (loc.astype(dtype), raw.astype(dtype)), y.astype(dtype)


def _mixture_inputs(key, dtype, n=N):
    kz, kl, ks, ky = jax.random.split(key, 4)
    logits = jax.random.normal(kz, (n, K), jnp.float64)
    loc = 2 * jax.random.normal(kl, (n, K), jnp.float64)
    log_scale = 0.5 * jax.random.normal(ks, (n, K), jnp.float64)
    y = 3 * jax.random.normal(ky, (n,), jnp.float64)
    cast = lambda x: x.astype(dtype)  # noqa: E731
    return (cast(logits), (cast(loc), cast(log_scale))), cast(y)


def _scipy_mvn_logpdf(loc, raw, y):
    L = np.asarray(jax.vmap(plain_cholesky)(jnp.asarray(f64(raw))))
    return np.array([scipy.stats.multivariate_normal.logpdf(f64(y[i]), f64(loc[i]), L[i] @ L[i].T)
                     for i in range(len(L))])


# == MultivariateNormal ==========================================================================


@pytest.mark.parametrize("log_scale", [-30.0, -5.0, 5.0, 30.0])
def test_mvn_log_prob_with_tiny_and_huge_scales_matches_scipy(log_scale):
    # Scaling L by s = exp(log_scale) scales the covariance by s^2: scipy's eigendecomposition of a
    # well-conditioned covariance is accurate at every scale, so it stays a 1e-12 oracle.
    (loc, raw), y = _mvn_inputs(jax.random.PRNGKey(1), F64)
    eye = jnp.eye(D, dtype=bool)[None]
    # L -> s L: the log-diagonal shifted by log s, the strict lower triangle times s.
    raw = jnp.where(eye, raw + log_scale, raw * math.exp(log_scale))
    loc = loc * math.exp(log_scale)
    L = jax.vmap(plain_cholesky)(raw)
    y = loc + jnp.einsum("nij,nj->ni", L, jax.random.normal(jax.random.PRNGKey(2), (N, D), jnp.float64))
    got = mlnll.MultivariateNormal().log_prob((loc, raw), y)
    np.testing.assert_allclose(f64(got), _scipy_mvn_logpdf(loc, raw, y), rtol=1e-12, atol=0)


def test_mvn_log_prob_with_mixed_scales_matches_mpmath():
    # Diagonal scales e^-80, 1, e^80 in one factor: the covariance's condition number is 1e139, so
    # scipy (which factors the covariance) declares it singular. The oracle is the density computed
    # in 60-digit arithmetic by forward substitution.
    raw = np.array([[-80.0, 0.0, 0.0], [0.7, 0.0, 0.0], [-0.3 * math.exp(80), 0.9 * math.exp(80), 80.0]])
    loc = np.array([1e-35, 2.0, -3.0 * math.exp(80)])
    u = np.array([0.4, -1.3, 2.2])
    L = np.tril(raw, -1) + np.diag(np.exp(np.diag(raw)))
    y = loc + L @ u
    got = float(mlnll.MultivariateNormal().log_prob((jnp.asarray(loc), jnp.asarray(raw)), jnp.asarray(y)))
    with mpmath.workdps(60):
        Lm = [[mpmath.mpf(float(L[i, j])) for j in range(D)] for i in range(D)]
        r = [mpmath.mpf(float(y[i])) - mpmath.mpf(float(loc[i])) for i in range(D)]
        z = []
        for i in range(D):
            z.append((r[i] - sum(Lm[i][j] * z[j] for j in range(i))) / Lm[i][i])
        want = (-sum(zi**2 for zi in z) / 2 - sum(mpmath.log(Lm[i][i]) for i in range(D))
                - D * mpmath.log(2 * mpmath.pi) / 2)
    assert abs(got - float(want)) <= 1e-12 * abs(float(want)), (got, float(want))


def test_mvn_ignores_the_upper_triangle():
    (loc, raw), y = _mvn_inputs(jax.random.PRNGKey(3), F64)
    noisy = raw + jnp.triu(jnp.full((D, D), 123.0), 1)[None]
    fam = mlnll.MultivariateNormal()
    np.testing.assert_array_equal(fam.log_prob((loc, noisy), y), fam.log_prob((loc, raw), y))
    _, g_raw = fam.grad((loc, noisy), y)
    assert np.all(np.asarray(g_raw)[:, np.triu_indices(D, 1)[0], np.triu_indices(D, 1)[1]] == 0)


def test_mvn_grad_equals_autodiff_of_the_plain_formula(dtype):
    (loc, raw), y = _mvn_inputs(jax.random.PRNGKey(4), dtype)
    got = mlnll.MultivariateNormal().grad((loc, raw), y)
    up = lambda a: a.astype(jnp.float64)  # noqa: E731
    want = jax.jit(jax.vmap(jax.grad(lambda m, r, t: -plain_mvn(m, r, t), argnums=(0, 1))))(up(loc), up(raw), up(y))
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        # Entries such as 1 - L_ii w_i z_i cancel: they are judged against the example's largest entry.
        scale = np.max(np.abs(f64(w)).reshape(N, -1), axis=1).reshape((N,) + (1,) * (w.ndim - 1))
        _assert_within(g, w, RTOL[dtype] * 16 * scale)


def test_mvn_grad_passes_finite_differences():
    outputs, y = _mvn_inputs(jax.random.PRNGKey(5), F64)
    result = mlnll.check_grad(mlnll.MultivariateNormal(), outputs, y)
    assert result.passed and result.fd_rel_err < 1e-8 and result.grad_rel_err < 1e-13, result


def test_mvn_derivatives_in_outputs_and_targets_run_through_the_closed_form():
    # jax.grad and jax.hessian of log_prob in (loc, raw, y) jointly: the closed form's partials
    # (w, tril(w z^T) - diag, -w) and their autodiff, against autodiff of the textbook formula.
    (loc, raw), y = _mvn_inputs(jax.random.PRNGKey(6), F64, n=1)
    fam = mlnll.MultivariateNormal()
    assert "custom_jvp_call" in str(jax.make_jaxpr(fam.log_prob)((loc, raw), y))
    flat, unravel = ravel_pytree((loc[0], raw[0], y[0]))
    ours = lambda t: fam.log_prob(unravel(t)[:2], unravel(t)[2])  # noqa: E731
    plain = lambda t: plain_mvn(*unravel(t))  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(ours))(flat), jax.jit(jax.grad(plain))(flat), rtol=1e-12, atol=1e-14)
    want = jax.jit(jax.hessian(plain))(flat)
    np.testing.assert_allclose(jax.jit(jax.hessian(ours))(flat), want, rtol=1e-11, atol=1e-13 * np.max(np.abs(want)))


@jax.jit
def _gauss_hermite_expected_hessian(loc, raw):
    """E_y[hessian of -plain_mvn in (loc, raw)]: y = loc + sqrt(2) L x over a 3^d Gauss-Hermite grid
    (exact: the Hessian is a polynomial of degree 2 in y)."""
    x, w = np.polynomial.hermite.hermgauss(3)
    grid = np.array(list(itertools.product(x, repeat=D)))
    weights = np.prod(np.array(list(itertools.product(w, repeat=D))), axis=1) / math.pi ** (D / 2)
    nodes = loc[None] + math.sqrt(2) * jnp.asarray(grid) @ plain_cholesky(raw).T
    theta = jnp.concatenate([loc, raw.reshape(-1)])
    hess = jax.vmap(jax.hessian(lambda t, y: -plain_mvn(t[:D], t[D:].reshape(D, D), y)), in_axes=(None, 0))(theta, nodes)
    return jnp.einsum("k,kpq->pq", jnp.asarray(weights), hess)


def test_mvn_fisher_equals_expected_hessian_of_the_plain_formula():
    (loc, raw), _ = _mvn_inputs(jax.random.PRNGKey(6), F64, n=3)
    fisher = f64(mlnll.MultivariateNormal().fisher((loc, raw)))
    assert fisher.shape == (3, D + D * D, D + D * D)
    for i in range(3):
        want = f64(_gauss_hermite_expected_hessian(loc[i], raw[i]))
        # Judged on the information scale sqrt(F_ii F_jj) (the upper triangle's rows are 0 on both sides).
        scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))
        _assert_within(fisher[i], want, 1e-12 * np.maximum(scale, 1e-300))


def test_mvn_fisher_blocks():
    (loc, raw), _ = _mvn_inputs(jax.random.PRNGKey(7), F64)
    fisher = f64(mlnll.MultivariateNormal().fisher((loc, raw)))
    L = f64(jax.vmap(plain_cholesky)(raw))
    # The loc block is the precision matrix (L L^T)^{-1}; loc and scale_tril are orthogonal.
    np.testing.assert_allclose(fisher[:, :D, :D], np.linalg.inv(L @ np.swapaxes(L, 1, 2)), rtol=1e-12, atol=1e-12)
    assert np.all(fisher[:, :D, D:] == 0)
    # d = 1 is Normal: diag(1/scale^2, 2) in (loc, log_scale).
    one = mlnll.MultivariateNormal().fisher((jnp.array([[0.3]]), jnp.array([[[-0.7]]])))
    np.testing.assert_allclose(one[0], mlnll.Normal().fisher((jnp.array(0.3), jnp.array(-0.7))), rtol=1e-15)


def _textbook_kl(p, q):
    (mp, rp), (mq, rq) = p, q
    Lp, Lq = f64(jax.vmap(plain_cholesky)(rp)), f64(jax.vmap(plain_cholesky)(rq))
    out = []
    for i in range(len(Lp)):
        sp, sq = Lp[i] @ Lp[i].T, Lq[i] @ Lq[i].T
        diff = f64(mq[i]) - f64(mp[i])
        out.append(0.5 * (np.trace(np.linalg.solve(sq, sp)) + diff @ np.linalg.solve(sq, diff) - D
                          + np.linalg.slogdet(sq)[1] - np.linalg.slogdet(sp)[1]))
    return np.array(out)


def test_mvn_kl_matches_the_textbook_formula_and_monte_carlo():
    p, _ = _mvn_inputs(jax.random.PRNGKey(9), F64, n=4)
    q, _ = _mvn_inputs(jax.random.PRNGKey(10), F64, n=4)
    fam = mlnll.MultivariateNormal()
    got = f64(fam.kl(p, q))
    np.testing.assert_allclose(got, _textbook_kl(p, q), rtol=1e-12)
    # Monte Carlo with scipy's densities (an oracle no one here wrote) on mlnll's samples.
    y = f64(fam.sample(jax.random.PRNGKey(11), p, sample_shape=(50_000,)))
    Lp, Lq = f64(jax.vmap(plain_cholesky)(p[1])), f64(jax.vmap(plain_cholesky)(q[1]))
    ratio = np.stack([
        scipy.stats.multivariate_normal(f64(p[0][i]), Lp[i] @ Lp[i].T).logpdf(y[:, i])
        - scipy.stats.multivariate_normal(f64(q[0][i]), Lq[i] @ Lq[i].T).logpdf(y[:, i])
        for i in range(len(Lp))
    ], axis=1)
    mc, se = ratio.mean(0), ratio.std(0) / math.sqrt(y.shape[0])
    assert np.all(np.abs(got - mc) < 5 * se), (got, mc, se)


def _mp_cholesky(raw):
    """L in mpmath from the float64 raw entries, exactly (the diagonal's exp taken in 50 digits)."""
    raw = f64(raw)
    L = mpmath.matrix(D, D)
    for i in range(D):
        for j in range(i):
            L[i, j] = mpmath.mpf(float(raw[i, j]))
        L[i, i] = mpmath.exp(mpmath.mpf(float(raw[i, i])))
    return L


def _mp_kl(L_p, L_q, loc_p, loc_q):
    """The textbook KL(p || q) in mpmath: (tr(Sigma_q^-1 Sigma_p) + m^T Sigma_q^-1 m - d + log det Sigma_q
    - log det Sigma_p) / 2, m = loc_q - loc_p (in 50 digits the cancellation costs nothing)."""
    sigma_p, sigma_q = L_p * L_p.T, L_q * L_q.T
    inverse = sigma_q**-1
    diff = loc_q - loc_p
    return (sum((inverse * sigma_p)[i, i] for i in range(D)) + (diff.T * inverse * diff)[0] - D
            + mpmath.log(mpmath.det(sigma_q)) - mpmath.log(mpmath.det(sigma_p))) / 2


def _one_ulp_sensitivity(args, kl):
    """``sum over entries x of |KL(x + ulp(x)) - KL(x)|``: how far the exact KL moves when each entry of
    the factors' lower triangles and of the locations moves by one float64 ulp, one at a time."""
    total = mpmath.mpf(0)
    for a, X in enumerate(args):
        entries = [(i, j) for i in range(X.rows) for j in range(min(i + 1, X.cols))]
        for i, j in entries:
            moved = X.copy()
            moved[i, j] += mpmath.mpf(float(np.spacing(abs(float(X[i, j])))))
            total += abs(_mp_kl(*args[:a], moved, *args[a + 1:]) - kl)
    return total


def test_mvn_kl_stays_accurate_when_p_and_q_are_close():
    # KL ~ |delta|^2: the textbook trace + logdet - d form cancels to rounding noise; this keeps it.
    #
    # The tolerance is the conditioning of the KL in the rounding of what it is computed from. kl()
    # rounds L_ii = exp(raw_ii) once (1 ulp), then solves with L_q, which is backward stable: the
    # computed M = L_q^-1 L_p and m = L_q^-1 (loc_p - loc_q) are exact for L_q perturbed by at most
    # gamma_d = d u / (1 - d u) relatively, i.e. d ulps, per entry (Higham, Accuracy and Stability of
    # Numerical Algorithms, Thm 8.5). So to first order the result is the exact KL at factors within
    # d + 1 ulps of L_p, L_q, plus the rounding of its final sum of d(d-1)/2 + 2d nonnegative terms
    # (M_ij^2 below the diagonal, expm1mx(2 delta_i), m_i^2: no cancellation), at most (d^2 + 2d) u KL:
    #     |got - KL| <= (d + 1) S + (d^2 + 2d) u KL,
    # S = sum over the entries x of L_p, L_q, loc_p, loc_q of |KL(x + ulp(x)) - KL(x)|, computed in
    # mpmath below (the locations are included, which only adds to S). When p and q are close the KL is
    # ~delta^2 while its derivative in each entry is ~delta, so S / KL ~ u / delta: ~1e-9 at delta = 1e-6,
    # the relative accuracy that float64 factors determine; ~1e-14 at delta = 0.1, where the bound is
    # tighter than a blanket 1e-12.
    u = np.finfo(np.float64).eps / 2
    (loc_p, raw_p), _ = _mvn_inputs(jax.random.PRNGKey(12), F64, n=1)
    for delta in [1e-6, 1e-3, 0.1]:
        loc_q = loc_p + delta * jnp.array([[0.3, -0.2, 0.1]])
        raw_q = raw_p + delta * jnp.array([[[0.5, 0.0, 0.0], [0.4, -0.3, 0.0], [0.2, 0.1, 0.2]]])
        got = float(mlnll.MultivariateNormal().kl((loc_p, raw_p), (loc_q, raw_q))[0])
        with mpmath.workdps(50):
            locs = [mpmath.matrix([mpmath.mpf(float(x)) for x in f64(loc)[0]]) for loc in (loc_p, loc_q)]
            args = (_mp_cholesky(raw_p[0]), _mp_cholesky(raw_q[0]), *locs)
            want = _mp_kl(*args)
            sensitivity = _one_ulp_sensitivity(args, want)
        tol = (D + 1) * float(sensitivity) + (D * D + 2 * D) * u * float(want)
        assert abs(got - float(want)) <= tol, (delta, got, float(want), tol)
        if delta <= 1e-3:  # the bound still tells the cancelling textbook form apart
            textbook = _textbook_kl((loc_p, raw_p), (loc_q, raw_q))[0]
            assert abs(textbook - float(want)) > 10 * tol, (delta, textbook, float(want), tol)


def test_mvn_mean_params_sample_and_constant_terms():
    (loc, raw), y = _mvn_inputs(jax.random.PRNGKey(13), F64, n=2)
    fam = mlnll.MultivariateNormal()
    params = fam.params((loc, raw))
    L = f64(jax.vmap(plain_cholesky)(raw))
    np.testing.assert_array_equal(params["loc"], loc)
    np.testing.assert_allclose(params["scale_tril"], L, rtol=1e-15)
    np.testing.assert_allclose(params["covariance"], L @ np.swapaxes(L, 1, 2), rtol=1e-14)
    np.testing.assert_array_equal(fam.mean((loc, raw)), loc)
    draws = f64(fam.sample(jax.random.PRNGKey(14), (loc, raw), sample_shape=(200_000,)))
    assert draws.shape == (200_000, 2, D)
    cov = L @ np.swapaxes(L, 1, 2)
    sd = np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    assert np.all(np.abs(draws.mean(0) - f64(loc)) < 5 * sd / math.sqrt(200_000))
    for i in range(2):
        emp = np.cov(draws[:, i].T)
        # The sampling sd of a covariance entry is sqrt((S_ii S_jj + S_ij^2) / n).
        se = np.sqrt((np.outer(np.diag(cov[i]), np.diag(cov[i])) + cov[i] ** 2) / 200_000)
        assert np.all(np.abs(emp - cov[i]) < 5 * se)
    np.testing.assert_allclose(fam.constant_terms(y), np.full(2, -D / 2 * math.log(2 * math.pi)), rtol=1e-15)
    loss = mlnll.nll(fam, drop_constants=True, reduction="none")
    np.testing.assert_allclose(loss((loc, raw), y), -fam.log_prob((loc, raw), y) - D / 2 * math.log(2 * math.pi), rtol=1e-13)


def test_mvn_mle_is_the_sample_mean_and_cholesky_of_the_biased_covariance():
    (loc, raw), _ = _mvn_inputs(jax.random.PRNGKey(15), F64, n=1)
    y = mlnll.MultivariateNormal().sample(jax.random.PRNGKey(16), (loc[0], raw[0]), sample_shape=(500,))
    m, r = mlnll.mle(mlnll.MultivariateNormal(), y)
    np.testing.assert_allclose(m, np.mean(f64(y), 0), rtol=1e-13)
    L = f64(plain_cholesky(r))
    np.testing.assert_allclose(L @ L.T, np.cov(f64(y).T, bias=True), rtol=1e-12)
    assert np.all(np.triu(f64(r), 1) == 0)
    # The MLE is a stationary point of the summed NLL.
    g_loc, g_raw = mlnll.MultivariateNormal().grad((m, r), y)
    np.testing.assert_allclose(jnp.sum(g_loc, 0), 0.0, atol=1e-9)
    np.testing.assert_allclose(jnp.sum(g_raw, 0), 0.0, atol=1e-9)


def test_mvn_batch_shapes_broadcast_and_transforms_compose():
    fam = mlnll.MultivariateNormal()
    loc = jnp.zeros((4, 1, D), jnp.float32)
    raw = jnp.zeros((D, D), jnp.float32)
    y = jnp.ones((4, 3, D), jnp.float32)  # loc [4, 1, D] over rows of 3 targets each
    assert fam.log_prob((loc, raw), y).shape == (4, 3)
    with pytest.raises(ValueError, match="outer product"):
        fam.log_prob((loc, raw), y[0])  # [4, 1] against [3]
    g_loc, g_raw = fam.grad((loc, raw), y)
    assert g_loc.shape == (4, 3, D) and g_raw.shape == (4, 3, D, D)
    assert fam.fisher((loc, raw)).shape == (4, 1, D + D * D, D + D * D)
    (loc64, raw64), y64 = _mvn_inputs(jax.random.PRNGKey(17), F64, n=4)
    per_example = jax.vmap(fam.log_prob)((loc64, raw64), y64)
    np.testing.assert_allclose(per_example, fam.log_prob((loc64, raw64), y64), rtol=1e-14)
    hess = jax.jit(jax.hessian(lambda m: fam.log_prob((m, raw64[0]), y64[0])))(loc64[0])
    np.testing.assert_allclose(-hess, fam.fisher((loc64[:1], raw64[:1]))[0, :D, :D], rtol=1e-12)


@pytest.mark.parametrize("outputs, targets, error, message", [
    ((jnp.zeros((4, 3)), jnp.zeros((4, 2, 2))), jnp.zeros((4, 3)), ValueError,
     "MultivariateNormal outputs[1] (scale_tril) must have shape [..., d, d] with d = 3 as in loc shape (4, 3); got shape (4, 2, 2)."),
    ((jnp.zeros((4, 3)), jnp.zeros((4, 3, 3))), jnp.zeros((4, 2)), ValueError,
     "MultivariateNormal targets must have shape [..., d] with d = 3 as in loc shape (4, 3); got shape (4, 2)."),
    ((jnp.zeros((4, 3)), jnp.zeros((5, 3, 3))), jnp.zeros((4, 3)), ValueError,
     "MultivariateNormal: shapes do not broadcast: loc[..., :-1] (batch) shape (4,), scale_tril[..., :-2] (batch) shape (5,)."),
    ((jnp.zeros((4, 3), jnp.int32), jnp.zeros((4, 3, 3))), jnp.zeros((4, 3)), TypeError,
     "MultivariateNormal outputs[0] (loc) must be a floating array"),
    (jnp.zeros((4, 3)), jnp.zeros((4, 3)), TypeError, "MultivariateNormal outputs must be a tuple (loc, scale_tril)"),
])
def test_mvn_bad_inputs_raise_naming_the_argument(outputs, targets, error, message):
    with pytest.raises(error) as info:
        mlnll.MultivariateNormal().log_prob(outputs, targets)
    assert message in str(info.value)


# == MixtureSameFamily ===========================================================================


def test_mixture_log_prob_matches_scipy(dtype):
    (logits, (loc, log_scale)), y = _mixture_inputs(jax.random.PRNGKey(20), dtype)
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    got = fam.log_prob((logits, (loc, log_scale)), y)
    assert got.dtype == dtype and got.shape == (N,)
    log_w = scipy.special.log_softmax(f64(logits), axis=-1)
    want = scipy.special.logsumexp(log_w + scipy.stats.norm.logpdf(f64(y)[:, None], f64(loc), np.exp(f64(log_scale))), axis=-1)
    np.testing.assert_allclose(f64(got), want, rtol=RTOL[dtype] * 8, atol=0)


def _mixture_posterior(outputs, y):
    """The weights pi and the responsibilities r = softmax(log pi + log N(y; loc_k, scale_k)), in float64."""
    up = lambda a: jnp.asarray(a).astype(jnp.float64)  # noqa: E731
    logits, (loc, log_scale) = jax.tree.map(up, outputs)
    joint = jax.nn.log_softmax(logits) + jax.scipy.stats.norm.logpdf(up(y)[:, None], loc, jnp.exp(log_scale))
    return jax.nn.softmax(logits), jax.nn.softmax(joint)


def test_mixture_jax_grad_and_hessian_equal_those_of_the_plain_formula():
    # log_prob's derivatives come from the closed form (a custom_jvp): their first and second
    # derivatives must be those of the plain formula.
    outputs, y = _mixture_inputs(jax.random.PRNGKey(22), F64, n=4)
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    flat, unravel = ravel_pytree(jax.tree.map(lambda a: a[0], outputs))
    ours = lambda t, target: fam.log_prob(unravel(t), target)  # noqa: E731
    plain = lambda t, target: plain_mixture(unravel(t)[0], *unravel(t)[1], target)  # noqa: E731
    for transform in (jax.grad, jax.jacfwd):
        np.testing.assert_allclose(jax.jit(transform(ours))(flat, y[0]), jax.jit(jax.grad(plain))(flat, y[0]), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jit(jax.hessian(ours))(flat, y[0]), jax.jit(jax.hessian(plain))(flat, y[0]), rtol=1e-11, atol=1e-14)
    # The derivative in the target: sum_k r_k dl_k/dy, the component's own closed form; and its own
    # derivatives (in the target, and in the outputs).
    for argnums in (1, (0, 1)):
        got = jax.jit(jax.jacfwd(jax.grad(ours, argnums=1), argnums=argnums))(flat, y[0])
        want = jax.jit(jax.jacfwd(jax.grad(plain, argnums=1), argnums=argnums))(flat, y[0])
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(jax.jit(jax.grad(ours, argnums=1))(flat, y[0]), jax.jit(jax.grad(plain, argnums=1))(flat, y[0]), rtol=1e-12)


def test_mixture_grad_passes_finite_differences():
    outputs, y = _mixture_inputs(jax.random.PRNGKey(23), F64)
    result = mlnll.check_grad(mlnll.MixtureSameFamily(mlnll.Normal()), outputs, y)
    assert result.passed and result.fd_rel_err < 1e-8, result


def test_mixture_of_multivariate_normals_matches_scipy_and_autodiff():
    fam = mlnll.MixtureSameFamily(mlnll.MultivariateNormal(), event_ndim=1)
    (loc, raw), _ = _mvn_inputs(jax.random.PRNGKey(24), F64, n=4 * K)
    loc, raw = loc.reshape(4, K, D), raw.reshape(4, K, D, D)
    logits = jax.random.normal(jax.random.PRNGKey(25), (4, K), jnp.float64)
    y = jax.random.normal(jax.random.PRNGKey(26), (4, D), jnp.float64)
    got = fam.log_prob((logits, (loc, raw)), y)
    L = f64(jax.vmap(jax.vmap(plain_cholesky))(raw))
    comp = np.array([[scipy.stats.multivariate_normal.logpdf(f64(y[i]), f64(loc[i, k]), L[i, k] @ L[i, k].T)
                      for k in range(K)] for i in range(4)])
    want = scipy.special.logsumexp(scipy.special.log_softmax(f64(logits), -1) + comp, axis=-1)
    np.testing.assert_allclose(f64(got), want, rtol=1e-12)

    def plain(lg, m, r, t):
        return jax.scipy.special.logsumexp(jax.nn.log_softmax(lg) + jax.vmap(plain_mvn, (0, 0, None))(m, r, t))

    want_grads = jax.jit(jax.vmap(jax.grad(lambda *a: -plain(*a), argnums=(0, 1, 2))))(logits, loc, raw, y)
    d_logits, (d_loc, d_raw) = jax.jit(fam.grad)((logits, (loc, raw)), y)
    for g, w in zip((d_logits, d_loc, d_raw), want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)
    # A vector target: jax.grad in y through the mixture's and the component's closed forms.
    got_y = jax.jit(jax.grad(lambda t: jnp.sum(fam.log_prob((logits, (loc, raw)), t))))(y)
    want_y = jax.jit(jax.vmap(jax.grad(plain, argnums=3)))(logits, loc, raw, y)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-10, atol=1e-13)
    assert fam.mean((logits, (loc, raw))).shape == (4, D)
    assert fam.sample(jax.random.PRNGKey(27), (logits, (loc, raw)), sample_shape=(5,)).shape == (5, 4, D)


def test_mixture_of_poissons_takes_integer_counts():
    from mlnll._src.families.poisson import Poisson

    fam = mlnll.MixtureSameFamily(Poisson())
    logits = jnp.array([[0.2, -0.3], [1.0, 0.0]], jnp.float64)
    log_rate = jnp.array([[0.5, 2.5], [-1.0, 3.0]], jnp.float64)
    y = jnp.array([3, 0], jnp.int32)
    want = scipy.special.logsumexp(scipy.special.log_softmax(f64(logits), -1)
                                   + scipy.stats.poisson.logpmf(np.asarray(y)[:, None], np.exp(f64(log_rate))), axis=-1)
    np.testing.assert_allclose(fam.log_prob((logits, log_rate), y), want, rtol=1e-13)
    assert np.isneginf(fam.log_prob((logits, log_rate), jnp.array([-1, 2], jnp.int32))[0])


def test_mixture_responsibilities_are_the_posterior():
    outputs, y = _mixture_inputs(jax.random.PRNGKey(28), F64)
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    pi, r = _mixture_posterior(outputs, y)
    got = fam.responsibilities(outputs, y)
    np.testing.assert_allclose(got, r, rtol=1e-13)
    np.testing.assert_allclose(jnp.sum(got, -1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(fam.grad(outputs, y)[0], pi - r, rtol=1e-12, atol=1e-16)


def test_mixture_masked_and_impossible_components():
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    loc = jnp.array([[0.0, 5.0, -5.0], [0.0, 5.0, -5.0]], jnp.float64)
    log_scale = jnp.zeros((2, 3), jnp.float64)
    logits = jnp.array([[0.0, -jnp.inf, 1.0], [-jnp.inf, -jnp.inf, -jnp.inf]], jnp.float64)
    y = jnp.array([0.5, 0.5], jnp.float64)
    lp = fam.log_prob((logits, (loc, log_scale)), y)
    # A masked component is dropped: row 0 is the mixture of the other two.
    two = fam.log_prob((jnp.array([0.0, 1.0]), (jnp.array([0.0, -5.0]), jnp.zeros(2))), jnp.array(0.5))
    np.testing.assert_allclose(lp[0], two, rtol=1e-15)
    assert np.isneginf(lp[1])
    d_logits, (d_loc, d_ls) = fam.grad((logits, (loc, log_scale)), y)
    assert d_logits[0, 1] == 0 and d_loc[0, 1] == 0 and d_ls[0, 1] == 0
    # A masked-out example whose likelihood is 0 adds nothing, not NaN, to the training gradient.
    loss = mlnll.nll(fam)
    g = jax.grad(lambda lg: loss((lg, (loc, log_scale)), y, where=jnp.array([True, False])))(logits)
    assert np.all(np.isfinite(g[0])) and np.all(g[1] == 0)


def test_mixture_has_no_closed_form_fisher_entropy_or_kl():
    outputs, _ = _mixture_inputs(jax.random.PRNGKey(29), F64)
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    for method, args in ((fam.fisher, (outputs,)), (fam.entropy, (outputs,)), (fam.kl, (outputs, outputs))):
        with pytest.raises(NotImplementedError):
            method(*args)
    assert mlnll.check_grad(fam, *_mixture_inputs(jax.random.PRNGKey(30), F64)).fisher_rel_err is None


def test_mixture_mean_params_sample_and_constant_terms():
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    logits = jnp.array([[0.0, 1.0, -1.0]], jnp.float64)
    loc, log_scale = jnp.array([[-2.0, 0.5, 3.0]], jnp.float64), jnp.array([[0.0, -0.5, 0.3]], jnp.float64)
    outputs = (logits, (loc, log_scale))
    pi, mu, sd = scipy.special.softmax(f64(logits[0])), f64(loc[0]), np.exp(f64(log_scale[0]))
    mean, var = np.sum(pi * mu), np.sum(pi * (sd**2 + mu**2)) - np.sum(pi * mu) ** 2
    np.testing.assert_allclose(fam.mean(outputs), [mean], rtol=1e-14)
    draws = f64(fam.sample(jax.random.PRNGKey(31), outputs, sample_shape=(200_000,)))
    assert draws.shape == (200_000, 1)
    assert abs(draws.mean() - mean) < 5 * math.sqrt(var / 200_000)
    assert abs(draws.var() / var - 1) < 5 * math.sqrt(2 / 200_000) * 3  # a mixture's kurtosis is larger
    params = fam.params(outputs)
    assert set(params) == {"mixture_logits", "mixture_probs", "component_loc", "component_scale"}
    np.testing.assert_allclose(params["mixture_probs"][0], pi, rtol=1e-15)
    y = jnp.array([0.3, -1.0], jnp.float64)
    np.testing.assert_array_equal(fam.constant_terms(y), mlnll.Normal().constant_terms(y))


def test_mixture_validates_its_arguments():
    with pytest.raises(TypeError, match="needs an mlnll family"):
        mlnll.MixtureSameFamily("Normal")
    with pytest.raises(ValueError, match="event_ndim"):
        mlnll.MixtureSameFamily(mlnll.Normal(), event_ndim=-1)
    fam = mlnll.MixtureSameFamily(mlnll.Normal())
    with pytest.raises(ValueError, match="trailing K = 2 axis"):
        fam.log_prob((jnp.zeros((4, 2)), (jnp.zeros((4, 3)), jnp.zeros((4, 3)))), jnp.zeros(4))
    with pytest.raises(TypeError, match="mixture_logits, component_outputs"):
        fam.log_prob(jnp.zeros((4, 2)), jnp.zeros(4))

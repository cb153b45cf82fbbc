"""VonMisesFisher's normaliser against mpmath's besseli, for d = 2..1000 and k = 1e-8..1e6 and its limits.

The generic promises (log_prob, entropy and mean against scipy's vonmises_fisher at d = 3, the
closed forms against autodiff of the plain formula, the Fisher information against the expected
Hessian, extremes, targets off the sphere, samples on it) are checked for its row of the check table
by tests/test_conformance.py and ``python -m mlnll check``.
"""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from conftest import RTOL
from mlnll._src.families import von_mises_fisher as vmf

mpmath.mp.dps = max(mpmath.mp.dps, 40)  # never lowered by another module
KS = [1e-8, 1e-4, 0.0099, 0.0101, 0.3, 3.0, 30.0, 100.0, 1e3, 1e5, 1e6]


@pytest.mark.parametrize("d", [2, 3, 10, 52, 1000])
def test_log_normaliser_and_bessel_ratio_match_mpmath(d):
    """``c = k + log C_d(k)`` and ``k (1 - I_{d/2}/I_{d/2-1})`` in float64 against 40-digit besseli,
    across the series, Debye-with-recurrence and Debye-alone ranges (d = 52 needs no recurrence)."""
    log_k = jnp.log(jnp.asarray(KS))
    n = jax.jit(lambda lk: vmf.log_normaliser_parts(d, lk))(log_k)
    nu = mpmath.mpf(d) / 2 - 1
    for i, k in enumerate(np.exp(np.asarray(log_k))):
        K = mpmath.mpf(float(k))
        I_nu, I_next = mpmath.besseli(nu, K), mpmath.besseli(nu + 1, K)
        c = K + nu * mpmath.log(K) - mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(I_nu)
        k_b = K * (1 - I_next / I_nu)
        # The recurrence below order 25 may grow B's relative error by (2M + 1)/(2 nu + 1) <= 51.
        assert abs(float(n.c[i]) - float(c)) <= RTOL[np.dtype("float64")] * max(abs(float(c)), 1.0), (d, k)
        assert abs(float(n.k_b[i]) - float(k_b)) <= RTOL[np.dtype("float64")] * abs(float(k_b)), (d, k)


def test_the_limits_k_zero_and_k_infinite():
    """k = 0 is the uniform density on the sphere (c = -log of its area), k = e^50 and e^1e4 = inf
    Hankel's limit ``c = (d - 1)(log k - log 2 pi)/2``, ``k B = (d - 1)/2``; no NaN."""
    d = 5
    n = vmf.log_normaliser_parts(d, jnp.asarray([-jnp.inf, 50.0, 1e4]))
    area = 2 * mpmath.pi ** (mpmath.mpf(d) / 2) / mpmath.gamma(mpmath.mpf(d) / 2)
    np.testing.assert_allclose(float(n.c[0]), float(-mpmath.log(area)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(n.c[1:]), 0.5 * (d - 1) * (np.array([50.0, 1e4]) - np.log(2 * np.pi)),
                               rtol=1e-14)
    np.testing.assert_allclose(np.asarray(n.k_b[1:]), 0.5 * (d - 1), rtol=1e-14)


SPHERE_KS = [1e-6, 1e-3, 0.0099, 0.0101, 0.05, 0.3, 0.999, 1.001, 3.0, 30.0, 1e3, 1e6]


def _sphere_mpmath(k):
    """d = 3 at k, 50 digits: ``c = k + log k - log(4 pi) - log sinh k``, ``k A = k coth k - 1``,
    ``k B = k - k A``."""
    with mpmath.workdps(50):
        K = mpmath.mpf(float(k))
        # log sinh k = k + log(-expm1(-2k)) - log 2 (sinh itself would need e^1e6)
        c = K + mpmath.log(K) - mpmath.log(2 * mpmath.pi) - K - mpmath.log(-mpmath.expm1(-2 * K))
        k_a = K / mpmath.tanh(K) - 1
        return float(c), float(k_a), float(K - k_a)


def test_the_sphere_normaliser_matches_mpmath_and_the_bessel_path(dtype):
    """d = 3's closed form (``_sphere_normaliser``, what ``log_normaliser_parts(3, .)`` runs) against
    mpmath at k = 1e-6..1e6, to the dtype's value tolerance relative to max(|c|, 1) for c and
    relative for k A, k B, A, B (every one is a sum of terms of one sign or a single rounded
    function); and, in float64, the general Bessel path at d = 3 agrees to the same tolerance (its
    float32 c loses up to ~160 eps: see ``bessel_normaliser_parts``)."""
    log_k = jnp.log(jnp.asarray(SPHERE_KS, dtype))
    n, bessel = jax.jit(lambda lk: (vmf.log_normaliser_parts(3, lk), vmf.bessel_normaliser_parts(3, lk)))(log_k)
    rtol = RTOL[dtype]
    for i, k in enumerate(np.exp(np.asarray(log_k, np.float64))):
        c, k_a, k_b = _sphere_mpmath(k)
        assert abs(float(n.c[i]) - c) <= rtol * max(abs(c), 1.0), (k, float(n.c[i]), c)
        for got, want in [(n.k_a[i], k_a), (n.k_b[i], k_b), (n.a[i], k_a / k), (n.b[i], k_b / k)]:
            assert abs(float(got) - want) <= rtol * abs(want), (k, float(got), want)
        if dtype == np.float64:
            for field in ("c", "k_a", "k_b"):
                want = float(getattr(n, field)[i])
                assert abs(float(getattr(bessel, field)[i]) - want) <= rtol * max(abs(want), 1.0), (k, field)


def test_the_sphere_normaliser_at_its_limits_and_its_derivative(dtype):
    """k = 0 (uniform on the sphere: c = -log 4 pi, A = 0), k = e^1e4 = inf (c = log_k - log 2 pi
    from log_k, k B = 1, A = 1) and log_k = inf (c = inf); and the closed-form gradient that
    ``jax.grad`` runs, ``d log p/d log k = k (cos - A)`` (``d log C_3/dk = 1/k - coth k = -A``), at
    the mode (``k B``) and orthogonal to it (``-k A``) against mpmath, from k = 1e-6 (no
    cancellation at small k) to 1e6."""
    n = vmf.log_normaliser_parts(3, jnp.asarray([-jnp.inf, 1e4, jnp.inf], dtype))
    np.testing.assert_allclose(np.asarray(n.c[:2], np.float64), [-np.log(4 * np.pi), 1e4 - np.log(2 * np.pi)],
                               rtol=RTOL[dtype])
    assert float(n.c[2]) == np.inf and float(n.a[0]) == 0.0 and float(n.k_a[0]) == 0.0
    assert np.all(np.asarray(n.k_b[1:]) == 1.0) and np.all(np.asarray(n.a[1:]) == 1.0), n
    ks = np.array([1e-6, 0.01, 0.5, 1.0, 2.0, 100.0, 1e6])
    log_k = jnp.log(jnp.asarray(np.repeat(ks, 2), dtype))
    direction = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 2.0], dtype), log_k.shape + (3,))
    x = jnp.asarray(np.tile([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], (len(ks), 1)), dtype)  # cos = 1, 0
    family = vmf.VonMisesFisher()
    grad = jax.jit(jax.grad(lambda lk: jnp.sum(family.log_prob((direction, lk), x))))(log_k)
    for i, k in enumerate(np.exp(np.asarray(log_k, np.float64))):
        _, k_a, k_b = _sphere_mpmath(k)
        want = k_b if i % 2 == 0 else -k_a
        assert abs(float(grad[i]) - want) <= RTOL[dtype] * abs(want), (k, i % 2, float(grad[i]), want)


@pytest.mark.parametrize("d", [5, 50])
def test_log_prob_matches_scipy_beyond_the_sphere(d):
    """``log_prob`` against scipy.stats.vonmises_fisher(mu, k).logpdf at d = 5 and 50 (the Bessel
    path), float64, k = 1e-3..1e4, targets drawn by scipy (seeded), to 1e-12 relative."""
    import scipy.stats

    rng = np.random.default_rng(14 + d)
    ks = np.array([1e-3, 0.3, 3.0, 30.0, 1e3, 1e4])
    v = rng.standard_normal((len(ks), d))
    mu = v / np.linalg.norm(v, axis=-1, keepdims=True)
    x = np.stack([scipy.stats.vonmises_fisher(m, k).rvs(random_state=rng)[0] for m, k in zip(mu, ks)])
    want = np.array([scipy.stats.vonmises_fisher(m, k).logpdf(t) for m, k, t in zip(mu, ks, x)])
    got = jax.jit(vmf.VonMisesFisher().log_prob)((jnp.asarray(v), jnp.log(jnp.asarray(ks))), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=RTOL[np.dtype("float64")])


def test_the_sphere_fisher_in_log_k_matches_mpmath_beyond_the_clamp(dtype):
    """The log_k entry of ``fisher`` at d = 3, ``k^2 A'(k) = 1 - (k / sinh k)^2``, against mpmath from
    k = 1e-3 to 1e6: finite on both sides of the clamp at k = 30 where ``2k / expm1(2k)`` stops
    (its derivative was inf/inf where expm1 overflowed: NaN from k = 45 in float32, 355 in
    float64). Relative to the value: ``1 - (k / sinh k)^2`` is computed from k A and k B, each a
    sum of terms of one sign (measured: at most 1.7 eps in float32, 0.9 in float64)."""
    ks = np.array([1e-3, 0.5, 3.0, 29.0, 31.0, 50.0, 400.0, 1e3, 1e6])
    log_k = jnp.log(jnp.asarray(ks, dtype))
    direction = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], dtype), log_k.shape + (3,))
    f_log_k = np.asarray(jax.jit(vmf.VonMisesFisher().fisher)((direction, log_k))[:, 3, 3], np.float64)
    for k, got in zip(np.exp(np.asarray(log_k, np.float64)), f_log_k):
        K = mpmath.mpf(float(k))
        want = float(1 - (K / mpmath.sinh(K)) ** 2)
        assert abs(got - want) <= RTOL[dtype] * abs(want), (k, got, want)

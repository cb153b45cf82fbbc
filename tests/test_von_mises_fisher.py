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

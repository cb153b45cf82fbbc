"""Check cases for MultivariateNormal, MixtureSameFamily, ExponentialFamily."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src.verify.case import Case
from mlnll._src.families import exponential_family
from mlnll._src.families.mixture_same_family import MixtureSameFamily
from mlnll._src.families.multivariate_normal import MultivariateNormal, cholesky_factor
from mlnll._src.families.normal import Normal

_D = 3  # MultivariateNormal dimension: the Fisher check's product Gauss-Hermite rule has 3^d nodes.


def _mvn_random(key, dtype, n):
    kl, ks, ky = jax.random.split(key, 3)
    loc = jax.random.normal(kl, (n, _D), dtype)
    raw = 0.5 * jax.random.normal(ks, (n, _D, _D), dtype)  # log-diagonal in (-2, 2), off-diagonal O(1)
    L, _ = cholesky_factor(raw)
    y = loc + jnp.matmul(L, jax.random.normal(ky, (n, _D, 1), dtype))[..., 0]
    return (loc, raw), y


def _mvn_extreme(dtype):
    """Tiny, huge and mixed Cholesky diagonals: log-diagonals of +-80 in float64, +-30 in float32 (the
    Fisher information holds 1/L_ii^2, finite in that dtype). Row i of L and loc_i are on the scale
    L_ii, so that targets loc + L u resolve every coordinate's deviation (on a common scale a 1e-35
    deviation added to an O(1) location is lost to rounding, in any float format)."""
    big = 80.0 if np.dtype(dtype) == np.float64 else 30.0
    log_diags = np.array([[-big] * _D, [big] * _D, [-big, 0.0, big], [big, 0.0, -big], [0.0] * _D])
    row_scale = np.exp(log_diags)[:, :, None]  # L_ii, for row i
    lower = np.tril(np.ones((_D, _D)), -1)[None]
    raw = lower * row_scale * np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-0.3, 0.9, 0.0]])[None]
    raw = raw + np.eye(_D)[None] * log_diags[:, None, :]
    raw = raw + np.triu(np.full((_D, _D), 7.0), 1)[None]  # the strict upper triangle is ignored
    loc = row_scale[..., 0] * np.array([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5], [1.0, -1.0, 2.0], [0.0, 5.0, 0.0], [1e3, 1e3, 1e3]])
    u = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [-2.0, 0.1, 1.5], [0.8, -0.4, 0.2], [3.0, -3.0, 0.0]])
    L = np.where(np.eye(_D, dtype=bool)[None], np.exp(log_diags)[:, None, :] * np.eye(_D)[None], np.tril(raw, -1))
    y = loc + np.einsum("nij,nj->ni", L, u)
    return (jnp.asarray(loc, dtype), jnp.asarray(raw, dtype)), jnp.asarray(y, dtype)


def _mixture_random(key, dtype, n, num_components=3):
    """Overlapping Normal components and targets drawn from the mixture."""
    kz, kl, ks, kk, ky = jax.random.split(key, 5)
    logits = jax.random.normal(kz, (n, num_components), dtype)
    loc = 2 * jax.random.normal(kl, (n, num_components), dtype)
    log_scale = 0.5 * jax.random.normal(ks, (n, num_components), dtype)
    pick = jax.random.categorical(kk, logits)[:, None]
    y = (jnp.take_along_axis(loc, pick, 1) + jnp.exp(jnp.take_along_axis(log_scale, pick, 1))
         * jax.random.normal(ky, (n, 1), dtype))[:, 0]
    return (logits, (loc, log_scale)), y


def _mixture_extreme(dtype):
    """Confident and masked (-inf) mixture logits, tiny and huge scales, targets far in the tails."""
    big = 80.0 if np.dtype(dtype) == np.float64 else 30.0
    logits = [[1e4, -1e4, 0.0], [-jnp.inf, 0.0, 1.0], [0.0, 0.0, 0.0], [3.0, -jnp.inf, -jnp.inf], [0.0, 1.0, 2.0]]
    loc = [[0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [-1e4, 0.0, 1e4], [1.0, 2.0, 3.0], [0.0, 1e-30, -1e-30]]
    log_scale = [[0.0, 0.0, 0.0], [-big, 0.0, big], [0.0, 1.0, 2.0], [-big, 0.0, 0.0], [big, -big, 0.0]]
    y = [0.5, 1e-36, 30.0, 1.0, 2.0]
    a = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    return (a(logits), (a(loc), a(log_scale))), a(y)


def _ef_poisson_random(key, dtype, n):
    kz, ky = jax.random.split(key)
    log_rate = 2 * jax.random.normal(kz, (n,), dtype)
    return log_rate, jax.random.poisson(ky, jnp.exp(log_rate.astype(jnp.float32))).astype(dtype)


def _ef_poisson_extreme(dtype):
    log_rate = jnp.array([-80.0, 80.0, 0.0, 20.0, -20.0, 13.8], dtype)
    y = jnp.array([0.0, 0.0, 7.0, 4.85e8, 1.0, 1e6], dtype)
    return log_rate, y


CASES: tuple[Case, ...] = (
    Case("MultivariateNormal", MultivariateNormal(), _mvn_random, _mvn_extreme),
    Case("Mixture of 3 Normals", MixtureSameFamily(Normal()), _mixture_random, _mixture_extreme),
    Case("ExpFamily(poisson)", exponential_family.poisson(), _ef_poisson_random, _ef_poisson_extreme),
)

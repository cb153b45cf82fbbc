"""Check cases for Binomial, Geometric, Poisson, NegativeBinomial, Multinomial.

The Fisher check takes the expectation over each family's ``expectation_nodes``: all outcomes for
Binomial and Multinomial (hence their small total counts here), a truncated support holding all
but < 1e-16 of the mass for Poisson (rate <= 1e4) and Geometric (logits >= -4). Extreme rates and
logits outside those ranges (log_rate = +-80, logits = -80), and counts of 1e6 against matching
rates, are covered by tests/test_counts.py, which checks the gradients there without the Fisher
expectation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlnll._src.verify.case import Case
from mlnll._src.families.binomial import Binomial
from mlnll._src.families.geometric import Geometric
from mlnll._src.families.multinomial import Multinomial, compositions
from mlnll._src.families.negative_binomial import NegativeBinomial
from mlnll._src.families.poisson import Poisson

BINOMIAL_N = 10
MULTINOMIAL_N = 4
MULTINOMIAL_C = 3


def _binomial_random(key, dtype, n):
    kz, ky = jax.random.split(key)
    z = 3 * jax.random.normal(kz, (n,), dtype)
    return z, jax.random.randint(ky, (n,), 0, BINOMIAL_N + 1)


def _binomial_extreme(dtype):
    z = jnp.array([20.0, -20.0, 80.0, -80.0, 1e4, -1e4, 3e38, -3e38, 0.0, 30.0], dtype)
    y = jnp.array([10.0, 0.0, 10.0, 3.0, 3.0, 10.0, 10.0, 0.0, 5.0, 0.0], dtype)
    return z, y


def _geometric_random(key, dtype, n):
    kz, ky = jax.random.split(key)
    z = jax.random.uniform(kz, (n,), dtype, minval=-4.0, maxval=6.0)
    return z, jax.random.randint(ky, (n,), 0, 30).astype(dtype)


def _geometric_extreme(dtype):
    z = jnp.array([80.0, 30.0, 1e4, 3e38, -4.0, 20.0, 0.0], dtype)
    y = jnp.array([0.0, 5.0, 0.0, 0.0, 2000.0, 1e6, 1e6], dtype)
    return z, y


def _poisson_random(key, dtype, n):
    kz, ky, kr = jax.random.split(key, 3)
    log_rate = 1.5 * jax.random.normal(kz, (n,), dtype)
    drawn = jax.random.poisson(ky, jnp.exp(log_rate)).astype(dtype)
    uniform = jax.random.randint(kr, (n,), 0, 50).astype(dtype)
    return log_rate, jnp.where(jnp.arange(n) % 2 == 0, drawn, uniform)


def _poisson_extreme(dtype):
    log_rate = jnp.array([-80.0, -80.0, -30.0, 0.0, 9.2, 9.2, 2.0], dtype)
    y = jnp.array([0.0, 3.0, 1.0, 1e6, 9500.0, 0.0, 1e6], dtype)
    return log_rate, y


def _negative_binomial_random(key, dtype, n):
    ka, kb, ky = jax.random.split(key, 3)
    log_mean = 1.5 * jax.random.normal(ka, (n,), dtype)
    log_conc = 2.0 * jax.random.normal(kb, (n,), dtype)
    return (log_mean, log_conc), jax.random.randint(ky, (n,), 0, 40).astype(dtype)


def _negative_binomial_extreme(dtype):
    log_mean = jnp.array([80.0, -80.0, 0.0, 0.0, 14.0, 14.0, -80.0, 1.0, 1.0, 5.0], dtype)
    log_conc = jnp.array([-80.0, 80.0, 80.0, -80.0, 2.0, 80.0, -80.0, 30.0, -30.0, 12.0], dtype)
    y = jnp.array([0.0, 0.0, 5.0, 3.0, 1e6, 1e6, 1.0, 7.0, 0.0, 140.0], dtype)
    return (log_mean, log_conc), y


def _multinomial_random(key, dtype, n):
    kz, ky = jax.random.split(key)
    z = 2 * jax.random.normal(kz, (n, MULTINOMIAL_C), dtype)
    table = jnp.asarray(compositions(MULTINOMIAL_N, MULTINOMIAL_C))
    rows = jax.random.randint(ky, (n,), 0, table.shape[0])
    return z, table[rows].astype(dtype)


def _multinomial_extreme(dtype):
    z = jnp.array(
        [[20.0, 0.0, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [3e38, -3e38, 0.0], [-jnp.inf, 0.0, 1.0],
         [0.0, 0.0, 0.0], [80.0, -80.0, 0.0]],
        dtype,
    )
    y = jnp.array([[4, 0, 0], [2, 0, 2], [0, 4, 0], [4, 0, 0], [0, 1, 3], [1, 1, 2], [1, 3, 0]], dtype)
    return z, y


CASES: tuple[Case, ...] = (
    Case(f"Binomial(n={BINOMIAL_N})", Binomial(total_count=BINOMIAL_N), _binomial_random, _binomial_extreme),
    Case("Geometric", Geometric(), _geometric_random, _geometric_extreme),
    Case("Poisson", Poisson(), _poisson_random, _poisson_extreme),
    Case("NegativeBinomial", NegativeBinomial(), _negative_binomial_random, _negative_binomial_extreme),
    Case(f"Multinomial(n={MULTINOMIAL_N})", Multinomial(total_count=MULTINOMIAL_N), _multinomial_random,
         _multinomial_extreme),
)

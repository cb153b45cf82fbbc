"""The table of check cases: for each family, random inputs and a handful of extreme ones.

``python -m mlnll check`` and the test suite both run over this table, so a family added here is
checked everywhere. Outputs are generated at the full batch shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlnll._src.case import Case, Inputs
from mlnll._src.families.bernoulli import Bernoulli
from mlnll._src.families.categorical import Categorical
from mlnll._src.families.normal import Normal

__all__ = ["CASES", "CORE_CASES", "Case", "Inputs"]


def _bernoulli_random(key, dtype, n):
    kz, ky, ks = jax.random.split(key, 3)
    z = 3 * jax.random.normal(kz, (n,), dtype)
    hard = jax.random.bernoulli(ky, 0.5, (n,)).astype(dtype)
    soft = jax.random.uniform(ks, (n,), dtype)
    return z, jnp.where(jnp.arange(n) % 2 == 0, hard, soft)


def _bernoulli_extreme(dtype):
    z = jnp.array([20.0, -20.0, 1e4, -1e4, 3e38, -3e38, 3e38, -3e38, 0.0], dtype)
    y = jnp.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.3], dtype)
    return z, y


def _categorical_random(key, dtype, n, num_classes=5):
    kz, ky, kq = jax.random.split(key, 3)
    z = 2 * jax.random.normal(kz, (n, num_classes), dtype)
    return z, jax.random.randint(ky, (n,), 0, num_classes)


def _categorical_soft_random(key, dtype, n, num_classes=5):
    kz, kq = jax.random.split(key)
    z = 2 * jax.random.normal(kz, (n, num_classes), dtype)
    return z, jax.nn.softmax(jax.random.normal(kq, (n, num_classes), dtype))


def _categorical_extreme(dtype):
    z = jnp.array(
        [[20.0, 0.0, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [3e38, -3e38, 0.0], [-3e38, 3e38, 3e38],
         [-jnp.inf, 0.0, 1.0], [0.0, 0.0, 0.0]],
        dtype,
    )
    return z, jnp.array([0, 0, 0, 0, 1, 2, 1])


def _normal_random(key, dtype, n):
    kl, ks, ky = jax.random.split(key, 3)
    loc = jax.random.normal(kl, (n,), dtype)
    log_scale = jax.random.normal(ks, (n,), dtype)
    return (loc, log_scale), loc + jnp.exp(log_scale) * jax.random.normal(ky, (n,), dtype)


def _normal_extreme(dtype):
    loc = jnp.array([0.0, 1e4, 1e30, -5.0, 0.0], dtype)
    log_scale = jnp.array([-80.0, 80.0, 60.0, 0.0, 30.0], dtype)
    y = jnp.array([1e-35, -1e4, -1e30, 5.0, 1e13], dtype)
    return (loc, log_scale), y


def _normal_fixed_random(key, dtype, n):
    (loc, _), y = _normal_random(key, dtype, n)
    return loc, y


def _normal_fixed_extreme(dtype):
    return jnp.array([1e4, -1e4, 1e30, 0.0], dtype), jnp.array([-1e4, 1e4, -1e30, 1e-30], dtype)


CORE_CASES: tuple[Case, ...] = (
    Case("Bernoulli", Bernoulli(), _bernoulli_random, _bernoulli_extreme),
    Case("Categorical", Categorical(), _categorical_random, _categorical_extreme),
    Case("Categorical (soft)", Categorical(), _categorical_soft_random,
         lambda dtype: (_categorical_extreme(dtype)[0], jax.nn.one_hot(_categorical_extreme(dtype)[1], 3, dtype=dtype))),
    Case("Normal", Normal(), _normal_random, _normal_extreme),
    Case("Normal(scale=2.0)", Normal(scale=2.0), _normal_fixed_random, _normal_fixed_extreme),
)


def _all_cases() -> tuple[Case, ...]:
    # Each group of families keeps its cases in its own module.
    from mlnll._src import cases_counts, cases_positive, cases_reals, cases_structured

    return CORE_CASES + cases_counts.CASES + cases_reals.CASES + cases_positive.CASES + cases_structured.CASES


CASES: tuple[Case, ...] = _all_cases()

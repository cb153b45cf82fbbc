"""Categorical's rows of the check table: integer labels and soft targets at random and extreme
logits (confident predictions, ±1e4 and ±3e38, a masked class at -inf), with scipy and the
textbook formula as the tests' references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src.verify.case import Case, ScipyReference

NUM_CLASSES = 5


def _random_logits(key, dtype, n):
    return 2 * jax.random.normal(key, (n, NUM_CLASSES), dtype)


def labels_random(key, dtype, n):
    kz, ky = jax.random.split(key)
    return _random_logits(kz, dtype, n), jax.random.randint(ky, (n,), 0, NUM_CLASSES)


def soft_random(key, dtype, n):
    kz, kq = jax.random.split(key)
    return _random_logits(kz, dtype, n), jax.nn.softmax(jax.random.normal(kq, (n, NUM_CLASSES), dtype))


def _extreme_logits(dtype):
    inf = jnp.inf
    return jnp.array(
        [[20.0, 0.0, 0.0, 0.0, 0.0], [1e4, -1e4, 0.0, 0.0, 0.0], [-1e4, 1e4, 0.0, 0.0, -1e4],
         [3e38, -3e38, 0.0, 0.0, 0.0], [-3e38, 3e38, 3e38, 0.0, 0.0], [-inf, 0.0, 1.0, 0.0, -inf],
         [0.0, 0.0, 0.0, 0.0, 0.0]],
        dtype,
    )


_EXTREME_LABELS = (0, 0, 0, 0, 1, 2, 1)


def labels_extreme(dtype):
    return _extreme_logits(dtype), jnp.array(_EXTREME_LABELS, jnp.int32)


def soft_extreme(dtype):
    return _extreme_logits(dtype), jax.nn.one_hot(jnp.array(_EXTREME_LABELS), NUM_CLASSES, dtype=dtype)


def plain_log_prob(z, y):
    """``z_y - log(sum(exp(z)))``: the textbook formula (for labels)."""
    return jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0] - jnp.log(jnp.sum(jnp.exp(z), axis=-1))


def plain_soft_log_prob(z, q):
    """``sum_c q_c (z_c - log(sum(exp(z))))``: the textbook formula (for probability vectors)."""
    return jnp.sum(q * (z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))), axis=-1)


def _scipy_dist(z):
    import scipy.special
    import scipy.stats

    return scipy.stats.multinomial(1, scipy.special.softmax(z, axis=-1))


def _one_hot(y):
    return np.eye(NUM_CLASSES)[np.asarray(y)]


def check_cases(cls) -> tuple[Case, ...]:
    return (
        Case("Categorical", cls(), labels_random, labels_extreme,
             scipy=ScipyReference(_scipy_dist, targets=_one_hot, discrete=True), plain_log_prob=plain_log_prob),
        Case("Categorical (soft)", cls(), soft_random, soft_extreme, plain_log_prob=plain_soft_log_prob),
    )

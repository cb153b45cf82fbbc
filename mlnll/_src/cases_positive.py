"""Check cases for Exponential, Gamma, Beta, Dirichlet, VonMises.

Random targets are drawn in float64 from a moment-matched stand-in for each family (log y normal
with Gamma's mean and variance of log y; likewise logit y for Beta and log G_k for Dirichlet; the
wrapped Cauchy with VonMises' mean resultant length): plausible targets without compiling the
rejection samplers (tests/test_positive.py checks those). ``_well_conditioned`` then picks, per
example, a draw whose gradient the checked dtype can resolve: every score crosses 0, and one that
cancels to 1e-3 of its terms carries ~1e3 ulp of rounding in any formula, closed or autodiff,
more than the check's elementwise tolerance. Float32 rows keep concentrations moderate for the
same reason (the terms grow like a, the score like sqrt(a)).

The Fisher check integrates over targets a float64 can hold, so the cases stay inside the
expectation rules' domains (see each family's ``expectation_nodes``): Gamma a >= 0.1; Beta
a >= 0.1, b >= 1 and b/(a+b) >~ 1e-3; VonMises k >= 1e-3, with |loc| small when k is huge.
Tinier concentrations (1e-3, e^-80) are covered, for log_prob and grad, in tests/test_positive.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from mlnll._src import numerics
from mlnll._src.verify.case import Case
from mlnll._src.families.beta import Beta
from mlnll._src.families.dirichlet import Dirichlet
from mlnll._src.families.exponential import Exponential
from mlnll._src.families.gamma import Gamma
from mlnll._src.families.von_mises import VonMises

F64 = jnp.float64
# A gradient component counts as resolvable in a dtype when moving the outputs by DELTA and the
# targets by a relative DELTA changes it by at most KAPPA[dtype] DELTA of its size: rounding (of
# exp(log_a), log y, y - loc, ...) then shifts it by about KAPPA eps, a fraction of the check's
# tolerance (1e-5 in float32, 1e-12 in float64).
DELTA = 1e-7
KAPPA = {np.dtype(jnp.float32): 20.0, np.dtype(jnp.float64): 1500.0}
CANDIDATES = 8


def _scaled(y, sign):
    """Positive or angular targets moved by a relative DELTA (towards 0 where ``sign`` < 0)."""
    return y * (1 + sign * DELTA)


def _well_conditioned(family, outputs, draws, dtype, move_targets=_scaled):
    """One target per example: the first of the CANDIDATES ``draws`` ([C, n, ...], float64) whose
    closed-form gradient is resolvable in ``dtype``; an example with none keeps its first draw.

    Each draw is scored by the relative change of every gradient component under three
    perturbations, of the outputs (float64, full batch shape [n, ...]; by DELTA, signs alternating
    between leaves or not) and of the targets (``move_targets(y, sign)``). The gradients go through
    the check's own jitted ``_closed_grad`` at the batch shape, so nothing extra is compiled.
    """
    n = draws.shape[1]
    leaves, tree = jax.tree.flatten(outputs)
    bad = []
    for y in draws:
        g0 = jax.tree.leaves(family.grad(outputs, y))
        worse = jnp.zeros((n,), bool)
        for signs in ((1.0, 1.0, 1.0), (1.0, -1.0, 1.0), (-1.0, 1.0, -1.0)):
            moved = tree.unflatten([x + s * DELTA for x, s in zip(leaves, signs)])
            for before, after in zip(g0, jax.tree.leaves(family.grad(moved, move_targets(y, signs[1])))):
                change = jnp.abs(after - before) > KAPPA[np.dtype(dtype)] * DELTA * jnp.abs(before)
                worse = worse | jnp.any(change.reshape(n, -1), axis=-1)
        bad.append(worse)
    first = jnp.argmax(~jnp.stack(bad), axis=0)  # 0 when every draw is ill-conditioned
    return jnp.take_along_axis(draws, first.reshape((1, n) + (1,) * (draws.ndim - 2)), axis=0)[0]


def _normal(key, shape):
    return jax.random.normal(key, (CANDIDATES,) + shape, F64)


def _to(dtype, *arrays):
    return tuple(jnp.asarray(a, F64).astype(dtype) for a in arrays)


def _positive(y, dtype):
    """``y`` in ``dtype``, raised to its smallest normal number if it rounded to 0."""
    y = jnp.asarray(y, F64).astype(dtype)
    return jnp.maximum(y, jnp.asarray(np.finfo(dtype).tiny, dtype))


def _f32(dtype) -> bool:
    return np.dtype(dtype) == np.dtype(jnp.float32)


def _exponential_random(key, dtype, n):
    kr, ky = jax.random.split(key)
    log_rate = 2 * jax.random.normal(kr, (n,), F64)
    draws = jax.random.exponential(ky, (CANDIDATES, n), F64) * jnp.exp(-log_rate)[None]
    y = _well_conditioned(Exponential(), log_rate, draws, dtype)
    return log_rate.astype(dtype), y.astype(dtype)


def _exponential_extreme(dtype):
    # rate * y = 0.55, 1.8e-5, 0 (y = 0 is in the support), 1.07e-0, 1e7.
    log_rate = [80.0, -80.0, 0.0, 30.0, -30.0]
    y = [1e-35, 1e30, 0.0, 1e-13, 1e20]
    return _to(dtype, log_rate, y)


def _gamma_random(key, dtype, n):
    ka, kb, ky = jax.random.split(key, 3)
    log_a = jax.random.uniform(ka, (n,), F64, math.log(0.1), math.log(30.0 if _f32(dtype) else 1e3))
    log_b = 3 * jax.random.normal(kb, (n,), F64)
    a = jnp.exp(log_a)
    # log y ~ normal with E[log y] = digamma(a) - log b and Var[log y] = trigamma(a).
    log_y = (special.digamma(a) - log_b)[None] + jnp.sqrt(special.polygamma(1, a))[None] * _normal(ky, (n,))
    y = _well_conditioned(Gamma(), (log_a, log_b), jnp.exp(log_y), dtype)
    return (log_a.astype(dtype), log_b.astype(dtype)), _positive(y, dtype)


def _gamma_extreme(dtype):
    log_a = [math.log(0.1), math.log(1e6), 80.0, 0.0, math.log(1e4), 2.0]
    log_b = [80.0, math.log(1e6), 80.0, -80.0, -40.0, 0.0]
    y = [1e-36, 1.0003, 1.5, 1e30, 1e4 * math.exp(40.0) * 1.02, 1e-30]
    log_a, log_b, y = _to(dtype, log_a, log_b, y)
    return (log_a, log_b), y


def _beta_random(key, dtype, n):
    ka, kb, ky = jax.random.split(key, 3)
    top = 1.0 if _f32(dtype) else 4.0
    log_a = jax.random.uniform(ka, (n,), F64, -2.0, top)
    log_b = jax.random.uniform(kb, (n,), F64, 0.0, top)
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    # logit y ~ normal with E = digamma(a) - digamma(b), Var = trigamma(a) + trigamma(b).
    spread = jnp.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
    logit = (special.digamma(a) - special.digamma(b))[None] + spread[None] * _normal(ky, (n,))
    move = lambda y, s: jnp.minimum(_scaled(y, s), 1 - DELTA)  # noqa: E731
    y = _well_conditioned(Beta(), (log_a, log_b), jax.nn.sigmoid(logit), dtype, move)
    y = jnp.minimum(_positive(y, dtype), jnp.asarray(1 - np.finfo(dtype).epsneg, dtype))
    return (log_a.astype(dtype), log_b.astype(dtype)), y


def _beta_extreme(dtype):
    log_a = [math.log(1e6), math.log(2.0), math.log(0.1), math.log(1e4), math.log(50.0), 0.0]
    log_b = [math.log(1e6), math.log(1e6), math.log(2.0), math.log(30.0), math.log(1.5), 0.0]
    y = [0.5003, 3e-6, 1e-30, 0.997, 0.9999, 0.3]
    log_a, log_b, y = _to(dtype, log_a, log_b, y)
    return (log_a, log_b), y


def _simplex(y, dtype):
    """Rows of ``y`` in ``dtype``, entries at least 1e-30, renormalised in that dtype."""
    y = jnp.maximum(jnp.asarray(y, F64).astype(dtype), jnp.asarray(1e-30, dtype))
    return y / jnp.sum(y, axis=-1, keepdims=True)


def _dirichlet_random(key, dtype, n, k=4):
    ka, ky = jax.random.split(key)
    log_a = (0.7 if _f32(dtype) else 1.5) * jax.random.normal(ka, (n, k), F64)
    alternate = jnp.where(jnp.arange(k) % 2 == 0, 1.0, -1.0)
    move = lambda y, s: _simplex(y * (1 + s * DELTA * alternate[None, :]), F64)  # noqa: E731
    a = jnp.exp(log_a)
    # log G_k ~ normal with the mean and variance of log Gamma(a_k, 1); y = softmax(log G).
    log_g = special.digamma(a)[None] + jnp.sqrt(special.polygamma(1, a))[None] * _normal(ky, (n, k))
    draws = _simplex(jax.nn.softmax(log_g, axis=-1), F64)
    return log_a.astype(dtype), _simplex(_well_conditioned(Dirichlet(), log_a, draws, dtype, move), dtype)


def _dirichlet_extreme(dtype):
    # Huge concentrations only in float64: float32 cannot resolve their gradients (~sqrt(a) from
    # terms ~a) to 1e-5. Near-mode targets keep every component's gradient of one size.
    big = math.log(1e6) if np.dtype(dtype) == np.dtype(F64) else math.log(30.0)
    log_a = [[big] * 3, [math.log(1e-3), 0.0, 3.0], [-80.0, 2.0, 1.0], [big, math.log(2.0), math.log(0.5)]]
    y = [[0.5, 0.3, 0.2], [1e-20, 0.2, 0.8], [1e-30, 0.6, 0.4], [0.99, 7e-3, 3e-3]]
    (log_a,) = _to(dtype, log_a)
    return log_a, _simplex(y, dtype)


def _von_mises_random(key, dtype, n):
    kl, kk, ky = jax.random.split(key, 3)
    loc = jax.random.normal(kl, (n,), F64)
    log_k = (1.5 if _f32(dtype) else 2.0) * jax.random.normal(kk, (n,), F64)
    # The wrapped Cauchy with VonMises' mean resultant length rho = I1(k)/I0(k), by its inverse CDF.
    b = numerics.bessel_ratio_complement(jnp.exp(log_k))
    u = jax.random.uniform(ky, (CANDIDATES, n), F64, -1.0, 1.0)
    theta = 2 * jnp.arctan((b / (2 - b))[None] * jnp.tan(0.5 * math.pi * u))
    y = _well_conditioned(VonMises(), (loc, log_k), loc[None] + theta, dtype)
    return (loc.astype(dtype), log_k.astype(dtype)), y.astype(dtype)


def _von_mises_extreme(dtype):
    # k theta^2 is 9 or 10 at the huge concentrations, away from the gradient's zero at 1.
    loc = [0.3, 0.0, 0.0, -1.0, 0.5, 0.0, 100.0]
    log_k = [math.log(1e6), math.log(1e-3), math.log(1e10), math.log(25.0), math.log(24.99), math.log(1e3), 0.0]
    y = [0.303, 3.0, 3e-5, -0.8, 2.0, -0.1, 101.0]
    loc, log_k, y = _to(dtype, loc, log_k, y)
    return (loc, log_k), y


CASES: tuple[Case, ...] = (
    Case("Exponential", Exponential(), _exponential_random, _exponential_extreme),
    Case("Gamma", Gamma(), _gamma_random, _gamma_extreme),
    Case("Beta", Beta(), _beta_random, _beta_extreme),
    Case("Dirichlet", Dirichlet(), _dirichlet_random, _dirichlet_extreme),
    Case("VonMises", VonMises(), _von_mises_random, _von_mises_extreme),
)

"""Check cases for Laplace, Cauchy, Logistic, StudentT, LogNormal.

Random targets are drawn from the family itself (at random locations and scales); extreme ones
use log-scales of -80 and 80, targets 1e30 away from the location (|r| up to ~1e36, whose square
overflows float32), a target exactly at Laplace's kink, and StudentT degrees of freedom from 0.5
to 1e3. (At nu = 1e6 the closed forms stay exact, but the check's oracle for ``fisher``, the
quadrature of autodiff Hessians, cancels to ~2e-11 there; tests/test_reals.py checks that corner
against mpmath instead.) Fixed-parameter variants other than Laplace(scale=1.0), the L1 loss, are
left to the tests: every row costs compile time here.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mlnll._src.verify.case import Case
from mlnll._src.families.cauchy import Cauchy
from mlnll._src.families.laplace import Laplace
from mlnll._src.families.log_normal import LogNormal
from mlnll._src.families.logistic import Logistic
from mlnll._src.families.student_t import StudentT


def _loc_log_scale(key, dtype, n):
    kl, ks = jax.random.split(key)
    return jax.random.normal(kl, (n,), dtype), jax.random.normal(ks, (n,), dtype)


def _location_scale_random(noise):
    """``random(key, dtype, n)`` drawing y = loc + scale * noise(key, shape, dtype)."""

    def random(key, dtype, n):
        kp, ky = jax.random.split(key)
        loc, log_scale = _loc_log_scale(kp, dtype, n)
        return (loc, log_scale), loc + jnp.exp(log_scale) * noise(ky, (n,), dtype)

    return random


def _fixed_scale(random, scale):
    """The same case with the scale fixed: outputs loc alone, targets loc + scale * noise."""

    def fixed(key, dtype, n):
        (loc, log_scale), y = random(key, dtype, n)
        return loc, loc + (y - loc) * jnp.exp(-log_scale) * scale

    return fixed


def _location_scale_extreme(dtype):
    loc = jnp.array([0.0, 1e4, 1e30, -5.0, 0.0, 2.0, -1e-30], dtype)
    log_scale = jnp.array([-80.0, 80.0, 60.0, 0.0, 30.0, 0.5, -60.0], dtype)
    y = jnp.array([1e-35, -1e4, -1e30, 5.0, 1e13, 2.0, 1e-30], dtype)
    return (loc, log_scale), y


def _fixed_extreme(dtype):
    # |loc| <= 1e15 at scale 1: a quadrature node loc + t must still differ from loc.
    return jnp.array([1e4, -1e4, 1e15, 0.0, 3.0], dtype), jnp.array([-1e4, 1e4, -1e30, 1e-30, 3.0], dtype)


def _student_t_random(key, dtype, n):
    kp, kd, ky = jax.random.split(key, 3)
    loc, log_scale = _loc_log_scale(kp, dtype, n)
    log_df = jax.random.uniform(kd, (n,), dtype, math.log(0.5), math.log(200.0))
    t = jax.random.t(ky, jnp.exp(log_df), (n,), dtype)
    return (loc, log_scale, log_df), loc + jnp.exp(log_scale) * t


def _student_t_extreme(dtype):
    (loc, log_scale), y = _location_scale_extreme(dtype)
    log_df = jnp.log(jnp.array([0.5, 1e3, 1.0, 0.5, 1e3, 30.0, 4.0], dtype))
    return (loc, log_scale, log_df), y


def _log_normal_random(key, dtype, n):
    kp, ky = jax.random.split(key)
    loc, log_scale = _loc_log_scale(kp, dtype, n)
    return (loc, log_scale), jnp.exp(loc + jnp.exp(log_scale) * jax.random.normal(ky, (n,), dtype))


def _log_normal_extreme(dtype):
    # log y from -86 to 80. The scales stay within e^-3 .. e^3: the check's quadrature works in y, and
    # at log_scale = -80 the nodes exp(loc + s x_k) would all round to exp(loc) (log_prob and grad
    # at log_scale = +-80 are tested against scipy in tests/test_reals.py instead).
    loc = jnp.array([0.0, 50.0, -50.0, 0.0, 80.0], dtype)
    log_scale = jnp.array([-3.0, 3.0, 0.0, 2.0, -2.5], dtype)
    y = jnp.array([1.0 + 1e-6, 1e-30, 1e30, 3e-38, 1e35], dtype)
    return (loc, log_scale), y


_laplace_random = _location_scale_random(lambda k, s, d: jax.random.laplace(k, s, d))

CASES: tuple[Case, ...] = (
    Case("Laplace", Laplace(), _laplace_random, _location_scale_extreme),
    Case("Laplace(scale=1.0)", Laplace(scale=1.0), _fixed_scale(_laplace_random, 1.0), _fixed_extreme),
    Case("Cauchy", Cauchy(), _location_scale_random(lambda k, s, d: jax.random.cauchy(k, s, d)),
         _location_scale_extreme),
    Case("Logistic", Logistic(), _location_scale_random(lambda k, s, d: jax.random.logistic(k, s, d)),
         _location_scale_extreme),
    Case("StudentT", StudentT(), _student_t_random, _student_t_extreme),
    Case("LogNormal", LogNormal(), _log_normal_random, _log_normal_extreme),
)

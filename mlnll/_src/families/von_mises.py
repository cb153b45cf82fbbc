"""VonMises: an angle (radians) given a location and a log-concentration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, unpack, validate
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

LOG_2PI = 2 * numerics.HALF_LOG_2PI
# The expectation rule: the trapezoid rule in theta = y - loc on [-t, t), with t = pi when the
# density at the antipode is above e^-45 of its peak (k <= 22.5; the periodic trapezoid rule), else
# the t where 2 k sin^2(t/2) = 45. 64 nodes resolve the peak (width 1/sqrt(k)) at every k.
_N_NODES = 64
_TAIL = 45.0
# Rejection rounds before the sampler gives up (each rejects with probability < 0.34).
_MAX_ROUNDS = 64


_NAMES = ("loc", "log_concentration")


def _params(outputs, family: str = "VonMises", upcast: bool = True) -> unpack.Params:
    """The raw outputs by name (``p.loc``, ``p.log_concentration``, ``p.dtype``), broadcast."""
    return unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together, and ``theta = y - loc`` (0 - loc where y is invalid)."""

    params: unpack.Params
    theta: jax.Array
    valid: jax.Array  # y finite


def _prepare(outputs, targets) -> _Inputs:
    p, y = unpack.with_targets(_params(outputs), targets, family="VonMises")
    valid = jnp.isfinite(y)
    return _Inputs(p, jnp.where(valid, y, jnp.zeros_like(y)) - p.loc, valid)


def _one_minus_cos(theta: jax.Array) -> jax.Array:
    """``1 - cos(theta) = 2 sin^2(theta / 2)``: no cancellation near theta = 0."""
    return 2 * jnp.square(jnp.sin(0.5 * theta))


def _wrapped_cauchy_parameter(k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Best and Fisher's envelope: ``(rho, 1 - rho, k / rho)`` with each free of cancellation.

    rho = (tau - sqrt(2 tau)) / (2k), tau = 1 + sqrt(1 + 4k^2). Rationalised,
    ``rho = 2k sqrt(tau) / ((sqrt(tau) + sqrt(2)) (r + 1))`` with r = sqrt(1 + 4k^2) (no cancellation
    at small k), and ``1 - rho = (sqrt(2 tau) - 1 - 1/(r + 2k)) / (2k)`` (none at large k, where
    1 - rho ~ 1/sqrt(k)). r is ``hypot(1, 2k)``, which does not overflow.
    """
    r = jnp.hypot(jnp.ones_like(k), 2 * k)
    sqrt_tau = jnp.sqrt(1 + r)
    k_over_rho = (1 + math.sqrt(2.0) / sqrt_tau) * (r + 1) / 2
    rho = k / k_over_rho
    big = k >= 1
    kb = jnp.where(big, k, jnp.ones_like(k))
    one_minus_rho_big = (math.sqrt(2.0) * sqrt_tau - 1 - 1 / (r + 2 * kb)) / (2 * kb)
    return rho, jnp.where(big, one_minus_rho_big, 1 - rho), k_over_rho


def _sample_centered(key: jax.Array, k: jax.Array) -> jax.Array:
    """``theta ~ VonMises(0, k)`` in (-pi, pi], by Best and Fisher's (1979) rejection sampler.

    Proposal: the wrapped Cauchy, ``theta = 2 arctan(c tan(pi u / 2))`` with u ~ U(-1, 1) and
    ``c = (1 - rho)/(1 + rho)`` (its inverse CDF; no arccos, so theta ~ 1e-3 at k = 1e6 keeps its
    digits). Accept when ``v <= g e^(1 - g)``, v ~ U(0, 1), with
    ``g = k (s - cos theta) = (k/rho) (1 - rho)^2 / 2 + 2 k sin^2(theta/2)``, s = (1 + rho^2)/(2 rho).
    At least 66% of proposals are accepted at every k; the loop stops when all are, or after
    _MAX_ROUNDS rounds (a chance below 1e-29), leaving NaN where none was.
    """
    rho, one_minus_rho, k_over_rho = _wrapped_cauchy_parameter(k)
    c = one_minus_rho / (1 + rho)
    offset = 0.5 * k_over_rho * jnp.square(one_minus_rho)

    def propose(key):
        ku, kv = jax.random.split(key)
        u = jax.random.uniform(ku, k.shape, k.dtype, minval=-1.0, maxval=1.0)
        v = jax.random.uniform(kv, k.shape, k.dtype)
        theta = 2 * jnp.arctan(c * jnp.tan(0.5 * math.pi * u))
        g = offset + k * _one_minus_cos(theta)
        # v <= g e^(1 - g), compared in logs.
        return theta, jnp.log(v) <= jnp.log(g) + 1 - g

    def body(state):
        key, theta, done, rounds = state
        key, sub = jax.random.split(key)
        proposal, accept = propose(sub)
        take = accept & ~done
        return key, jnp.where(take, proposal, theta), done | accept, rounds + 1

    def not_finished(state):
        return ~jnp.all(state[2]) & (state[3] < _MAX_ROUNDS)

    init = (key, jnp.full_like(k, jnp.nan), jnp.zeros(k.shape, bool), 0)
    return jax.lax.while_loop(not_finished, body, init)[1]


@dataclasses.dataclass(frozen=True)
class VonMises:
    r"""von Mises distribution of an angle, parametrised by a location and a log-concentration.

    outputs: ``(loc, log_concentration)``. targets: angles in radians (any real: the density is
    2 pi-periodic, as in scipy), broadcastable with the outputs. A non-finite angle gives ``-inf``.

    Density, with ``k = exp(log_concentration)`` and ``theta = y - loc``:
    ``log p(y) = k cos(theta) - log(2 pi I0(k))`` (scipy.stats.vonmises(k, loc=loc)).
    ``log I0(k)`` is ``log(i0e(k)) + k`` (``log_i0e``; an asymptotic series from k = 25), so
    ``log p = -2 k sin^2(theta / 2) - log(2 pi) - log_i0e(k)``: no overflow of I0, and no
    cancellation between ``k cos(theta)`` and ``log I0(k) ~ k`` at large k.

    Gradient. With ``A(k) = I1(k)/I0(k) = d log I0 / dk`` and ``dk/d log_concentration = k``,
    ``d(-log p)/d loc = -k sin(theta)`` and
    ``d(-log p)/d log_concentration = k (A(k) - cos theta) = k (2 sin^2(theta/2) - (1 - A(k)))``,
    the second form with ``1 - A`` from ``bessel_ratio_complement`` (accurate where A ~ 1).

    Fisher information in ``(loc, log_concentration)``: the Hessian of ``-log p`` is
    ``[[k cos theta, -k sin theta], [-k sin theta, k (A - cos theta) + k^2 A'(k)]]`` and
    ``E[cos theta] = A(k)``, ``E[sin theta] = 0``, so ``F = diag(k A(k), k^2 A'(k))`` with
    ``A' = 1 - A/k - A^2`` (``scaled_bessel_ratio_grad``); ``k^2 A'`` is the variance of ``k cos theta``.
    """

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example log-density, equal to scipy.stats.vonmises.logpdf(y, k, loc=loc)."""
        p, theta, valid = _prepare(outputs, targets)
        k = jnp.exp(p.log_concentration)
        lp = -k * _one_minus_cos(theta) - LOG_2PI - numerics.log_i0e(k)
        return jnp.where(valid, lp, -jnp.inf).astype(p.dtype)

    def grad(self, outputs, targets) -> tuple[jax.Array, jax.Array]:
        """Closed form ``(-k sin(theta), k (2 sin^2(theta/2) - (1 - A(k))))`` (NaN for invalid targets)."""
        p, theta, valid = _prepare(outputs, targets)
        k = jnp.exp(p.log_concentration)
        d_loc = -k * jnp.sin(theta)
        d_log_k = k * (_one_minus_cos(theta) - numerics.bessel_ratio_complement(k))
        nan = jnp.full_like(theta, jnp.nan)
        return jnp.where(valid, d_loc, nan).astype(p.dtype), jnp.where(valid, d_log_k, nan).astype(p.dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"loc": p.loc.astype(p.dtype), "concentration": jnp.exp(p.log_concentration).astype(p.dtype)}

    def mean(self, outputs) -> jax.Array:
        """The mean direction ``loc`` (as given, not wrapped).

        An angle has no linear mean; the circular mean ``E[exp(i y)] = A(k) exp(i loc)`` points along
        loc, with mean resultant length ``A(k) = I1(k)/I0(k)``.
        """
        p = _params(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Angles wrapped into [-pi, pi) (as scipy's rvs), shape ``sample_shape + loc.shape``.

        ``loc + theta`` with theta from Best and Fisher's rejection sampler (``_sample_centered``).
        """
        p = _params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        theta = _sample_centered(key, jnp.broadcast_to(jnp.exp(p.log_concentration), shape))
        y = jnp.broadcast_to(p.loc, shape) + theta
        return (jnp.remainder(y + math.pi, 2 * math.pi) - math.pi).astype(p.dtype)

    def entropy(self, outputs) -> jax.Array:
        """``log(2 pi I0(k)) - k A(k) = log(2 pi) + log_i0e(k) + k (1 - A(k))``."""
        p = _params(outputs)
        k = jnp.exp(p.log_concentration)
        h = LOG_2PI + numerics.log_i0e(k) + k * numerics.bessel_ratio_complement(k)
        return h.astype(p.dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q) = ``k_p A_p - k_q A_p cos(d) + log I0(k_q) - log I0(k_p)``, d = loc_p - loc_q.

        (``E_p[cos(y - loc_q)] = A_p cos(d)``.) With ``B = 1 - A`` and ``log I0 = log_i0e + k`` the
        terms of size k cancel exactly:
        ``KL = 2 k_q sin^2(d/2) + B_p (k_q cos(d) - k_p) + log_i0e(k_q) - log_i0e(k_p)``.
        """
        p = _params(outputs_p, "VonMises.kl p", upcast=False)
        q = _params(outputs_q, "VonMises.kl q", upcast=False)
        shape = validate.broadcast_shapes("VonMises.kl", [("outputs_p", p.batch_shape),
                                                          ("outputs_q", q.batch_shape)])
        pairs = (p.loc, p.log_concentration, q.loc, q.log_concentration)
        broadcast = (jnp.broadcast_to(x, shape) for x in pairs)
        (loc_p, lk_p, loc_q, lk_q), dtype = numerics.upcast(*broadcast)
        k_p, k_q = jnp.exp(lk_p), jnp.exp(lk_q)
        d = loc_p - loc_q
        b_p = numerics.bessel_ratio_complement(k_p)
        kl = (k_q * _one_minus_cos(d) + b_p * (k_q * jnp.cos(d) - k_p)
              + numerics.log_i0e(k_q) - numerics.log_i0e(k_p))
        return kl.astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """``diag(k A(k), k^2 A'(k))`` per example, shape [..., 2, 2]."""
        p = _params(outputs)
        k = jnp.exp(p.log_concentration)
        f_loc = k * numerics.bessel_ratio(k)
        f_log_k = numerics.scaled_bessel_ratio_grad(k)
        zero = jnp.zeros_like(k)
        return jnp.stack([jnp.stack([f_loc, zero], -1), jnp.stack([zero, f_log_k], -1)], -2).astype(p.dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log(2 pi)``."""
        y = validate.numeric_targets(targets, where="VonMises targets")
        return jnp.full(y.shape, -LOG_2PI, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs) -> tuple[jax.Array, jax.Array]:
        """A 64-node trapezoid rule: nodes ``loc + theta_j`` ([64, *batch]) and weights summing to 1.

        ``theta_j = t (2j/64 - 1)``, weights proportional to ``exp(-2 k sin^2(theta_j / 2))``; t = pi
        for k <= 22.5 (the periodic trapezoid rule, error ~ I_64(k)/I_0(k)), else the angle past
        which the density is below e^-45 of its peak (a trapezoid rule on the real line, spectrally
        accurate for this Gaussian-like peak). Integrates cos and sin(theta)^2 to ~1e-16 at every k;
        nodes are not wrapped, so ``y - loc`` recovers theta exactly when |loc| is small.
        """
        p = _params(outputs)
        loc, k = p.loc, jnp.exp(p.log_concentration)
        half_width = 2 * jnp.arcsin(jnp.sqrt(jnp.minimum(0.5 * _TAIL / k, 1.0)))
        frac = jnp.asarray([2 * j / _N_NODES - 1 for j in range(_N_NODES)], loc.dtype)
        frac = frac.reshape((-1,) + (1,) * loc.ndim)
        theta = half_width[None] * frac
        log_w = -k[None] * _one_minus_cos(theta)
        w = jnp.exp(log_w - jnp.max(log_w, axis=0, keepdims=True))
        return loc[None] + theta, w / jnp.sum(w, axis=0, keepdims=True)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: concentrations e^(2 N(0, 1)) (e^(1.5 N(0, 1)) in float32) at
        random; concentrations 1e-3 to 1e10, near the series switch at 25, and loc = 100 among the
        extremes."""
        return (
            Case("VonMises", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_vonmises), plain_log_prob=_textbook_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------
# Random targets: the wrapped Cauchy with VonMises' mean resultant length, by its inverse CDF (a
# plausible stand-in that compiles no rejection sampler; tests/test_positive.py checks ``sample``).
# Every draw is kept: a score that crosses 0 is judged against its natural scale sqrt(F_ii). The
# Fisher check's rule needs k >= 1e-3, with |loc| small when k is huge (``expectation_nodes``).


def _textbook_log_prob(outputs, y):
    """``k cos(y - loc) - log(2 pi I0(k))``, with ``log I0(k) = log(i0e(k)) + k`` (I0 overflows past 700)."""
    loc, k = outputs[0], jnp.exp(outputs[1])
    return k * jnp.cos(y - loc) - jnp.log(2 * jnp.pi) - (jnp.log(jax.scipy.special.i0e(k)) + k)


def _scipy_vonmises(outputs):
    import scipy.stats

    return scipy.stats.vonmises(np.exp(outputs[1]), loc=outputs[0])


def _random(key, dtype, n):
    u = draws.uniform_rows(key, (3, n))
    loc = draws.standard_normal(u[0])
    log_k = (1.5 if np.dtype(dtype) == np.float32 else 2.0) * draws.standard_normal(u[1])
    # The wrapped Cauchy with rho = I1(k)/I0(k): theta = 2 arctan(c tan(pi v / 2)), v uniform on
    # (-1, 1), c = (1 - rho)/(1 + rho) = b / (2 - b) with b = 1 - rho.
    b = numerics.bessel_ratio_complement(jnp.exp(log_k))
    theta = 2 * jnp.arctan(b / (2 - b) * jnp.tan(0.5 * math.pi * (2 * u[2] - 1)))
    return (loc.astype(dtype), log_k.astype(dtype)), (loc + theta).astype(dtype)


def _extreme(dtype):
    # k theta^2 is 9 or 10 at the huge concentrations, away from the gradient's zero at 1.
    loc = [0.3, 0.0, 0.0, -1.0, 0.5, 0.0, 100.0]
    log_k = [math.log(1e6), math.log(1e-3), math.log(1e10), math.log(25.0), math.log(24.99), math.log(1e3),
             0.0]
    y = [0.303, 3.0, 3e-5, -0.8, 2.0, -0.1, 101.0]
    loc, log_k, y = (jnp.asarray(np.asarray(x, np.float64), dtype) for x in (loc, log_k, y))
    return (loc, log_k), y

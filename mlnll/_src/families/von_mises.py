"""VonMises: an angle (radians) given a location and a log-concentration."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from mlnll._src import numerics, validate

LOG_2PI = 2 * numerics.HALF_LOG_2PI
# The expectation rule: the trapezoid rule in theta = y - loc on [-t, t), with t = pi when the
# density at the antipode is above e^-45 of its peak (k <= 22.5; the periodic trapezoid rule), else
# the t where 2 k sin^2(t/2) = 45. 64 nodes resolve the peak (width 1/sqrt(k)) at every k.
_N_NODES = 64
_TAIL = 45.0
# Rejection rounds before the sampler gives up (each rejects with probability < 0.34).
_MAX_ROUNDS = 64


def _outputs(outputs, family: str = "VonMises") -> tuple[jax.Array, jax.Array, jnp.dtype]:
    """``(loc, log_concentration, dtype)`` broadcast together, in the accumulation dtype."""
    loc, log_k = validate.outputs_tuple(outputs, ("loc", "log_concentration"), family=family)
    shape = validate.broadcast_shapes(family, [("loc", loc.shape), ("log_concentration", log_k.shape)])
    (loc, log_k), dtype = numerics.upcast(loc, log_k)
    return jnp.broadcast_to(loc, shape), jnp.broadcast_to(log_k, shape), dtype


def _prepare(outputs, targets):
    """``(loc, log_k, theta, valid, dtype)`` with ``theta = y - loc``; non-finite angles are invalid."""
    loc, log_k, dtype = _outputs(outputs)
    y = validate.numeric_targets(targets, where="VonMises targets")
    shape = validate.broadcast_shapes("VonMises", [("outputs", loc.shape), ("targets", y.shape)])
    y = jnp.broadcast_to(y.astype(loc.dtype), shape)
    valid = jnp.isfinite(y)
    theta = jnp.where(valid, y, jnp.zeros_like(y)) - jnp.broadcast_to(loc, shape)
    return loc, jnp.broadcast_to(log_k, shape), theta, valid, dtype


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
        _, log_k, theta, valid, dtype = _prepare(outputs, targets)
        k = jnp.exp(log_k)
        lp = -k * _one_minus_cos(theta) - LOG_2PI - numerics.log_i0e(k)
        return jnp.where(valid, lp, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets) -> tuple[jax.Array, jax.Array]:
        """Closed form ``(-k sin(theta), k (2 sin^2(theta/2) - (1 - A(k))))`` (NaN for invalid targets)."""
        _, log_k, theta, valid, dtype = _prepare(outputs, targets)
        k = jnp.exp(log_k)
        d_loc = -k * jnp.sin(theta)
        d_log_k = k * (_one_minus_cos(theta) - numerics.bessel_ratio_complement(k))
        nan = jnp.full_like(theta, jnp.nan)
        return jnp.where(valid, d_loc, nan).astype(dtype), jnp.where(valid, d_log_k, nan).astype(dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        loc, log_k, dtype = _outputs(outputs)
        return {"loc": loc.astype(dtype), "concentration": jnp.exp(log_k).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        """The mean direction ``loc`` (as given, not wrapped).

        An angle has no linear mean; the circular mean ``E[exp(i y)] = A(k) exp(i loc)`` points along
        loc, with mean resultant length ``A(k) = I1(k)/I0(k)``.
        """
        loc, _, dtype = _outputs(outputs)
        return loc.astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Angles wrapped into [-pi, pi) (as scipy's rvs), shape ``sample_shape + loc.shape``.

        ``loc + theta`` with theta from Best and Fisher's rejection sampler (``_sample_centered``).
        """
        loc, log_k, dtype = _outputs(outputs)
        shape = tuple(sample_shape) + loc.shape
        theta = _sample_centered(key, jnp.broadcast_to(jnp.exp(log_k), shape))
        y = jnp.broadcast_to(loc, shape) + theta
        return (jnp.remainder(y + math.pi, 2 * math.pi) - math.pi).astype(dtype)

    def entropy(self, outputs) -> jax.Array:
        """``log(2 pi I0(k)) - k A(k) = log(2 pi) + log_i0e(k) + k (1 - A(k))``."""
        _, log_k, dtype = _outputs(outputs)
        k = jnp.exp(log_k)
        h = LOG_2PI + numerics.log_i0e(k) + k * numerics.bessel_ratio_complement(k)
        return h.astype(dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q) = ``k_p A_p - k_q A_p cos(d) + log I0(k_q) - log I0(k_p)``, d = loc_p - loc_q.

        (``E_p[cos(y - loc_q)] = A_p cos(d)``.) With ``B = 1 - A`` and ``log I0 = log_i0e + k`` the
        terms of size k cancel exactly:
        ``KL = 2 k_q sin^2(d/2) + B_p (k_q cos(d) - k_p) + log_i0e(k_q) - log_i0e(k_p)``.
        """
        loc_p, lk_p, _ = _outputs(outputs_p, "VonMises.kl outputs_p")
        loc_q, lk_q, _ = _outputs(outputs_q, "VonMises.kl outputs_q")
        shape = validate.broadcast_shapes("VonMises.kl", [("outputs_p", loc_p.shape), ("outputs_q", loc_q.shape)])
        broadcast = (jnp.broadcast_to(x, shape) for x in (loc_p, lk_p, loc_q, lk_q))
        (loc_p, lk_p, loc_q, lk_q), dtype = numerics.upcast(*broadcast)
        k_p, k_q = jnp.exp(lk_p), jnp.exp(lk_q)
        d = loc_p - loc_q
        b_p = numerics.bessel_ratio_complement(k_p)
        kl = (k_q * _one_minus_cos(d) + b_p * (k_q * jnp.cos(d) - k_p)
              + numerics.log_i0e(k_q) - numerics.log_i0e(k_p))
        return kl.astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """``diag(k A(k), k^2 A'(k))`` per example, shape [..., 2, 2]."""
        _, log_k, dtype = _outputs(outputs)
        k = jnp.exp(log_k)
        f_loc = k * numerics.bessel_ratio(k)
        f_log_k = numerics.scaled_bessel_ratio_grad(k)
        zero = jnp.zeros_like(k)
        return jnp.stack([jnp.stack([f_loc, zero], -1), jnp.stack([zero, f_log_k], -1)], -2).astype(dtype)

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
        loc, log_k, _ = _outputs(outputs)
        k = jnp.exp(log_k)
        half_width = 2 * jnp.arcsin(jnp.sqrt(jnp.minimum(0.5 * _TAIL / k, 1.0)))
        frac = jnp.asarray([2 * j / _N_NODES - 1 for j in range(_N_NODES)], loc.dtype)
        frac = frac.reshape((-1,) + (1,) * loc.ndim)
        theta = half_width[None] * frac
        log_w = -k[None] * _one_minus_cos(theta)
        w = jnp.exp(log_w - jnp.max(log_w, axis=0, keepdims=True))
        return loc[None] + theta, w / jnp.sum(w, axis=0, keepdims=True)

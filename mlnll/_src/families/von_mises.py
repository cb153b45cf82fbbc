"""VonMises: an angle (radians) given a location and a log-concentration."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy import special
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.types import VonMisesOutputArrays, VonMisesOutputs
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


# -- B(k) = 1 - I1(k)/I0(k), the Bessel part of the gradient -------------------------------------------
# I0(k) = J0(ik) vanishes at k = +-i j_n (j_n the zeros of J0), and the Mittag-Leffler expansion
# A(k) = I1(k)/I0(k) = sum_n 2k / (k^2 + j_n^2) makes B = 1 - A meromorphic with poles there only.
# Below the switch, f(k) = B(k) (1 + k^2/j_1^2)(1 + k^2/j_2^2) is analytic out to |Im k| = j_3 = 8.65,
# in z = k/4 - 1 on [0, 8] as sum_j c_j T_j(z); from the switch on, k B(k) (-> 1/2 at k = inf) in
# t = 16/k - 1. Both by Chebyshev interpolation (60 and 90 nodes) in mpmath at 60 digits, B from
# besseli (k B from its asymptotic series past k = 1e9). |c_j| / c_0 falls below 1e-9 after 14 and
# 10 terms and below 1e-18 after 27 and 32; a dtype keeps those above its tolerance.
_SWITCH = 8.0
_J1, _J2 = 2.404825557695773, 5.520078110286311  # the first two zeros of J0
_SMALL_CHEBYSHEV = (
    1.2224064605917557, 0.7487260133069987, 0.4624318443375445,
    -0.030496481392009136, 0.025305996959408317, -0.006646783085457091,
    0.00129267976189915, -0.0001529388536627021, -1.5962886413982756e-06,
    4.820164187798993e-06, -8.228181043524165e-07, -2.737470659777943e-08,
    3.597121506353457e-08, -5.133241753385731e-09, -5.631839653416449e-10,
    3.027140020240014e-10, -2.7401895996438124e-11, -7.93359122185722e-12,
    2.435346373481562e-12, -6.861897192154726e-14, -9.000268962865263e-14,
    1.742353959724202e-14, 9.324552366825195e-16, -8.75229507708029e-16,
    1.0182501765391212e-16, 2.008926400378389e-17, -7.456114677088616e-18,
    3.5769031920659097e-19, 2.529538340998253e-19, -5.531327963923465e-20,
)
_LARGE_CHEBYSHEV = (
    0.5087044228290216, 0.009033638646327165, 0.0003509928487727511,
    2.4000438429103217e-05, 2.5485427408775527e-06, 3.815519410045759e-07,
    6.38753641011317e-08, 6.605100183496212e-09, -1.899860583633942e-09,
    -1.3857621284106324e-09, -3.5482727891548447e-10, 1.7935629684279218e-11,
    4.389320123144555e-11, 9.909087325174729e-12, -2.9337562818469654e-12,
    -1.8685456734304527e-12, 5.51212826673586e-14, 2.664203181443918e-13,
    2.5122977643285875e-14, -3.709826521932087e-14, -6.6098880085054196e-15,
    5.532217387056378e-15, 1.2354019527181981e-15, -9.160955030922758e-16,
    -2.0001924286572827e-16, 1.6754365865030597e-16, 2.7304605668530615e-17,
    -3.269410578567758e-17, -2.2582322080544677e-18, 6.49030663076939e-18,
    -3.454462308555446e-19, -1.2406915277807354e-18, 2.587799186950613e-19,
    2.113632453653543e-19,
)


def _tolerance(dtype) -> float:
    """Truncation allowed in B, relative, in ``dtype``: far below its ulp."""
    return 1e-18 if np.dtype(dtype).itemsize >= 8 else 1e-9


@functools.cache
def _monomials(chebyshev: tuple[float, ...], dtype) -> tuple[float, ...]:
    """The Chebyshev series truncated for ``dtype`` (|c_j| >= tol c_0), as monomial coefficients.

    Both functions are analytic well beyond [-1, 1] (f out to |z| ~ 3, k B ~ a power series in
    1/k), so the monomial coefficients fall too (sum |d_j| is 2.6 against f in [1, 2.4], 0.52
    against k B ~ 0.51) and Horner's rule adds terms of decreasing size.
    """
    tol = _tolerance(dtype) * abs(chebyshev[0])
    kept = chebyshev[: max(j for j, c in enumerate(chebyshev) if abs(c) >= tol) + 1]
    return tuple(float(d) for d in np.polynomial.chebyshev.cheb2poly(kept))


def _horner(coeffs: Sequence[float], x: jax.Array) -> jax.Array:
    """``sum_i coeffs[i] x^i`` by Horner's rule (``numerics.horner`` in lax operations on constants
    of x's dtype: a 30-term series traces 4x faster, which matters in every compile)."""
    out = jnp.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = lax.add(lax.mul(out, x), np.asarray(c, x.dtype))
    return out


def _bessel_ratio_complement(k: jax.Array) -> jax.Array:
    """``B(k) = 1 - I1(k)/I0(k)`` for k >= 0 to an ulp or two, with no cancellation where A ~ 1.

    Below the switch ``B = f(k) / ((1 + k^2/j_1^2)(1 + k^2/j_2^2))``, from it on ``B = (k B)(t) / k``
    (the Chebyshev series above; ``1 - i1e/i0e`` would lose ~2k ulps: 4e-6 in float32 at k = 20).
    One division, no special function; plain jax.numpy, so Hessians differentiate the two
    polynomials (short, and analytic approximants: their derivatives are accurate too).
    """
    large = k >= _SWITCH
    # Double where: each branch sees only its own range of k (and all of the derivative in k).
    k_large = jnp.where(large, k, _SWITCH)
    k_small = jnp.where(large, _SWITCH, k)
    f = _horner(_monomials(_SMALL_CHEBYSHEV, k.dtype), 0.25 * k_small - 1)
    poles = (1 + jnp.square(k_small * (1 / _J1))) * (1 + jnp.square(k_small * (1 / _J2)))
    k_b = _horner(_monomials(_LARGE_CHEBYSHEV, k.dtype), 2 * _SWITCH / k_large - 1)
    return jnp.where(large, k_b, f) / jnp.where(large, k_large, poles)


_HUGE_K = 2.0**60


def _log_pdf_and_partials(loc: jax.Array, log_k: jax.Array, y: jax.Array):
    """``log p`` and its partials in ``(loc, log_concentration, y)`` (see ``VonMises``)."""
    k = jnp.exp(log_k)
    half = 0.5 * (y - loc)
    sin_half, cos_half = jnp.sin(half), jnp.cos(half)
    one_minus_cos = 2 * jnp.square(sin_half)  # 1 - cos(theta) = 2 sin^2(theta/2): no cancellation near 0
    # At theta = 0 (sin(theta/2) = 0) k (1 - cos theta) and k sin(theta) are 0 however large k, also
    # at k = e^1e4 = inf, where the products would be 0 * inf = NaN.
    # (only where k itself is inf: elsewhere the products keep their derivatives, which the Hessian needs)
    at_mode = (sin_half == 0) & jnp.isinf(k)
    k_sin = jnp.where(at_mode, 0.0, (2 * sin_half * cos_half) * k)  # k sin(theta) = 2 k sin(theta/2) cos(theta/2)
    k_one_minus_cos = jnp.where(at_mode, 0.0, one_minus_cos * k)
    # log I0(k) = log(i0e(k)) + k, and log(i0e(k)) = -log(2 pi k)/2 + O(1/k) (Hankel): beyond k = 2^60
    # the O(1/k) is below an ulp, and taken from log_k the form survives k = inf, where i0e(k) = 0
    # would give +inf. Likewise k (1 - I1(k)/I0(k)) = 1/2 + O(1/k) there (inf * 0 at k = inf).
    huge = k > _HUGE_K
    log_i0e = jnp.where(huge, -0.5 * (LOG_2PI + log_k), jnp.log(special.i0e(jnp.where(huge, 1.0, k))))
    k_complement = jnp.where(huge, 0.5, k * _bessel_ratio_complement(jnp.where(huge, 1.0, k)))
    value = -k_one_minus_cos - LOG_2PI - log_i0e
    return value, (k_sin, k_complement - k_one_minus_cos, -k_sin)


# log p(y | loc, log_concentration), differentiated (to every order) through its closed-form partials.
von_mises_log_pdf = closed_form(_log_pdf_and_partials)


def _params(outputs, family: str = "VonMises", upcast: bool = True) -> unpack.Params:
    """The raw outputs by name (``p.loc``, ``p.log_concentration``, ``p.dtype``), broadcast."""
    return unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together; non-finite targets replaced by 0 (double where)."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # y finite


def _prepare(outputs, targets) -> _Inputs:
    p, y = unpack.with_targets(_params(outputs), targets, family="VonMises")
    valid = jnp.isfinite(y)
    return _Inputs(p, jnp.where(valid, y, jnp.zeros_like(y)), valid)


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
    2 pi-periodic, as in scipy), broadcastable with the outputs. A non-finite angle gives ``-inf``
    and NaN derivatives for its example (``minus_inf_off_support``).

    Density, with ``k = exp(log_concentration)`` and ``theta = y - loc``:
    ``log p(y) = k cos(theta) - log(2 pi I0(k))`` (scipy.stats.vonmises(k, loc=loc)).
    ``log I0(k)`` is ``log(i0e(k)) + k``, so ``log p = -2 k sin^2(theta / 2) - log(2 pi) - log(i0e(k))``:
    no overflow of I0, and no cancellation between ``k cos(theta)`` and ``log I0(k) ~ k`` at large k.

    Gradient. With ``A(k) = I1(k)/I0(k) = d log I0 / dk`` and ``dk/d log_concentration = k``,
    ``d(-log p)/d loc = -k sin(theta)``, ``d(-log p)/d y = k sin(theta)`` and
    ``d(-log p)/d log_concentration = k (A(k) - cos theta) = k (2 sin^2(theta/2) - (1 - A(k)))``,
    the second form with ``B = 1 - A`` evaluated without cancellation where A ~ 1: below k = 8 a
    polynomial over B's first two poles, above it a Chebyshev series of ``k B ~ 1/2`` in 1/k
    (``_bessel_ratio_complement``). ``jax.grad``, ``jacfwd`` and ``hessian`` of ``log_prob`` run
    through these partials (``von_mises_log_pdf``, a ``custom_jvp``), and ``grad`` returns the same
    partials negated.

    Fisher information in ``(loc, log_concentration)``: the Hessian of ``-log p`` is
    ``[[k cos theta, -k sin theta], [-k sin theta, k (A - cos theta) + k^2 A'(k)]]`` and
    ``E[cos theta] = A(k)``, ``E[sin theta] = 0``, so ``F = diag(k A(k), k^2 A'(k))`` with
    ``A' = 1 - A/k - A^2`` (``scaled_bessel_ratio_grad``); ``k^2 A'`` is the variance of ``k cos theta``.
    """

    def log_prob(self, outputs: VonMisesOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example log-density, equal to scipy.stats.vonmises.logpdf(y, k, loc=loc)."""
        p, y, valid = _prepare(outputs, targets)
        lp = von_mises_log_pdf(p.loc, p.log_concentration, y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: VonMisesOutputs, targets: ArrayLike) -> VonMisesOutputArrays:
        """Closed form ``(-k sin(theta), k (2 sin^2(theta/2) - (1 - A(k))))`` (NaN for invalid targets)."""
        p, y, valid = _prepare(outputs, targets)
        _, (d_loc, d_log_k, _) = _log_pdf_and_partials(p.loc, p.log_concentration, y)
        nan = jnp.full_like(y, jnp.nan)
        return (jnp.where(valid, -d_loc, nan).astype(p.dtype),
                jnp.where(valid, -d_log_k, nan).astype(p.dtype))

    def params(self, outputs: VonMisesOutputs) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"loc": p.loc.astype(p.dtype), "concentration": jnp.exp(p.log_concentration).astype(p.dtype)}

    def mean(self, outputs: VonMisesOutputs) -> jax.Array:
        """The mean direction ``loc`` (as given, not wrapped).

        An angle has no linear mean; the circular mean ``E[exp(i y)] = A(k) exp(i loc)`` points along
        loc, with mean resultant length ``A(k) = I1(k)/I0(k)``.
        """
        p = _params(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: VonMisesOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Angles wrapped into [-pi, pi) (as scipy's rvs), shape ``sample_shape + loc.shape``.

        ``loc + theta`` with theta from Best and Fisher's rejection sampler (``_sample_centered``).
        """
        p = _params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        theta = _sample_centered(key, jnp.broadcast_to(jnp.exp(p.log_concentration), shape))
        y = jnp.broadcast_to(p.loc, shape) + theta
        return (jnp.remainder(y + math.pi, 2 * math.pi) - math.pi).astype(p.dtype)

    def entropy(self, outputs: VonMisesOutputs) -> jax.Array:
        """``log(2 pi I0(k)) - k A(k) = log(2 pi) + log_i0e(k) + k (1 - A(k))``."""
        p = _params(outputs)
        k = jnp.exp(p.log_concentration)
        h = LOG_2PI + numerics.log_i0e(k) + k * numerics.bessel_ratio_complement(k)
        return h.astype(p.dtype)

    def kl(self, outputs_p: VonMisesOutputs, outputs_q: VonMisesOutputs) -> jax.Array:
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

    def fisher(self, outputs: VonMisesOutputs) -> jax.Array:
        """``diag(k A(k), k^2 A'(k))`` per example, shape [..., 2, 2]."""
        p = _params(outputs)
        k = jnp.exp(p.log_concentration)
        f_loc = k * numerics.bessel_ratio(k)
        f_log_k = numerics.scaled_bessel_ratio_grad(k)
        zero = jnp.zeros_like(k)
        return jnp.stack([jnp.stack([f_loc, zero], -1), jnp.stack([zero, f_log_k], -1)], -2).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log(2 pi)``."""
        y = validate.numeric_targets(targets, where="VonMises targets")
        return jnp.full(y.shape, -LOG_2PI, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: VonMisesOutputs) -> tuple[jax.Array, jax.Array]:
        """A 64-node trapezoid rule: nodes ``loc + theta_j`` (``[64, *batch]``) and weights summing to 1.

        ``theta_j = t (2j/64 - 1)``, weights proportional to ``exp(-2 k sin^2(theta_j / 2))``; t = pi
        for k <= 22.5 (the periodic trapezoid rule, error ~ I_64(k)/I_0(k)), else the angle past
        which the density is below e^-45 of its peak (a trapezoid rule on the real line, spectrally
        accurate for this Gaussian-like peak). Integrates cos and sin(theta)^2 to ~1e-16 at every k;
        nodes are not wrapped, so ``y - loc`` recovers theta exactly when ``|loc|`` is small.
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
        random; concentrations 1e-3 to 1e10, at and below the switch of B's series at 8, and loc = 100
        among the extremes."""
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
    k = jnp.exp(log_k)
    b = _bessel_ratio_complement(k)
    theta = 2 * jnp.arctan(b / (2 - b) * jnp.tan(0.5 * math.pi * (2 * u[2] - 1)))
    return (loc.astype(dtype), log_k.astype(dtype)), (loc + theta).astype(dtype)


def _extreme(dtype):
    # k theta^2 is 9 or 10 at the huge concentrations, away from the gradient's zero at 1.
    loc = [0.3, 0.0, 0.0, -1.0, 0.5, 0.0, 100.0]
    log_k = [math.log(1e6), math.log(1e-3), math.log(1e10), math.log(_SWITCH), math.log(7.99), math.log(1e3),
             0.0]
    y = [0.303, 3.0, 3e-5, -0.8, 2.0, -0.1, 101.0]
    loc, log_k, y = (jnp.asarray(np.asarray(x, np.float64), dtype) for x in (loc, log_k, y))
    return (loc, log_k), y

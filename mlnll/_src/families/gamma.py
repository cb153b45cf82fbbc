"""Gamma: a positive target given a log-concentration (shape) and a log-rate."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _tails
from mlnll._src.numerics import gamma_bessel as gb
from mlnll._src.types import GammaOutputArrays, GammaOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

# The expectation rule: N trapezoid nodes in s, where u = log(rate y / a) = c sinh(s) (a sinc rule,
# spectrally accurate for the analytic, doubly-exponentially decaying integrand). c = 1/sqrt(a) for
# a >= 1 (u's spread), else 1; s covers where a (e^u - 1 - u) < 45 (relative weight e^-45).
_N_NODES = 192
_TAIL = 45.0
_NAMES = ("log_concentration", "log_rate")


def _params(outputs, family: str = "Gamma", upcast: bool = True) -> unpack.Params:
    """The raw outputs by name (``p.log_concentration``, ``p.log_rate``, ``p.dtype``), broadcast."""
    return unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together; targets outside the support replaced by 1 (double where)."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # 0 < y < inf


def _prepare(outputs, targets) -> _Inputs:
    p, y = unpack.with_targets(_params(outputs), targets, family="Gamma")
    valid = numerics.positive_and_finite(y)  # from the bits: a subnormal y is positive (numerics/positive.py)
    return _Inputs(p, jnp.where(valid, y, jnp.ones_like(y)), valid)


# The plain form where the saddle-point form cancels: far below the mode (u < -1, z < a/e) with a
# near 1. There the saddle-point form adds a u and -log y, of size |log y|, whose sum is
# (a - 1) log y + a (log b - log a): at a = b = 1, y = 1e-20 they are -46 and 46 and the NLL is 1e-20.
# The plain form writes (a - 1) log y with a - 1 = expm1(log_a), exactly 0 at a = 1, and its other
# terms (a log b, z, lgamma(a) for a < 2) are of the size of the result. Below a = 1/2 the two forms
# are alike (the plain one is kept there: a target that underflowed to log y = -inf gives +inf, not
# NaN); from a = 2 on the saddle-point terms cancel at most a / (a - 1) <= 2-fold, less than a log b
# would in the plain form.
_PLAIN_BELOW_A = 2.0


def _plain_log_pdf(a, a_minus_1, log_a, log_b, log_y, z, use):
    """``(a - 1) log y + a log b - z - lgamma(a)`` where ``use`` (a < 2), finite elsewhere.

    ``a - 1 = expm1(log_a)`` is exactly 0 at a = 1, where ``lgamma_below_two`` is exactly 0 too:
    at a = b = 1, y = 1e-20 this is -1e-20 to the last digit.
    """
    # Double where: elsewhere a may be e^80, and lgamma_below_two takes a < 2.
    a = jnp.where(use, a, jnp.ones_like(a))
    a_minus_1 = jnp.where(use, a_minus_1, jnp.zeros_like(a_minus_1))
    log_a = jnp.where(use, log_a, jnp.zeros_like(log_a))
    return a_minus_1 * log_y + a * log_b - z - gb.lgamma_below_two(a, a_minus_1, log_a)


def _log_pdf_and_partials(log_a, log_b, y):
    """``log p(y)`` and its partials ``(1/2 - a delta'(a) + a u, a - z, (a - 1)/y - b)`` in
    ``(log_concentration, log_rate, y)`` (the derivation is in the class docstring).

    ``u = log(z / a) = log y + (log_b - log_a)``: the difference ``log_b - log_a`` is taken first
    (exact when the two are close), so u keeps relative accuracy near the mode (u ~ 1/sqrt(a)).
    delta(a) and a delta'(a) come from ``stirling_remainder_and_scaled_grad`` (arithmetic and one
    division; no lgamma or digamma).
    """
    a = jnp.exp(log_a)
    a_minus_1 = jnp.expm1(log_a)
    b = jnp.exp(log_b)
    log_y = numerics.log_of_positive(y)  # exact for subnormal y too
    z = numerics.multiply_by_positive(b, y)  # y b, with a subnormal y read as its bits say (inf * y: inf)
    u = log_y + (log_b - log_a)
    delta, a_delta_grad = gb.stirling_remainder_and_scaled_grad(a, log_a)
    # a (e^u - 1 - u) keeps relative accuracy near the mode (a expm1mx(u)) and never forms e^u alone.
    saddle = -numerics.scaled_expm1mx(a, u, z) + 0.5 * log_a - log_y - numerics.HALF_LOG_2PI - delta
    plain = (u < -1) & (a < _PLAIN_BELOW_A)
    value = jnp.where(plain, _plain_log_pdf(a, a_minus_1, log_a, log_b, log_y, z, plain), saddle)
    d_log_a = 0.5 - a_delta_grad + a * u
    # a - z = -a expm1(u) for |u| <= 1, where z - a would cancel; beyond, z and a differ by e-fold.
    near = jnp.abs(u) <= 1
    d_log_b = jnp.where(near, -a * jnp.expm1(jnp.where(near, u, jnp.zeros_like(u))), a - z)
    d_y = numerics.divide_by_positive(a_minus_1, y) - b  # 0 at a = 1, also for subnormal y
    return value, (d_log_a, d_log_b, d_y)


# log p, differentiated by its partials: jax.grad, jacfwd and hessian of log_prob run the closed form
# of the class docstring (closed_form.py), not autodiff of the series and branches. Jitted: traced
# once per shape and dtype, without the linearisation's per-operation overhead (value + grad traces
# ~30% faster); XLA inlines it.
gamma_log_pdf = closed_form(jax.jit(_log_pdf_and_partials))


# -- the tails: log P(a, x) and log Q(a, x), x = b y (Gamma.log_cdf and Gamma.log_survival) ------------
# Gauss-Legendre panels over a tail integral written in a variable anchored at x (_log_tails).
_RULE_32 = np.polynomial.legendre.leggauss(32)
_RULE_16 = np.polynomial.legendre.leggauss(16)
# The Q form's first panel ends this far (in log t) before its peak: the integrand is smooth before.
_PLATEAU_MARGIN = 8.0


def _log_tails_and_partials(upper: bool, log_a, log_b, y):
    """``log P(a, x)`` (or ``log Q(a, x)`` if ``upper``), ``x = b y``, and its partials in
    ``(log_concentration, log_rate, y)``, for valid targets y > 0 (the derivation is ``Gamma.log_cdf``'s)."""
    dtype = log_a.dtype
    drop = numerics.tail_cut_depth(dtype)
    a = jnp.exp(log_a)
    log_y = numerics.log_of_positive(y)
    log_x = log_y + log_b
    x = numerics.multiply_by_positive(jnp.exp(log_b), y)
    u = log_x - log_a  # log(x / a), the family's u
    delta, a_delta_grad = gb.stirling_remainder_and_scaled_grad(a, log_a)
    small = a < 1
    a_s = jnp.where(small, a, jnp.zeros_like(a))
    # log(x^a e^-x / Gamma(a)) = log(x p(x)): the saddle-point form (the log-density's, without its
    # -log y) from a = 1 on; below, Gamma(a) = Gamma(1 + a) / a with lgamma1p (lgamma(a) + log a
    # cancels as a -> 0).
    saddle = -numerics.scaled_expm1mx(a, u, x) + 0.5 * log_a - numerics.HALF_LOG_2PI - delta
    plain = log_a + a_s * log_x - x - gb.lgamma1p(a_s)
    log_xpx = jnp.where(small, plain, saddle)
    # a (log x - digamma(a + 1)): from digamma(a + 1) = log a + 1/(2a) + delta'(a) from a = 1 on,
    # from digamma(1 + a)'s polynomial below (the Stirling form's two terms of size 1 cancel there).
    digamma1p = numerics.horner(gb._digamma1p_coeffs(dtype), 2 * a_s - 1)
    c_p = jnp.where(small, a_s * (log_x - digamma1p), a * u - 0.5 - a_delta_grad)
    c_q = c_p + 1  # a (log x - digamma(a)), digamma(a + 1) = digamma(a) + 1/a

    # P form, for x <= a + 1: t = x e^-s, integrated by parts,
    #   P = x^a e^-x / Gamma(a + 1) (1 + x J_P),  J_P = int_0^inf exp(-(a + 1) s - x (e^-s - 1)) ds,
    # whose integrand falls from 1 at s = 0 (slope x - a - 1 <= 0) and is log-concave.
    usable_p = x <= a + 1
    xp = jnp.where(usable_p, x, a + 1)
    log_xp = jnp.where(usable_p, log_x, jnp.log(a + 1))
    def k_p(s, a=a, xp=xp):  # the exponent; a, xp given [None] at the nodes [K, *batch]
        return -(a + 1) * s - xp * jnp.expm1(-s)

    # the kernel's curvature x e^-s falls with s: the quadratic model's root is below the cut
    cut_p = numerics.newton_cut(k_p, lambda s: -(a + 1) + xp * jnp.exp(-s), numerics.quadratic_root(a + 1 - xp, xp, drop), drop)
    s, log_w = numerics.gauss_legendre_panel(_RULE_32, jnp.zeros_like(cut_p), cut_p)
    log_j_p, mean_s = numerics.log_integral_and_mean(k_p(s, a[None], xp[None]) + log_w, s)
    log_one_plus = jnp.logaddexp(jnp.zeros_like(log_j_p), log_xp + log_j_p)  # log(1 + x J_P)
    log_p = log_xpx - log_a + log_one_plus
    ratio_p = a * jnp.exp(-log_one_plus)  # x p(x) / P = a / (1 + x J_P)
    d_p = c_p - a * jnp.exp(log_xp + log_j_p - log_one_plus) * mean_s

    # Q form: t = x e^w, Q = x^a e^-x / Gamma(a) J_Q, J_Q = int_0^inf exp(a w - x (e^w - 1)) dw,
    # log-concave with its peak at w* = log(a / x) (0 if x >= a), of height a expm1mx(-w*).
    w_peak = jnp.maximum(-u, jnp.zeros_like(u))
    k_max = a * numerics.expm1mx(-w_peak)
    def k_q(w, a=a, x=x, k_max=k_max):  # the exponent; the parameters given [None] at the nodes
        return a * w - x * jnp.expm1(w) - k_max

    # From the peak, k = a r - m (e^r - 1), m = max(x, a): its curvature m e^r grows, so the quadratic
    # model's root lies beyond the cut, and so does max(2, log(2 drop / m)) (e^r - 1 - r >= e^r / 2
    # for r >= 2): Newton starts from the nearer of the two upper bounds.
    m = jnp.maximum(x, a)
    reach = jnp.minimum(numerics.quadratic_root(m - a, m, drop), jnp.maximum(jnp.full_like(m, 2.0), jnp.log(2 * drop / m)))
    cut_q = numerics.newton_cut(k_q, lambda w: a - x * jnp.exp(w), w_peak + reach, drop)
    # Three panels: the smooth rise [0, w* - 8], the approach to the peak [w* - 8, w*] and the fall
    # [w*, cut] (the first two empty when x >= a).
    split = jnp.maximum(w_peak - _PLATEAU_MARGIN, jnp.zeros_like(w_peak))
    panels = [numerics.gauss_legendre_panel(_RULE_16, jnp.zeros_like(split), split),
              numerics.gauss_legendre_panel(_RULE_16, split, w_peak),
              numerics.gauss_legendre_panel(_RULE_32, w_peak, cut_q)]
    w = jnp.concatenate([nodes for nodes, _ in panels])
    log_j_q, mean_w = numerics.log_integral_and_mean(k_q(w, a[None], x[None], k_max[None]) + jnp.concatenate([lw for _, lw in panels]), w)
    log_q = log_xpx + k_max + log_j_q
    ratio_q = jnp.exp(-(k_max + log_j_q))  # x p(x) / Q = 1 / J_Q
    d_q = c_q + a * mean_w

    # Each tail from its own form where that form is the smaller tail (or the only one that is
    # right), else log(1 - the other) (log1mexp): no difference of two numbers near 1.
    half = -numerics.LOG_2
    usable_q = (x >= a) | (small & (log_p > half))
    take_p = usable_p & (~usable_q | (log_p < half))
    take_q = usable_q & ~take_p
    if upper:
        own, d_own, r_own, other, d_other, r_other, take = log_q, d_q, ratio_q, log_p, d_p, ratio_p, take_q
    else:
        own, d_own, r_own, other, d_other, r_other, take = log_p, d_p, ratio_p, log_q, d_q, ratio_q, take_p
    other_s = jnp.where(take, -jnp.ones_like(other), other)  # double where: log(1 - e^other), other < 0
    complement = numerics.log1mexp(-other_s)
    value = jnp.where(take, own, complement)
    odds = jnp.exp(other_s - complement)  # T' / (1 - T'): d log(1 - T') = -odds d log T'
    d_log_a = jnp.where(take, d_own, -odds * d_other)
    # d log T / d log x = +-x p(x) / T, from the quadrature's own integral (no difference of two
    # large logs): x p / P = a / (1 + x J_P), x p / Q = 1 / J_Q, x p / (1 - T') = (x p / T') odds
    ratio = jnp.where(take, r_own, r_other * odds)
    d_log_b = -ratio if upper else ratio
    return value, (d_log_a, d_log_b, numerics.divide_by_positive(d_log_b, y))


# log F and log S, differentiated by their partials (closed_form.py); jitted, as gamma_log_pdf, so the
# value and its tangent rule trace the quadrature once per shape and dtype.
gamma_log_tail = closed_form(jax.jit(_log_tails_and_partials, static_argnums=0), num_static=1)


@dataclasses.dataclass(frozen=True)
class Gamma:
    r"""Gamma distribution of a positive target, parametrised by log-concentration and log-rate.

    outputs: ``(log_concentration, log_rate)``. targets: ``y > 0``, broadcastable with the outputs.

    Density, with ``a = exp(log_concentration)`` (shape), ``b = exp(log_rate)`` and ``z = b y``:
    ``log p(y) = a log b - gammaln(a) + (a - 1) log y - b y`` (scipy.stats.gamma(a, scale=1/b)).
    A target ``y <= 0`` (or infinite) gives ``-inf``.
    It is evaluated in the saddle-point form: with ``u = log(z / a)`` and Stirling's remainder
    ``delta(a) = gammaln(a) - (a - 1/2) log a + a - log(2 pi)/2``,
    ``log p = -a (e^u - 1 - u) + log(a)/2 - log y - log(2 pi)/2 - delta(a)``.
    Each term is O(1) near the mode, where the plain form subtracts numbers of size ``a log a``
    (at a = 1e6 it keeps 13 digits where the plain form keeps 5). delta and ``a delta'`` come from
    ``stirling_remainder_and_scaled_grad`` (Stirling's series, one-sign step series and
    polynomials: no lgamma or digamma is evaluated), accurate to ulps of their own size. Far below
    the mode (u < -1) with a < 2, where the saddle-point terms ``a u`` and ``-log y``
    cancel, the plain form is used, with ``a - 1 = expm1(log_a)`` (``_PLAIN_BELOW_A``).

    Gradient. ``-log p = -a log b + gammaln(a) - (a - 1) log y + b y``; with ``da/dlog_a = a``,
    ``db/dlog_b = b`` and ``digamma(a) = log a - 1/(2a) + delta'(a)``:
    ``d(-log p)/d log_concentration = a (digamma(a) - log z) = a (delta'(a) - u) - 1/2``,
    ``d(-log p)/d log_rate = -a + b y = z - a`` (as ``a expm1(u)`` when ``|u| <= 1``), and in the
    target ``d log p / d y = (a - 1)/y - b``. ``jax.grad`` (and ``jacfwd``, ``hessian``) of
    ``log_prob`` run through these partials (a ``closed_form`` custom_jvp whose partials are also
    what ``grad`` returns), in the outputs and in the targets; second order is autodiff of the
    partials, not of the value's series and branches.

    Fisher information in ``(log_concentration, log_rate)``: the Hessian of ``-log p`` is
    ``[[a (digamma(a) - log z) + a^2 trigamma(a), -a], [-a, z]]``, and ``z ~ Gamma(a, 1)`` has
    ``E[log z] = digamma(a)``, ``E[z] = a``, so
    ``F = [[a^2 trigamma(a), -a], [-a, a]]``.
    """

    def log_prob(self, outputs: GammaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example log-density, equal to scipy.stats.gamma.logpdf(y, a, scale=1/b)."""
        p, y, valid = _prepare(outputs, targets)
        lp = gamma_log_pdf(p.log_concentration, p.log_rate, y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: GammaOutputs, targets: ArrayLike) -> GammaOutputArrays:
        """Closed form ``(a (delta'(a) - u) - 1/2, z - a)`` (NaN where the target is invalid)."""
        p, y, valid = _prepare(outputs, targets)
        _, (d_log_a, d_log_b, _) = _log_pdf_and_partials(p.log_concentration, p.log_rate, y)
        nan = jnp.full_like(d_log_a, jnp.nan)
        return (jnp.where(valid, -d_log_a, nan).astype(p.dtype),
                jnp.where(valid, -d_log_b, nan).astype(p.dtype))

    def log_cdf(self, outputs: GammaOutputs, targets: ArrayLike) -> jax.Array:
        r"""Per-example ``log F(y) = log P(a, b y)``, the regularized lower incomplete gamma function
        (scipy.stats.gamma.logcdf), with relative accuracy in both tails; ``-inf`` for y <= 0, 0 at
        y = inf. ``jax.grad`` runs the closed form below.

        With ``x = b y``, each tail is an integral anchored at x, of a log-concave integrand that
        falls from its peak, evaluated by Gauss-Legendre panels in log space (``_log_tails_and_partials``):

        * ``P = x^a e^-x / Gamma(a + 1) (1 + x J_P)``, ``J_P = int_0^inf exp(-(a + 1) s - x (e^-s - 1)) ds``
          (``t = x e^-s`` in ``int_0^x t^(a-1) e^-t dt`` and one integration by parts), for x <= a + 1;
        * ``Q = x^a e^-x / Gamma(a) J_Q``, ``J_Q = int_0^inf exp(a w - x (e^w - 1)) dw`` (``t = x e^w``),
          for x >= a, and below a for a < 1 (its peak at ``w* = log(a/x)``: two panels, the second
          from ``w* - 8`` on);
        * each panel ends where the integrand has fallen e^-40 (float64; e^-20 in float32) below its
          peak (Newton's method on the concave exponent: an upper bound), 32 nodes (16 on the
          smooth stretch before the Q form's peak).

        ``log(x^a e^-x / Gamma(a)) = log(x p(x))`` is the saddle-point form of the log-density
        (``-a (e^u - 1 - u) + log(a)/2 - log(2 pi)/2 - delta(a)``, ``u = log(x / a)``; for a < 1
        with ``lgamma1p``). Each tail comes from its own form where that is the smaller one, else
        as ``log(1 - the other)`` (``log1mexp``), never as a difference of two numbers near 1.

        Derivatives. In x: ``d log P / d log x = x p(x) / P``, computed as ``exp(log(x p(x)) - log P)``
        (``d/dlog_rate``; ``d/dy`` is it divided by y), and minus that ratio for ``log Q``. In a, by
        differentiating the integral representations under the integral sign (x fixed):
        ``d log P / d a = log x - digamma(a + 1) - x int s e^{k_P} ds / (1 + x J_P)`` and
        ``d log Q / d a = log x - digamma(a) + E_Q[w]``, each a sum of terms of one sign where its
        form is used (the P form's first term is negative below e^digamma(a+1), the Q form's
        positive above e^digamma(a), and the forms are used on those sides); ``d/dlog_concentration``
        is a times these, with ``a (log x - digamma(a)) = a u + 1/2 - a delta'(a)`` (the
        log-density's score) and ``digamma(1 + a)``'s polynomial below a = 1. For
        ``log(1 - T)``: ``-T/(1 - T)`` times T's partials.
        """
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: GammaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log Q(a, b y)`` (scipy.stats.gamma.logsf), accurate where S is
        tiny and where it is near 1; 0 for y <= 0. The forms and derivatives are ``log_cdf``'s."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        p, y = unpack.with_targets(_params(outputs), targets, family="Gamma")
        valid = numerics.positive_and_finite(y)
        ys = jnp.where(valid, y, jnp.ones_like(y))
        value = gamma_log_tail(upper, p.log_concentration, p.log_rate, ys)
        return _tails.at_the_ends(value, y, valid, upper).astype(p.dtype)

    def params(self, outputs: GammaOutputs) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"concentration": jnp.exp(p.log_concentration).astype(p.dtype),
                "rate": jnp.exp(p.log_rate).astype(p.dtype)}

    def mean(self, outputs: GammaOutputs) -> jax.Array:
        """``a / b = exp(log_concentration - log_rate)``."""
        p = _params(outputs)
        return jnp.exp(p.log_concentration - p.log_rate).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: GammaOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``exp(log G - log_rate)``, G ~ Gamma(a, 1) drawn in log space (``jax.random.loggamma``).

        Drawing log G keeps small-concentration draws (a = 1e-3 puts half its mass below 1e-300)
        exact until the final exp, which underflows to 0 only where the float type must.
        """
        p = _params(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        a = jnp.broadcast_to(jnp.exp(p.log_concentration), shape)
        log_g = jax.random.loggamma(key, a, shape, dtype=a.dtype)
        return jnp.exp(log_g - jnp.broadcast_to(p.log_rate, shape)).astype(p.dtype)

    def entropy(self, outputs: GammaOutputs) -> jax.Array:
        """``a - log b + gammaln(a) + (1 - a) digamma(a)``, in the Stirling form.

        Substituting gammaln and digamma by their Stirling forms, the ``a log a`` terms cancel
        exactly: ``H = log(a)/2 - log b + (1 + log(2 pi))/2 - 1/(2a) + delta(a) + (1 - a) delta'(a)``.
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration, p.log_rate
        a = jnp.exp(log_a)
        h = (0.5 * log_a - log_b + 0.5 + numerics.HALF_LOG_2PI - 0.5 / a
             + numerics.stirling_remainder(a) + (1 - a) * numerics.stirling_remainder_grad(a))
        return h.astype(p.dtype)

    def kl(self, outputs_p: GammaOutputs, outputs_q: GammaOutputs) -> jax.Array:
        """KL(p || q) = ``(a_p - a_q) digamma(a_p) - gammaln(a_p) + gammaln(a_q)
        + a_q log(b_p / b_q) + a_p (b_q - b_p) / b_p``.

        That is the Bregman divergence of gammaln (``gammaln_bregman``, free of a log a sized terms)
        plus ``-a_q d + a_p expm1(d)`` with d = log_rate_q - log_rate_p, written as
        ``a_p expm1mx(d) - (a_q - a_p) d``; both vanish to second order as q -> p.
        """
        p = _params(outputs_p, "Gamma.kl p", upcast=False)
        q = _params(outputs_q, "Gamma.kl q", upcast=False)
        shape = validate.broadcast_shapes("Gamma.kl", [("outputs_p", p.batch_shape),
                                                       ("outputs_q", q.batch_shape)])
        pairs = (p.log_concentration, p.log_rate, q.log_concentration, q.log_rate)
        broadcast = (jnp.broadcast_to(x, shape) for x in pairs)
        (la_p, lb_p, la_q, lb_q), dtype = numerics.upcast(*broadcast)
        a_p = jnp.exp(la_p)
        d = lb_q - lb_p
        # a_q - a_p = a_p expm1(log a_q - log a_p): no cancellation between two large a.
        kl = (numerics.gammaln_bregman(la_q, la_p) + a_p * numerics.expm1mx(d)
              - a_p * jnp.expm1(la_q - la_p) * d)
        return kl.astype(dtype)

    def fisher(self, outputs: GammaOutputs) -> jax.Array:
        """``[[a^2 trigamma(a), -a], [-a, a]]`` per example, shape [..., 2, 2].

        ``a^2 trigamma(a)`` is ``scaled_trigamma``: finite for every a (-> 1 as a -> 0, ~ a + 1/2
        as a -> inf), where forming a^2 or trigamma(a) alone can overflow.
        """
        p = _params(outputs)
        a = jnp.exp(p.log_concentration)
        rows = [jnp.stack([numerics.scaled_trigamma(a), -a], -1), jnp.stack([-a, a], -1)]
        return jnp.stack(rows, -2).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log y`` (0 outside the support)."""
        y = validate.numeric_targets(targets, where="Gamma targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = numerics.positive_and_finite(y)
        log_y = numerics.log_of_positive(jnp.where(valid, y, jnp.ones_like(y)))
        return jnp.where(valid, -log_y, jnp.zeros_like(y))

    def expectation_nodes(self, outputs: GammaOutputs) -> tuple[jax.Array, jax.Array]:
        """A 192-node rule for ``E[f(y)]``: nodes ``[192, *batch]`` of targets, weights summing to 1.

        In u = log(b y / a) the density is proportional to ``exp(-a (e^u - 1 - u))``; the rule is
        the trapezoid rule in s for u = c sinh(s), with c = 1/sqrt(max(a, 1)) and s spanning the
        u where that weight exceeds e^-45 of its peak. Against digamma and a/b it integrates
        ``log y`` and ``y`` to ~1e-15 of their spread for 0.1 <= a <= 1e10 in float64 (the Fisher
        check then agrees to 1e-13). Nodes that underflow to y = 0 get weight 0: below a ~ 0.1 the
        mass under the smallest float64 (1e-300^a of it) is no longer negligible and the rule
        degrades (no float can hold those targets); run it in float64.
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration, p.log_rate
        a = jnp.exp(log_a)
        c = jax.lax.rsqrt(jnp.maximum(a, 1.0))
        u_min = -(_TAIL / a + jnp.sqrt(2 * _TAIL / a))
        u_max = jnp.maximum(jnp.log(_TAIL / a), 0.0) + jnp.sqrt(2 * _TAIL / jnp.maximum(a, 1.0))
        s_min, s_max = jnp.arcsinh(u_min / c), jnp.arcsinh(u_max / c)
        frac = jnp.linspace(0.0, 1.0, _N_NODES, dtype=a.dtype).reshape((-1,) + (1,) * a.ndim)
        s = s_min[None] + (s_max - s_min)[None] * frac
        u = c[None] * jnp.sinh(s)
        y = jnp.exp(u + (log_a - log_b)[None])
        log_w = -numerics.scaled_expm1mx(a[None], u, jnp.exp(u + log_a[None])) + jnp.log(jnp.cosh(s))
        log_w = jnp.where(y > 0, log_w, -jnp.inf)
        w = jnp.exp(log_w - jnp.max(log_w, axis=0, keepdims=True))
        return y, w / jnp.sum(w, axis=0, keepdims=True)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: concentrations 0.1 to 1e3 (60 in float32) and rates e^(3 N(0, 1))
        at random; concentrations up to e^80, rates e^±80 and targets 1e-36 to 1e30 among the extremes."""
        return (
            Case("Gamma", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_gamma), plain_log_prob=_textbook_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------
# Random targets: log y normal with Gamma's mean and variance of log y, a plausible stand-in that
# compiles no rejection sampler (tests/test_positive.py checks ``sample``). Every draw is kept: a
# score that crosses 0 is judged against its natural scale sqrt(F_ii). Float32 rows keep
# concentrations moderate (the terms grow like a, the score like sqrt(a)). The Fisher check
# integrates over targets a float64 can hold, so a >= 0.1 stays inside the expectation rule's
# domain (``expectation_nodes``); tinier concentrations (1e-3, e^-80) are covered, for log_prob
# and grad, in tests/test_positive.py.


def _textbook_log_prob(outputs, y):
    """``a log b - gammaln(a) + (a - 1) log y - b y``: the textbook formula."""
    a, b = jnp.exp(outputs[0]), jnp.exp(outputs[1])
    return a * jnp.log(b) - jax.scipy.special.gammaln(a) + (a - 1) * jnp.log(y) - b * y


def _scipy_gamma(outputs):
    import scipy.stats

    return scipy.stats.gamma(np.exp(outputs[0]), scale=np.exp(-outputs[1]))


def _random(key, dtype, n):
    u = draws.uniform_rows(key, (3, n))
    top = math.log(60.0 if np.dtype(dtype) == np.float32 else 1e3)
    log_a = math.log(0.1) + (top - math.log(0.1)) * u[0]
    log_b = 3 * draws.standard_normal(u[1])
    a = jnp.exp(log_a)
    # log y ~ normal with E[log y] = digamma(a) - log b and Var[log y] = trigamma(a).
    mean = jax.scipy.special.digamma(a) - log_b
    spread = jnp.sqrt(jax.scipy.special.polygamma(1, a))
    y = jnp.exp(mean + spread * draws.standard_normal(u[2]))
    return (log_a.astype(dtype), log_b.astype(dtype)), draws.positive(y, dtype)


def _extreme(dtype):
    log_a = [math.log(0.1), math.log(1e6), 80.0, 0.0, math.log(1e4), 2.0]
    log_b = [80.0, math.log(1e6), 80.0, -80.0, -40.0, 0.0]
    y = [1e-36, 1.0003, 1.5, 1e30, 1e4 * math.exp(40.0) * 1.02, 1e-30]
    log_a, log_b, y = (jnp.asarray(np.asarray(x, np.float64), dtype) for x in (log_a, log_b, y))
    return (log_a, log_b), y

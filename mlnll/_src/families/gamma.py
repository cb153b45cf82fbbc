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

"""Beta: a proportion in (0, 1) given two log-concentrations."""

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
from mlnll._src.numerics import gamma_bessel
from mlnll._src.types import BetaOutputArrays, BetaOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

# The expectation rule: N trapezoid nodes in s, where logit(y) = log(a/b) + c sinh(s) (a sinc
# rule); c = min(1, sqrt(1/a + 1/b)) is the spread of logit(y), and s spans the logits whose weight
# exceeds about e^-45 of the peak (tails decay like e^(a x) on the left and e^(-b x) on the right).
_N_NODES = 192
_TAIL = 45.0
_NAMES = ("log_concentration1", "log_concentration0")


def _params(outputs, family: str = "Beta", upcast: bool = True) -> unpack.Params:
    """The raw outputs by name (``p.log_concentration1``, the log of a, the weight of y, and
    ``p.log_concentration0``, the log of b; ``p.dtype``), broadcast."""
    return unpack.unpack(outputs, family=family, names=_NAMES, upcast=upcast)


class _Inputs(NamedTuple):
    """Outputs and targets broadcast together; targets outside (0, 1) replaced by 1/2 (double where)."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # 0 < y < 1


def _prepare(outputs, targets) -> _Inputs:
    p, y = unpack.with_targets(_params(outputs), targets, family="Beta")
    valid = numerics.positive_and_finite(y) & (y < 1)  # from the bits: a subnormal y is positive
    return _Inputs(p, jnp.where(valid, y, jnp.full_like(y, 0.5)), valid)


def _log1m(y: jax.Array) -> jax.Array:
    """``log(1 - y)`` for y < 1: ``log1p(-y)`` below 1/4, ``log(1 - y)`` above.

    ``1 - y`` is exact for y >= 1/2 (Sterbenz) and within 2^-54 on [1/4, 1/2), so the log is
    accurate to an ulp there; XLA's CPU ``log1p`` is off by up to 2.7e-14 (relative) on (-0.5, -0.3).
    """
    small = y < 0.25
    return jnp.where(small, jnp.log1p(-jnp.where(small, y, 0.0)), jnp.log(1 - jnp.where(small, 0.5, y)))


def _scaled_stirling_hess(x: jax.Array) -> jax.Array:
    """``x^2 delta''(x)`` (~ 1/(6x) at large x, -> 1/2 as x -> 0): Stirling's series from 10 on,
    ``x^2 trigamma(x) - x - 1/2`` below (``scaled_trigamma``; it cancels at most ~60-fold there, and
    enters Hessians only)."""
    large = x >= 10
    x_large = jnp.where(large, x, 10.0)  # double where: each branch sees only its own x
    x_small = jnp.where(large, 1.0, x)
    return jnp.where(large, gamma_bessel._scaled_stirling_remainder_hess(x_large),
                     numerics.scaled_trigamma(x_small) - x_small - 0.5)


@jax.custom_jvp
def _stirling_pair(x: jax.Array, log_x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(delta(x), x delta'(x))`` given x and log x (``stirling_remainder_and_scaled_grad``).

    Differentiated in log x, by its derivation rather than through the unrolled series:
    ``d delta / d log x = x delta'(x)`` and ``d (x delta') / d log x = x delta' + x^2 delta''``. So a
    Hessian of the log-density (the check's Fisher oracle) traces the series once, not three times
    under forward and reverse autodiff. The tangent of x is ignored: callers pass log x consistently.
    """
    return _stirling_pair_traced_once(x, log_x)


# jit: traced once per shape and dtype and reused for a, b, n and every derivative the check takes
# (XLA inlines it: the compiled program is unchanged; lowering the check's Beta rows is 1.4x (float32)
# to 2.3x (float64) faster).
_stirling_pair_traced_once = jax.jit(gamma_bessel.stirling_remainder_and_scaled_grad)


@_stirling_pair.defjvp
def _stirling_pair_jvp(primals, tangents):
    x, log_x = primals
    _, d_log_x = tangents
    delta, scaled = _stirling_pair(x, log_x)
    return (delta, scaled), (scaled * d_log_x, (scaled + _scaled_stirling_hess(x)) * d_log_x)


class _Saddle(NamedTuple):
    """The pieces of the saddle-point form (see ``Beta``) at concentrations a, b and target y."""

    a: jax.Array
    b: jax.Array
    n: jax.Array  # a + b
    log_n: jax.Array
    p: jax.Array  # a / n
    q: jax.Array  # b / n
    log_q: jax.Array
    u1: jax.Array  # log(y / p)
    u2: jax.Array  # log((1 - y) / q)


def _saddle(log_a, log_b, log_y, log_1my) -> _Saddle:
    """The saddle-point pieces from the logs of a, b, y and 1 - y: one exp and one log1p make
    ``p = sigmoid(d)``, ``q = sigmoid(-d)``, their logs and ``log n`` (d = log a - log b)."""
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    d = log_a - log_b
    # One branch (d >= 0 or not) for every piece, also at d = 0: -|d| by jnp.abs would have the
    # derivative sign(0) = 0 there, and p, q would lose their derivative -+1/4 in a Hessian.
    positive = d >= 0
    e = jnp.exp(jnp.where(positive, -d, d))  # e^-|d|
    soft = jnp.log1p(e)
    # log(a / n) = log_sigmoid(d) = min(d, 0) - log1p(e^-|d|): no a + b formed, nothing cancels.
    log_p = jnp.where(positive, jnp.zeros_like(d), d) - soft
    log_q = jnp.where(positive, -d, jnp.zeros_like(d)) - soft
    # sigmoid(|d|) = 1 / (1 + e^-|d|) and sigmoid(-|d|) = e^-|d| / (1 + e^-|d|).
    big, small = 1 / (1 + e), e / (1 + e)
    p, q = jnp.where(positive, big, small), jnp.where(positive, small, big)
    log_n = jnp.where(positive, log_a, log_b) + soft  # log(a + b) = logaddexp(log a, log b)
    return _Saddle(a, b, a + b, log_n, p, q, log_q, log_y - log_p, log_1my - log_q)


def _deviance(t: _Saddle, y, one_minus_y) -> jax.Array:
    """``a (e^u1 - 1 - u1) + b (e^u2 - 1 - u2)``, with ``a e^u1 = n y`` and ``b e^u2 = n (1 - y)``."""
    # n y is inf at n = inf also for a subnormal y, which XLA:CPU flushes (inf * 0 = NaN otherwise)
    n_y = jnp.where(jnp.isinf(t.n), t.n, t.n * y)
    return numerics.scaled_expm1mx(t.a, t.u1, n_y) + numerics.scaled_expm1mx(t.b, t.u2, t.n * one_minus_y)


def _log_pdf_and_partials(log_a, log_b, y):
    """``log p`` in the saddle-point form and its partials in ``(log_a, log_b, y)`` (see ``Beta``)."""
    # log y exact for subnormal y too; 1 - y >= eps/2 below 1 is normal: its log needs no care.
    log_y, log_1my, one_minus_y = numerics.log_of_positive(y), _log1m(y), 1 - y
    t = _saddle(log_a, log_b, log_y, log_1my)
    # (delta(x), x delta'(x)) for x = a, b, n (Stirling's remainder). Three calls, not one on the
    # stacked [3, N]: stacking halves the program but breaks XLA's fusion (value + grad 2x slower).
    delta_a, scaled_a = _stirling_pair(t.a, log_a)
    delta_b, scaled_b = _stirling_pair(t.b, log_b)
    delta_n, scaled_n = _stirling_pair(t.n, t.log_n)
    value = (-_deviance(t, y, one_minus_y) + 0.5 * (log_a + t.log_q) - log_y - log_1my
             - numerics.HALF_LOG_2PI - (delta_a + delta_b - delta_n))
    # a (delta'(a) - delta'(n)) = a delta'(a) - p n delta'(n), and likewise for b.
    d_log_a = t.a * t.u1 + 0.5 * t.q - (scaled_a - t.p * scaled_n)
    d_log_b = t.b * t.u2 + 0.5 * t.p - (scaled_b - t.q * scaled_n)
    # (a - 1)/y - (b - 1)/(1 - y), the first quotient right for subnormal y too.
    d_y = numerics.divide_by_positive(jnp.expm1(log_a), y) - jnp.expm1(log_b) / one_minus_y
    return value, (d_log_a, d_log_b, d_y)


# log p(y | log a, log b), differentiated (to every order) through its closed-form partials.
beta_log_pdf = closed_form(_log_pdf_and_partials)


@dataclasses.dataclass(frozen=True)
class Beta:
    r"""Beta distribution of a proportion, parametrised by two log-concentrations.

    outputs: ``(log_concentration1, log_concentration0)``, the logs of ``a`` (the weight of y) and
    ``b`` (the weight of 1 - y). targets: ``0 < y < 1``, broadcastable with the outputs.

    Density: ``log p(y) = (a - 1) log y + (b - 1) log(1 - y) - log B(a, b)``, with
    ``log B(a, b) = gammaln(a) + gammaln(b) - gammaln(a + b)`` (scipy.stats.beta(a, b)). A target
    of exactly 0 or 1, or outside (0, 1), gives ``-inf`` and NaN derivatives for its example
    (``minus_inf_off_support``).
    It is evaluated in the saddle-point form: with ``n = a + b``, the mean ``p = a/n``,
    ``q = b/n``, ``u1 = log(y/p)``, ``u2 = log((1-y)/q)`` and Stirling's remainder ``delta``::

        log p = -a (e^u1 - 1 - u1) - b (e^u2 - 1 - u2) + log(a q)/2 - log y - log(1 - y)
                - log(2 pi)/2 - delta(a) - delta(b) + delta(n)

    (the ``-1`` and ``-u`` terms cancel because ``a e^u1 + b e^u2 = n``). Each term is O(1) near the
    mode, where the plain form subtracts numbers of size ``n log n``.

    Gradient. ``d(-log p)/d log a = a (digamma(a) - digamma(n) - log y)``; substituting
    ``digamma(x) = log x - 1/(2x) + delta'(x)`` gives
    ``d(-log p)/d log_concentration1 = -a u1 - q/2 + a (delta'(a) - delta'(n))`` and
    ``d(-log p)/d log_concentration0 = -b u2 - p/2 + b (delta'(b) - delta'(n))``, with
    ``a delta'(n) = p (n delta'(n))``; in the target, ``d log p/d y = (a - 1)/y - (b - 1)/(1 - y)``.
    ``jax.grad``, ``jacfwd`` and ``hessian`` of ``log_prob`` run through these partials
    (``beta_log_pdf``, a ``custom_jvp``; ``delta`` and ``x delta'`` from
    ``stirling_remainder_and_scaled_grad``, arithmetic alone, and differentiated in turn through
    ``x^2 delta''``), and ``grad`` returns them negated.

    Fisher information in ``(log a, log b)``: the Hessian of ``-log p`` is
    ``[[a (digamma(a) - digamma(n) - log y) + a^2 (trigamma(a) - trigamma(n)), -a b trigamma(n)], ...]``
    and ``E[log y] = digamma(a) - digamma(n)``, so::

        F = [[a^2 (trigamma(a) - trigamma(n)), -a b trigamma(n)],
             [-a b trigamma(n), b^2 (trigamma(b) - trigamma(n))]]
    """

    def log_prob(self, outputs: BetaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example log-density, equal to scipy.stats.beta.logpdf(y, a, b)."""
        p, y, valid = _prepare(outputs, targets)
        lp = beta_log_pdf(p.log_concentration1, p.log_concentration0, y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: BetaOutputs, targets: ArrayLike) -> BetaOutputArrays:
        """Closed form ``(-a u1 - q/2 + a (delta'(a) - delta'(n)), -b u2 - p/2 + b (delta'(b) - delta'(n)))``."""
        p, y, valid = _prepare(outputs, targets)
        _, (d_log_a, d_log_b, _) = _log_pdf_and_partials(p.log_concentration1, p.log_concentration0, y)
        nan = jnp.full_like(y, jnp.nan)
        return (jnp.where(valid, -d_log_a, nan).astype(p.dtype),
                jnp.where(valid, -d_log_b, nan).astype(p.dtype))

    def params(self, outputs: BetaOutputs) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"concentration1": jnp.exp(p.log_concentration1).astype(p.dtype),
                "concentration0": jnp.exp(p.log_concentration0).astype(p.dtype)}

    def mean(self, outputs: BetaOutputs) -> jax.Array:
        """``a / (a + b) = sigmoid(log_concentration1 - log_concentration0)``."""
        p = _params(outputs)
        return jax.nn.sigmoid(p.log_concentration1 - p.log_concentration0).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: BetaOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``G_a / (G_a + G_b) = sigmoid(log G_a - log G_b)`` from two log-gamma draws.

        Working with log G keeps tiny concentrations exact until the final sigmoid. A draw closer
        to 0 or 1 than the float type resolves is returned as the nearest float inside (0, 1) (the
        smallest normal number, or the largest float below 1), never as 0 or 1, where ``log_prob``
        is -inf: at concentrations (0.542, 0.1), 17% of float32 draws lie within 2^-24 of 1.
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration1, p.log_concentration0
        shape = tuple(sample_shape) + p.batch_shape
        ka, kb = jax.random.split(key)
        ga = jax.random.loggamma(ka, jnp.broadcast_to(jnp.exp(log_a), shape), shape, dtype=log_a.dtype)
        gb = jax.random.loggamma(kb, jnp.broadcast_to(jnp.exp(log_b), shape), shape, dtype=log_a.dtype)
        y = jax.nn.sigmoid(ga - gb).astype(p.dtype)
        info = jnp.finfo(y.dtype)
        return jnp.clip(y, info.tiny, 1 - info.epsneg)  # 1 - epsneg: the largest float below 1

    def entropy(self, outputs: BetaOutputs) -> jax.Array:
        """``log B(a, b) - (a - 1) digamma(a) - (b - 1) digamma(b) + (n - 2) digamma(n)``, Stirling form.

        With gammaln and digamma in their Stirling forms the ``x log x`` terms cancel exactly::

            H = log(2 pi)/2 + (log a + log b)/2 - 3 log(n)/2 + 1/2 - 1/(2a) - 1/(2b) + 1/n
                + delta(a) + delta(b) - delta(n) - (a-1) delta'(a) - (b-1) delta'(b) + (n-2) delta'(n)
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration1, p.log_concentration0
        a, b = jnp.exp(log_a), jnp.exp(log_b)
        n = a + b
        s, ds = numerics.stirling_remainder, numerics.stirling_remainder_grad
        h = (numerics.HALF_LOG_2PI + 0.5 * (log_a + log_b) - 1.5 * jnp.logaddexp(log_a, log_b) + 0.5
             - 0.5 / a - 0.5 / b + 1 / n + s(a) + s(b) - s(n) - (a - 1) * ds(a) - (b - 1) * ds(b) + (n - 2) * ds(n))
        return h.astype(p.dtype)

    def kl(self, outputs_p: BetaOutputs, outputs_q: BetaOutputs) -> jax.Array:
        """KL(p || q): the Bregman divergence of log B, ``G(a) + G(b) - G(n)`` with G = gammaln.

        ``KL = log B(a_q, b_q) - log B(a_p, b_p) + (a_p - a_q) digamma(a_p) + (b_p - b_q) digamma(b_p)
        + (n_q - n_p) digamma(n_p)``, evaluated as ``B_G(a) + B_G(b) - B_G(n)`` (``gammaln_bregman``).
        """
        p = _params(outputs_p, "Beta.kl p", upcast=False)
        q = _params(outputs_q, "Beta.kl q", upcast=False)
        shape = validate.broadcast_shapes("Beta.kl", [("outputs_p", p.batch_shape),
                                                      ("outputs_q", q.batch_shape)])
        pairs = (p.log_concentration1, p.log_concentration0, q.log_concentration1, q.log_concentration0)
        broadcast = (jnp.broadcast_to(x, shape) for x in pairs)
        (la_p, lb_p, la_q, lb_q), dtype = numerics.upcast(*broadcast)
        breg = numerics.gammaln_bregman
        kl = breg(la_q, la_p) + breg(lb_q, lb_p) - breg(jnp.logaddexp(la_q, lb_q), jnp.logaddexp(la_p, lb_p))
        return kl.astype(dtype)

    def fisher(self, outputs: BetaOutputs) -> jax.Array:
        """``[[a^2 (trigamma(a) - trigamma(n)), -a b trigamma(n)], [., b^2 (trigamma(b) - trigamma(n))]]``.

        The diagonal uses ``scaled_trigamma_difference`` (no cancellation when one concentration
        dominates), the off-diagonal ``p q n^2 trigamma(n)`` (no overflow of a b).
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration1, p.log_concentration0
        a, b = jnp.exp(log_a), jnp.exp(log_b)
        n = a + b
        off = -jax.nn.sigmoid(log_a - log_b) * jax.nn.sigmoid(log_b - log_a) * numerics.scaled_trigamma(n)
        f_aa = numerics.scaled_trigamma_difference(a, b)
        f_bb = numerics.scaled_trigamma_difference(b, a)
        return jnp.stack([jnp.stack([f_aa, off], -1), jnp.stack([off, f_bb], -1)], -2).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log y - log(1 - y)`` (0 outside (0, 1))."""
        y = validate.numeric_targets(targets, where="Beta targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = numerics.positive_and_finite(y) & (y < 1)
        ys = jnp.where(valid, y, jnp.full_like(y, 0.5))
        return jnp.where(valid, -numerics.log_of_positive(ys) - _log1m(ys), jnp.zeros_like(y))

    def expectation_nodes(self, outputs: BetaOutputs) -> tuple[jax.Array, jax.Array]:
        """A 192-node rule for ``E[f(y)]``: nodes ``[192, *batch]`` in (0, 1), weights summing to 1.

        In x = logit(y) the density is proportional to ``exp(-a (e^u1 - 1 - u1) - b (e^u2 - 1 - u2))``;
        the rule is the trapezoid rule in s for x = log(a/b) + c sinh(s). Against digamma it
        integrates log y and log(1 - y) to ~1e-15 of their spread in float64 when the targets can
        be represented: nodes that round to 0 or 1 get weight 0, and near y = 1 a float resolves
        1 - y only to 1.1e-16, so the rule needs b >~ 1 and b / (a + b) >~ 1e-3 for 1e-12.
        """
        p = _params(outputs)
        log_a, log_b = p.log_concentration1, p.log_concentration0
        a, b = jnp.exp(log_a), jnp.exp(log_b)
        c = jnp.minimum(1.0, jnp.sqrt(1 / a + 1 / b))
        s_min = jnp.arcsinh(-(_TAIL / a + 10 * c) / c)
        s_max = jnp.arcsinh((_TAIL / b + 10 * c) / c)
        frac = jnp.linspace(0.0, 1.0, _N_NODES, dtype=a.dtype).reshape((-1,) + (1,) * a.ndim)
        s = s_min[None] + (s_max - s_min)[None] * frac
        x = (log_a - log_b)[None] + c[None] * jnp.sinh(s)
        log_y, log_1my = numerics.log_sigmoid(x), numerics.log_sigmoid(-x)
        y, one_minus_y = jax.nn.sigmoid(x), jax.nn.sigmoid(-x)
        deviance = _deviance(_saddle(log_a[None], log_b[None], log_y, log_1my), y, one_minus_y)
        log_w = -deviance + jnp.log(jnp.cosh(s))
        log_w = jnp.where((y > 0) & (y < 1), log_w, -jnp.inf)
        w = jnp.exp(log_w - jnp.max(log_w, axis=0, keepdims=True))
        return y, w / jnp.sum(w, axis=0, keepdims=True)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: concentrations e^-2 to e^4 (e^3 in float32; the second at least
        1) at random; concentrations of 1e6 and targets 1e-30 or 1e-4 from the ends among the extremes."""
        return (
            Case("Beta", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_beta), plain_log_prob=_textbook_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------
# Random targets: logit y normal with the mean and variance of logit y under Beta(a, b), a
# plausible stand-in that compiles no rejection sampler (tests/test_positive.py checks ``sample``).
# Every draw is kept: a score that crosses 0 is judged against its natural scale sqrt(F_ii). The
# Fisher check integrates over targets a float64 can hold, so the concentrations stay inside the
# expectation rule's domain (``expectation_nodes``): a >= 0.1, b >= 1 and b / (a + b) >~ 1e-3;
# tests/test_positive.py covers concentrations below 1 against scipy and autodiff.


def _textbook_log_prob(outputs, y):
    """``(a - 1) log y + (b - 1) log(1 - y) - (gammaln(a) + gammaln(b) - gammaln(a + b))``."""
    a, b = jnp.exp(outputs[0]), jnp.exp(outputs[1])
    gammaln = jax.scipy.special.gammaln
    return (a - 1) * jnp.log(y) + (b - 1) * jnp.log1p(-y) - (gammaln(a) + gammaln(b) - gammaln(a + b))


def _scipy_beta(outputs):
    import scipy.stats

    return scipy.stats.beta(np.exp(outputs[0]), np.exp(outputs[1]))


def _random(key, dtype, n):
    u = draws.uniform_rows(key, (3, n))
    top = 3.0 if np.dtype(dtype) == np.float32 else 4.0
    log_a = -2.0 + (top + 2.0) * u[0]
    log_b = top * u[1]
    a, b = jnp.exp(log_a), jnp.exp(log_b)
    # logit y ~ normal with E = digamma(a) - digamma(b), Var = trigamma(a) + trigamma(b).
    digamma, trigamma = jax.scipy.special.digamma, lambda x: jax.scipy.special.polygamma(1, x)
    mean, spread = digamma(a) - digamma(b), jnp.sqrt(trigamma(a) + trigamma(b))
    y = jax.nn.sigmoid(mean + spread * draws.standard_normal(u[2]))
    y = jnp.minimum(draws.positive(y, dtype), jnp.asarray(1 - np.finfo(dtype).epsneg, dtype))
    return (log_a.astype(dtype), log_b.astype(dtype)), y


def _extreme(dtype):
    log_a = [math.log(1e6), math.log(2.0), math.log(0.1), math.log(1e4), math.log(50.0), 0.0]
    log_b = [math.log(1e6), math.log(1e6), math.log(2.0), math.log(30.0), math.log(1.5), 0.0]
    y = [0.5003, 3e-6, 1e-30, 0.997, 0.9999, 0.3]
    log_a, log_b, y = (jnp.asarray(np.asarray(x, np.float64), dtype) for x in (log_a, log_b, y))
    return (log_a, log_b), y

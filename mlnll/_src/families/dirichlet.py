"""Dirichlet: a probability vector (a point of the simplex) given log-concentrations."""

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
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

# A target is on the simplex when |sum(y) - 1| <= _SUM_ULPS * K * eps of the targets' float type:
# a vector normalised in that type (y / sum(y)) is within ~K/2 ulp of summing to 1.
_SUM_ULPS = 2
_NAMES = ("log_concentration",)


def _params(outputs, family: str = "Dirichlet", upcast: bool = True) -> unpack.Params:
    """The raw output by name (``p.log_concentration``, shape ``[..., K]`` with K >= 2; ``p.dtype``)."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, event_ndims={"log_concentration": 1},
                      upcast=upcast)
    k = p.log_concentration.shape[-1]
    if k < 2:
        raise ValueError(f"{family} outputs (log_concentration) need a category axis of size K >= 2, shape "
                         f"[..., K]; got shape {p.log_concentration.shape}.")
    return p


class _Inputs(NamedTuple):
    """Outputs and targets broadcast to ``batch + (K,)``; rows off the simplex replaced by 1/K."""

    params: unpack.Params
    y: jax.Array
    valid: jax.Array  # [...]: every entry > 0 and finite, and |sum - 1| <= 2 K eps


def _prepare(outputs, targets) -> _Inputs:
    p = _params(outputs)
    k = p.log_concentration.shape[-1]
    y = validate.numeric_targets(targets, where="Dirichlet targets")
    if y.ndim == 0 or y.shape[-1] != k:
        raise ValueError(
            f"Dirichlet: targets are probability vectors [..., K] with K = {k} as in outputs shape "
            f"{p.log_concentration.shape}; got targets shape {y.shape}."
        )
    eps = np.finfo(y.dtype if jnp.issubdtype(y.dtype, jnp.floating) else p.log_concentration.dtype).eps
    p, y = unpack.with_targets(p, y, family="Dirichlet", event_ndim=1)
    gap = jnp.sum(y, axis=-1) - 1
    # Positivity from the bits: a subnormal entry is positive (numerics/positive.py).
    valid = jnp.all(numerics.positive_and_finite(y), axis=-1) & (jnp.abs(gap) <= _SUM_ULPS * k * float(eps))
    return _Inputs(p, jnp.where(valid[..., None], y, jnp.full_like(y, 1.0 / k)), valid)


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``a + b = s + e`` exactly (Knuth's TwoSum)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def _gap_from_one(y: jax.Array) -> jax.Array:
    """``sum(y) - 1`` over the last axis, compensated: exact to ~eps |sum - 1| + K eps^2.

    It multiplies n = sum(a) in ``log_prob``, so the plain sum's K-ulp rounding would cost
    n K eps (3e-10 at n = 3e6) where the compensated one costs nothing. One reduction of pairs
    (partial sum, its error): TwoSum makes every combination exact up to the error term, whatever
    order XLA adds in, and the errors (each below an ulp of a partial sum) are summed plainly.
    ``sum - 1`` is then exact (Sterbenz: the sum is within a factor 2 of 1 on the simplex).
    The value only (never differentiated: the closed form's partials are its derivatives), so
    ``y`` enters under ``stop_gradient`` (XLA's general reduction has no derivative rule).
    """
    y = jax.lax.stop_gradient(y)

    def combine(left, right):
        (s1, e1), (s2, e2) = left, right
        s, e = _two_sum(s1, s2)
        return s, e1 + e2 + e

    zero = jnp.zeros((), y.dtype)
    total, err = jax.lax.reduce((y, jnp.zeros_like(y)), (zero, zero), combine, (y.ndim - 1,))
    return (total - 1) + err


def _saddle_terms(log_a: jax.Array, log_y: jax.Array):
    """``(a, n, log_n, log_p, u)``: n = sum(a), the mean ``p = a/n`` (log-softmax) and ``u = log(y/p)``."""
    a = jnp.exp(log_a)
    log_n = numerics.logsumexp(log_a, axis=-1)
    log_p = numerics.log_softmax(log_a, axis=-1)
    return a, jnp.exp(log_n), log_n, log_p, log_y - log_p


def _log_pdf_and_partials(log_a: jax.Array, y: jax.Array):
    """``log p(y)`` (the saddle-point form, shape = batch) and its partials in ``(log_a, y)``,
    shape batch + (K,): ``a u + (1 - p)/2 - a delta'(a) + p n delta'(n)`` and ``(a - 1)/y``
    (the derivation is in the class docstring)."""
    k = log_a.shape[-1]
    log_y = numerics.log_of_positive(y)  # exact for subnormal y too
    a, n, log_n, log_p, u = _saddle_terms(log_a, log_y)
    n_y = numerics.multiply_by_positive(n[..., None], y)  # n y: inf at n = inf, also for subnormal y
    deviance = jnp.sum(numerics.scaled_expm1mx(a, u, n_y), axis=-1)
    # n s restores the textbook value when y sums to 1 only up to rounding (the deviance form
    # assumes sum(y) = 1 exactly).
    gap = _gap_from_one(y)
    delta_a, scaled_grad_a = gb.stirling_remainder_and_scaled_grad(a, log_a)
    delta_n, scaled_grad_n = gb.stirling_remainder_and_scaled_grad(n, log_n)
    value = (-deviance + n * gap - jnp.sum(log_y, axis=-1) + 0.5 * jnp.sum(log_a, axis=-1) - 0.5 * log_n
             - (k - 1) * numerics.HALF_LOG_2PI - (jnp.sum(delta_a, axis=-1) - delta_n))
    # -deviance + n s = sum_k a_k u_k = -n KL(p || y) <= 0 on the simplex: where the deviance
    # overflows (n = e^3e38) that sum is -inf, below every other term (logs of a and n, which
    # overflow at two log-concentrations of 3e38: inf - inf), and n s alone would be inf * 0 = NaN.
    value = jnp.where(jnp.isinf(deviance), -jnp.inf, value)
    p = jnp.exp(log_p)
    # a_j delta'(n) = p_j (n delta'(n)): the scaled form of delta' keeps n^2 out of it.
    d_log_a = a * u + 0.5 * (1 - p) - scaled_grad_a + p * scaled_grad_n[..., None]
    d_y = numerics.divide_by_positive(jnp.expm1(log_a), y)  # (a - 1)/y: 0 at a = 1, also for subnormal y
    return value, (d_log_a, d_y)


# log p, differentiated by its partials: jax.grad, jacfwd and hessian of log_prob run the closed form
# of the class docstring, the partials contracted over the category axis (closed_form),
# not autodiff of the series. Jitted: traced once per shape and dtype, without the linearisation's
# per-operation overhead; XLA inlines it.
dirichlet_log_pdf = closed_form(jax.jit(_log_pdf_and_partials))


@dataclasses.dataclass(frozen=True)
class Dirichlet:
    r"""Dirichlet distribution of a probability vector, parametrised by log-concentrations.

    outputs: ``log_concentration`` of shape ``[..., K]`` (K >= 2). targets: points of the open
    simplex, shape ``[..., K]``: every entry > 0 and ``|sum - 1| <= 2 K eps`` of the targets'
    float type. Any other target (a zero or negative entry, a sum off 1) gives ``-inf``.

    Density, with ``a = exp(log_concentration)`` and ``n = sum_k a_k``:
    ``log p(y) = sum_k (a_k - 1) log y_k - log B(a)``,
    ``log B(a) = sum_k gammaln(a_k) - gammaln(n)`` (scipy.stats.dirichlet).
    It is evaluated in the saddle-point form: with the mean ``p = a/n``, ``u_k = log(y_k / p_k)``,
    ``s = sum(y) - 1`` and Stirling's remainder ``delta``::

        log p = -sum_k a_k (e^u_k - 1 - u_k) + n s - sum_k log y_k + sum_k log(a_k)/2 - log(n)/2
                - (K - 1) log(2 pi)/2 - sum_k delta(a_k) + delta(n)

    every term O(1) near the mode where the plain form subtracts numbers of size ``n log n``.

    Gradient. ``d(-log p)/d log a_j = a_j (digamma(a_j) - digamma(n) - log y_j)``; with
    ``digamma(x) = log x - 1/(2x) + delta'(x)`` this is
    ``-a_j u_j - (1 - p_j)/2 + a_j (delta'(a_j) - delta'(n))``, with ``a_j delta'(n) = p_j (n delta'(n))``.
    In the targets (as real vectors, the textbook density's derivative) ``d log p / d y_j =
    (a_j - 1)/y_j``. ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through these
    partials (a custom_jvp contracting them over the category axis, ``closed_form``;
    ``grad`` returns the same partials), not through autodiff of the series. delta and ``x delta'``
    of the a_j and of n come from ``stirling_remainder_and_scaled_grad`` (no lgamma or digamma).

    Fisher information in ``log a`` (K x K): the Hessian of ``-log p`` is
    ``diag(a_j (digamma(a_j) - digamma(n) - log y_j) + a_j^2 trigamma(a_j)) - a a^T trigamma(n)``,
    and ``E[log y_j] = digamma(a_j) - digamma(n)``, so
    ``F = diag(a_j^2 trigamma(a_j)) - a a^T trigamma(n)``. There is no expectation rule: the check
    cannot place K-dimensional quadrature nodes cheaply; the tests compare F with the Hessian of the
    log-partition function ``log B(a)`` in the natural parameters instead.
    """

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example log-density (shape = batch), equal to scipy.stats.dirichlet.logpdf."""
        p, y, valid = _prepare(outputs, targets)
        lp = dirichlet_log_pdf(p.log_concentration, y)
        return minus_inf_off_support(lp, valid).astype(p.dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``-a u - (1 - p)/2 + a (delta'(a) - delta'(n))``, shape [..., K] (NaN rows if invalid)."""
        p, y, valid = _prepare(outputs, targets)
        _, (d_log_a, _) = _log_pdf_and_partials(p.log_concentration, y)
        return jnp.where(valid[..., None], -d_log_a, jnp.nan).astype(p.dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        p = _params(outputs)
        return {"concentration": jnp.exp(p.log_concentration).astype(p.dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """``a / sum(a) = softmax(log_concentration)``, shape [..., K]."""
        p = _params(outputs)
        return jax.nn.softmax(p.log_concentration, axis=-1).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws ``softmax(log G)`` with ``G_k ~ Gamma(a_k, 1)`` drawn in log space; shape
        ``sample_shape + log_concentration.shape``. An entry below the float type's normal range is
        returned as the smallest normal number, not 0 (where ``log_prob`` is -inf); the sum moves by
        at most K such numbers, far below an ulp of 1."""
        p = _params(outputs)
        log_a = p.log_concentration
        shape = tuple(sample_shape) + log_a.shape
        log_g = jax.random.loggamma(key, jnp.broadcast_to(jnp.exp(log_a), shape), shape, dtype=log_a.dtype)
        y = jax.nn.softmax(log_g, axis=-1).astype(p.dtype)
        return jnp.maximum(y, jnp.finfo(y.dtype).tiny)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """``log B(a) + (n - K) digamma(n) - sum_j (a_j - 1) digamma(a_j)``, in the Stirling form.

        The ``x log x`` terms cancel exactly, leaving::

            H = (K-1) log(2 pi)/2 + sum_j log(a_j)/2 + (1/2 - K) log n + (K - 1)/2 + K/(2n)
                - sum_j 1/(2 a_j) + sum_j delta(a_j) - delta(n) + (n - K) delta'(n) - sum_j (a_j - 1) delta'(a_j)
        """
        p = _params(outputs)
        log_a = p.log_concentration
        k = log_a.shape[-1]
        a = jnp.exp(log_a)
        log_n = numerics.logsumexp(log_a, axis=-1)
        n = jnp.exp(log_n)
        s, ds = numerics.stirling_remainder, numerics.stirling_remainder_grad
        per_category = 0.5 * log_a - 0.5 / a + s(a) - (a - 1) * ds(a)
        h = ((k - 1) * numerics.HALF_LOG_2PI + (0.5 - k) * log_n + 0.5 * (k - 1) + 0.5 * k / n
             + jnp.sum(per_category, axis=-1) - s(n) + (n - k) * ds(n))
        return h.astype(p.dtype)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q): the Bregman divergence of log B, ``sum_j B_G(a_j) - B_G(n)`` with G = gammaln.

        ``KL = log B(a_q) - log B(a_p) + sum_j (a_pj - a_qj) (digamma(a_pj) - digamma(n_p))``,
        each Bregman term from ``gammaln_bregman`` (no term of the size of gammaln itself).
        """
        la_p = _params(outputs_p, "Dirichlet.kl p", upcast=False).log_concentration
        la_q = _params(outputs_q, "Dirichlet.kl q", upcast=False).log_concentration
        shape = validate.broadcast_shapes("Dirichlet.kl", [("outputs_p", la_p.shape), ("outputs_q", la_q.shape)])
        (la_p, la_q), dtype = numerics.upcast(jnp.broadcast_to(la_p, shape), jnp.broadcast_to(la_q, shape))
        breg = numerics.gammaln_bregman
        log_n_p, log_n_q = numerics.logsumexp(la_p, axis=-1), numerics.logsumexp(la_q, axis=-1)
        kl = jnp.sum(breg(la_q, la_p), axis=-1) - breg(log_n_q, log_n_p)
        return kl.astype(dtype)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``diag(a^2 trigamma(a)) - a a^T trigamma(n)``, shape [..., K, K].

        Diagonal ``a_j^2 (trigamma(a_j) - trigamma(n))`` from ``scaled_trigamma_difference`` (no
        cancellation when one concentration dominates); off-diagonal ``-p_i p_j n^2 trigamma(n)``.
        """
        p = _params(outputs)
        log_a = p.log_concentration
        a = jnp.exp(log_a)
        n = jnp.exp(numerics.logsumexp(log_a, axis=-1))
        p = jax.nn.softmax(log_a, axis=-1)
        outer = -p[..., :, None] * p[..., None, :] * numerics.scaled_trigamma(n)[..., None, None]
        eye = jnp.eye(a.shape[-1], dtype=bool)
        # n - a_j as the sum of the other concentrations: no cancellation when a_j dominates.
        rest = jnp.sum(jnp.where(eye, jnp.zeros_like(outer), a[..., None, :]), axis=-1)
        diagonal = numerics.scaled_trigamma_difference(a, rest)
        return jnp.where(eye, diagonal[..., :, None], outer).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-sum_k log y_k`` (0 where a row has an
        entry <= 0); shape = batch."""
        y = validate.numeric_targets(targets, where="Dirichlet targets")
        if y.ndim == 0:
            raise ValueError(f"Dirichlet targets need a category axis, shape [..., K]; got shape {y.shape}.")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = jnp.all(numerics.positive_and_finite(y), axis=-1, keepdims=True)
        logs = numerics.log_of_positive(jnp.where(valid, y, jnp.ones_like(y)))
        return -jnp.sum(logs, axis=-1)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: K = 4 log-concentrations 1.5 N(0, 1) (0.7 N(0, 1) in float32)
        at random; concentrations of e^-80 to 1e6 and entries of 1e-30 among the extremes."""
        return (
            Case("Dirichlet", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_dirichlet, targets=_on_the_simplex, per_example=True),
                 plain_log_prob=_textbook_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------
# K = 4 in the random and the extreme rows. Random targets: softmax(log G) with log G_k normal, the
# mean and variance of log Gamma(a_k, 1), a plausible stand-in that compiles no rejection sampler
# (tests/test_positive.py checks ``sample``), then the first of ``draws.CANDIDATES`` whose gradient
# the dtype resolves: the check has no Fisher information for Dirichlet (no expectation rule) and
# judges each component by its own size. Float32 rows keep concentrations moderate (the terms grow
# like a, the score like sqrt(a)).

_K = 4


def _textbook_log_prob(log_concentration, y):
    """``sum_k (a_k - 1) log y_k - (sum_k gammaln(a_k) - gammaln(sum_k a_k))``."""
    a = jnp.exp(log_concentration)
    gammaln = jax.scipy.special.gammaln
    log_beta = jnp.sum(gammaln(a), axis=-1) - gammaln(jnp.sum(a, axis=-1))
    return jnp.sum((a - 1) * jnp.log(y), axis=-1) - log_beta


def _textbook_score(log_concentration, y):
    """``d(-log p)/d log a`` by autodiff of the textbook formula, per example (for ``_random``)."""
    return jax.grad(lambda la: -jnp.sum(_textbook_log_prob(la, y)))(log_concentration)


def _scipy_dirichlet(log_concentration):
    import scipy.stats

    return scipy.stats.dirichlet(np.exp(log_concentration))


def _on_the_simplex(y):
    """Targets renormalised in float64: scipy wants |sum - 1| <= 1e-9, and a row normalised in
    float32 sums to 1 within a few float32 ulp (which moves log p by about (n - K) ulp, inside the
    float32 tolerance)."""
    return y / np.sum(y, axis=-1, keepdims=True)


def _simplex(y, dtype):
    """Rows of ``y`` in ``dtype``, entries at least 1e-30, renormalised in that dtype."""
    y = jnp.maximum(jnp.asarray(y, dtype), jnp.asarray(1e-30, dtype))
    return y / jnp.sum(y, axis=-1, keepdims=True)


def _random(key, dtype, n):
    u = draws.uniform_rows(key, (1 + draws.CANDIDATES, n, _K))
    log_a = (0.7 if np.dtype(dtype) == np.float32 else 1.5) * draws.standard_normal(u[0])
    a = jnp.exp(log_a)
    # log G_k ~ normal with the mean and variance of log Gamma(a_k, 1); y = softmax(log G).
    spread = jnp.sqrt(jax.scipy.special.polygamma(1, a))
    log_g = jax.scipy.special.digamma(a)[None] + spread[None] * draws.standard_normal(u[1:])
    candidates = _simplex(jax.nn.softmax(log_g, axis=-1), jnp.float64)
    alternate = jnp.where(jnp.arange(_K) % 2 == 0, 1.0, -1.0)[None, :]
    move = lambda y, s: _simplex(y * (1 + s * draws.DELTA * alternate), jnp.float64)  # noqa: E731
    y = draws.well_conditioned(_textbook_score, log_a, candidates, dtype, move)
    return log_a.astype(dtype), _simplex(y, dtype)


def _extreme(dtype):
    # Huge concentrations only in float64: float32 cannot resolve their gradients (~sqrt(a) from
    # terms ~a) to 1e-5. Near-mode targets keep every component's gradient of one size.
    big = math.log(1e6) if np.dtype(dtype) == np.float64 else math.log(30.0)
    log_a = [[big] * 4, [math.log(1e-3), 0.0, 3.0, 1.0], [-80.0, 2.0, 1.0, 0.5],
             [big, math.log(2.0), math.log(0.5), 0.0]]
    y = [[0.4, 0.3, 0.2, 0.1], [1e-20, 0.2, 0.5, 0.3], [1e-30, 0.5, 0.3, 0.2], [0.99, 5e-3, 2e-3, 3e-3]]
    return jnp.asarray(np.asarray(log_a), dtype), _simplex(np.asarray(y), dtype)

"""Multinomial: counts of C classes over ``total_count`` draws, given logits."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import info, numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.numerics import counts
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("logits",)


def _logits(outputs, family: str = "Multinomial") -> tuple[jax.Array, np.dtype]:
    """Validated logits ``[..., C]`` in the accumulation dtype, and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, event_ndims={"logits": 1})
    return p.logits, p.dtype


def _log_p_p_and_complement(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(log p, p, 1 - p, rest, is_max)`` for ``p = softmax(z)``, each with relative accuracy.

    With ``e_c = exp(z_c - max z)`` and rest = sum_{k != a} e_k (``numerics.max_and_rest``):
    ``1 - p_c = (rest + (1 - e_c)) / (1 + rest)``, a sum of two terms >= 0. At the argmax a,
    ``1 - e_a = 0`` exactly and it is ``rest / (1 + rest)``, not rounded to 0 for a confident class;
    elsewhere it is at least 1/2. No select: XLA:CPU keeps it in its vectorised kernels.
    """
    _, shifted, rest, is_max = numerics.max_and_rest(z)
    e = jnp.exp(shifted)
    log_p = shifted - jnp.log1p(rest)  # log-softmax shifted at the argmax
    p = e / (1 + rest)
    one_minus_p = (rest + (1 - e)) / (1 + rest)
    return log_p, p, one_minus_p, rest, is_max


def _softmax_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(log p, p, 1 - p, log(1 - p))`` for ``p = softmax(z)``, each with relative accuracy."""
    log_p, p, one_minus_p, rest, is_max = _log_p_p_and_complement(z)
    # log(1 - p): log(rest) - log1p(rest) at the argmax (rest > 0 there unless one class has p = 1).
    safe_rest = jnp.where(rest > 0, rest, jnp.ones_like(rest))
    at_max = jnp.where(rest > 0, jnp.log(safe_rest) - jnp.log1p(rest), -jnp.inf)
    safe_p = jnp.where(is_max, jnp.zeros_like(p), p)
    log_one_minus_p = jnp.where(is_max, jnp.broadcast_to(at_max, p.shape), jnp.log1p(-safe_p))
    return log_p, p, one_minus_p, log_one_minus_p


# Up to this total count, ``log_factorial_part`` of a count is read from a static table (a chain of
# n selects) rather than computed (Stirling's series, a table and a log): less to compile.
_TABLE_UP_TO = 16


def _log_factorial_part_static(k: int) -> float:
    """``stirlerr(k) + log(2 pi k) / 2`` (0 at k = 0) in float64, for a whole number k."""
    return 0.0 if k == 0 else numerics.stirlerr_static(k) + 0.5 * (numerics.LOG_2PI + math.log(k))


def _log_factorial_parts_from_table(y: jax.Array, n: int) -> jax.Array:
    """``log_factorial_part(y)`` for counts 0 <= y <= n, by a chain of n selects."""
    out = jnp.zeros_like(y)
    for k in range(1, n + 1):
        out = jnp.where(y == k, jnp.asarray(_log_factorial_part_static(k), y.dtype), out)
    return out


def _loader_log_pmf(n: int, y: jax.Array, log_p: jax.Array, p: jax.Array) -> jax.Array:
    """``log n! - sum_c log y_c! + sum_c y_c log p_c`` in Loader's form (``numerics.multinomial_log_pmf``):
    ``head - sum_c log_factorial_part(y_c) - sum_c bd0(y_c, n p_c)``, ``head = log_factorial_part(n)``,
    every term after the first pair >= 0.

    For n <= _TABLE_UP_TO the factorial parts come from a static table whose entry n is ``head``
    itself: for one class holding all n they cancel to exactly 0 (no separate test for that case),
    and the deviance ``n log p_c`` of 1e-8 keeps its digits (it is summed apart from them).
    """
    if n > _TABLE_UP_TO:
        return numerics.multinomial_log_pmf(y, log_p, p, n)
    # t_c = log(y_c / (n p_c)) from y_c / n, a correctly rounded ratio, rather than log y_c - log n;
    # at y_c = 0 it is log(1/n) - log p_c, which bd0 ignores (bd0(0, t, m) = m).
    t = jnp.log(jnp.maximum(y, 1) / n) - log_p
    head = jnp.asarray(_log_factorial_part_static(n), y.dtype)
    spread = head - jnp.sum(_log_factorial_parts_from_table(y, n), axis=-1)
    return spread - jnp.sum(counts.bd0_in_dtype(y, t, n * p), axis=-1)  # the series the dtype needs


def _score(n: int, y: jax.Array, p: jax.Array, one_minus_p: jax.Array) -> jax.Array:
    """``d log p / dz = y - n p``, evaluated as ``y (1 - p) - p (n - y)`` (see the class)."""
    return y * one_minus_p - p * (n - y)


def _value_and_partials(n: int, z: jax.Array, y: jax.Array):
    """``log p(y)`` (Loader's form) and its partials: the score in z, none in the counts (valid
    count vectors summing to n >= 1)."""
    log_p, p, one_minus_p, _, _ = _log_p_p_and_complement(z)
    return _loader_log_pmf(n, y, log_p, p), (_score(n, y, p, one_minus_p), None)


# log p(y | z), differentiated by the closed-form score (jax.grad, jacfwd, hessian); counts are not.
_log_pmf = closed_form(_value_and_partials, num_static=1)


def compositions(total_count: int, num_classes: int) -> np.ndarray:
    """Every count vector of ``num_classes`` whole numbers summing to ``total_count``, [K, C].

    K = C(n + C - 1, C - 1): bars between stars, one row per choice of C - 1 bar positions.
    """
    n, c = total_count, num_classes
    rows = []
    for bars in itertools.combinations(range(n + c - 1), c - 1):
        edges = (-1,) + bars + (n + c - 1,)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(c)])
    return np.asarray(rows, dtype=np.int64).reshape(-1, c)


# jax.random.multinomial is not jitted itself: called eagerly it would retrace its scan every time.
_multinomial_draws = jax.jit(jax.random.multinomial, static_argnames=("shape",))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Multinomial:
    r"""Multinomial distribution: counts of C classes in ``total_count`` draws, from logits.

    ``Multinomial(total_count=n)``, n a whole number >= 0 (static). outputs: logits ``z`` of
    shape ``[..., C]``. targets: count vectors ``y`` of shape ``[..., C]`` (integer or floating
    dtype) summing to n. A vector with a negative or non-integer entry, or not summing to n,
    gives ``-inf``.

    Density, with ``p = softmax(z)``:
    ``log p(y) = log n! - sum_c log y_c! + sum_c y_c log p_c``.
    It is evaluated in Loader's form (``numerics.multinomial_log_pmf``), whose terms share
    one sign, so large n keeps full relative accuracy (for n <= 16 with the factorial parts read
    from a static table); ``log p_c`` comes from the argmax-shifted log-softmax, so a confident
    correct prediction keeps its tiny loss.

    Gradient. ``d(y_c log p_c)/dz_j = y_c ([c = j] - p_j)`` summed over c is ``y_j - n p_j``
    (``sum_c y_c = n``), so ``d(-log p)/dz = n softmax(z) - y``. It is evaluated as
    ``p (n - y) - y (1 - p)``, with ``1 - p_a`` at the argmax taken from the other classes, so the
    confident class keeps its relative accuracy. ``jax.grad``, ``jacfwd`` and ``hessian`` of
    ``log_prob`` run through exactly this closed form (a ``custom_jvp``, also what ``grad`` returns;
    the counts are not differentiable); the Hessian is autodiff of the score, ``-n (diag(p) - p p^T)``.

    Fisher information: the Hessian ``n (diag(p) - p p^T)`` (n times Categorical's) does not
    depend on y, so it is the Fisher information in z, shape ``[..., C, C]``.
    """

    total_count: int

    def __post_init__(self):
        object.__setattr__(self, "total_count", numerics.check_total_count("Multinomial", self.total_count))

    def _prepare(self, outputs, targets) -> tuple[jax.Array, jax.Array, np.dtype]:
        """Validated ``(logits, count vectors)`` in the accumulation dtype, broadcast, and the result
        dtype."""
        p = unpack.unpack(outputs, family="Multinomial", names=_NAMES, event_ndims={"logits": 1})
        y = validate.numeric_targets(targets, where="Multinomial targets")
        num_classes = p.logits.shape[-1]
        if y.ndim == 0 or y.shape[-1] != num_classes:
            raise ValueError(
                f"Multinomial: targets are count vectors [..., C] with C = {num_classes} as in outputs "
                f"shape {p.logits.shape}; got targets shape {y.shape}."
            )
        p, y = unpack.with_targets(p, y, family="Multinomial", event_ndim=1)
        exact_limit = 2 ** (jnp.finfo(y.dtype).nmant + 1)
        if self.total_count >= exact_limit:
            # Beyond it a sum of counts rounds (5e8 + 32 and 5e8 sum to 1e9 in float32): an
            # off-support vector would be scored as a finite log-probability.
            raise ValueError(
                f"Multinomial(total_count={self.total_count}): counts are checked in {jnp.dtype(y.dtype).name}, "
                f"which holds every sum of whole numbers exactly only below 2^{jnp.finfo(y.dtype).nmant + 1} "
                f"= {exact_limit}; pass float64 logits (with jax_enable_x64) for totals this large."
            )
        return p.logits, y, p.dtype

    def _all_in_class_0(self, y: jax.Array) -> jax.Array:
        """The valid count vector ``(n, 0, ..., 0)``, one row broadcast against ``y`` (a scatter into
        a zero array of y's shape would be constant-folded into a batch-sized constant)."""
        row = np.zeros(y.shape[-1])
        row[0] = self.total_count
        return jnp.asarray(row, y.dtype)

    def _valid(self, y: jax.Array) -> jax.Array:
        """Whole numbers >= 0 summing to n: ``sum_c (|y_c - floor y_c| + max(-y_c, 0)) = 0`` (NaN for
        a NaN or infinite entry) and ``sum_c y_c = n``; arithmetic, so it fuses into one reduction."""
        off = jnp.sum(jnp.abs(y - jnp.floor(y)) + jnp.maximum(-y, 0), axis=-1)
        # A subnormal entry is neither a whole number nor 0, but flushes to 0 in off.
        whole = ~jnp.any(numerics.nonzero_subnormal(y), axis=-1)
        return (off == 0) & whole & (jnp.sum(y, axis=-1) == self.total_count)

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | logits)``, equal to scipy.stats.multinomial.logpmf."""
        z, y, dtype = self._prepare(outputs, targets)
        valid = self._valid(y)
        if self.total_count == 0:
            return jnp.where(valid, jnp.zeros(valid.shape, z.dtype), -jnp.inf).astype(dtype)
        ys = jnp.where(valid[..., None], y, self._all_in_class_0(y))  # double where: a valid vector
        lp = _log_pmf(self.total_count, z, ys)
        return minus_inf_off_support(lp, valid).astype(dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``n softmax(z) - y``, shape [..., C] (rows with an invalid target are NaN)."""
        z, y, dtype = self._prepare(outputs, targets)
        _, p, one_minus_p, _, _ = _log_p_p_and_complement(z)
        g = -_score(self.total_count, y, p, one_minus_p)  # p (n - y) - y (1 - p)
        return jnp.where(self._valid(y)[..., None], g, jnp.nan).astype(dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        z, dtype = _logits(outputs)
        return {
            "total_count": jnp.full(z.shape[:-1], self.total_count, dtype),
            "logits": z.astype(dtype),
            "probs": jax.nn.softmax(z).astype(dtype),
        }

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """``n softmax(z)``, shape [..., C]."""
        z, dtype = _logits(outputs)
        return (self.total_count * jax.nn.softmax(z)).astype(dtype)

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Count vectors in the logits' dtype, shape ``sample_shape + logits.shape``.

        Drawn by ``jax.random.multinomial`` (a binomial per class, conditioned on the rest).
        """
        z, dtype = _logits(outputs)
        shape = tuple(sample_shape) + z.shape
        p = jnp.broadcast_to(jax.nn.softmax(z), shape)
        n = jnp.asarray(float(self.total_count), z.dtype)
        return _multinomial_draws(key, n, p, shape=shape).astype(dtype)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """An exact finite sum over each class's binomial marginal (no closed form exists).

        From Loader's form, ``-log p(y) = -stirlerr(n) - log(2 pi n)/2 + sum_c g_c(y_c)`` with
        ``g_c(k) = [stirlerr(k) + log(2 pi k)/2]_{k >= 1} + bd0(k, n p_c)``; each ``y_c`` is
        Binomial(n, p_c), so ``H = -stirlerr(n) - log(2 pi n)/2 + sum_c sum_{k=0}^{n}
        Binomial(k; n, p_c) g_c(k)``: O(n C) work per example (chunks of 1024 counts), with
        non-negative terms summed.
        """
        z, dtype = _logits(outputs)
        n = self.total_count
        if n == 0:
            return jnp.zeros(z.shape[:-1], dtype)
        log_p, p, one_minus_p, log_one_minus_p = _softmax_parts(z)

        def terms(k):
            shape = k.shape + z.shape
            kk = jnp.broadcast_to(k.reshape(k.shape + (1,) * z.ndim), shape)
            b = lambda x: jnp.broadcast_to(x[None], shape)  # noqa: E731
            weight = jnp.exp(numerics.binomial_log_pmf(kk, n, b(log_p), b(log_one_minus_p), b(p), b(one_minus_p)))
            positive = kk > 0
            ks = jnp.where(positive, kk, jnp.ones_like(kk))
            t = jnp.log(ks / n) - jnp.where(positive, b(log_p), jnp.zeros_like(kk))
            g = numerics.log_factorial_part(kk) + numerics.bd0(kk, t, n * b(p))
            # a count of probability 0 adds nothing, even where g is infinite (p_c = 0, k > 0).
            return jnp.sum(numerics.mul_nonzero(weight, g), axis=-1)

        head = numerics.stirlerr_static(n) + 0.5 * (numerics.LOG_2PI + math.log(n))
        return (numerics.sum_over_counts(terms, n, z.dtype) - head).astype(dtype)

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """KL(p || q) = ``n sum_c p_c (log p_c - log q_c)``: n times the categorical KL."""
        zp, _ = _logits(outputs_p, "Multinomial.kl p")
        zq, _ = _logits(outputs_q, "Multinomial.kl q")
        return self.total_count * info.kl_divergence_with_logits(zp, zq)

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """``n (diag(p) - p p^T)``, shape [..., C, C]; the diagonal as ``n p (1 - p)``."""
        z, dtype = _logits(outputs)
        _, p, one_minus_p, _ = _softmax_parts(z)
        diagonal = jnp.eye(z.shape[-1], dtype=bool)
        outer = -p[..., :, None] * p[..., None, :]
        return (self.total_count * jnp.where(diagonal, (p * one_minus_p)[..., :, None], outer)).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """``log n! - sum_c log y_c!``, the part of ``log_prob`` free of the logits (batch shape).

        Evaluated as ``multinomial_log_pmf``'s factorial terms plus ``sum_c y_c log(n / y_c)``
        (each >= 0), so large n keeps its digits; 0 for an invalid count vector (whose ``log_prob``
        is already -inf: ``nll(..., drop_constants=True)`` then gives inf, not NaN).
        """
        y = validate.numeric_targets(targets, where="Multinomial targets")
        if y.ndim == 0:
            raise ValueError("Multinomial targets are count vectors [..., C]; got shape ().")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        valid = self._valid(y)
        n = self.total_count
        if n == 0:
            return jnp.zeros(valid.shape, y.dtype)
        ys = jnp.where(valid[..., None], y, self._all_in_class_0(y))
        positive = ys > 0
        head = numerics.stirlerr_static(n) + 0.5 * (numerics.LOG_2PI + math.log(n))
        single = jnp.sum(positive.astype(jnp.int32), axis=-1) <= 1
        shares = numerics.log_share(jnp.where(positive, ys, jnp.full_like(ys, n)), n)
        # -sum_c y_c log(y_c / n) >= 0, with 0 log 0 = 0
        entropy_part = jnp.sum(numerics.mul_nonzero(ys, shares), axis=-1)
        spread = head - jnp.sum(numerics.log_factorial_part(ys), axis=-1) - entropy_part
        return jnp.where(valid & ~single, spread, jnp.zeros_like(spread))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over every count vector: nodes ``[K, *batch, C]`` and probabilities.

        K = C(n + C - 1, C - 1) (15 for n = 4, C = 3): meant for small n and C.
        """
        z, _ = _logits(outputs)
        table = compositions(self.total_count, z.shape[-1])
        k = table.shape[0]
        nodes = jnp.asarray(table, z.dtype).reshape((k,) + (1,) * (z.ndim - 1) + (z.shape[-1],))
        nodes = jnp.broadcast_to(nodes, (k,) + z.shape)
        weights = jnp.exp(self.log_prob(jnp.broadcast_to(z[None], nodes.shape), nodes).astype(z.dtype))
        return nodes, weights

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> jax.Array:
        """Closed-form MLE: logits = log of the pooled class frequencies ``sum_i y_ic / (n N)``.

        ``axis`` is the sample axis (not the class axis, which is last); an unseen class gets -inf.
        """
        y = validate.numeric_targets(targets, where="Multinomial.mle targets")
        if y.ndim < 2 or axis % y.ndim == y.ndim - 1:
            raise ValueError(
                f"Multinomial.mle: targets [..., C] need a sample axis other than the class axis; got "
                f"shape {y.shape} with axis={axis}."
            )
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        totals = jnp.sum(y, axis=axis)
        return jnp.log(totals) - jnp.log(jnp.sum(totals, axis=-1, keepdims=True))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: n = 4 draws of 3 classes (the Fisher check enumerates all
        15 count vectors), logits up to ±3e38 and -inf on a class of probability 0."""
        n = _CHECK_TOTAL_COUNT
        return (
            Case(f"Multinomial(n={n})", cls(total_count=n), _random, _extreme,
                 scipy=ScipyReference(lambda z: _scipy_multinomial(n, z), discrete=True),
                 plain_log_prob=lambda z, y: _plain_log_prob(n, z, y)),
        )


# -- check cases: every count vector of 4 draws over 3 classes, logits up to ±3e38 ------------------

_CHECK_TOTAL_COUNT = 4
_CHECK_CLASSES = 3


def _plain_log_prob(n: int, z, y):
    """``log n! - sum_c log y_c! + sum_c y_c log p_c``, ``p = exp(z) / sum exp(z)``: the textbook formula."""
    lgamma = jax.scipy.special.gammaln
    log_p = z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
    return lgamma(n + 1.0) - jnp.sum(lgamma(y + 1), axis=-1) + jnp.sum(y * log_p, axis=-1)


def _scipy_multinomial(n: int, z):
    """scipy's multinomial, which broadcasts a batch of probability vectors [N, C]."""
    import scipy.special
    import scipy.stats

    return scipy.stats.multinomial(n, scipy.special.softmax(z, axis=-1))


def _random(key, dtype, n):
    """Logits ``2 N(0, 1)`` and a count vector drawn uniformly from all of them, from one draw of
    uniforms."""
    u = jax.random.uniform(key, (2 * _CHECK_CLASSES + 1, n), dtype)
    radius, angle = u[:_CHECK_CLASSES], u[_CHECK_CLASSES:-1]
    # Box-Muller: sqrt(-2 log(1 - u0)) cos(2 pi u1) is a standard normal.
    z = 2 * jnp.sqrt(-2 * jnp.log1p(-radius)) * jnp.cos(2 * jnp.pi * angle)
    table = compositions(_CHECK_TOTAL_COUNT, _CHECK_CLASSES)
    rows = jnp.floor(table.shape[0] * u[-1]).astype(jnp.int32)
    return z.T, jnp.asarray(table, dtype)[rows]


def _extreme(dtype):
    z = jnp.array(
        [[20.0, 0.0, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [3e38, -3e38, 0.0], [-jnp.inf, 0.0, 1.0],
         [0.0, 0.0, 0.0], [80.0, -80.0, 0.0]],
        dtype,
    )
    y = jnp.array([[4, 0, 0], [2, 0, 2], [0, 4, 0], [4, 0, 0], [0, 1, 3], [1, 1, 2], [1, 3, 0]], dtype)
    return z, y

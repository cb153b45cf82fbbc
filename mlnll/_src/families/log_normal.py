"""LogNormal: a positive target whose log is Normal given a location and a log-scale."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.types import LogNormalOutputArrays, LogNormalOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE
# Gauss-Hermite rule in log y: exact for polynomials of degree < 16 under exp(-x^2), so exact for
# the expected Hessian of the NLL, which is quadratic in log y.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(8)


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -r^2/2 - log_scale - log(2 pi)/2 - log y``, ``r = (log y - loc) / s``, for y > 0
    only (callers substitute a safe y first), and its partials (the class docstring).

    ``d log p / d loc = r / s``, ``d log p / d log_scale = r^2 - 1``, taken as ``(r - 1)(r + 1)``
    (exact factors near |r| = 1), and ``d log p / d y = -(r / s + 1) / y`` (the chain rule through
    ``log y``, whose Jacobian term contributes the 1).
    """
    log_y = numerics.log_of_positive(y)  # exact for subnormal y too
    r, inv_scale = ls_.standardize(loc, log_scale, log_y)
    d_loc = r * inv_scale
    value = ls_.with_terms(-0.5 * jnp.square(r), log_scale, numerics.HALF_LOG_2PI + log_y, keep)
    # r^2 - 1 = (r - 1)(r + 1): exact factors near |r| = 1.
    return value, (d_loc, (r - 1) * (r + 1), -numerics.divide_by_positive(d_loc + 1, y))


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
log_normal_log_pdf = closed_form(_value_and_partials, num_static=1)


def _in_support(y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(0 < y < inf, y there else 1)``: the support and a safe target (the double-where idiom)."""
    positive = numerics.positive_and_finite(y)  # from the bits: a subnormal y is positive
    return positive, jnp.where(positive, y, jnp.ones_like(y))


@dataclasses.dataclass(frozen=True)
class LogNormal(ls_.FixedScaleUnpacking):
    r"""Log-normal distribution of a positive target: ``log y ~ Normal(loc, scale)``.

    outputs: ``(loc, log_scale)``, the location and log-scale of ``log y``; with
    ``LogNormal(scale=s)`` the scale is fixed and outputs is ``loc`` alone. targets: ``y > 0``,
    broadcastable with the outputs; ``y <= 0`` gives ``log_prob = -inf`` (and a NaN ``grad``).
    In scipy's terms this is ``scipy.stats.lognorm(s=scale, scale=exp(loc))``.

    Density, with ``s = exp(log_scale)`` and ``r = (log y - loc) / s``:
    ``log p(y) = -r^2 / 2 - log_scale - log(2 pi) / 2 - log y``: the Normal log-density of
    ``log y`` plus the Jacobian ``-log y``, which does not depend on the outputs.

    Gradient: as for Normal in ``log y``: ``dr/dloc = -1/s``, ``dr/dlog_scale = -r``, so
    ``d(-log p)/dloc = -r / s = (loc - log y) / s^2`` and ``d(-log p)/dlog_scale = 1 - r^2``.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form; the
    targets are differentiable too: ``d log p/dy = -(r/s + 1) / y``.

    Fisher information in ``(loc, log_scale)``: the Jacobian term is free of the outputs, so it is
    Normal's, ``diag(1/s^2, 2)``; with the scale fixed, ``1/s^2``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> float(mlnll.LogNormal().log_prob((jnp.array(0.0), jnp.array(0.0)), jnp.array(1.0)))  # -log(2 pi)/2
      -0.918938...
    """

    scale: float | None = None

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LogNormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log LogNormal(y; loc, s)``, equal to scipy.stats.lognorm.logpdf; -inf at y <= 0."""
        return self._log_prob(outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: LogNormalOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-r^2/2 - log_scale`` (what
        ``drop_constants=True`` uses); -inf at y <= 0."""
        return self._log_prob(outputs, targets, ls_.without_constants(self.scale))

    def _log_prob(self, outputs, targets, keep: int) -> jax.Array:
        p, y = self._unpack_with(outputs, targets)
        positive, ys = _in_support(y)
        lp = log_normal_log_pdf(keep, p.loc, ls_.log_scale_argument(p, self.scale), ys)
        return minus_inf_off_support(lp, positive).astype(p.dtype)

    def grad(self, outputs: LogNormalOutputs, targets: ArrayLike) -> LogNormalOutputArrays:
        """Closed form ``((loc - log y) / s^2, 1 - r^2)``, NaN where y <= 0; loc's alone if the scale is fixed."""
        p, y = self._unpack_with(outputs, targets)
        positive, ys = _in_support(y)
        # -r * exp(-log_scale) instead of (loc - log y) / s^2: s^2 overflows long before the product.
        _, (d_loc, d_log_scale, _) = _value_and_partials(ls_.ALL_TERMS, p.loc, p.log_scale, ys)
        nan = jnp.full_like(d_loc, jnp.nan)
        partials = {"loc": jnp.where(positive, d_loc, nan),
                    "log_scale": jnp.where(positive, d_log_scale, nan)}
        return ls_.neg_partials(partials, _NAMES, self._fixed, p.dtype)

    def log_cdf(self, outputs: LogNormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y) = log Phi((log y - loc)/scale)`` (scipy.stats.lognorm.logcdf),
        accurate in both tails (``_tails``); ``-inf`` for y <= 0. ``jax.grad`` runs its closed form."""
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: LogNormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log Phi(-(log y - loc)/scale)``, accurate where S is tiny and
        where it is near 1; 0 for y <= 0."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        """The Normal's tails at ``log y`` for y > 0, the limits at the ends of the support."""
        loc, log_scale, y, dtype = ls_.loc_log_scale_and_targets(outputs, targets, family=self._name, scale=self.scale)
        positive, ys = _in_support(y)
        value = _tails.location_scale_tail(_tails.NORMAL, upper, loc, log_scale, numerics.log_of_positive(ys))
        return _tails.at_the_ends(value, y, positive, upper).astype(dtype)

    def params(self, outputs: LogNormalOutputs) -> dict[str, jax.Array]:
        """``{"loc", "scale"}`` of ``log y`` (scipy's ``s = scale`` and ``scale = exp(loc)``)."""
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: LogNormalOutputs) -> jax.Array:
        """``exp(loc + s^2 / 2)``, exponentiated once (no product of two overflowing factors)."""
        p = self._unpack(outputs)
        return jnp.exp(p.loc + 0.5 * jnp.exp(2 * p.log_scale)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LogNormalOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``exp(loc + s * e)`` with e standard normal, shape ``sample_shape + batch``."""
        p = self._unpack(outputs)
        shape = tuple(sample_shape) + p.batch_shape
        eps = jax.random.normal(key, shape, dtype=p.loc.dtype)
        return jnp.exp(ls_.shift_and_scale(p.loc, p.log_scale, eps)).astype(p.dtype)

    def entropy(self, outputs: LogNormalOutputs) -> jax.Array:
        """``loc + log_scale + (1 + log(2 pi)) / 2``: Normal's entropy plus ``E[log y] = loc``."""
        p = self._unpack(outputs)
        return (p.loc + p.log_scale + 0.5 + numerics.HALF_LOG_2PI).astype(p.dtype)

    def kl(self, outputs_p: LogNormalOutputs, outputs_q: LogNormalOutputs) -> jax.Array:
        """KL(p || q), equal to Normal's KL between the laws of ``log y`` (KL is invariant under y -> log y).

        With ``d = log_scale_p - log_scale_q``: ``KL = (e^{2d} - 1 - 2d) / 2 + ((mu_p - mu_q) / s_q)^2 / 2``,
        the first term by ``expm1mx`` so that nearly equal scales keep their relative accuracy.
        """
        p, q, dtype = ls_.kl_pair("LogNormal", self._unpack(outputs_p), self._unpack(outputs_q))
        gap = (p.loc - q.loc) * jnp.exp(-q.log_scale)
        return (0.5 * numerics.expm1mx(2 * (p.log_scale - q.log_scale)) + 0.5 * jnp.square(gap)).astype(dtype)

    def fisher(self, outputs: LogNormalOutputs) -> jax.Array:
        """``diag(1/s^2, 2)`` per example (shape [..., 2, 2]); ``1/s^2`` with a fixed scale."""
        p = self._unpack(outputs)
        entries = {("loc", "loc"): jnp.exp(-2 * p.log_scale),
                   ("log_scale", "log_scale"): jnp.full_like(p.log_scale, 2.0)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log y - log(2 pi)/2`` (and ``-log(scale)`` if fixed).

        Where ``y <= 0`` the ``-log y`` term is left out (the value stays finite), so that
        ``log_prob - constant_terms`` is ``-inf`` there rather than ``-inf - (-inf) = NaN``.
        """
        y = validate.numeric_targets(targets, where=f"{self._name} targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        positive = numerics.positive_and_finite(y) | (y == jnp.inf)
        log_y = numerics.log_of_positive(jnp.where(positive, y, jnp.ones_like(y)))
        const = -numerics.HALF_LOG_2PI - (math.log(self.scale) if self.scale is not None else 0.0)
        return jnp.where(positive, const - log_y, jnp.full_like(y, const))

    def expectation_nodes(self, outputs: LogNormalOutputs) -> tuple[jax.Array, jax.Array]:
        """Gauss-Hermite in log y: nodes ``exp(loc + sqrt(2) s x_k)``, weights ``w_k / sqrt(pi)``, [8, ...]."""
        p = self._unpack(outputs)
        x = numerics.batch_nodes(_GH_NODES, p.loc)
        nodes = jnp.exp(p.loc[None] + math.sqrt(2.0) * jnp.exp(p.log_scale)[None] * x)
        w = numerics.batch_nodes(_GH_WEIGHTS / math.sqrt(math.pi), p.loc)
        return nodes, jnp.broadcast_to(w, nodes.shape)

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> LogNormalOutputArrays:
        """Closed-form MLE: loc = mean of log y, log_scale = log of the (biased, 1/n) std of log y.

        Any ``y <= 0`` makes the likelihood 0 for every output; the estimate is then NaN or -inf.
        """
        y = validate.numeric_targets(targets, where="LogNormal.mle targets")
        log_y = numerics.log_of_positive(y.astype(numerics.accumulation_dtype(numerics.float_dtype(y))))
        loc = jnp.mean(log_y, axis=axis)
        if self.scale is not None:
            return loc
        var = jnp.mean(jnp.square(log_y - jnp.expand_dims(loc, axis)), axis=axis)
        return loc, 0.5 * jnp.log(var)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: log y from -86 to 80, targets near 1, tiny and huge."""
        return (
            Case("LogNormal", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_lognorm), plain_log_prob=_plain_log_prob),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-log y - log(s) - log(2 pi)/2 - ((log y - loc) / s)^2 / 2``: the textbook formula."""
    loc, log_scale = outputs
    return (-jnp.log(y) - log_scale - 0.5 * jnp.log(2 * jnp.pi)
            - 0.5 * ((jnp.log(y) - loc) / jnp.exp(log_scale)) ** 2)


def _scipy_lognorm(outputs):
    import scipy.stats

    loc, log_scale = outputs
    return scipy.stats.lognorm(np.exp(log_scale), scale=np.exp(loc))


def _random(key, dtype, n):
    """``log y ~ Normal(loc, scale)`` at standard normal ``loc`` and ``log_scale``."""
    (loc, log_scale), log_y = ls_.random_inputs(ls_.standard_normal)(key, dtype, n)
    return (loc, log_scale), jnp.exp(log_y)


def _extreme(dtype):
    # log y from -86 to 80. The scales stay within e^-3 .. e^3: the check's quadrature works in y, and
    # at log_scale = -80 the nodes exp(loc + s x_k) would all round to exp(loc) (log_prob at
    # log_scale = -80, 80 and 700 is tested against mpmath in tests/test_reals.py instead).
    loc = jnp.array([0.0, 50.0, -50.0, 0.0, 80.0], dtype)
    log_scale = jnp.array([-3.0, 3.0, 0.0, 2.0, -2.5], dtype)
    y = jnp.array([1.0 + 1e-6, 1e-30, 1e30, 3e-38, 1e35], dtype)
    return (loc, log_scale), y

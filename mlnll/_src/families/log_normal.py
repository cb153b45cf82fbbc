"""LogNormal: a positive target whose log is Normal given a location and a log-scale."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src import numerics, validate
from mlnll._src.families import _location_scale as ls_

_NAMES = ls_.LOC_LOG_SCALE
# Gauss-Hermite rule in log y: exact for polynomials of degree < 16 under exp(-x^2), so exact for
# the expected Hessian of the NLL, which is quadratic in log y.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(8)


@dataclasses.dataclass(frozen=True)
class LogNormal:
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

    Fisher information in ``(loc, log_scale)``: the Jacobian term is free of the outputs, so it is
    Normal's, ``diag(1/s^2, 2)``; with the scale fixed, ``1/s^2``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> float(mlnll.LogNormal().log_prob((jnp.array(0.0), jnp.array(0.0)), jnp.array(1.0)))  # -log(2 pi)/2
      -0.918938...
    """

    scale: float | None = None

    def __post_init__(self):
        ls_.check_positive_option("LogNormal", "scale", self.scale)

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return ls_.describe("LogNormal", scale=self.scale)

    @property
    def _fixed(self) -> dict[str, float]:
        return ls_.fixed_scale(self.scale)

    def _params(self, outputs) -> tuple[jax.Array, jax.Array, np.dtype]:
        return ls_.loc_and_log_scale(outputs, family=self._name, scale=self.scale)

    def _prepare(self, outputs, targets):
        """``(loc, log_scale, log y, r, in_support, dtype)``; log y is 0 where y <= 0 (double where)."""
        loc, log_scale, y, dtype = ls_.loc_log_scale_and_targets(
            outputs, targets, family=self._name, scale=self.scale
        )
        positive = y > 0
        log_y = jnp.log(jnp.where(positive, y, jnp.ones_like(y)))
        # (log y - loc) * exp(-log_scale) rather than / exp(log_scale): no overflow of the scale.
        r = (log_y - loc) * jnp.exp(-log_scale)
        return loc, log_scale, log_y, r, positive, dtype

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs, targets) -> jax.Array:
        """Per-example ``log LogNormal(y; loc, s)``, equal to scipy.stats.lognorm.logpdf; -inf at y <= 0."""
        _, log_scale, log_y, r, positive, dtype = self._prepare(outputs, targets)
        lp = -0.5 * jnp.square(r) - log_scale - numerics.HALF_LOG_2PI - log_y
        return jnp.where(positive, lp, -jnp.inf).astype(dtype)

    def grad(self, outputs, targets):
        """Closed form ``((loc - log y) / s^2, 1 - r^2)``, NaN where y <= 0; loc's alone if the scale is fixed."""
        _, log_scale, _, r, positive, dtype = self._prepare(outputs, targets)
        nan = jnp.full_like(r, jnp.nan)
        # -r * exp(-log_scale) instead of (loc - log y) / s^2: s^2 overflows long before the product.
        grads = {"loc": jnp.where(positive, -r * jnp.exp(-log_scale), nan),
                 "log_scale": jnp.where(positive, 1 - jnp.square(r), nan)}
        return ls_.pack(grads, _NAMES, self._fixed, dtype)

    def params(self, outputs) -> dict[str, jax.Array]:
        """``{"loc", "scale"}`` of ``log y`` (scipy's ``s = scale`` and ``scale = exp(loc)``)."""
        loc, log_scale, dtype = self._params(outputs)
        return {"loc": loc.astype(dtype), "scale": jnp.exp(log_scale).astype(dtype)}

    def mean(self, outputs) -> jax.Array:
        """``exp(loc + s^2 / 2)``, exponentiated once (no product of two overflowing factors)."""
        loc, log_scale, dtype = self._params(outputs)
        return jnp.exp(loc + 0.5 * jnp.exp(2 * log_scale)).astype(dtype)

    def sample(self, key: jax.Array, outputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``exp(loc + s * e)`` with e standard normal, shape ``sample_shape + batch``."""
        loc, log_scale, dtype = self._params(outputs)
        shape = tuple(sample_shape) + loc.shape
        eps = jax.random.normal(key, shape, dtype=loc.dtype)
        return jnp.exp(ls_.shift_and_scale(loc, log_scale, eps)).astype(dtype)

    def entropy(self, outputs) -> jax.Array:
        """``loc + log_scale + (1 + log(2 pi)) / 2``: Normal's entropy plus ``E[log y] = loc``."""
        loc, log_scale, dtype = self._params(outputs)
        return (loc + log_scale + 0.5 + numerics.HALF_LOG_2PI).astype(dtype)

    def kl(self, outputs_p, outputs_q) -> jax.Array:
        """KL(p || q), equal to Normal's KL between the laws of ``log y`` (KL is invariant under y -> log y).

        With ``d = log_scale_p - log_scale_q``: ``KL = (e^{2d} - 1 - 2d) / 2 + ((mu_p - mu_q) / s_q)^2 / 2``,
        the first term by ``expm1mx`` so that nearly equal scales keep their relative accuracy.
        """
        loc_p, ls_p, _ = self._params(outputs_p)
        loc_q, ls_q, _ = self._params(outputs_q)
        (loc_p, ls_p, loc_q, ls_q), dtype = ls_.kl_pair("LogNormal", (loc_p, ls_p), (loc_q, ls_q))
        gap = (loc_p - loc_q) * jnp.exp(-ls_q)
        return (0.5 * numerics.expm1mx(2 * (ls_p - ls_q)) + 0.5 * jnp.square(gap)).astype(dtype)

    def fisher(self, outputs) -> jax.Array:
        """``diag(1/s^2, 2)`` per example (shape [..., 2, 2]); ``1/s^2`` with a fixed scale."""
        _, log_scale, dtype = self._params(outputs)
        entries = {("loc", "loc"): jnp.exp(-2 * log_scale),
                   ("log_scale", "log_scale"): jnp.full_like(log_scale, 2.0)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, log_scale, dtype)

    def constant_terms(self, targets) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log y - log(2 pi)/2`` (and ``-log(scale)`` if fixed).

        Where ``y <= 0`` the ``-log y`` term is left out (the value stays finite), so that
        ``log_prob - constant_terms`` is ``-inf`` there rather than ``-inf - (-inf) = NaN``.
        """
        y = validate.numeric_targets(targets, where=f"{self._name} targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        positive = y > 0
        log_y = jnp.log(jnp.where(positive, y, jnp.ones_like(y)))
        const = -numerics.HALF_LOG_2PI - (math.log(self.scale) if self.scale is not None else 0.0)
        return jnp.where(positive, const - log_y, jnp.full_like(y, const))

    def expectation_nodes(self, outputs) -> tuple[jax.Array, jax.Array]:
        """Gauss-Hermite in log y: nodes ``exp(loc + sqrt(2) s x_k)``, weights ``w_k / sqrt(pi)``, [8, ...]."""
        loc, log_scale, _ = self._params(outputs)
        x = numerics.batch_nodes(_GH_NODES, loc)
        nodes = jnp.exp(loc[None] + math.sqrt(2.0) * jnp.exp(log_scale)[None] * x)
        w = numerics.batch_nodes(_GH_WEIGHTS / math.sqrt(math.pi), loc)
        return nodes, jnp.broadcast_to(w, nodes.shape)

    def mle(self, targets, *, axis: int = 0):
        """Closed-form MLE: loc = mean of log y, log_scale = log of the (biased, 1/n) std of log y.

        Any ``y <= 0`` makes the likelihood 0 for every output; the estimate is then NaN or -inf.
        """
        y = validate.numeric_targets(targets, where="LogNormal.mle targets")
        log_y = jnp.log(y.astype(numerics.accumulation_dtype(numerics.float_dtype(y))))
        loc = jnp.mean(log_y, axis=axis)
        if self.scale is not None:
            return loc
        var = jnp.mean(jnp.square(log_y - jnp.expand_dims(loc, axis)), axis=axis)
        return loc, 0.5 * jnp.log(var)

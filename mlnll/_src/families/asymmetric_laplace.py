"""AsymmetricLaplace: a real target given a location and a log-scale at a fixed quantile level tau.
Its NLL is the pinball (quantile) loss: maximum likelihood under it is quantile regression."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.closed_form import closed_form
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.types import LocScaleOutputArrays, LocScaleOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE


def _slope(tau: float, u: jax.Array) -> jax.Array:
    """``rho_tau'(u)``: tau above the kink, ``tau - 1`` below it, and 0 at u = 0 (the subgradient of
    least norm); each exactly the number the pinball loss multiplies u by."""
    return jnp.where(u > 0, tau, jnp.where(u < 0, tau - 1, 0.0)).astype(u.dtype)


def _value_and_partials(tau: float, keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = log(tau (1 - tau)) - log_scale - rho_tau(u)``, ``u = (y - loc) / s``, and its
    partials (the class docstring).

    With ``g = rho_tau'(u)``: ``d log p / d loc = g / s``, ``d log p / d log_scale = rho_tau(u) - 1``
    and ``d log p / d y = -g / s``. ``rho_tau(u)`` is written ``u g``, whose derivative is g (0 at
    the kink): a Hessian entry takes the same subgradient there.
    """
    u, inv_scale = ls_.standardize(loc, log_scale, y)
    g = _slope(tau, u)
    rho = u * g
    d_loc = g * inv_scale
    return ls_.with_terms(-rho, log_scale, -math.log(tau * (1 - tau)), keep), (d_loc, rho - 1, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py);
# the quantile level is static, as the kind of terms kept is.
asymmetric_laplace_log_pdf = closed_form(_value_and_partials, num_static=2)


def _standard_draw(tau: float, key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Draws of ``u = (y - loc) / s`` by the inverse CDF (``AsymmetricLaplace.sample``)."""
    v = jax.random.uniform(key, shape, dtype, minval=float(jnp.finfo(dtype).tiny), maxval=1.0)
    below = v < tau
    # The double where: each branch's log sees a value of its own side only.
    vb = jnp.where(below, v, jnp.full_like(v, tau))
    va = jnp.where(below, jnp.full_like(v, tau), v)
    return jnp.where(below, (jnp.log(vb) - math.log(tau)) / (1 - tau), -(jnp.log1p(-va) - math.log1p(-tau)) / tau)


def _check_quantile(value) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and 0 < value < 1):
        raise ValueError(f"AsymmetricLaplace(quantile=...) must be a number strictly between 0 and 1; got {value!r}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AsymmetricLaplace(ls_.FixedScaleUnpacking):
    r"""Asymmetric Laplace distribution of a real target at quantile level ``tau``: its NLL is the pinball loss.

    ``AsymmetricLaplace(quantile=tau)``, ``0 < tau < 1`` (keyword-only, required). outputs:
    ``(loc, log_scale)``; with ``AsymmetricLaplace(quantile=tau, scale=s)`` the scale is fixed and
    outputs is ``loc`` alone. targets: reals, broadcastable with the outputs. ``loc`` is the
    distribution's tau-quantile (``P(y < loc) = tau``).

    Density, with ``s = exp(log_scale)``, ``u = (y - loc) / s`` and the check function
    ``rho_tau(u) = u (tau - 1[u < 0])`` (tau u above the location, ``(1 - tau) |u|`` below):
    ``log p(y) = log(tau (1 - tau)) - log_scale - rho_tau(u)``. With the scale fixed at 1,
    ``-log p = rho_tau(y - loc) - log(tau (1 - tau))``: the pinball (quantile) loss plus a
    constant, so maximum likelihood in loc is quantile regression (Koenker & Machado 1999, Yu &
    Moyeed 2001); ``nll(..., drop_constants=True)`` with ``scale=1`` is exactly the pinball loss.
    At tau = 1/2 it is the Laplace with scale 2s. scipy.stats.laplace_asymmetric uses
    ``kappa = sqrt(tau / (1 - tau))`` and scale ``s / sqrt(tau (1 - tau))``: its
    ``exp(-kappa x)`` and ``exp(x / kappa)`` with ``x = u sqrt(tau (1 - tau))`` are ``exp(-tau u)``
    and ``exp((1 - tau) u)``, and its normaliser ``1/(scale (kappa + 1/kappa))`` is ``tau (1 - tau)/s``.

    Gradient. ``du/dloc = -1/s``, ``du/dlog_scale = -u`` and ``rho_tau'(u) = g``, tau above the
    location and ``tau - 1`` below it, so ``d(-log p)/dloc = -g / s`` and
    ``d(-log p)/dlog_scale = 1 - u g = 1 - rho_tau(u)``. At y = loc the subdifferential in loc is
    ``[-tau/s, (1 - tau)/s]`` and the closed form takes its element of least norm, 0, as Laplace
    does (so a loc at a sample tau-quantile can have gradient exactly 0). ``jax.grad`` (and
    ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form, targets included
    (``d log p/dy = -g / s``).

    Fisher information in ``(loc, log_scale)``, as ``E[grad grad^T]`` (the Hessian in loc is a
    point mass at the kink, which autodiff sees as 0): ``P(u > 0) = 1 - tau``, so
    ``E[g^2] = (1 - tau) tau^2 + tau (1 - tau)^2 = tau (1 - tau)``; ``rho_tau(u)`` is standard
    exponential on each side, so ``E[(1 - rho)^2] = 1`` and the cross term ``E[g (rho - 1)]``
    vanishes side by side: ``diag(tau (1 - tau) / s^2, 1)``; ``tau (1 - tau) / s^2`` with the scale
    fixed. Entropy ``1 + log_scale - log(tau (1 - tau))``; mean
    ``loc + s (1 - 2 tau) / (tau (1 - tau))``; KL in closed form (``kl``).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.AsymmetricLaplace(quantile=0.9, scale=1.0)
      >>> loss = mlnll.nll(fam, drop_constants=True)  # the pinball loss
      >>> float(loss(jnp.array([0.0, 0.0]), jnp.array([1.0, -1.0])))  # (0.9 * 1 + 0.1 * 1) / 2
      0.5
    """

    quantile: float
    scale: float | None = None

    def __post_init__(self):
        _check_quantile(self.quantile)
        ls_.check_positive_option("AsymmetricLaplace", "scale", self.scale)

    # -- unpacking: ls_.FixedScaleUnpacking (fixed outputs, _unpack, _unpack_with) ------------

    @property
    def _name(self) -> str:
        return ls_.describe("AsymmetricLaplace", quantile=self.quantile, scale=self.scale)

    @property
    def _log_pdf(self):
        return functools.partial(asymmetric_laplace_log_pdf, float(self.quantile))

    @property
    def _log_normaliser(self) -> float:
        """``log(tau (1 - tau))``."""
        return math.log(self.quantile) + math.log1p(-self.quantile)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(y)``, equal to scipy.stats.laplace_asymmetric.logpdf at
        ``kappa = sqrt(tau / (1 - tau))``, scale ``s / sqrt(tau (1 - tau))``."""
        return self._real_log_prob(self._log_pdf, outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-rho_tau(u) - log_scale``, and
        exactly minus the pinball loss ``-rho_tau(y - loc)`` for ``scale=1`` (what
        ``drop_constants=True`` uses)."""
        return self._real_log_prob(self._log_pdf, outputs, targets, ls_.without_constants(self.scale))

    def grad(self, outputs: LocScaleOutputs, targets: ArrayLike) -> LocScaleOutputArrays:
        """Closed form ``(-g / s, 1 - rho_tau(u))``, ``g = tau - 1[u < 0]`` and 0 at u = 0; loc's alone
        if the scale is fixed."""
        return self._real_grad(functools.partial(_value_and_partials, float(self.quantile)), outputs, targets)

    def log_cdf(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y)``, u = (y - loc)/s: ``log tau + (1 - tau) u`` below the location,
        ``log(1 - (1 - tau) e^(-tau u))`` above it (taken from the smaller of the two terms, so
        relative accuracy at F near 1 and near tau; scipy.stats.laplace_asymmetric.logcdf).
        ``jax.grad`` runs its closed form, ``d log F/du = f/F``: ``1 - tau`` below the location,
        ``tau (1 - tau) e^(-tau u) / F`` above (``_tails``)."""
        return _tails.real_log_tail(_tails.asymmetric_laplace(float(self.quantile)), self._name, self.scale,
                                    outputs, targets, upper=False)

    def log_survival(self, outputs: LocScaleOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y)``: ``log(1 - tau) - tau u`` above the location, ``log(1 - tau
        e^((1 - tau) u))`` below it; it is ``log F`` of the level ``1 - tau`` at ``-u`` (``-y`` is
        asymmetric Laplace at ``1 - tau``), with the same closed-form derivatives."""
        return _tails.real_log_tail(_tails.asymmetric_laplace(float(self.quantile)), self._name, self.scale,
                                    outputs, targets, upper=True)

    def params(self, outputs: LocScaleOutputs) -> dict[str, jax.Array]:
        """``{"loc": loc, "scale": exp(log_scale)}`` (loc is the tau-quantile)."""
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: LocScaleOutputs) -> jax.Array:
        """``loc + s (1 - 2 tau) / (tau (1 - tau))``: ``E[u] = (1 - tau)/tau - tau/(1 - tau)``."""
        p = self._unpack(outputs)
        tau = self.quantile
        return (p.loc + ((1 - 2 * tau) / (tau * (1 - tau))) * jnp.exp(p.log_scale)).astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LocScaleOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + s u`` with u drawn by the inverse CDF, shape ``sample_shape + batch``.

        For v uniform on (0, 1): ``u = log(v / tau) / (1 - tau)`` below tau (the share of mass below
        the location), ``u = -log((1 - v) / (1 - tau)) / tau`` above; v is kept off 0, so u is finite.
        """
        return self._shifted_and_scaled_sample(functools.partial(_standard_draw, float(self.quantile)), key, outputs,
                                               sample_shape)

    def entropy(self, outputs: LocScaleOutputs) -> jax.Array:
        """``1 + log_scale - log(tau (1 - tau))``."""
        p = self._unpack(outputs)
        return (p.log_scale + (1 - self._log_normaliser)).astype(p.dtype)

    def kl(self, outputs_p: LocScaleOutputs, outputs_q: LocScaleOutputs) -> jax.Array:
        """KL(p || q) at the family's tau, as a sum of non-negative terms, accurate when p and q are close.

        With ``d = log s_p - log s_q`` and ``c = (loc_q - loc_p) / s_p``:
        ``KL = expm1mx(d) + e^d h(c)``, ``h(c) = tau/(1 - tau) expm1mx((1 - tau) c)`` for c <= 0 and
        ``(1 - tau)/tau expm1mx(-tau c)`` for c > 0 (``expm1mx(x) = e^x - 1 - x``). Derivation: with
        ``y = loc_p + s_p u``, ``KL = -d - 1 + E_p[rho_tau(e^d (u - c))]``, and
        ``E[rho_tau(a (u - c))] = a (1 + h(c))`` from ``rho_tau(v) = tau v + (-v)_+`` and
        ``E[(c - u)_+] = int_(-inf)^c F(u) du`` with the CDF ``F``. At tau = 1/2 it is Laplace's.
        """
        p, q, dtype = ls_.kl_pair(self._name, self._unpack(outputs_p), self._unpack(outputs_q))
        tau = self.quantile
        d = p.log_scale - q.log_scale
        c = (q.loc - p.loc) * jnp.exp(-p.log_scale)
        left = c <= 0
        h = jnp.where(left, (tau / (1 - tau)) * numerics.expm1mx((1 - tau) * jnp.where(left, c, jnp.zeros_like(c))),
                      ((1 - tau) / tau) * numerics.expm1mx(-tau * jnp.where(left, jnp.zeros_like(c), c)))
        # e^d h: taken as 0 where h = 0 even if e^d overflowed (the KL is then expm1mx(d) = inf).
        return (numerics.expm1mx(d) + numerics.mul_nonzero(h, jnp.exp(d))).astype(dtype)

    def fisher(self, outputs: LocScaleOutputs) -> jax.Array:
        """``diag(tau (1 - tau) / s^2, 1)`` per example (shape [..., 2, 2]); ``tau (1 - tau) / s^2``
        with a fixed scale."""
        p = self._unpack(outputs)
        tau = self.quantile
        entries = {("loc", "loc"): (tau * (1 - tau)) * jnp.exp(-2 * p.log_scale),
                   ("log_scale", "log_scale"): jnp.ones_like(p.log_scale)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``log(tau (1 - tau))``, and ``-log(scale)`` if fixed.

        Dropping it from ``AsymmetricLaplace(quantile=tau, scale=1)`` leaves exactly the pinball loss.
        """
        const = self._log_normaliser - (math.log(self.scale) if self.scale is not None else 0.0)
        return ls_.constant_like(targets, const, family=self._name)

    def score_nodes(self, outputs: LocScaleOutputs) -> tuple[jax.Array, jax.Array]:
        """A rule for ``E_y[f(y)]``: nodes ``loc + s t_k / tau`` (weights ``(1 - tau) w_k``) and
        ``loc - s t_k / (1 - tau)`` (weights ``tau w_k``), ``[16, *batch]``.

        ``t_k, w_k`` is the 8-point Gauss-Laguerre rule: on each side ``rho_tau(u)`` is standard
        exponential, so the rule is exact for any f that is a polynomial of degree < 16 in
        ``rho_tau`` on each side, e.g. every entry of ``grad grad^T``. As for Laplace, it is not
        ``expectation_nodes``: autodiff misses the point mass of the Hessian at y = loc.
        """
        tau = self.quantile
        # Above loc (mass 1 - tau) tau u is Exponential(1), below (mass tau) (1 - tau) |u| is.
        return ls_.two_sided_exponential_nodes(self._unpack(outputs), mass_above=1 - tau, mean_above=1 / tau,
                                               mean_below=1 / (1 - tau))

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> LocScaleOutputArrays:
        """Closed-form MLE: loc = a sample tau-quantile, log_scale = log of the mean pinball loss there.

        ``sum rho_tau(y_i - loc)`` is smallest at the ``ceil(n tau)``-th smallest target (any point
        between it and the next when ``n tau`` is an integer), and at that loc ``d/ds`` of the NLL,
        ``n/s - sum rho_tau(y_i - loc) / s^2``, vanishes at ``s = mean rho_tau(y_i - loc)``.
        """
        y = validate.numeric_targets(targets, where=f"{self._name}.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        y = jnp.moveaxis(y, axis, 0)
        n = y.shape[0]
        rank = min(max(math.ceil(n * self.quantile), 1), n) - 1
        loc = jnp.sort(y, axis=0)[rank]
        if self.scale is not None:
            return loc
        residual = y - loc[None]
        pinball = residual * _slope(float(self.quantile), residual)
        return loc, jnp.log(jnp.mean(pinball, axis=0))

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: tau = 0.9 with a free scale, and tau = 0.25 with ``scale=1`` (the
        pinball loss); log-scales of ±80, targets 1e30 away, and targets exactly at the kink."""
        return (
            Case("AsymmetricLaplace(quantile=0.9)", cls(quantile=0.9), _random_away_from_kink(0.9, None),
                 ls_.extreme_inputs, scipy=ScipyReference(_scipy_reference(0.9, None)),
                 plain_log_prob=_plain_log_prob(0.9)),
            Case("AsymmetricLaplace(quantile=0.25, scale=1.0)", cls(quantile=0.25, scale=1.0),
                 _random_away_from_kink(0.25, 1.0), ls_.fixed_scale_extreme,
                 scipy=ScipyReference(_scipy_reference(0.25, 1.0)),
                 plain_log_prob=lambda loc, y: _plain_log_prob(0.25)((loc, jnp.zeros_like(loc)), y)),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(tau: float):
    """``log(tau (1 - tau)) - log(s) - u (tau - 1[u < 0])``, ``u = (y - loc) / s``: the textbook formula."""

    def log_prob(outputs, y):
        loc, log_scale = outputs
        u = (y - loc) / jnp.exp(log_scale)
        return math.log(tau * (1 - tau)) - log_scale - u * (tau - (u < 0).astype(u.dtype))

    return log_prob


def _scipy_reference(tau: float, scale: float | None):
    """scipy's ``laplace_asymmetric`` at ``kappa = sqrt(tau / (1 - tau))`` and scale ``s / sqrt(tau (1 - tau))``."""

    def dist(outputs):
        import scipy.stats

        loc, s = (outputs, scale) if scale is not None else (outputs[0], np.exp(outputs[1]))
        return scipy.stats.laplace_asymmetric(math.sqrt(tau / (1 - tau)), loc, s / math.sqrt(tau * (1 - tau)))

    return dist


# The check's finite differences move loc by 2h d (h = 1e-3, d a standard normal direction) and
# must not straddle the kink at y = loc, so the random targets are draws conditioned on
# |y - loc| >= 1e-2, as Laplace's (the kink itself is among the extreme inputs). On each side
# |y - loc| / s is exponential (rate tau above, 1 - tau below), which is memoryless: given
# |y - loc| >= g it is g + s E / rate, E standard exponential.
_KINK_GAP = 1e-2


def _random_away_from_kink(tau: float, scale: float | None):
    def random(key, dtype, n):
        u = ls_.open_uniforms(key, (3, n), dtype)
        loc, log_scale = ls_.standard_normal(u[0]), ls_.standard_normal(u[1])
        s = jnp.exp(log_scale) if scale is None else scale
        below = u[2] < tau
        # v / tau below and (v - tau) / (1 - tau) above are uniform on (0, 1): E = -log of them.
        e = -jnp.log(jnp.where(below, u[2] / tau, (u[2] - tau) / (1 - tau)))
        y = loc + jnp.where(below, -(_KINK_GAP + s * e / (1 - tau)), _KINK_GAP + s * e / tau)
        return ((loc, log_scale) if scale is None else loc), y

    return random

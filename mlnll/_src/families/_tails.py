"""Log-CDFs and log-survival functions of the continuous families, accurate in both tails.

An observation known only to exceed y (right-censored) contributes ``log S(y) = log(1 - F(y))``
to a likelihood, one known only to lie below y contributes ``log F(y)``; both are needed far in
the tails, where ``log(F)`` of a rounded F is ``-inf`` or ``log(1 - F)`` of an F that rounds to 1
is ``-inf`` too. Each family here computes the log of the smaller tail directly.

For a location-scale family, ``F(y) = F0(z)`` with ``z = (y - loc) / scale``, and the standard
laws used here are symmetric, so ``S(y) = F0(-z)``: one standard ``log F0`` serves both tails. A
``StandardTail`` returns ``log F0(z)`` and ``h(z) = f0(z) / F0(z) = d log F0 / dz``, the ratio the
closed-form derivatives need, computed without forming f0 / F0 as a quotient of two underflowed
numbers where the tail is far out:

``d log F / d loc = -h / scale``, ``d log F / d log_scale = -h z``, ``d log F / d y = h / scale``
(from ``dz/dloc = -1/scale``, ``dz/dlog_scale = -z``, ``dz/dy = 1/scale``), and the same with
``z -> -z`` and the signs of h flipped for ``log S``. ``jax.grad``, ``jacfwd`` and ``hessian`` of a
family's ``log_cdf`` and ``log_survival`` run through these partials (``closed_form``).

At the ends of the real line the limits hold exactly: ``log F(-inf) = -inf``, ``log F(+inf) = 0``
(and the reverse for ``log S``), with zero derivatives; a NaN target gives NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics
from mlnll._src.closed_form import closed_form
from mlnll._src.family import Outputs
from mlnll._src.families import _location_scale as ls_

_SQRT_HALF = math.sqrt(0.5)
_LOG_PI = math.log(math.pi)


class StandardTail(NamedTuple):
    """A standard law's ``z -> (log F0(z), h(z) = f0(z)/F0(z))``, for finite z, and optionally
    ``z h(z)`` as a third entry where the product of the two can underflow although it is a number
    of the dtype (the Cauchy's far right tail).

    ``log_survival_and_ratio``, for a law that is not symmetric (Gumbel, AsymmetricLaplace):
    ``z -> (log S0(z), f0(z)/S0(z))``; None for a symmetric law, whose ``S0(z) = F0(-z)``."""

    name: str
    log_cdf_and_ratio: Callable[[jax.Array], tuple[jax.Array, ...]]
    log_survival_and_ratio: Callable[[jax.Array], tuple[jax.Array, ...]] | None = None


# -- the standard laws ---------------------------------------------------------------------------


def _normal_asymptotic_terms(dtype) -> tuple[float, int]:
    """Where the left-tail series takes over and how many terms it keeps: z <= -20 with 10 terms in
    float64 (the omitted term (2k - 1)!! / z^(2k) is below 1e-17 there), z <= -8 with 8 terms in
    float32 (below 1e-8)."""
    return (-20.0, 10) if np.dtype(dtype) == np.float64 else (-8.0, 8)


def _normal(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``log Phi(z)`` and ``phi(z) / Phi(z)``.

    * z > 0: ``log Phi = log1p(-erfc(z/sqrt 2)/2)``, the upper tail's mass taken from erfc directly
      (``log(1 - Phi)`` would round Phi(8) = 1 - 6e-16 to 1 in float32).
    * a <= z <= 0: ``log Phi = log(erfc(-z/sqrt 2)/2)``; erfc keeps its relative accuracy down to its
      underflow (z = -37.5 in float64).
    * z < a (a = -20 in float64, -8 in float32): the asymptotic series
      ``Phi(z) = phi(z) / (-z) * (1 + sum_k (-1)^k (2k - 1)!! / z^(2k))``, so
      ``log Phi = -z^2/2 - log(-z) - log(2 pi)/2 + log1p(series)`` and ``phi/Phi = -z / (1 + series)``
      with no quotient of two tiny numbers; it stays finite where Phi itself underflows (z = -40).
    """
    a, terms = _normal_asymptotic_terms(z.dtype)
    far = z < a
    zf = jnp.where(far, z, jnp.full_like(z, a))  # double where: the series sees |z| >= |a|
    inv_z2 = 1 / (zf * zf)
    coeffs = [0.0] + [(-1.0) ** k * math.prod(range(1, 2 * k, 2)) for k in range(1, terms + 1)]
    series = numerics.horner(coeffs, inv_z2)  # sum_k (-1)^k (2k-1)!! u^k, u = 1/z^2
    log_far = -0.5 * zf * zf - jnp.log(-zf) - numerics.HALF_LOG_2PI + jnp.log1p(series)
    ratio_far = -zf / (1 + series)
    erfc = jax.scipy.special.erfc(jnp.abs(z) * _SQRT_HALF)  # 2 x the smaller tail's mass
    log_near = jnp.where(z > 0, jnp.log1p(-0.5 * erfc), jnp.log(0.5 * erfc))
    zn = jnp.where(far, jnp.zeros_like(z), z)
    ratio_near = jnp.exp(-0.5 * zn * zn - numerics.HALF_LOG_2PI - jnp.where(far, jnp.zeros_like(z), log_near))
    return jnp.where(far, log_far, log_near), jnp.where(far, ratio_far, ratio_near)


def _logistic(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``log sigmoid(z) = -softplus(-z)`` and ``f0/F0 = sigmoid(-z)`` (f0 = sigmoid(z) sigmoid(-z)):
    exact forms at any z (log F0(-700) = -700, not log of an underflowed sigmoid)."""
    return numerics.log_sigmoid(z), jax.nn.sigmoid(-z)


def _laplace(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``F0(z) = e^z / 2`` for z < 0 and ``1 - e^-z / 2`` above: ``log F0 = z - log 2`` (ratio 1)
    and ``log1p(-e^-z / 2)`` with ratio ``(e^-z/2) / (1 - e^-z/2) = 1 / (2 expm1(z) + 1)``."""
    below = z < 0
    zp = jnp.where(below, jnp.zeros_like(z), z)
    log_above = jnp.log1p(-0.5 * jnp.exp(-zp))
    ratio_above = 1 / (2 * jnp.expm1(zp) + 1)  # expm1: exact near z = 0, where 2 e^z - 1 ~ 1
    return jnp.where(below, z - numerics.LOG_2, log_above), jnp.where(below, jnp.ones_like(z), ratio_above)


def _cauchy(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``F0(z) = 1/2 + atan(z)/pi``; the smaller tail's mass is ``t = atan(1/|z|) / pi`` (for z < 0,
    1/2 + atan(z)/pi = atan(-1/z)/pi exactly), so ``log F0 = log t`` below 0 and ``log1p(-t)`` above,
    never 1/2 + atan(z)/pi, which cancels to 0 at z = -1e17 in float64.

    Beyond |z| = 2^30, ``atan(1/|z|) = 1/|z|`` to below an ulp: ``log t = -log|z| - log pi`` (1/|z|
    itself flushes to 0 for |z| > 8.5e37 in float32). The ratio ``f0/F0 = 1 / (pi (1 + z^2) F0)`` is
    ``1 / ((1 + z^2) atan(1/|z|))`` below 0, ``1/|z|`` beyond 2^30.
    """
    a = jnp.abs(z)
    big = a > 2.0**30
    ab = jnp.where(big, jnp.ones_like(a), a)  # double where: 1/|z| of a moderate |z|
    t_pi = jnp.arctan(1 / ab)  # pi t
    below = z < 0
    log_t = jnp.where(big, -jnp.log(a), jnp.log(t_pi)) - _LOG_PI
    log_above = jnp.log1p(-jnp.where(big, 1 / (math.pi * jnp.where(big, a, jnp.ones_like(a))), t_pi / math.pi))
    ratio_below = jnp.where(big, 1 / a, 1 / ((1 + ab * ab) * t_pi))
    f_above = math.pi * jnp.exp(log_above)  # pi F0
    ratio_above = 1 / ((1 + z * z) * f_above)
    # z h = z / (pi (1 + z^2) F0) = 1 / (pi z F0) beyond 2^30, where (1 + z^2) alone overflows in
    # float32 (z = 1e30: z h = 3e-31 is a float32 number, h = 3e-61 is not)
    z_ratio_above = jnp.where(big, 1 / (jnp.where(big, a, jnp.ones_like(a)) * f_above), z * ratio_above)
    z_ratio = jnp.where(below, jnp.where(big, -jnp.ones_like(z), z * ratio_below), z_ratio_above)
    return jnp.where(below, log_t, log_above), jnp.where(below, ratio_below, ratio_above), z_ratio


# Below a = -40, log(1 - exp(-e^a)) = a - e^a / 2 + ... is a to below 1e-19 of it (e^-40 = 4e-18),
# also where e^a itself is subnormal or 0.
_TINY_LOG = -40.0


def log1mexp_of_exp(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``log(1 - exp(-x))`` at ``x = e^a`` and its derivative in a, ``x / expm1(x)``, from the
    log ``a`` of x: the Gumbel's ``log S`` (a = -z) and the Weibull's ``log F`` (a = k log(y/lam)).

    ``numerics.log1mexp(x)`` (relative accuracy at tiny x and where 1 - e^-x is near 1), and ``a``
    itself below a = -40, where x may have underflowed. The derivative is
    ``exp(a - x) / (-expm1(-x))`` (= ``x e^-x / (1 - e^-x)``): finite where ``expm1(x)`` overflows
    (x = 100 in float32: 3.7e-42 is 0 there, but x = 88 gives 5e-37) and 0, not inf/inf, at
    x = inf; 1 below a = -40.
    """
    tiny = a < _TINY_LOG
    x = jnp.exp(jnp.where(tiny, jnp.zeros_like(a), a))  # double where: x of a moderate a
    value = jnp.where(tiny, a, numerics.log1mexp(x))
    slope = jnp.where(tiny, jnp.ones_like(a), jnp.exp(a - x) / -jnp.expm1(-x))
    return value, slope


def _gumbel_cdf(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``F0(z) = exp(-e^-z)``: ``log F0 = -e^-z`` (exact to a rounding of exp), ratio
    ``f0/F0 = e^-z`` (``f0 = e^-z F0``)."""
    u = jnp.exp(-z)
    return -u, u


def _gumbel_survival(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``S0(z) = 1 - exp(-e^-z)``: ``log S0 = log1mexp(e^-z)`` (``log1mexp_of_exp(-z)``: ``-z`` far
    right, where e^-z underflows), ratio ``f0/S0 = e^-z exp(-e^-z) / (1 - exp(-e^-z))``, the same
    function's derivative."""
    return log1mexp_of_exp(-z)


def _asymmetric_laplace_cdf(tau: float, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The asymmetric Laplace's ``log F0(z)`` and ``f0/F0`` at quantile level tau.

    ``F0(z) = tau e^((1 - tau) z)`` below 0: ``log F0 = log tau + (1 - tau) z`` (two terms <= 0, no
    cancellation), ratio ``1 - tau``. Above 0, with ``a = (1 - tau) e^(-tau z)``, ``F0 = 1 - a``:
    ``log1p(-a)`` where a <= 1/2 (F0 near 1), and where a > 1/2 the sum of two positive terms
    ``F0 = tau - (1 - tau) expm1(-tau z)`` (1 - a would lose the digits of a small tau); the ratio is
    ``f0/F0 = tau a / F0``.
    """
    below = z < 0
    za = jnp.where(below, jnp.zeros_like(z), z)  # double where: each side sees its own z
    a = (1 - tau) * jnp.exp(-tau * za)
    small = a <= 0.5
    f_near = tau - (1 - tau) * jnp.expm1(-tau * za)  # 1 - a, two positive terms
    log_above = jnp.where(small, jnp.log1p(-jnp.where(small, a, jnp.zeros_like(a))), jnp.log(f_near))
    ratio_above = tau * a / jnp.where(small, 1 - a, f_near)
    log_below = (math.log(tau) + (1 - tau) * jnp.where(below, z, jnp.zeros_like(z)))
    return jnp.where(below, log_below, log_above), jnp.where(below, jnp.full_like(z, 1 - tau), ratio_above)


@functools.lru_cache(maxsize=None)
def asymmetric_laplace(tau: float) -> StandardTail:
    """The asymmetric Laplace's tails at level tau (one object per tau: a static argument of the
    closed form, hashed by identity). ``-Y`` is asymmetric Laplace at ``1 - tau`` (``rho_tau(-u) =
    rho_(1-tau)(u)``), so ``S0_tau(z) = F0_(1-tau)(-z)`` and ``f0/S0`` is that law's ratio at -z."""
    return StandardTail(f"AsymmetricLaplace(quantile={tau})", functools.partial(_asymmetric_laplace_cdf, tau),
                        lambda z: _asymmetric_laplace_cdf(1 - tau, -z))


NORMAL = StandardTail("Normal", _normal)
LOGISTIC = StandardTail("Logistic", _logistic)
LAPLACE = StandardTail("Laplace", _laplace)
CAUCHY = StandardTail("Cauchy", _cauchy)
GUMBEL = StandardTail("Gumbel", _gumbel_cdf, _gumbel_survival)


# -- location-scale families ---------------------------------------------------------------------


def _location_scale_tail(standard: StandardTail, upper: bool, loc, log_scale, y):
    """``log F(y)`` (or ``log S(y)`` if ``upper``) and its partials in ``(loc, log_scale, y)``."""
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    if upper and standard.log_survival_and_ratio is not None:  # a law that is not symmetric
        value, ratio, *r_ratio = standard.log_survival_and_ratio(r)
        # d log S / dr = -f0/S0; d/dlog_scale = (d log S / dr)(-r) = r f0/S0
        return value, (ratio * inv_scale, r_ratio[0] if r_ratio else ratio * r, -ratio * inv_scale)
    z = -r if upper else r
    value, ratio, *z_ratio = standard.log_cdf_and_ratio(z)
    slope = -ratio if upper else ratio  # d value / d r
    # r = (y - loc)/scale: dr/dloc = -1/scale, dr/dlog_scale = -r, dr/dy = 1/scale; and
    # -slope r = -h(z) z in both tails (z = -r for log S). h z -> 0 as z -> inf, where h is 0:
    # taken as 0 there (not 0 * inf; a scale of e^-1e4 makes z infinite).
    d_log_scale = -(z_ratio[0] if z_ratio else numerics.mul_nonzero(ratio, z))
    # Far in the small tail (log F = -z^2/2 = -inf at z = -1e38 in float32) the partials overflow
    # too (h z ~ z^2); they are held at the largest float, so that a caller that weighs this tail
    # by e^(log F) = 0 (an interval mass, a truncation normaliser) gets 0 and not 0 * inf = NaN.
    big = float(jnp.finfo(r.dtype).max)
    d_loc, d_y = -slope * inv_scale, slope * inv_scale
    return value, tuple(jnp.clip(d, -big, big) for d in (d_loc, d_log_scale, d_y))


location_scale_tail = closed_form(_location_scale_tail, num_static=2)


def at_the_ends(value: jax.Array, y: jax.Array, inside: jax.Array, upper: bool) -> jax.Array:
    """``value`` where ``inside`` the support, the exact limits outside it (``log F`` is ``-inf``
    below the support and 0 above it, ``log S`` the reverse), NaN at a NaN y."""
    top = jnp.full_like(value, -jnp.inf if upper else 0.0)  # log S, log F above the support
    bottom = jnp.full_like(value, 0.0 if upper else -jnp.inf)
    outside = jnp.where(jnp.isnan(y), jnp.full_like(value, jnp.nan), jnp.where(y > 0, top, bottom))
    return jnp.where(inside, value, outside)


class SymmetricTails:
    """``log_cdf`` and ``log_survival`` of a location-scale family whose standard law is symmetric
    (a mixin for its frozen dataclass, which sets ``_standard_tail`` and has ``_name`` and ``scale``)."""

    _standard_tail: ClassVar[StandardTail]

    def log_cdf(self, outputs: Outputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y) = log F0(r)``, r = (y - loc)/scale, with relative accuracy in both
        tails (scipy's ``logcdf``; this module has the forms); ``jax.grad`` runs its closed form
        (``d log F/dloc = -f/(F scale)``, ``d log F/dlog_scale = -r f/F``)."""
        return self._real_log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: Outputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log(1 - F(y)) = log F0(-r)`` (the law is symmetric), accurate where
        S is tiny and where it is near 1; closed-form derivatives as for ``log_cdf``."""
        return self._real_log_tail(outputs, targets, upper=True)

    def _real_log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        family: Any = self  # the dataclass this is mixed into: its _name and scale
        return real_log_tail(self._standard_tail, family._name, family.scale, outputs, targets, upper=upper)


def real_log_tail(standard: StandardTail, name: str, scale: float | None, outputs, targets, *, upper: bool) -> jax.Array:
    """``log F(y)`` (or ``log S(y)``) of a location-scale family on the real line, from its standard
    law's tails: outputs ``(loc, log_scale)`` (or ``loc`` with ``scale`` fixed), the limits at
    ``y = +-inf``, NaN at a NaN target."""
    loc, log_scale, y, dtype = ls_.loc_log_scale_and_targets(outputs, targets, family=name, scale=scale)
    finite, ys = ls_.finite_targets(y)
    value = location_scale_tail(standard, upper, loc, log_scale, ys)
    return at_the_ends(value, y, finite, upper).astype(dtype)

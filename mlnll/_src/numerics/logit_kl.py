"""The logistic function's pieces, and KL divergences between Bernoulli and geometric laws given
their logits, accurate when the two logits are close (the Bernoulli, Geometric and Binomial families
use them)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlnll._src.numerics.elementary import where
from mlnll._src.numerics.elementary import expm1mx, log1pmx, log1pmx_over_x, log_sigmoid


def logistic_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(log p, log q, p, q)`` for ``p = sigmoid(z)``, ``q = 1 - p = sigmoid(-z)``, from one exp,
    one log1p and two divisions (``log_sigmoid`` and ``sigmoid`` of z and -z would take four exps,
    two log1p and two divisions).

    With ``e = exp(-|z|) <= 1``: ``log_sigmoid(z) = -softplus(-z) = min(z, 0) - log1p(e)`` and
    ``log_sigmoid(-z) = min(-z, 0) - log1p(e)`` (each a sum of two terms of one sign); the larger
    of p and q is ``1/(1 + e)``, the smaller ``e/(1 + e)`` (no cancellation near 0 or 1). ``|z|``
    and ``min`` are written as selects, so every derivative is the one-sided one, also at z = 0
    (``abs`` and ``minimum`` would give 0 or a half there). Exact at z = +-inf (p, q in {0, 1}).
    """
    pos = z >= 0
    zero = jnp.zeros_like(z)
    e = jnp.exp(where(pos, -z, z))
    log1p_e = jnp.log1p(e)
    log_p = where(pos, zero, z) - log1p_e
    log_q = where(pos, -z, zero) - log1p_e
    larger = 1 / (1 + e)
    smaller = e / (1 + e)  # a division rather than e * larger: one rounding fewer
    return log_p, log_q, where(pos, larger, smaller), where(pos, smaller, larger)


@jax.jit
def bernoulli_kl(zp: jax.Array, zq: jax.Array) -> jax.Array:
    """KL(Bernoulli(sigmoid(zp)) || Bernoulli(sigmoid(zq))) from logits, accurate when zp ~ zq.

    It is the Bregman divergence of softplus: with d = zq - zp and s = sigmoid(zp),
    ``KL = softplus(zq) - softplus(zp) - s d = log1p(w) - s d``,  ``w = s expm1(d)``.
    Near d = 0 the first-order terms cancel, so there ``KL = log1pmx(w) + s expm1mx(d)``: two terms
    whose ratio is at most s <= 1/2 when zp <= 0. For zp > 0 the mirror image (z -> -z, s -> 1 - s)
    is used. Away from d = 0, ``log1p(w)`` is taken from ``log w`` when w could overflow.
    """
    d, near, dn, df = _split(zp, zq)
    pos = zp > 0
    s = jax.nn.sigmoid(zp)
    w = s * jnp.expm1(dn)
    direct_near = log1pmx(w) + s * expm1mx(dn)
    log1p_w, _, _ = _log1p_w_far(zp, df)
    direct = jnp.where(near, direct_near, log1p_w - s * df)
    return jnp.where(pos, _mirror_kl(zp, zq, d, near, dn, divide_by_p=False), direct)


@jax.jit
def geometric_kl(zp: jax.Array, zq: jax.Array) -> jax.Array:
    """KL between geometric laws with success logits zp, zq: ``bernoulli_kl(zp, zq) / sigmoid(zp)``.

    (E[y] = (1 - p)/p, so KL = log(p/q) + (1 - p)/p log((1 - p)/(1 - q)) = KL_Bernoulli / p.)
    For zp <= 0 the division by s = sigmoid(zp) is done analytically: ``log1p(w)/s =
    expm1(d) log1p(w)/w`` and ``log1pmx(w)/s = expm1(d) log1pmx(w)/w``, so nothing overflows as
    p -> 0, where KL -> expm1mx(d).
    """
    d, near, dn, df = _split(zp, zq)
    pos = zp > 0
    s = jax.nn.sigmoid(zp)
    w = s * jnp.expm1(dn)
    direct_near = jnp.expm1(dn) * log1pmx_over_x(w) + expm1mx(dn)
    log1p_w, w_far, big = _log1p_w_far(zp, df)
    # big: log1p(w) / s with 1/s = 1 + e^(-zp) (overflows only when the KL itself does).
    zn = jnp.where(pos, jnp.zeros_like(zp), zp)
    over_s = jnp.where(big, log1p_w * (1 + jnp.exp(-zn)), jnp.expm1(df) * (1 + log1pmx_over_x(w_far)))
    direct = jnp.where(near, direct_near, over_s - df)
    return jnp.where(pos, _mirror_kl(zp, zq, d, near, dn, divide_by_p=True), direct)


def _split(zp, zq):
    """``d = zq - zp``, whether |d| <= 1, and d masked to each side (double where)."""
    d = zq - zp
    near = jnp.abs(d) <= 1
    dn = jnp.where(near, d, jnp.zeros_like(d))
    df = jnp.where(near, jnp.full_like(d, 2.0), d)
    return d, near, dn, df


def _log1p_w_far(zp, df):
    """``log1p(w)`` for w = sigmoid(zp) expm1(df), |df| > 1, from ``log|w|`` (no overflow of w).

    Returns ``(log1p(w), w where it is at most 1 (else 0), big = w > 1)``.
    """
    # log|expm1(d)| = d + log(1 - e^-d) for d > 0, log(1 - e^d) for d < 0
    log_one_minus = jnp.log(-jnp.expm1(-jnp.abs(df)))
    log_abs_expm1 = jnp.where(df > 0, df + log_one_minus, log_one_minus)
    log_abs_w = log_sigmoid(zp) + log_abs_expm1
    big = log_abs_w > 0  # only possible for df > 0: for df < 0, |w| < sigmoid(zp) < 1
    w = jnp.where(big, jnp.zeros_like(df), jnp.sign(df) * jnp.exp(jnp.minimum(log_abs_w, 0)))
    return jnp.where(big, jax.nn.softplus(log_abs_w), jnp.log1p(w)), w, big


def _mirror_kl(zp, zq, d, near, dn, *, divide_by_p: bool):
    """The zp > 0 forms, in terms of 1 - p = sigmoid(-zp): ``KL_Bernoulli`` or ``KL_Bernoulli / p``.

    ``KL = softplus(-zq) - softplus(-zp) + (1 - p) d``; near d = 0,
    ``log1pmx(w) + (1 - p) expm1mx(-d)`` with ``w = (1 - p) expm1(-d)``. p >= 1/2 here, so
    dividing by p is harmless.
    """
    pos = zp > 0
    zpp = jnp.where(pos, zp, jnp.ones_like(zp))
    one_minus_p = jax.nn.sigmoid(-zpp)
    near_kl = log1pmx(one_minus_p * jnp.expm1(-dn)) + one_minus_p * expm1mx(-dn)
    d_far = jnp.where(near, jnp.zeros_like(d), d)
    far_kl = jax.nn.softplus(-zq) - jax.nn.softplus(-zpp) + one_minus_p * d_far
    kl = jnp.where(near, near_kl, far_kl)
    return kl * (1 + jnp.exp(-zpp)) if divide_by_p else kl

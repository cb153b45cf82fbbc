"""Laplace: a real target given a location and a log-scale. Its NLL is (scaled) absolute error."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.closed_form import closed_form
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.types import LaplaceOutputArrays, LaplaceOutputs
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ls_.LOC_LOG_SCALE


def _value_and_partials(keep: int, loc: jax.Array, log_scale: jax.Array, y: jax.Array):
    """``log p = -|r| - log_scale - log 2``, ``r = (y - loc) / b``, and its partials (the class docstring).

    ``d log p / d loc = sign(r) / b``, ``d log p / d log_scale = |r| - 1``, ``d log p / d y = -sign(r) / b``:
    at the kink y = loc the subgradient ``sign(0) = 0``. ``|r|`` is written ``r sign(r)``, so that
    the derivative of the log_scale partial (a Hessian entry) takes the same subgradient there.
    """
    r, inv_scale = ls_.standardize(loc, log_scale, y)
    sign = jnp.sign(r)
    abs_r = r * sign  # |r| = r sign(r), whose derivative is sign(r): 0 at the kink
    d_loc = sign * inv_scale
    return ls_.with_terms(-abs_r, log_scale, numerics.LOG_2, keep), (d_loc, abs_r - 1, -d_loc)


# jax.grad, jacfwd and hessian of log_prob run through the closed-form partials (closed_form.py).
laplace_log_pdf = closed_form(_value_and_partials, num_static=1)


@dataclasses.dataclass(frozen=True)
class Laplace(_tails.SymmetricTails, ls_.FixedScaleUnpacking):
    r"""Laplace distribution of a real target.

    outputs: ``(loc, log_scale)``; with ``Laplace(scale=b)`` the scale is fixed and outputs is
    ``loc`` alone. targets: reals, broadcastable with the outputs.

    Density, with ``b = exp(log_scale)`` and ``r = (y - loc) / b``:
    ``log p(y) = -|r| - log_scale - log 2``. With the scale fixed at 1, ``-log p = |y - loc| + log 2``:
    the absolute error plus a constant, which is why least absolute deviations is maximum likelihood
    under Laplace noise (and its minimiser in loc is the median).

    Gradient. ``dr/dloc = -1/b`` and ``dr/dlog_scale = -r``, and ``d|r|/dr = sign(r)``, so
    ``d(-log p)/dloc = -sign(r) / b = sign(loc - y) / b`` and
    ``d(-log p)/dlog_scale = 1 - sign(r) r = 1 - |r|``.
    At y = loc, ``|r|`` has a kink: its subdifferential in loc is [-1/b, 1/b], and the closed form
    returns the subgradient ``sign(0) / b = 0``, the one of least norm (so a median of an odd
    number of points has gradient exactly 0). ``jax.grad`` (and ``jacfwd``, ``hessian``) of
    ``log_prob`` run through this closed form, so they take the same subgradient (autodiff of
    ``jnp.abs`` would give the one-sided +1 at 0); the targets are differentiable too
    (``d log p/dy = -sign(r) / b``).

    Fisher information in ``(loc, log_scale)``: ``diag(1/b^2, 1)``. Here the information is
    ``E[grad grad^T]``, not the expected Hessian of autodiff: ``sign(r)^2 = 1`` almost surely gives
    ``1/b^2``, ``E[(1 - |r|)^2] = 1 - 2 E|r| + E r^2 = 1 - 2 + 2 = 1``, and the cross term
    ``E[sign(r)(1 - |r|)] / b`` vanishes by symmetry. (The Hessian of ``|r|`` in loc is
    ``2 delta(y - loc) / b^2``, a point mass that autodiff sees as 0 almost everywhere; its
    expectation ``2 p(loc) / b = 1/b^2`` agrees.) With the scale fixed it is ``1/b^2``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.Laplace(scale=1.0)  # -log p = |y - loc| + log 2
      >>> float(-fam.log_prob(jnp.array(0.5), jnp.array(2.0)))
      2.193147...
    """

    _standard_tail = _tails.LAPLACE  # log_cdf and log_survival (_tails.SymmetricTails)

    scale: float | None = None

    # -- unpacking: ls_.FixedScaleUnpacking (validation, name, fixed outputs, _unpack, _unpack_with)

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: LaplaceOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log Laplace(y; loc, b)``, equal to scipy.stats.laplace.logpdf."""
        return self._real_log_prob(laplace_log_pdf, outputs, targets, ls_.ALL_TERMS)

    def log_prob_without_constants(self, outputs: LaplaceOutputs, targets: ArrayLike) -> jax.Array:
        """``log_prob - constant_terms``, the constants never added: ``-|r| - log_scale``, and exactly ``-|y - loc|`` for ``Laplace(scale=1)`` (what
        ``drop_constants=True`` uses)."""
        return self._real_log_prob(laplace_log_pdf, outputs, targets, ls_.without_constants(self.scale))

    def grad(self, outputs: LaplaceOutputs, targets: ArrayLike) -> LaplaceOutputArrays:
        """Closed form ``(-sign(r) / b, 1 - |r|)``, 0 in loc at y = loc; loc's alone if the scale is fixed."""
        return self._real_grad(_value_and_partials, outputs, targets)

    def params(self, outputs: LaplaceOutputs) -> dict[str, jax.Array]:
        return ls_.loc_and_scale(self._unpack(outputs))

    def mean(self, outputs: LaplaceOutputs) -> jax.Array:
        p = self._unpack(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LaplaceOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + b * e`` with e standard Laplace, shape ``sample_shape + batch``."""
        return self._shifted_and_scaled_sample(jax.random.laplace, key, outputs, sample_shape)

    def entropy(self, outputs: LaplaceOutputs) -> jax.Array:
        """``1 + log 2 + log_scale``."""
        p = self._unpack(outputs)
        return (p.log_scale + 1 + numerics.LOG_2).astype(p.dtype)

    def kl(self, outputs_p: LaplaceOutputs, outputs_q: LaplaceOutputs) -> jax.Array:
        """KL(p || q) as a sum of non-negative terms, accurate when p and q are close.

        With ``d = log b_p - log b_q``, ``delta = |mu_p - mu_q|`` and ``v = delta / b_p``:
        ``KL = log(b_q/b_p) + delta/b_q + (b_p/b_q) exp(-v) - 1``
        ``    = (e^d - 1 - d) + e^d (e^-v - 1 + v)`` (since delta/b_q = e^d v),
        two non-negative terms evaluated by ``expm1mx``, so a KL of 1e-12 is not lost to
        cancellation. For v > 1 the second form is rearranged to ``delta/b_q - 1 - d + e^(d - v)``,
        which cannot overflow through ``e^d`` when b_q is tiny relative to delta.
        """
        p, q, dtype = ls_.kl_pair("Laplace", self._unpack(outputs_p), self._unpack(outputs_q))
        d = p.log_scale - q.log_scale
        delta = jnp.abs(p.loc - q.loc)
        v = delta * jnp.exp(-p.log_scale)
        near = v <= 1
        vs = jnp.where(near, v, jnp.zeros_like(v))
        # e^d (e^-v - 1 + v): the product is taken as 0 where expm1mx(-v) = 0 even if e^d overflowed.
        exp_d = jnp.exp(jnp.where(near, d, jnp.zeros_like(d)))
        close = numerics.expm1mx(d) + numerics.mul_nonzero(numerics.expm1mx(-vs), exp_d)
        far = delta * jnp.exp(-q.log_scale) - 1 - d + jnp.exp(d - jnp.where(near, jnp.ones_like(v), v))
        return jnp.where(near, close, far).astype(dtype)

    def fisher(self, outputs: LaplaceOutputs) -> jax.Array:
        """``diag(1/b^2, 1)`` per example (shape [..., 2, 2]); ``1/b^2`` with a fixed scale."""
        p = self._unpack(outputs)
        entries = {("loc", "loc"): jnp.exp(-2 * p.log_scale),
                   ("log_scale", "log_scale"): jnp.ones_like(p.log_scale)}
        return ls_.fisher_matrix(entries, _NAMES, self._fixed, p.log_scale, p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log 2``, and ``-log(scale)`` if fixed.

        Dropping it from ``Laplace(scale=1)`` leaves exactly the absolute error.
        """
        const = -numerics.LOG_2 - (math.log(self.scale) if self.scale is not None else 0.0)
        return ls_.constant_like(targets, const, family=self._name)

    def score_nodes(self, outputs: LaplaceOutputs) -> tuple[jax.Array, jax.Array]:
        """A rule for ``E_y[f(y)]``: nodes ``loc -+ b t_k`` and weights ``w_k / 2``, ``[16, *batch]``.

        ``t_k, w_k`` is the 8-point Gauss-Laguerre rule, applied on each side of the kink, so the
        rule is exact for any f that is a polynomial of degree < 16 in ``|y - loc|`` on each side,
        e.g. every entry of ``grad grad^T``. Use it to check ``fisher`` as ``E[grad grad^T]``.

        It is deliberately not called ``expectation_nodes``: ``check_grad`` compares ``fisher`` with
        the expected autodiff Hessian over those, and autodiff misses the point mass of the
        Hessian of ``|y - loc|`` at ``y = loc`` (it would give 0 instead of ``1/b^2`` in loc).
        """
        # On each side of the kink, |y - loc| / b is Exponential(1), either side with mass 1/2.
        return ls_.two_sided_exponential_nodes(self._unpack(outputs), mass_above=0.5, mean_above=1.0, mean_below=1.0)

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> LaplaceOutputArrays:
        """Closed-form MLE: loc = the sample median, log_scale = log of the mean absolute deviation from it.

        ``sum |y_i - loc|`` is smallest at a median (any point between the two middle values when
        n is even; ``jnp.median`` takes their midpoint), and at that loc ``d/db`` of the NLL,
        ``n/b - sum |y_i - loc| / b^2``, vanishes at ``b = mean |y_i - loc|``.
        """
        y = validate.numeric_targets(targets, where="Laplace.mle targets")
        y = y.astype(numerics.accumulation_dtype(numerics.float_dtype(y)))
        loc = jnp.median(y, axis=axis)
        if self.scale is not None:
            return loc
        mad = jnp.mean(jnp.abs(y - jnp.expand_dims(loc, axis)), axis=axis)
        return loc, jnp.log(mad)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Rows of the check table: free scale, and ``scale=1`` (the L1 loss); log-scales of ±80,
        targets 1e30 away, and targets exactly at the kink y = loc."""
        return (
            Case("Laplace", cls(), _random, ls_.extreme_inputs,
                 scipy=ScipyReference(lambda o: _scipy_laplace(o[0], np.exp(o[1]))),
                 plain_log_prob=_plain_log_prob),
            Case("Laplace(scale=1.0)", cls(scale=1.0), _fixed_random, ls_.fixed_scale_extreme,
                 scipy=ScipyReference(lambda loc: _scipy_laplace(loc, 1.0)),
                 plain_log_prob=lambda loc, y: _plain_log_prob((loc, jnp.zeros_like(loc)), y)),
        )


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """``-|y - loc| / b - log(b) - log 2``: the textbook formula."""
    loc, log_scale = outputs
    return -jnp.abs(y - loc) / jnp.exp(log_scale) - log_scale - jnp.log(2.0)


def _scipy_laplace(loc, scale):
    import scipy.stats

    return scipy.stats.laplace(loc, scale)


# The check's finite differences move loc by 2h d (h = 1e-3, d a standard normal direction) and
# must not straddle the kink at y = loc, so the random targets are Laplace draws conditioned on
# |y - loc| >= 1e-2 (the kink itself is among the extreme inputs). |y - loc| is Exponential with mean b, which is memoryless: given
# |y - loc| >= g it is g + b E with E standard exponential, E = -log(1 - 2|v|) for v uniform on
# (-1/2, 1/2), and sign(v) picks the side.
_KINK_GAP = 1e-2


def _random_away_from_kink(scale: float | None):
    def random(key, dtype, n):
        u = ls_.open_uniforms(key, (3, n), dtype)
        loc, log_scale = ls_.standard_normal(u[0]), ls_.standard_normal(u[1])
        b = jnp.exp(log_scale) if scale is None else scale
        v = u[2] - 0.5
        y = loc + jnp.sign(v) * (_KINK_GAP - b * jnp.log1p(-2 * jnp.abs(v)))
        return ((loc, log_scale) if scale is None else loc), y

    return random


_random = _random_away_from_kink(None)
_fixed_random = _random_away_from_kink(1.0)

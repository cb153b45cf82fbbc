"""LowRankMultivariateNormal: a real vector target whose covariance is low rank plus diagonal."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.types import LowRankMultivariateNormalOutputArrays, LowRankMultivariateNormalOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

_FAMILY = "LowRankMultivariateNormal"
_NAMES = ("loc", "cov_factor", "log_cov_diag")
_EVENT_NDIMS = {"loc": 1, "cov_factor": 2, "log_cov_diag": 1}
# Gauss-Hermite rule per axis of the standard normals behind y (r + d of them): 2 nodes are exact
# for polynomials of degree < 4, and the NLL's Hessian in the outputs is of degree 2 in y.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(2)


def _eye(n: int, ndim: int, dtype) -> jax.Array:
    return jnp.eye(n, dtype=dtype).reshape((1,) * (ndim - 2) + (n, n))


def _mT(x: jax.Array) -> jax.Array:
    return jnp.swapaxes(x, -1, -2)


def _stiffness_floor(W: jax.Array, log_diag: jax.Array) -> jax.Array:
    """``max(log_cov_diag_i, log(tau |W_i|^2))`` with ``tau = 16 (d + r) / max`` (``max`` the
    dtype's largest finite number).

    The floor keeps every row of ``Wh = D^{-1/2} W`` at most ``B = sqrt(max / (16 (d + r)))`` long,
    so that every sum of squares of the QR below (``d + r`` entries, each at most ``B^2``) and every
    reflection coefficient stays a normal number: nothing overflows however small (``e^-1e4``, 0) or
    large (``W = 3e38``) the inputs. Above the floor nothing is changed: the row-pivoted QR is
    accurate for rows of any length up to B (Cox and Higham), and the value and its partials are
    those of the variances given. Below it (``D_i < tau |W_i|^2``: about ``e^-79 |W_i|^2`` in
    float32, ``e^-700 |W_i|^2`` in float64, the last few nats above the smallest normal variance) the
    variance is raised to the floor: a change of at most ``tau Sigma_ii`` in ``Sigma_ii >= |W_i|^2``,
    harmless where at most r coordinates are that stiff (``log p`` then has a finite limit as
    ``D_i -> 0``), but not where more than r are (``log det Sigma`` goes to ``-inf`` with them; the
    sweep keeps that as a KNOWN failure). ``log|W_i|^2`` is ``2 log m + log sum (W/m)^2`` with
    ``m = max_j |W_ij|`` (no overflow of the squares); a zero row has no floor.
    """
    d, r = W.shape[-2:]
    m = jnp.max(jnp.abs(W), -1)
    nonzero = m > 0
    m_safe = jnp.where(nonzero, m, jnp.ones_like(m))  # double where: no log 0 in the derivatives
    root = jnp.sqrt(m_safe)[..., None]
    scaled = (W / root) / root  # twice by sqrt m: 1/m is subnormal past 2^126 (flushed to 0)
    log_norm2 = 2 * jnp.log(m_safe) + jnp.log(jnp.sum(jnp.square(scaled), -1))
    log_tau = math.log(16.0 * (d + r)) - math.log(float(jnp.finfo(W.dtype).max))
    floor = jnp.where(nonzero, log_norm2 + log_tau, jnp.full_like(m, -jnp.inf))
    return jnp.maximum(log_diag, floor)


class _Capacitance:
    """The Householder QR of ``A = [Wh; I_r]`` ((d + r) x r, with row pivoting) and the lower
    triangular ``C = R^T`` (signs fixed) of the capacitance ``K = I_r + Wh^T Wh = A^T A = C C^T``, from
    which every quantity of the class docstring is an O(d r^2) product.

    ``Wh = D^{-1/2} W`` [..., d, r]; ``log det Sigma = sum log_cov_diag + 2 sum log C_jj``. K is never
    formed: its Cholesky factor would square the condition number of A (a row of Wh of length
    1/sqrt(eps), a variance 1/eps below the factor, loses K's small direction), while the
    reflections are orthogonal. Row pivoting (each reflection maps its column onto the longest
    remaining row, Cox and Higham's row-wise stable Householder QR) keeps rows of Wh of any length
    up to the overflow bound B (``_stiffness_floor``) from swamping the ordinary rows and the identity block.
    ``|C_jj| >= 1`` (A's singular values are >= 1), so nothing divides by 0. ``C^{-1}`` (r x r, by
    one triangular solve against the identity) is applied by matmul: XLA:CPU's triangular solve
    against d right-hand sides ran 1000x slower than the matmul at d = 1024, r = 8.
    """

    def __init__(self, W: jax.Array, log_diag: jax.Array, inv: ls_.InverseScale):
        d, r = W.shape[-2:]
        n = d + r
        self.inv_sd = jnp.minimum(inv.main * inv.power_of_two, jnp.finfo(W.dtype).max)
        self.Wh = (W * inv.main[..., :, None]) * inv.power_of_two[..., :, None]
        eye = jnp.broadcast_to(_eye(r, W.ndim, W.dtype), W.shape[:-2] + (r, r))
        cols = list(jnp.moveaxis(jnp.concatenate([self.Wh, eye], -2), -1, 0))  # r columns [..., n]
        rows = jnp.arange(n).reshape((1,) * (W.ndim - 2) + (n,))
        active = jnp.ones(W.shape[:-2] + (n,), bool)
        zero = jnp.zeros((), W.dtype)
        self._reflectors = []
        self._pivots = []
        R = []
        for k in range(r):
            x = jnp.where(active, cols[k], zero)
            pivot = rows == jnp.argmax(jnp.abs(x), -1)[..., None]  # the longest remaining row
            x_p = jnp.sum(jnp.where(pivot, x, zero), -1)
            norm = jnp.sqrt(jnp.sum(jnp.square(x), -1))  # >= 1, and <= sqrt(n)/eps: no overflow
            sign = jnp.where(x_p < 0, -jnp.ones_like(x_p), jnp.ones_like(x_p))
            v = x + jnp.where(pivot, (sign * norm)[..., None], zero)  # H x = -sign |x| e_p
            beta = 1 / (norm * (norm + jnp.abs(x_p)))  # 2 / |v|^2 = 1 / (|x| (|x| + |x_p|)), exact
            row = [jnp.zeros_like(norm)] * k + [norm]  # R's row k times -sign: R_kk = |x| > 0
            for j in range(k + 1, r):
                cols[j] = cols[j] - v * (beta * jnp.sum(v * cols[j], -1))[..., None]
                row.append(-sign * jnp.sum(jnp.where(pivot, cols[j], zero), -1))
            R.append(jnp.stack(row, -1))
            self._reflectors.append((v, beta))
            self._pivots.append((pivot, sign))
            active = active & ~pivot
        self._active = active
        self.C = _mT(jnp.stack(R, -2))  # R^T: C C^T = R^T R = A^T A = K
        self.C_inv = solve_triangular(self.C, eye, lower=True)
        # halved before the sum: two log-variances of 3e38 give a float32 log p of -3e38, not -inf
        self.half_log_det = (jnp.sum(0.5 * log_diag, axis=-1)
                             + jnp.sum(jnp.log(jnp.diagonal(self.C, axis1=-2, axis2=-1)), -1))
        self.log_det = 2 * self.half_log_det

    def ridge(self, res: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(u, e)``: the minimiser ``u = K^{-1} Wh^T res`` of ``|res - Wh u|^2 + |u|^2`` and
        ``e = res - Wh u``, for a scaled residual ``res [..., d]``; ``res^T (I + Wh Wh^T)^{-1} res =
        |e|^2 + |u|^2`` (a sum of squares: nothing cancels).

        Both are read off the least-squares residual ``[res; 0] - A u = [e; -u] = Q Z Q^T [res; 0]``
        (``Z`` zeroes the pivot rows): the reflections applied forth and back, never ``res - Wh u``,
        which cancels where a row of Wh is long. ``res`` is scaled by its largest entry first (a
        linear scaling, undone after), so ``v^T res`` does not overflow at ``res = 3e38``; a ``res`` beyond
        the dtype (``inf``) has ``u`` beyond it too (``|Wh| <= B``), so ``|e|^2 + |u|^2 = inf``.
        """
        d = res.shape[-1]
        r = len(self._reflectors)
        big = jnp.max(jnp.abs(res), -1)
        # |v| <= sqrt(max)/2 (the floor's bound B), so v^T z stays finite while max |z| <= T; only a
        # larger res is scaled down to T (to 1 it would push the tiny residuals of stiff rows,
        # ~1e-19 in float32, below the normal range, where XLA:CPU flushes them to 0)
        n = d + r
        limit = math.sqrt(float(jnp.finfo(res.dtype).max)) / (2 * math.sqrt(n))
        over = (big > limit) & jnp.isfinite(big)
        # divided twice by sqrt(max |res| / T): 1 / that is subnormal past 2^126 (flushed to 0)
        scale = jnp.sqrt(jnp.where(over, big / limit, jnp.ones_like(big)))[..., None]
        z = jnp.concatenate([(res / scale) / scale, jnp.zeros(res.shape[:-1] + (r,), res.dtype)], -1)
        for v, beta in self._reflectors:  # Q^T b = H_{r-1} ... H_0 b
            z = z - v * (beta * jnp.sum(v * z, -1))[..., None]
        z = jnp.where(self._active, z, jnp.zeros((), z.dtype))
        for v, beta in reversed(self._reflectors):  # Q Z Q^T b = H_0 ... H_{r-1} (Z Q^T b)
            z = z - v * (beta * jnp.sum(v * z, -1))[..., None]
        z = (z * scale) * scale
        return -z[..., d:], z[..., :d]

    def complement(self) -> jax.Array:
        """``Q = (I + Wh Wh^T)^{-1} = I - Wh K^{-1} Wh^T`` [..., d, d] (``Sigma^{-1} = D^{-1/2} Q D^{-1/2}``),
        column k the ridge residual ``e`` of the unit vector ``e_k``: read off the reflections, so a
        stiff row's ``Q_ii = D_i (Sigma^{-1})_ii`` keeps its relative accuracy where ``1 - h_i``
        would cancel to an absolute eps (and ``D_i^{-1} Q_ii`` to garbage)."""
        d = self.Wh.shape[-2]
        return self.residuals(jnp.broadcast_to(_eye(d, self.Wh.ndim, self.Wh.dtype), self.Wh.shape[:-2] + (d, d)))

    def residuals(self, b: jax.Array) -> jax.Array:
        """``(I + Wh Wh^T)^{-1} b`` for ``b [..., d, m]``: ``ridge``'s residual ``e``, column by column."""
        return jax.vmap(lambda column: self.ridge(column)[1], in_axes=-1, out_axes=-1)(b)

    def scaled_gain(self) -> jax.Array:
        """``M = Wh K^{-1}`` [..., d, r] (``Sigma^{-1} W = D^{-1/2} M``) as ``Q_top C^{-1}``: with the thin
        QR ``[Wh; I] = Q R`` and ``C = R^T``, ``Wh K^{-1} = Q_top R R^{-1} R^{-T} = Q_top C^{-1}``. Q's
        columns (the reflections applied to the pivot rows' unit vectors) have entries of at most 1,
        and ``C^{-1}`` has the small entries ~1/|Wh_i| of a long row by its triangular solve, so a
        stiff row's M_ij ~ 1/|Wh_i| keeps its relative accuracy; ``Wh C^{-T} C^{-1}`` carries an
        absolute error of eps |Wh_i| there (``D^{-1/2} M`` then eps |Wh_i|^2: the cov_factor
        gradient 5x off at a variance of e^-88.7 under a factor row of order 1, measured)."""
        d = self.Wh.shape[-2]
        zero = jnp.zeros((), self.Wh.dtype)
        # R's row k sits at pivot row p_k times -sign_k: Q's columns start as those unit vectors [..., n, r]
        Z = jnp.stack([jnp.where(pivot, -sign[..., None], zero) for pivot, sign in self._pivots], -1)
        for v, beta in reversed(self._reflectors):  # Q = H_0 ... H_{r-1}, on all r columns at once
            Z = Z - v[..., :, None] * (beta[..., None] * jnp.sum(v[..., :, None] * Z, -2))[..., None, :]
        return jnp.matmul(Z[..., :d, :], self.C_inv)


def _value_and_partials(loc, W, log_diag, y):
    """``log p(y)`` and its partials in ``(loc, cov_factor, log_cov_diag, y)`` (see the class)."""
    d = loc.shape[-1]
    cap, floored = _floored_capacitance(W, log_diag)
    res, _ = ls_.standardize(loc, 0.5 * floored, y)  # D^{-1/2} (y - loc), range-reduced
    inv = ls_.inverse_scale(0.5 * floored)
    u, e = cap.ridge(res)
    mahalanobis = jnp.sum(jnp.square(e), -1) + jnp.sum(jnp.square(u), -1)
    # |res| beyond the dtype: |u| >= |res| / (1 + |Wh|) is too (|Wh| <= B), so the quadratic form is
    mahalanobis = jnp.where(jnp.any(jnp.isinf(res), -1), jnp.full_like(mahalanobis, jnp.inf), mahalanobis)
    value = -0.5 * mahalanobis - cap.half_log_det - d * numerics.HALF_LOG_2PI
    # A residual beyond the dtype (mahalanobis = inf) is -inf whatever log det is (inf - inf otherwise).
    value = jnp.where(mahalanobis == jnp.inf, jnp.full_like(value, -jnp.inf), value)
    w = inv.times(e)  # Sigma^{-1} (y - loc) = D^{-1/2} e
    M = cap.scaled_gain()
    leverage = jnp.sum(M * cap.Wh, -1)  # h_i = (Wh K^{-1} Wh^T)_ii = 1 - D_i (Sigma^{-1})_ii
    d_W = (e[..., :, None] * u[..., None, :] - M) * inv.main[..., :, None] * inv.power_of_two[..., :, None]
    # D_i ((Sigma^{-1})_ii - w_i^2) has a finite limit as D_i -> 0: at a floored variance the factor
    # D_i / D_floor = exp(l - floor) carries it to the variance given (0 at D_i = 0).
    d_log_diag = 0.5 * (jnp.square(e) - (1 - leverage)) * jnp.exp(log_diag - floored)
    return value, (w, d_W, d_log_diag, -w)


# log N(y; loc, W W^T + diag(exp(log_cov_diag))), differentiated by its closed-form partials.
low_rank_mvn_log_pdf = closed_form(_value_and_partials)


def _params(outputs, family: str = _FAMILY) -> unpack.Params:
    """``loc [..., d]``, ``cov_factor [..., d, r]``, ``log_cov_diag [..., d]`` by name, broadcast."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, event_ndims=_EVENT_NDIMS)
    d = p.loc.shape[-1]
    if p.cov_factor.shape[-2] != d or p.log_cov_diag.shape[-1] != d:
        raise ValueError(
            f"{family} outputs must be (loc [..., d], cov_factor [..., d, r], log_cov_diag [..., d]) with one d; "
            f"got shapes {jnp.shape(outputs[0])}, {jnp.shape(outputs[1])}, {jnp.shape(outputs[2])}."
        )
    return p


def _params_and_targets(outputs, targets) -> tuple[unpack.Params, jax.Array]:
    p = _params(outputs)
    y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
    d = p.loc.shape[-1]
    if y.ndim < 1 or y.shape[-1] != d:
        raise ValueError(f"{_FAMILY} targets must have shape [..., d] with d = {d} as in loc shape "
                         f"{jnp.shape(outputs[0])}; got shape {y.shape}.")
    return unpack.with_targets(p, y, family=_FAMILY, event_ndim=1)


def _floored_capacitance(W: jax.Array, log_diag: jax.Array) -> tuple[_Capacitance, jax.Array]:
    """The capacitance at the variances raised to ``_stiffness_floor``, and those log-variances."""
    floored = _stiffness_floor(W, log_diag)
    return _Capacitance(W, floored, ls_.inverse_scale(0.5 * floored)), floored


@dataclasses.dataclass(frozen=True)
class LowRankMultivariateNormal:
    r"""Multivariate normal distribution whose covariance is low rank plus diagonal.

    outputs: ``(loc [..., d], cov_factor [..., d, r], log_cov_diag [..., d])``; the covariance is
    ``Sigma = W W^T + D`` with ``W = cov_factor`` and ``D = diag(exp(log_cov_diag))`` (any real
    outputs give a valid covariance). targets: vectors ``[..., d]``; a target with an infinite or
    NaN coordinate gives ``-inf`` and NaN derivatives. The d x d covariance is never formed:
    everything below costs O(d r^2) per example (``fisher``, d^2 r^2 numbers, excepted).

    Density. Scale by ``D^{-1/2}``: ``Wh = D^{-1/2} W``, ``res = D^{-1/2} (y - loc)`` (range-reduced
    as the location-scale families do), and ``K = I_r + Wh^T Wh = C C^T`` (the capacitance matrix,
    r x r; C = R^T from the row-pivoted Householder QR of ``[Wh; I_r]``, never from a Cholesky of K,
    which squares the condition number: see ``_Capacitance``). The matrix determinant lemma gives
    ``log det Sigma = sum_i log_cov_diag_i + 2 sum_j log C_jj``, and Woodbury
    ``(I + Wh Wh^T)^{-1} = I - Wh K^{-1} Wh^T``. The Mahalanobis term is evaluated as the minimum of
    a ridge regression, ``res^T (I + Wh Wh^T)^{-1} res = |e|^2 + |u|^2`` with ``u = K^{-1} Wh^T res``
    and ``e = res - Wh u``: a sum of squares, where the textbook ``|res|^2 - |C^{-1} Wh^T res|^2``
    cancels (to a relative error of eps times the squared singular values of Wh). Then
    ``log p = -(|e|^2 + |u|^2)/2 - log det Sigma / 2 - d log(2 pi)/2``, equal to scipy's
    ``multivariate_normal(loc, W W^T + D).logpdf``.

    Gradient. ``w = Sigma^{-1} (y - loc) = D^{-1/2} e``; ``d(-log p)/dloc = -w`` and
    ``d(-log p)/dy = w``; ``d(-log p)/dSigma = (Sigma^{-1} - w w^T)/2``, so
    ``d(-log p)/dW = Sigma^{-1} W - w w^T W = D^{-1/2} (M - e u^T)`` with ``M = Wh K^{-1}`` (since
    ``Sigma^{-1} W = D^{-1/2} Wh K^{-1}`` and ``Wh^T e = u``), and
    ``d(-log p)/dlog_cov_diag_i = D_i ((Sigma^{-1})_ii - w_i^2)/2 = (1 - h_i - e_i^2)/2`` with the
    leverage ``h_i = (Wh K^{-1} Wh^T)_ii = sum_j M_ij Wh_ij`` in [0, 1). (``1 - h_i`` cancels where
    a direction of W dominates coordinate i; its natural scale ``sqrt(F_ii)`` is ``(1 - h_i)/sqrt 2``,
    and its absolute error is eps.) ``jax.grad``, ``jacfwd`` and ``hessian`` of ``log_prob`` run
    through these partials (a ``closed_form`` custom_jvp).

    Fisher information ``F_ab = tr(Sigma^{-1} Sigma_a Sigma^{-1} Sigma_b)/2`` for the covariance
    outputs, ``Sigma^{-1}`` for loc, 0 between them. With ``Q = I - G G^T`` (``G = Wh C^{-T}``, so
    ``Sigma^{-1} = D^{-1/2} Q D^{-1/2}``), ``M`` as above and ``B = W^T Sigma^{-1} W = M^T Wh`` (``= I - K^{-1}``, which cancels for a small column):
    ``F[W_ij, W_kl] = s_i s_k (M_il M_kj + Q_ik B_jl)``, ``F[W_ij, l_k] = s_i Q_ik M_kj`` and
    ``F[l_i, l_k] = Q_ik^2 / 2``, ``s = D^{-1/2}``, ``l = log_cov_diag``. ``Q`` and ``M`` are taken
    column by column as ridge residuals (of unit vectors, of Wh's columns), so a coordinate whose
    variance is far below its factor row keeps ``s_i M_il`` and ``s_i Q_ik s_k`` accurate. The result is
    ``[..., P, P]``, ``P = d + d r + d`` (loc, cov_factor row-major, log_cov_diag).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.LowRankMultivariateNormal()
      >>> loc, W, log_diag = jnp.zeros(2), jnp.zeros((2, 1)), jnp.zeros(2)  # Sigma = I
      >>> round(float(fam.log_prob((loc, W, log_diag), jnp.array([1.0, 0.0]))), 6)
      -2.337877
    """

    def log_prob(self, outputs: LowRankMultivariateNormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log N(y; loc, W W^T + D)`` (every constant), equal to scipy's logpdf."""
        p, y = _params_and_targets(outputs, targets)
        finite = jnp.all(jnp.isfinite(y), axis=-1)
        ys = jnp.where(finite[..., None], y, p.loc)  # double where: the closed form sees y = loc there
        lp = low_rank_mvn_log_pdf(p.loc, p.cov_factor, p.log_cov_diag, ys)
        return minus_inf_off_support(lp, finite).astype(p.dtype)

    def grad(self, outputs: LowRankMultivariateNormalOutputs, targets: ArrayLike) -> LowRankMultivariateNormalOutputArrays:
        """Closed form ``(-w, D^{-1/2} (M - e u^T), (1 - h - e^2)/2)`` (see the class; NaN for a target
        off the support)."""
        p, y = _params_and_targets(outputs, targets)
        finite = jnp.all(jnp.isfinite(y), axis=-1)
        _, (d_loc, d_W, d_l, _) = _value_and_partials(p.loc, p.cov_factor, p.log_cov_diag, y)
        nan_off = lambda g: jnp.where(numerics.expand_to(finite, g.ndim), -g, jnp.nan).astype(p.dtype)  # noqa: E731
        return nan_off(d_loc), nan_off(d_W), nan_off(d_l)

    def params(self, outputs: LowRankMultivariateNormalOutputs) -> dict[str, jax.Array]:
        """``{"loc", "cov_factor", "cov_diag"}`` (``exp(log_cov_diag)``); the covariance is
        ``cov_factor @ cov_factor.T + diag(cov_diag)``, not formed here (d x d)."""
        p = _params(outputs)
        out = {"loc": p.loc, "cov_factor": p.cov_factor, "cov_diag": jnp.exp(p.log_cov_diag)}
        return {name: value.astype(p.dtype) for name, value in out.items()}

    def mean(self, outputs: LowRankMultivariateNormalOutputs) -> jax.Array:
        p = _params(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: LowRankMultivariateNormalOutputs, *,
               sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + W eps_r + exp(log_cov_diag / 2) eps_d`` with standard normals ``eps``; shape
        ``sample_shape + batch + (d,)``."""
        p = _params(outputs)
        d, r = p.cov_factor.shape[-2:]
        shape = tuple(sample_shape) + p.batch_shape
        eps = jax.random.normal(key, shape + (r + d,), dtype=p.loc.dtype)
        W = jnp.broadcast_to(p.cov_factor, shape + (d, r))
        low_rank = jnp.matmul(W, eps[..., :r, None])[..., 0]
        loc, log_diag = (jnp.broadcast_to(x, shape + (d,)) for x in (p.loc, p.log_cov_diag))
        return (loc + low_rank + jnp.exp(0.5 * log_diag) * eps[..., r:]).astype(p.dtype)

    def entropy(self, outputs: LowRankMultivariateNormalOutputs) -> jax.Array:
        """``d (1 + log(2 pi)) / 2 + log det Sigma / 2`` (the determinant lemma)."""
        p = _params(outputs)
        d = p.loc.shape[-1]
        return (d * (0.5 + numerics.HALF_LOG_2PI) + _floored_capacitance(p.cov_factor, p.log_cov_diag)[0].half_log_det).astype(p.dtype)

    def kl(self, outputs_p: LowRankMultivariateNormalOutputs, outputs_q: LowRankMultivariateNormalOutputs) -> jax.Array:
        """KL(p || q) in O(d r_p r_q + d r_q^2), without forming either covariance.

        ``KL = (tr(Sigma_q^{-1} Sigma_p) + m^T Sigma_q^{-1} m - d + log det Sigma_q - log det Sigma_p)/2``,
        ``m = loc_p - loc_q``. In q's scaling (``s = D_q^{-1/2}``, ``V = s W_p``, ``rho = D_p / D_q``):
        ``tr(Sigma_q^{-1} Sigma_p) = sum_j V_j^T (I + Wh_q Wh_q^T)^{-1} V_j + sum_i rho_i (1 - h_q,i)``
        (each quadratic form a ridge minimum, ``log_prob``'s sum of squares); the
        diagonal terms enter as ``sum_i (rho_i - 1 - log rho_i) = sum expm1mx(l_p - l_q)`` (no
        cancellation), the Mahalanobis term as a sum of squares (``log_prob``'s). The terms cancel to an
        absolute error of eps times ``tr(K)`` when p and q are close.
        """
        p = _params(outputs_p, f"{_FAMILY}.kl outputs_p")
        q = _params(outputs_q, f"{_FAMILY}.kl outputs_q")
        if p.loc.shape[-1] != q.loc.shape[-1]:
            raise ValueError(f"{_FAMILY}.kl: outputs_p has d = {p.loc.shape[-1]}, outputs_q has d = {q.loc.shape[-1]}.")
        batch = validate.broadcast_shapes(f"{_FAMILY}.kl", [("outputs_p (batch)", p.batch_shape),
                                                            ("outputs_q (batch)", q.batch_shape)])
        dtype = numerics.float_dtype(p, q)
        arrays, _ = numerics.upcast(p.loc, p.cov_factor, p.log_cov_diag, q.loc, q.cov_factor, q.log_cov_diag)
        loc_p, W_p, l_p, loc_q, W_q, l_q = (
            jnp.broadcast_to(a, batch + a.shape[a.ndim - _EVENT_NDIMS[n]:])
            for a, n in zip(arrays, _NAMES * 2))
        # both at the variances raised to the overflow floor, as log_prob's (each D_i far below
        # |W_i|^2 / B^2 moves by a relative tau; see _stiffness_floor)
        cap_q, l_q = _floored_capacitance(W_q, l_q)
        cap_p, l_p = _floored_capacitance(W_p, l_p)
        m, _ = ls_.standardize(loc_q, 0.5 * l_q, loc_p)
        u, e = cap_q.ridge(m)
        mahalanobis = jnp.sum(jnp.square(e), -1) + jnp.sum(jnp.square(u), -1)
        V = W_p * cap_q.inv_sd[..., :, None]
        # tr(W_p^T Sigma_q^{-1} W_p) = sum_j V_j^T (I + Wh_q Wh_q^T)^{-1} V_j, each a ridge minimum
        # |e|^2 + |u|^2 (a sum of squares, where |V|^2 - |C_q^{-1} Wh_q^T V|^2 cancels)
        def quadratic(column):
            u_j, e_j = cap_q.ridge(column)
            return jnp.sum(jnp.square(e_j), -1) + jnp.sum(jnp.square(u_j), -1)
        leverage = jnp.sum(cap_q.scaled_gain() * cap_q.Wh, -1)
        rho = jnp.exp(l_p - l_q)
        low_rank = jnp.sum(jax.vmap(quadratic, in_axes=-1, out_axes=-1)(V), -1) - jnp.sum(rho * leverage, -1)
        log_det_capacitances = cap_q.log_det - jnp.sum(l_q, -1) - (cap_p.log_det - jnp.sum(l_p, -1))
        diagonal = jnp.sum(numerics.expm1mx(l_p - l_q), -1)
        return (0.5 * (diagonal + low_rank + mahalanobis + log_det_capacitances)).astype(dtype)

    def fisher(self, outputs: LowRankMultivariateNormalOutputs) -> jax.Array:
        """The closed form above, ``[..., P, P]`` with ``P = d + d r + d``."""
        p = _params(outputs)
        cap, floored = _floored_capacitance(p.cov_factor, p.log_cov_diag)
        # d/dl_i at a floored variance: D_i / D_floor times the floored model's (log_prob's rule)
        ratio = jnp.exp(p.log_cov_diag - floored)
        d, r = p.cov_factor.shape[-2:]
        s = cap.inv_sd
        Q = cap.complement()
        # Sigma^{-1} W = D^{-1/2} M and Sigma^{-1} = D^{-1/2} Q D^{-1/2}, each column a ridge residual
        # (of Wh's columns, of s_k e_k), read off the reflections: where a stiff row's s_i is ~B
        # its entries of M and Q are ~1/B to their own relative accuracy, so the products stay
        # finite and right (Wh K^{-1} by C^{-1} would carry an absolute error of eps B there)
        S_W = s[..., :, None] * cap.scaled_gain()  # Sigma^{-1} W [..., d, r]
        precision = s[..., :, None] * cap.residuals(s[..., :, None] * _eye(d, cap.Wh.ndim, cap.Wh.dtype))
        B = jnp.matmul(_mT(S_W), p.cov_factor)  # W^T Sigma^{-1} W = I - K^{-1}, with nothing subtracted
        ww = (S_W[..., :, None, None, :] * _mT(S_W)[..., None, :, :, None]  # at [i, j, k, l]: (S^-1 W)_il (S^-1 W)_kj
              + precision[..., :, None, :, None] * B[..., None, :, None, :])  # + (S^-1)_ik B_jl
        ww = ww.reshape(p.batch_shape + (d * r, d * r))
        # F[W_ij, l_k] = (S^-1)_ik (S^-1 W)_kj D_k (the variance given: a floored one enters as D_k)
        diag = jnp.exp(p.log_cov_diag)
        wl = precision[..., :, None, :] * (_mT(S_W) * diag[..., None, :])[..., None, :, :]
        wl = wl.reshape(p.batch_shape + (d * r, d))
        ll = 0.5 * jnp.square(Q) * ratio[..., :, None] * ratio[..., None, :]
        batch = p.batch_shape
        zeros_lw = jnp.zeros(batch + (d, d * r), Q.dtype)
        zeros_ll = jnp.zeros(batch + (d, d), Q.dtype)
        rows = [
            jnp.concatenate([precision, zeros_lw, zeros_ll], -1),
            jnp.concatenate([_mT(zeros_lw), ww, wl], -1),
            jnp.concatenate([zeros_ll, _mT(wl), ll], -1),
        ]
        return jnp.concatenate(rows, -2).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-d log(2 pi) / 2``, shape ``targets.shape[:-1]``."""
        y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
        if y.ndim < 1:
            raise ValueError(f"{_FAMILY} targets must have shape [..., d]; got shape {y.shape}.")
        return jnp.full(y.shape[:-1], -y.shape[-1] * numerics.HALF_LOG_2PI,
                        numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: LowRankMultivariateNormalOutputs) -> tuple[jax.Array, jax.Array]:
        """Product Gauss-Hermite rule over the r + d standard normals behind y: nodes
        ``loc + sqrt(2) (W x_r + exp(l/2) x_d)``, ``[2^(r+d), *batch, d]``; exact for the expected
        Hessian (degree 2 in y)."""
        p = _params(outputs)
        d, r = p.cov_factor.shape[-2:]
        grid = np.array(list(itertools.product(_GH_NODES, repeat=r + d)))  # [n, r + d]
        weights = np.prod(np.array(list(itertools.product(_GH_WEIGHTS, repeat=r + d))), -1) / math.pi ** ((r + d) / 2)
        x = jnp.asarray(math.sqrt(2.0) * grid, p.loc.dtype).reshape((-1,) + (1,) * len(p.batch_shape) + (r + d,))
        low_rank = jnp.sum(p.cov_factor[None] * x[..., None, :r], -1)
        nodes = p.loc[None] + low_rank + jnp.exp(0.5 * p.log_cov_diag)[None] * x[..., r:]
        w = jnp.asarray(weights, p.loc.dtype).reshape((-1,) + (1,) * len(p.batch_shape))
        return nodes, jnp.broadcast_to(w, (len(grid),) + p.batch_shape)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: d = 3, r = 2; variances e^(+-160) (e^(+-60) in float32), tiny,
        huge and mixed in one example, a factor that dominates the diagonal (leverages up to 0.95),
        collinear columns and a zero factor among the extremes."""
        return (Case(_FAMILY, cls(), _random, _extreme,
                     scipy=ScipyReference(_scipy_multivariate_normal, per_example=True),
                     plain_log_prob=_plain_log_prob),)


# -- check cases: d = 3, r = 2 ----------------------------------------------------------------------

_D, _R = 3, 2


def _plain_log_pdf(loc, W, log_diag, y):
    """One example: the dense covariance, its solve and log-determinant (what a user would write)."""
    sigma = W @ W.T + jnp.diag(jnp.exp(log_diag))
    r = y - loc
    _, log_det = jnp.linalg.slogdet(sigma)
    return -0.5 * r @ jnp.linalg.solve(sigma, r) - 0.5 * log_det - r.shape[-1] * 0.5 * jnp.log(2 * jnp.pi)


def _plain_log_prob(outputs, y):
    loc, W, log_diag = outputs
    return jax.vmap(_plain_log_pdf)(loc, W, log_diag, y)


def _scipy_multivariate_normal(outputs):
    import scipy.stats

    loc, W, log_diag = outputs
    return scipy.stats.multivariate_normal(loc, W @ W.T + np.diag(np.exp(log_diag)))


def _random(key, dtype, n):
    """Locations N(0, 1), factors 0.7 N(0, 1), log-variances 0.5 N(0, 1); targets drawn from the model."""
    z = draws.box_muller(draws.uniform_rows(key, (n, 2 * _D + _D * _R + _R + _D + 1)))
    loc = z[:, :_D]
    W = 0.7 * z[:, _D:_D + _D * _R].reshape(n, _D, _R)
    log_diag = 0.5 * z[:, _D + _D * _R:2 * _D + _D * _R]
    noise = z[:, 2 * _D + _D * _R:2 * _D + _D * _R + _R + _D]
    y = loc + jnp.einsum("nij,nj->ni", W, noise[:, :_R]) + jnp.exp(0.5 * log_diag) * noise[:, _R:]
    return (loc.astype(dtype), W.astype(dtype), log_diag.astype(dtype)), y.astype(dtype)


def _extreme(dtype):
    """Tiny, huge and mixed variances, each coordinate's row of W and location on its own scale
    (as MultivariateNormal's extremes: a 1e-35 deviation on an O(1) location is lost to rounding);
    a factor 10 times the diagonal's scale, collinear columns, and a zero factor."""
    big = 160.0 if np.dtype(dtype) == np.float64 else 60.0
    log_diag = np.array([[-big] * _D, [big] * _D, [-big, 0.0, big], [0.0] * _D, [0.0] * _D, [0.0] * _D])
    sd = np.exp(0.5 * log_diag)
    shape = np.array([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.4]])
    W = sd[:, :, None] * shape[None]
    W[3] = 2.0 * shape  # the factor dominates the diagonal (leverages up to 0.95: see the class docstring)
    W[4] = np.array([[1.0, 2.0], [-1.0, -2.0], [0.5, 1.0]])  # collinear columns (K still invertible)
    W[5] = 0.0
    u = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [-2.0, 0.1, 1.5], [0.8, -0.4, 0.2], [3.0, -3.0, 0.0],
                  [0.0, 0.0, 0.0]])
    loc = sd * np.array([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5], [1.0, -1.0, 2.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0],
                         [2.0, 0.0, -1.0]])
    v = np.array([[0.5, -1.0], [1.0, 0.2], [-0.3, 0.7], [1e-3, -2e-3], [0.4, -0.1], [1.0, 1.0]])
    y = loc + np.einsum("nij,nj->ni", W, v) + sd * u
    return ((jnp.asarray(loc, dtype), jnp.asarray(W, dtype), jnp.asarray(log_diag, dtype)), jnp.asarray(y, dtype))

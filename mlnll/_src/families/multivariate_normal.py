"""MultivariateNormal: a real vector target given a location and a Cholesky factor (log diagonal)."""

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
from mlnll._src.types import MultivariateNormalOutputArrays, MultivariateNormalOutputs
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case, ScipyReference

# Gauss-Hermite rule per axis: 2 nodes are exact for polynomials of degree < 4 under exp(-x^2); the
# Hessian of the NLL in the outputs is a polynomial of degree 2 in y, so the product rule is exact.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite.hermgauss(2)


def _eye(d: int, ndim: int, dtype=bool) -> jax.Array:
    """The d x d identity with ``ndim - 2`` leading unit axes (ranks match: no implicit promotion)."""
    return jnp.eye(d, dtype=dtype).reshape((1,) * (ndim - 2) + (d, d))


def _strictly_lower(d: int, ndim: int) -> jax.Array:
    rows, cols = np.indices((d, d))
    return jnp.asarray(rows > cols).reshape((1,) * (ndim - 2) + (d, d))


def cholesky_factor(raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(L, log_diag)`` from a raw ``scale_tril``: strict lower triangle as is, diagonal exponentiated.

    The strict upper triangle of ``raw`` is ignored (zero in ``L``, zero gradient).
    """
    d = raw.shape[-1]
    log_diag = jnp.diagonal(raw, axis1=-2, axis2=-1)
    strict = jnp.where(_strictly_lower(d, raw.ndim), raw, jnp.zeros_like(raw))
    return jnp.where(_eye(d, raw.ndim), jnp.exp(log_diag)[..., None], strict), log_diag


def _solve_lower(L: jax.Array, b: jax.Array, *, transpose: bool = False) -> jax.Array:
    """``L^{-1} b`` (or ``L^{-T} b``) for vectors ``b [..., d]``, by substitution (never an inverse)."""
    return solve_triangular(L, b[..., None], lower=True, trans=1 if transpose else 0)[..., 0]


def _value_and_partials(loc: jax.Array, raw: jax.Array, y: jax.Array):
    """``log p(y)`` and its partials ``(w, d log p / d raw, -w)`` in loc, the raw scale_tril and y.

    ``z = L^{-1} (y - loc)`` and ``w = L^{-T} z`` (two triangular solves); see the class docstring:
    ``d log p/dloc = w = -d log p/dy``, ``d log p/draw_ij = w_i z_j`` below the diagonal,
    ``L_ii w_i z_i - 1`` on it, 0 above. Inputs broadcast to one batch shape.

    ``L = D U`` with ``D = diag(L_ii)`` and U unit lower triangular (``U_ij = L_ij / L_ii``), so
    ``z = U^{-1} D^{-1} (y - loc)``, ``v = U^{-T} z = D w`` and ``L_ii w_i z_i = v_i z_i``: no
    ``L_ii = exp(log_diag_i)`` is formed, which overflows at log_diag = 89 (float32) and made
    ``0 * inf`` of ``L_ii w_i z_i`` at log_diag = 1e4, y = loc. ``D^{-1} (y - loc)`` is
    ``standardize`` (range-reduced ``exp(-log_diag)``, no overflow of ``y - loc``).
    """
    d = loc.shape[-1]
    log_diag = jnp.diagonal(raw, axis1=-2, axis2=-1)
    r, inv_diag = ls_.standardize(loc, log_diag, y)  # D^{-1} (y - loc), and D^{-1} clamped
    # U's strict lower triangle (its unit diagonal is implied by the solves, the upper part ignored).
    U = jnp.where(_strictly_lower(d, raw.ndim), raw * inv_diag[..., :, None], jnp.zeros_like(raw))
    z = solve_triangular(U, r[..., None], lower=True, unit_diagonal=True)[..., 0]
    v = solve_triangular(U, z[..., None], lower=True, trans=1, unit_diagonal=True)[..., 0]  # D w
    w = v * inv_diag
    value = -0.5 * jnp.sum(jnp.square(z), axis=-1) - jnp.sum(log_diag, axis=-1) - d * numerics.HALF_LOG_2PI
    # A z_i that is not finite from inputs that are not NaN is an overflow (y - loc against a tiny
    # L_ii; or (L_ij / L_ii) z_j and (y_i - loc_i) / L_ii both overflowing at a log-diagonal of -1e4,
    # whose difference the solve forms as inf - inf = NaN): sum z^2 / 2 = +inf there, which the logs
    # of the diagonal cannot offset (z_i^2 grows like e^(-2 log L_ii)), so log p = -inf to the dtype.
    # NaN inputs show in r (loc, y, the diagonal) or in U (the lower triangle) and stay NaN. (A
    # numerator of exactly 0 against both overflowing terms has a finite z_i: -inf there, not NaN.)
    nan_input = jnp.any(jnp.isnan(r), axis=-1) | jnp.any(jnp.isnan(U), axis=(-2, -1))
    value = jnp.where(jnp.any(~jnp.isfinite(z), axis=-1) & ~nan_input, -jnp.inf, value)
    outer = w[..., :, None] * z[..., None, :]  # d log p/dL below the diagonal: w z^T
    # Chain rule through L_ii = exp(raw_ii): (w_i z_i - 1/L_ii) L_ii = L_ii w_i z_i - 1 = v_i z_i - 1.
    diagonal = v * z - 1
    d_raw = jnp.where(_strictly_lower(d, raw.ndim), outer, jnp.zeros_like(outer))
    d_raw = jnp.where(_eye(d, raw.ndim), diagonal[..., None], d_raw)
    return value, (w, d_raw, -w)


# log N(y; loc, L L^T), differentiated by the closed form above (jax.grad, jacfwd, hessian).
mvn_log_pdf = closed_form(_value_and_partials)


_NAMES = ("loc", "scale_tril")
_EVENT_NDIMS = {"loc": 1, "scale_tril": 2}


def _params(outputs, family: str = "MultivariateNormal") -> unpack.Params:
    """``loc [..., d]`` and the raw ``scale_tril [..., d, d]`` by name, in the accumulation dtype and
    broadcast to one batch shape (``p.batch_shape``); ``p.dtype`` is the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, event_ndims=_EVENT_NDIMS)
    d = p.loc.shape[-1]
    if p.scale_tril.shape[-2:] != (d, d):
        raise ValueError(
            f"{family} outputs[1] (scale_tril) must have shape [..., d, d] with d = {d} as in loc shape "
            f"{jnp.shape(outputs[0])}; got shape {jnp.shape(outputs[1])}."
        )
    return p


def _params_and_targets(outputs, targets) -> tuple[unpack.Params, jax.Array]:
    """``_params`` and the target vectors ``y [..., d]``, all broadcast to one batch shape."""
    p = _params(outputs)
    y = validate.numeric_targets(targets, where="MultivariateNormal targets")
    d = p.loc.shape[-1]
    if y.ndim < 1 or y.shape[-1] != d:
        raise ValueError(
            f"MultivariateNormal targets must have shape [..., d] with d = {d} as in loc shape "
            f"{jnp.shape(outputs[0])}; got shape {y.shape}."
        )
    return unpack.with_targets(p, y, family="MultivariateNormal", event_ndim=1)


@dataclasses.dataclass(frozen=True)
class MultivariateNormal:
    r"""Multivariate normal distribution of a real vector, parametrised by a Cholesky factor.

    outputs: ``(loc [..., d], scale_tril [..., d, d])``. ``scale_tril`` is raw: its strict lower
    triangle is the strict lower triangle of the Cholesky factor ``L`` as is, its diagonal is
    ``log diag(L)`` (so ``L`` is invertible for every input), and its strict upper triangle is ignored.
    The covariance is ``L L^T``. targets: vectors ``[..., d]``.

    Density, with ``z = L^{-1} (y - loc)`` (a triangular solve, never an inverse):
    ``log p(y) = -|z|^2 / 2 - sum_i log L_ii - d log(2 pi) / 2``,
    since ``log det(L L^T) = 2 sum_i log L_ii``; it equals scipy's multivariate_normal.logpdf.

    Gradient. Write ``-log p = z^T z / 2 + log det L + c``. Then ``dz = L^{-1} (dy - dloc - dL z)``,
    so with ``w = L^{-T} z``: ``d(-log p)/dloc = -w``, ``d(-log p)/dy = w`` (the targets) and
    ``d(z^T z / 2)/dL = -w z^T``, while
    ``d log det L / dL = L^{-T}``, upper triangular, whose lower triangle is ``diag(1/L_ii)``.
    Restricted to the lower triangle, ``d(-log p)/dL = tril(L^{-T} (I - z z^T))``: ``-w_i z_j`` off
    the diagonal, ``1/L_ii - w_i z_i`` on it. The chain rule for ``L_ii = exp(raw_ii)`` multiplies the
    diagonal by ``L_ii``: ``d(-log p)/draw_ii = 1 - L_ii w_i z_i``; the upper triangle gets 0.
    ``jax.grad``, ``jacfwd`` and ``hessian`` of ``log_prob`` run through this closed form (a
    ``custom_jvp``; its second derivative is autodiff of ``w`` and ``w z^T``, not of the solve's
    own derivative rules).

    Fisher information. Under the model ``z ~ N(0, I)``; the score is ``(w, w z^T - L^{-T})`` with
    ``E[w w^T] = L^{-T} L^{-1} = Sigma^{-1}``. The third moments of z vanish, so loc and scale_tril
    are orthogonal; Isserlis' theorem gives, for lower-triangle entries (i, j) and (k, l),
    ``Cov(w_i z_j, w_k z_l) = Sigma^{-1}_ik [j = l] + (L^{-T})_il (L^{-T})_kj``, and the last term
    is non-zero only for i = j = k = l (L^{-T} is upper triangular), where it is ``1/L_ii^2``. In raw
    coordinates (rows and columns of diagonal entries times ``L_ii``):
    ``F[loc, loc] = Sigma^{-1}``,
    ``F[raw_ij, raw_kl] = [j = l] Sigma^{-1}_ik t_ij t_kl + [i = j = k = l]``, ``t_ij = L_ii if i = j
    else 1``, and 0 for the strict upper triangle. For d = 1 it is Normal's ``diag(1/scale^2, 2)``.
    The result is ``[..., P, P]`` with ``P = d + d^2`` (loc, then scale_tril row-major).

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> fam = mlnll.MultivariateNormal()
      >>> loc, scale_tril = jnp.zeros(2), jnp.zeros((2, 2))  # L = I: the standard normal in 2-d
      >>> round(float(fam.log_prob((loc, scale_tril), jnp.array([1.0, 0.0]))), 6)
      -2.337877
    """

    def log_prob(self, outputs: MultivariateNormalOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log N(y; loc, L L^T)`` (every constant), equal to scipy's logpdf; ``-inf``
        (with NaN derivatives) for a target with an infinite or NaN coordinate.

        ``jax.grad`` (and jacfwd, hessian) of it run through the closed form of the class docstring.
        """
        p, y = _params_and_targets(outputs, targets)
        finite = jnp.all(jnp.isfinite(y), axis=-1)  # an infinite (or NaN) coordinate: off the support
        ys = jnp.where(finite[..., None], y, p.loc)  # double where: the closed form sees z = 0 there
        return minus_inf_off_support(mvn_log_pdf(p.loc, p.scale_tril, ys), finite).astype(p.dtype)

    def grad(self, outputs: MultivariateNormalOutputs, targets: ArrayLike) -> MultivariateNormalOutputArrays:
        """Closed form ``(-w, tril(-w z^T) with diagonal 1 - L_ii w_i z_i)``, ``w = L^{-T} z`` (NaN for a
        target off the support)."""
        p, y = _params_and_targets(outputs, targets)
        finite = jnp.all(jnp.isfinite(y), axis=-1)
        _, (d_loc, d_raw, _) = _value_and_partials(p.loc, p.scale_tril, y)
        nan_off = lambda g: jnp.where(numerics.expand_to(finite, g.ndim), -g, jnp.nan)  # noqa: E731
        return nan_off(d_loc).astype(p.dtype), nan_off(d_raw).astype(p.dtype)

    def params(self, outputs: MultivariateNormalOutputs) -> dict[str, jax.Array]:
        """``{"loc", "scale_tril" (the Cholesky factor L itself), "covariance" (L L^T)}``."""
        p = _params(outputs)
        L, _ = cholesky_factor(p.scale_tril)
        covariance = jnp.matmul(L, jnp.swapaxes(L, -1, -2))
        out = {"loc": p.loc, "scale_tril": L, "covariance": covariance}
        return {name: value.astype(p.dtype) for name, value in out.items()}

    def mean(self, outputs: MultivariateNormalOutputs) -> jax.Array:
        p = _params(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: MultivariateNormalOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """``loc + L eps`` with ``eps ~ N(0, I)``, shape ``sample_shape + batch + (d,)``."""
        p = _params(outputs)
        L, _ = cholesky_factor(p.scale_tril)
        shape = tuple(sample_shape) + p.loc.shape
        eps = jax.random.normal(key, shape, dtype=p.loc.dtype)
        L = jnp.broadcast_to(L, shape + (p.loc.shape[-1],))
        return (jnp.broadcast_to(p.loc, shape) + jnp.matmul(L, eps[..., None])[..., 0]).astype(p.dtype)

    def entropy(self, outputs: MultivariateNormalOutputs) -> jax.Array:
        """``d (1 + log(2 pi)) / 2 + sum_i log L_ii``."""
        p = _params(outputs)
        log_diag = jnp.diagonal(p.scale_tril, axis1=-2, axis2=-1)
        entropy = p.loc.shape[-1] * (0.5 + numerics.HALF_LOG_2PI) + jnp.sum(log_diag, axis=-1)
        return entropy.astype(p.dtype)

    def kl(self, outputs_p: MultivariateNormalOutputs, outputs_q: MultivariateNormalOutputs) -> jax.Array:
        """KL(p || q) in a form with no cancellation when p and q are close.

        With ``M = L_q^{-1} L_p`` (lower triangular, ``M_ii = exp(delta_i)``,
        ``delta = log diag L_p - log diag L_q``) and ``m = L_q^{-1} (loc_p - loc_q)``::

            KL = (tr(Sigma_q^{-1} Sigma_p) + m^T m - d + log det Sigma_q - log det Sigma_p) / 2
               = (sum_{i>j} M_ij^2 + sum_i (exp(2 delta_i) - 1 - 2 delta_i) + m^T m) / 2

        because ``tr(M M^T) = sum_ij M_ij^2``; ``exp(x) - 1 - x`` is ``expm1mx`` (a series near 0).
        """
        p = _params(outputs_p, "MultivariateNormal.kl outputs_p")
        q = _params(outputs_q, "MultivariateNormal.kl outputs_q")
        if p.loc.shape[-1] != q.loc.shape[-1]:
            raise ValueError(f"MultivariateNormal.kl: outputs_p has d = {p.loc.shape[-1]}, "
                             f"outputs_q has d = {q.loc.shape[-1]}.")
        batch = validate.broadcast_shapes("MultivariateNormal.kl", [("outputs_p (batch)", p.batch_shape),
                                                                    ("outputs_q (batch)", q.batch_shape)])
        dtype = numerics.float_dtype(p, q)  # the wider of the two result dtypes (each has a .dtype)
        (loc_p, raw_p, loc_q, raw_q), _ = numerics.upcast(p.loc, p.scale_tril, q.loc, q.scale_tril)
        d = loc_p.shape[-1]
        L_p, log_diag_p = cholesky_factor(jnp.broadcast_to(raw_p, batch + (d, d)))
        L_q, log_diag_q = cholesky_factor(jnp.broadcast_to(raw_q, batch + (d, d)))
        M = solve_triangular(L_q, L_p, lower=True)
        below = jnp.where(_strictly_lower(d, M.ndim), jnp.square(M), jnp.zeros_like(M))
        off_diagonal = jnp.sum(below, axis=(-2, -1))
        diagonal = jnp.sum(numerics.expm1mx(2 * (log_diag_p - log_diag_q)), axis=-1)
        m = _solve_lower(L_q, jnp.broadcast_to(loc_p, batch + (d,)) - jnp.broadcast_to(loc_q, batch + (d,)))
        return (0.5 * (off_diagonal + diagonal + jnp.sum(jnp.square(m), axis=-1))).astype(dtype)

    def fisher(self, outputs: MultivariateNormalOutputs) -> jax.Array:
        """The closed form above, shape ``[..., d + d^2, d + d^2]`` (loc, then scale_tril row-major)."""
        p = _params(outputs)
        L, _ = cholesky_factor(p.scale_tril)
        d, batch, dtype = p.loc.shape[-1], p.batch_shape, p.dtype
        L_inv = solve_triangular(L, jnp.broadcast_to(jnp.eye(d, dtype=L.dtype), L.shape), lower=True)
        precision = jnp.matmul(jnp.swapaxes(L_inv, -1, -2), L_inv)  # Sigma^{-1} = L^{-T} L^{-1}
        scale_block = _scale_tril_information(precision, L)
        zeros = jnp.zeros(batch + (d, d * d), L.dtype)
        top = jnp.concatenate([precision, zeros], axis=-1)
        bottom = jnp.concatenate([jnp.swapaxes(zeros, -1, -2), scale_block], axis=-1)
        return jnp.concatenate([top, bottom], axis=-2).astype(dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-d log(2 pi) / 2``, shape ``targets.shape[:-1]``.
        """
        y = validate.numeric_targets(targets, where="MultivariateNormal targets")
        if y.ndim < 1:
            raise ValueError(f"MultivariateNormal targets must have shape [..., d]; got shape {y.shape}.")
        const = -y.shape[-1] * numerics.HALF_LOG_2PI
        return jnp.full(y.shape[:-1], const, numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: MultivariateNormalOutputs) -> tuple[jax.Array, jax.Array]:
        """Product Gauss-Hermite rule: nodes ``loc + sqrt(2) L x``, ``x`` in a 2^d grid; ``[2^d, *batch, d]``.

        Exact for polynomials in y of degree < 4 per coordinate, so for the expected Hessian (degree 2).
        """
        p = _params(outputs)
        loc = p.loc
        L, _ = cholesky_factor(p.scale_tril)
        d = loc.shape[-1]
        grid = np.array(list(itertools.product(_GH_NODES, repeat=d)))  # [K, d]
        weights = np.prod(np.array(list(itertools.product(_GH_WEIGHTS, repeat=d))), axis=-1)
        weights = weights / math.pi ** (d / 2)
        batch_ones = (1,) * (loc.ndim - 1)
        x = jnp.asarray(math.sqrt(2.0) * grid, loc.dtype).reshape((-1,) + batch_ones + (d, 1))
        L = jnp.broadcast_to(L[None], (len(grid),) + L.shape)
        nodes = loc[None] + jnp.matmul(L, jnp.broadcast_to(x, L.shape[:-1] + (1,)))[..., 0]
        w = jnp.asarray(weights, loc.dtype).reshape((-1,) + batch_ones)
        return nodes, jnp.broadcast_to(w, (len(grid),) + loc.shape[:-1])

    def mle(self, targets: ArrayLike, *, axis: int = 0) -> MultivariateNormalOutputArrays:
        """Closed-form MLE: loc = sample mean; scale_tril = Cholesky factor of the 1/n covariance,
        its diagonal as a log (the strict upper triangle 0). ``axis`` is a batch axis of the targets."""
        y = validate.numeric_targets(targets, where="MultivariateNormal.mle targets")
        if y.ndim < 2 or axis % y.ndim == y.ndim - 1:
            raise ValueError(
                f"MultivariateNormal.mle: targets [..., n, ..., d] need a sample axis other than the last; "
                f"got shape {y.shape} and axis={axis}."
            )
        y = jnp.moveaxis(y.astype(numerics.accumulation_dtype(numerics.float_dtype(y))), axis, -2)
        loc = jnp.mean(y, axis=-2)
        centred = y - loc[..., None, :]
        covariance = jnp.matmul(jnp.swapaxes(centred, -1, -2), centred) / y.shape[-2]
        L = jnp.linalg.cholesky(covariance)
        log_diag = jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1))
        return loc, jnp.where(_eye(L.shape[-1], L.ndim), log_diag[..., None], L)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: d = 3, Cholesky log-diagonals of ±80 (±30 in float32), tiny,
        huge and mixed in one factor, against scipy and the textbook formula."""
        return (
            Case("MultivariateNormal", cls(), _random, _extreme,
                 scipy=ScipyReference(_scipy_multivariate_normal, per_example=True),
                 plain_log_prob=_plain_log_prob),
        )


def _scale_tril_information(precision: jax.Array, L: jax.Array) -> jax.Array:
    """The raw scale_tril block ``[..., d^2, d^2]``: ``[j = l] Sigma^{-1}_ik t_ij t_kl + [i = j = k = l]``.

    ``t_ij`` is ``L_ii`` on the diagonal (the chain rule for the log), 1 below it and 0 above (the
    strict upper triangle is not a parameter). Axes (i, j, k, l) are built last, then flattened.
    """
    d = L.shape[-1]
    ones = (1,) * (L.ndim - 2)
    lower = jnp.asarray(np.tril(np.ones((d, d))), L.dtype).reshape(ones + (d, d))
    t = jnp.where(_eye(d, L.ndim), L, lower)
    same_column = jnp.eye(d, dtype=L.dtype).reshape(ones + (1, d, 1, d))
    block = (precision[..., :, None, :, None] * same_column
             * t[..., :, :, None, None] * t[..., None, None, :, :])
    diagonal_only = np.zeros((d, d, d, d))
    for i in range(d):
        diagonal_only[i, i, i, i] = 1.0
    block = block + jnp.asarray(diagonal_only, L.dtype).reshape(ones + (d, d, d, d))
    return block.reshape(L.shape[:-2] + (d * d, d * d))


# -- check cases: d = 3, log-diagonals of ±80, tiny, huge and mixed scales in one factor -------------

_D = 3  # the dimension of the check cases: the Fisher check's product Gauss-Hermite rule has 2^d nodes


def _plain_log_pdf(loc, raw, y):
    """One example: ``-r^T Sigma^{-1} r / 2 - log det(2 pi Sigma) / 2`` with ``Sigma = L L^T``,
    ``r = y - loc``, and ``L`` the strict lower triangle of ``raw`` plus ``diag(exp(diag(raw)))``."""
    L = jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))
    sigma = L @ L.T
    r = y - loc
    _, log_det = jnp.linalg.slogdet(2 * jnp.pi * sigma)
    return -0.5 * r @ jnp.linalg.inv(sigma) @ r - 0.5 * log_det


def _plain_log_prob(outputs, y):
    """The textbook formula (the inverse and log-determinant of the covariance itself), per example."""
    loc, raw = outputs
    return jax.vmap(_plain_log_pdf)(loc, raw, y)


def _scipy_multivariate_normal(outputs):
    """scipy's multivariate normal at one example's raw outputs (the covariance from L)."""
    import scipy.stats

    loc, raw = outputs
    L = np.tril(raw, -1) + np.diag(np.exp(np.diag(raw)))
    return scipy.stats.multivariate_normal(loc, L @ L.T)


def _random(key, dtype, n):
    """Locations N(0, 1); raw factors 0.5 N(0, 1) (log-diagonals within about ±2, off-diagonals O(1));
    targets ``loc + L u``, u ~ N(0, I), drawn from the model. One uniform draw for all three."""
    z = draws.box_muller(draws.uniform_rows(key, (n, _D * (_D + 2) + 1))).astype(dtype)  # 16 normals
    loc, raw, noise = z[:, :_D], 0.5 * z[:, _D:_D + _D * _D].reshape(n, _D, _D), z[:, -_D:]
    L, _ = cholesky_factor(raw)
    return (loc, raw), loc + jnp.einsum("nij,nj->ni", L, noise)


def _extreme(dtype):
    """Tiny, huge and mixed Cholesky diagonals: log-diagonals of ±80 in float64, ±30 in float32 (the
    Fisher information holds 1/L_ii^2, finite in that dtype). Row i of L and loc_i are on the scale
    L_ii, so that targets loc + L u resolve every coordinate's deviation (on a common scale a 1e-35
    deviation added to an O(1) location is lost to rounding, in any float format). The strict upper
    triangle holds 7s, which the family ignores."""
    big = 80.0 if np.dtype(dtype) == np.float64 else 30.0
    log_diags = np.array([[-big] * _D, [big] * _D, [-big, 0.0, big], [big, 0.0, -big], [0.0] * _D])
    row_scale = np.exp(log_diags)[:, :, None]  # L_ii, for row i
    lower = np.tril(np.ones((_D, _D)), -1)[None]
    raw = lower * row_scale * np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-0.3, 0.9, 0.0]])[None]
    raw = raw + np.eye(_D)[None] * log_diags[:, None, :]
    raw = raw + np.triu(np.full((_D, _D), 7.0), 1)[None]  # the strict upper triangle is ignored
    loc = row_scale[..., 0] * np.array([[0.0, 1.0, -2.0], [3.0, -1.0, 0.5], [1.0, -1.0, 2.0], [0.0, 5.0, 0.0],
                                        [1e3, 1e3, 1e3]])
    u = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.7], [-2.0, 0.1, 1.5], [0.8, -0.4, 0.2], [3.0, -3.0, 0.0]])
    L = np.where(np.eye(_D, dtype=bool)[None], np.exp(log_diags)[:, None, :] * np.eye(_D)[None], np.tril(raw, -1))
    y = loc + np.einsum("nij,nj->ni", L, u)
    return (jnp.asarray(loc, dtype), jnp.asarray(raw, dtype)), jnp.asarray(y, dtype)

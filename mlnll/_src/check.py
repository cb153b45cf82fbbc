"""Verification as a feature: closed forms against autodiff and finite differences.

``check_grad(family, outputs, targets)`` compares

* the closed-form ``family.grad`` with ``jax.grad`` of the summed ``-family.log_prob`` (for a
  family whose ``log_prob`` has a closed-form ``custom_jvp``, e.g. Categorical, Normal or Poisson,
  the two share the derivation, and the finite differences below are the independent check);
* in float64, the closed form with a fourth-order central finite difference along random
  directions (``jax.grad`` of the stable formula could share a mistake with it; differences can't);
* ``family.fisher`` with the expected Hessian ``E_y[hessian(-log_prob)]``, the expectation taken
  exactly over the family's ``expectation_nodes`` (all labels for discrete families, a
  Gauss-Hermite rule for Normal, whose Hessian is a polynomial in y), or, for a family whose
  log-density has a kink (Laplace), with ``E_y[grad grad^T]`` over its ``score_nodes``.

A gradient component is judged relative to the larger of its own size and its natural scale, the
standard deviation of that score component under the model, ``sqrt(F_ii)`` (when the family has a
Fisher information): a component that crosses zero, such as ``1 - r^2`` at ``r = 1``, is the
difference of terms of size ~1 and no formula computes it to a relative accuracy better than the
rounding of those terms.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mlnll._src import numerics
from mlnll._src.family import Family

# Relative tolerances by dtype: a closed form and autodiff of a stable formula differ by a few
# rounding errors of the working precision, amplified at most by the conditioning of the formula.
RTOL = {
    np.dtype(jnp.float64): 1e-12,
    np.dtype(jnp.float32): 1e-5,
    np.dtype(jnp.bfloat16): 2e-2,
    np.dtype(jnp.float16): 4e-3,
}
# Finite differences are approximations: fourth-order, step 1e-3, so ~1e-12 truncation + rounding.
FD_RTOL = 1e-7


@dataclasses.dataclass(frozen=True)
class GradCheck:
    """The result of ``check_grad``: errors of the closed forms, and whether they are within ``rtol``.

    ``*_abs_err`` is the largest absolute difference; ``grad_rel_err`` the largest elementwise
    ``|a - b| / max(|a|, |b|)``; ``fisher_rel_err`` the largest ``|a_ij - b_ij| / sqrt(b_ii b_jj)``.
    ``fd_rel_err`` is None unless finite differences ran (float64 only); ``fisher_*`` are None
    for a family without ``fisher`` or ``expectation_nodes``.
    """

    family: str
    dtype: str
    backend: str
    grad_abs_err: float
    grad_rel_err: float
    fd_rel_err: float | None
    fisher_abs_err: float | None
    fisher_rel_err: float | None
    rtol: float

    @property
    def passed(self) -> bool:
        ok = self.grad_rel_err <= self.rtol
        if self.fd_rel_err is not None:
            ok = ok and self.fd_rel_err <= FD_RTOL
        if self.fisher_rel_err is not None:
            ok = ok and self.fisher_rel_err <= self.rtol
        return bool(ok)


def _leaf_dtype(outputs) -> np.dtype:
    return numerics.float_dtype(*jax.tree.leaves(outputs))


def _sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum a per-example gradient over the axes its output leaf was broadcast along."""
    g = jnp.sum(g, axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True)


def _errors(a, b, floor=None) -> tuple[float, float]:
    """Largest absolute and elementwise-relative difference; equal infinities count as equal.

    The relative difference is ``|a - b| / max(|a|, |b|, floor)`` (``floor`` broadcasts; none by
    default).
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size == 0:
        return 0.0, 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.maximum(np.abs(a), np.abs(b))
    if floor is not None:
        scale = np.maximum(scale, np.nan_to_num(np.asarray(floor, np.float64).ravel(), nan=0.0, posinf=0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(diff == 0, 0.0, diff / scale)
    rel = np.where(np.isnan(rel), np.inf, rel)
    return float(diff.max()), float(rel.max())


def _widest_available(outputs):
    """``outputs`` cast to float64 when x64 is enabled, else unchanged."""
    if not jax.config.jax_enable_x64:
        return outputs
    return jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.float64), outputs)


def _matrix_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest absolute gap, and largest ``|a_ij - b_ij| / sqrt(|b_ii b_jj|)`` over [n, P, P] stacks.

    That scale is the natural one for an information matrix (``|F_ij| <= sqrt(F_ii F_jj)``): it
    keeps an entry of size 1/scale^2 and one of size 2 from being judged against each other.
    """
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        gap = np.where(same, 0.0, np.abs(a - b))
        gap = np.where(np.isnan(gap), np.inf, gap)
        root = np.sqrt(np.abs(np.diagonal(b, axis1=1, axis2=2)))
        scale = np.maximum(root[:, :, None] * root[:, None, :], np.finfo(np.float64).tiny)
        rel = np.where(gap == 0, 0.0, gap / scale)
    return float(gap.max()), float(np.nan_to_num(rel, nan=np.inf).max())


def _neg_log_lik(family: Family, outputs, targets) -> jax.Array:
    acc = numerics.accumulation_dtype(_leaf_dtype(outputs))
    return -jnp.sum(family.log_prob(outputs, targets).astype(acc))


@functools.partial(jax.jit, static_argnums=0)
def autodiff_grad(family: Family, outputs, targets):
    """``jax.grad`` of the summed ``-log_prob``: the per-example gradient when outputs are unbroadcast."""
    return jax.grad(lambda o: _neg_log_lik(family, o, targets))(outputs)


@functools.partial(jax.jit, static_argnums=0)
def _closed_grad(family: Family, outputs, targets):
    return family.grad(outputs, targets)


@functools.partial(jax.jit, static_argnums=0)
def _directional_values(family: Family, outputs, targets, direction, steps):
    """``-sum log_prob(outputs + t v)`` for each t in ``steps``."""
    shift = lambda t: jax.tree.map(lambda o, v: o + t * v, outputs, direction)  # noqa: E731
    return jax.vmap(lambda t: _neg_log_lik(family, shift(t), targets))(steps)


def _finite_difference_error(family: Family, outputs, targets, closed, key: jax.Array) -> float:
    """Largest relative gap between <closed, v> and a 4th-order central difference along v."""
    worst = 0.0
    for k in jax.random.split(key, 3):
        leaves, treedef = jax.tree.flatten(outputs)
        keys = jax.random.split(k, len(leaves))
        direction = treedef.unflatten([jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves)])
        h = 1e-3
        f_2h, f_h, f_mh, f_m2h = np.asarray(_directional_values(family, outputs, targets, direction, jnp.array([2 * h, h, -h, -2 * h], leaves[0].dtype)), np.float64)
        fd = (8 * (f_h - f_mh) - (f_2h - f_m2h)) / (12 * h)
        exact = float(sum(jnp.sum(g * v) for g, v in zip(jax.tree.leaves(closed), jax.tree.leaves(direction))))
        gap = abs(fd - exact) / max(abs(fd), abs(exact), 1e-300)
        worst = max(worst, gap if math.isfinite(gap) else math.inf)
    return worst


@functools.partial(jax.jit, static_argnums=(0, 2))
def expected_hessian(family: Family, outputs, rule: str = "expectation_nodes") -> jax.Array:
    """``E_y[hessian of -log_prob in the flattened per-example outputs]``, shape [n, P, P].

    The expectation is exact over ``family.expectation_nodes(outputs)``; outputs must already have
    the full batch shape (as the ``check`` cases do). With ``rule="score_nodes"`` it is
    ``E_y[grad grad^T]`` over ``family.score_nodes(outputs)`` instead: the same matrix (the
    information identity) for a family whose Hessian autodiff cannot see, e.g. Laplace's point
    mass at ``y = loc``.
    """
    nodes, weights = getattr(family, rule)(outputs)
    batch = weights.shape[1:]
    n = math.prod(batch)
    leaves, treedef = jax.tree.flatten(outputs)
    flat = [x.reshape((n,) + x.shape[len(batch):]) for x in leaves]
    _, unravel = ravel_pytree(treedef.unflatten([x[0] for x in flat]))
    thetas = jax.vmap(lambda *xs: ravel_pytree(list(xs))[0])(*flat)
    nodes = nodes.reshape((nodes.shape[0], n) + nodes.shape[1 + len(batch):])
    weights = weights.reshape(weights.shape[0], n)

    def neg_log_prob(theta, y):
        return -family.log_prob(unravel(theta), y).astype(theta.dtype)

    if rule == "score_nodes":
        def outer_score(theta, y):
            g = jax.grad(neg_log_prob)(theta, y)
            return g[:, None] * g[None, :]

        hessians = jax.vmap(jax.vmap(outer_score), in_axes=(None, 0))(thetas, nodes)
    else:
        hessians = jax.vmap(jax.vmap(jax.hessian(neg_log_prob)), in_axes=(None, 0))(thetas, nodes)
    # A node of probability 0 (a class whose logit is -inf) has log_prob -inf: it is dropped, not
    # multiplied by 0.
    hessians = jnp.where((weights > 0)[:, :, None, None], hessians, jnp.zeros_like(hessians))
    return jnp.einsum("kn,knpq->npq", weights.astype(hessians.dtype), hessians)


def check_grad(family: Family, outputs, targets, *, rtol: float | None = None, key: jax.Array | None = None,
               finite_differences: bool | None = None) -> GradCheck:
    """Compare ``family``'s closed forms with autodiff (and finite differences) at one input.

    Args:
      family: any mlnll family.
      outputs: raw outputs at the full batch shape (a broadcast leaf is compared after summing the
        closed form over its broadcast axes).
      targets: targets for those outputs.
      rtol: relative tolerance; default by dtype (float64 1e-12, float32 1e-5).
      key: PRNG key for the finite-difference directions (default ``PRNGKey(0)``).
      finite_differences: run them; default when the outputs are float64.

    Returns:
      A ``GradCheck`` with the errors and ``passed``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> r = mlnll.check_grad(mlnll.Categorical(), jnp.array([[20.0, 0.0, 0.0]]), jnp.array([0]))
      >>> r.passed
      True
    """
    dtype = _leaf_dtype(outputs)
    rtol = RTOL.get(np.dtype(dtype), 1e-5) if rtol is None else rtol
    closed = _closed_grad(family, outputs, targets)
    auto = autodiff_grad(family, outputs, targets)
    closed_summed = jax.tree.map(lambda g, x: _sum_to_shape(g, x.shape), closed, outputs)
    fisher, fisher_abs, fisher_rel = _fisher_errors(family, outputs, dtype)
    floors = _score_scales(fisher, outputs)
    pairs = [_errors(c, a, f) for c, a, f in zip(jax.tree.leaves(closed_summed), jax.tree.leaves(auto), floors)]
    grad_abs, grad_rel = max(p[0] for p in pairs), max(p[1] for p in pairs)

    if finite_differences is None:
        finite_differences = np.dtype(dtype) == np.float64
    fd_rel = None
    if finite_differences:
        key = jax.random.PRNGKey(0) if key is None else key
        fd_rel = _finite_difference_error(family, outputs, targets, closed_summed, key)

    return GradCheck(
        family=repr(family), dtype=str(np.dtype(dtype)), backend=jax.default_backend(),
        grad_abs_err=grad_abs, grad_rel_err=grad_rel, fd_rel_err=fd_rel,
        fisher_abs_err=fisher_abs, fisher_rel_err=fisher_rel, rtol=rtol,
    )


def _fisher_errors(family: Family, outputs, dtype):
    """``(fisher [n, P, P] or None, abs err, rel err)`` of the closed form against its oracle."""
    rule = next((r for r in ("expectation_nodes", "score_nodes") if hasattr(family, r)), None)
    if not hasattr(family, "fisher") or rule is None:
        return None, None, None
    try:
        fisher = np.asarray(jax.jit(family.fisher)(outputs), np.float64)
    except NotImplementedError:  # a family with no closed-form Fisher information
        return None, None, None
    # The quadrature is the oracle, so it runs in float64 when x64 is on (at log_scale = 60 the
    # float32 nodes loc + sqrt(2) scale x_k lose 4 digits), then rounds to the checked dtype.
    expected = np.asarray(expected_hessian(family, _widest_available(outputs), rule).astype(dtype), np.float64)
    fisher = fisher.reshape(expected.shape)
    return fisher, *_matrix_errors(fisher, expected)


def _score_scales(fisher, outputs) -> list:
    """Per leaf, ``sqrt(F_ii)`` laid out as that leaf (the typical size of each score component).

    ``fisher`` is [n, P, P] over the per-example outputs flattened leaf after leaf (as
    ``ravel_pytree`` does); with no Fisher information, or outputs not at the full batch shape,
    every floor is None (plain elementwise relative error).
    """
    leaves = jax.tree.leaves(outputs)
    if fisher is None:
        return [None] * len(leaves)
    n = fisher.shape[0]
    sizes = [x.size // n if x.size % n == 0 else -1 for x in leaves]
    if min(sizes) < 1 or sum(sizes) != fisher.shape[-1]:
        return [None] * len(leaves)
    root = np.sqrt(np.abs(np.diagonal(fisher, axis1=1, axis2=2)))  # [n, P]
    bounds = np.cumsum([0] + sizes)
    return [root[:, lo:hi].reshape(x.shape) for x, lo, hi in zip(leaves, bounds[:-1], bounds[1:])]

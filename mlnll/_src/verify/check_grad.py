"""Verification as a feature: closed forms against autodiff and finite differences.

``check_grad(family, outputs, targets)`` compares

* the closed-form ``family.grad`` with ``jax.grad`` of the summed ``-family.log_prob`` (for a
  family whose ``log_prob`` differentiates through a closed-form ``custom_jvp``, e.g. Categorical,
  Normal or Poisson, the two share the derivation, and the finite differences below are the
  independent check);
* the closed form with a fourth-order central finite difference along random directions, both in
  float64 whatever the outputs' dtype (inside a local x64 scope: the user need not enable x64).
  ``jax.grad`` of the stable formula could share a mistake with the closed form; differences can't;
* ``family.fisher`` with the expected Hessian ``E_y[hessian(-log_prob)]``, the expectation taken
  exactly over the family's ``expectation_nodes`` (all labels for discrete families, a
  Gauss-Hermite rule for Normal, whose Hessian is a polynomial in y), or, for a family whose
  log-density has a kink (Laplace), with ``E_y[grad grad^T]`` over its ``score_nodes``.

A gradient component is judged relative to the larger of its own size and its natural scale, the
standard deviation of that score component under the model, ``sqrt(F_ii)`` (when the family has a
Fisher information): a component that crosses zero, such as ``1 - r^2`` at ``r = 1``, is the
difference of terms of size ~1 and no formula computes it to a relative accuracy better than the
rounding of those terms.

Everything is computed by one jit-compiled program per call shape (``evaluate``); the errors are
then taken in numpy (``judge``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from mlnll._src import numerics
from mlnll._src.family import Family, Outputs, Targets
from mlnll._src.losses.nll import check_family
from mlnll._src.verify import tolerances

# Finite-difference steps and the directions per check. A 4th-order difference errs by ~h^4 f^(5)
# (truncation, large where a scale is small) plus ~eps |f| / h (rounding); each direction reports
# the better of two steps, which keeps both well below FD_RTOL for scales down to ~e^-3.
FD_STEPS = (1e-3, 2.5e-4)
FD_DIRECTIONS = 3


@dataclasses.dataclass(frozen=True)
class GradCheck:
    """The result of ``check_grad``: errors of the closed forms, and whether they are within ``rtol``.

    ``*_abs_err`` is the largest absolute difference; ``grad_rel_err`` the largest elementwise
    ``|a - b| / max(|a|, |b|, sqrt(F_ii))``; ``fd_rel_err`` the largest relative gap between the
    closed form's directional derivative and the finite difference (float64); ``fisher_rel_err`` the
    largest ``|a_ij - b_ij| / sqrt(b_ii b_jj)``. ``fd_rel_err`` is None when finite differences were
    not asked for; ``fisher_*`` are None for a family without ``fisher`` or ``expectation_nodes``.
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
        """True when every error that was computed is within its tolerance (finite differences: FD_RTOL)."""
        ok = self.grad_rel_err <= self.rtol
        if self.fd_rel_err is not None:
            ok = ok and self.fd_rel_err <= tolerances.FD_RTOL
        if self.fisher_rel_err is not None:
            ok = ok and self.fisher_rel_err <= self.rtol
        return bool(ok)


def x64_scope():
    """A context in which float64 arrays exist (``jax.enable_x64(True)``), whatever the global setting."""
    scope = getattr(jax, "enable_x64", None)
    if callable(scope):
        return scope(True)
    from jax.experimental import enable_x64  # type: ignore[attr-defined]  # jax < 0.5, gone from today's jax

    return enable_x64()


# -- the traced part: one program computes every quantity -------------------------------------------


def _leaf_dtype(outputs) -> np.dtype:
    return numerics.float_dtype(*jax.tree.leaves(outputs))


def _to_float64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _neg_log_lik(family: Family, outputs, targets, mask=None) -> jax.Array:
    """``-sum log_prob``, over the examples ``mask`` keeps (all by default)."""
    acc = numerics.accumulation_dtype(_leaf_dtype(outputs))
    log_prob = family.log_prob(outputs, targets).astype(acc)
    if mask is not None:
        log_prob = jnp.where(mask, log_prob, jnp.zeros_like(log_prob))
    return -jnp.sum(log_prob)


def _sum_to_shape(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Sum a per-example gradient over the axes its output leaf was broadcast along."""
    g = jnp.sum(g, axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return jnp.sum(g, axis=axes, keepdims=True)


def _summed_grad(family: Family, outputs, targets):
    """The closed form summed over broadcast axes, laid out as ``outputs``."""
    closed = family.grad(outputs, targets)
    return jax.tree.map(lambda g, x: _sum_to_shape(jnp.asarray(g), x.shape), closed, outputs)


def _row_mask(leaf: jax.Array, mask: jax.Array) -> jax.Array:
    """``mask`` [batch] broadcast over a leaf [batch, *event] (a leaf without the batch: all of it)."""
    if leaf.ndim < mask.ndim or leaf.shape[: mask.ndim] != mask.shape:
        return jnp.ones(leaf.shape, bool)
    return jnp.broadcast_to(numerics.expand_to(mask, leaf.ndim), leaf.shape)


def _finite_differences(family: Family, outputs, targets, seed: int, mask):
    """In float64: ``(fd [D, H], exact [D])``, the 4th-order central differences of the summed NLL
    (one per step of ``FD_STEPS``) and the closed form's directional derivative along D random
    directions, zero on masked rows."""
    outputs = _to_float64(outputs)
    closed = _summed_grad(family, outputs, targets)
    flat, unravel = ravel_pytree(outputs)
    closed_flat, _ = ravel_pytree(closed)
    if mask is None:
        live = jnp.ones(flat.shape, bool)
    else:
        live, _ = ravel_pytree(jax.tree.map(lambda x: _row_mask(x, mask), outputs))
    # The directions are constants drawn by numpy (no random-number code in the compiled
    # program), and one vmap over (direction, step) keeps a single copy of the family's graph.
    rng = np.random.default_rng(seed)
    directions = jnp.where(live, jnp.asarray(rng.standard_normal((FD_DIRECTIONS,) + flat.shape)), 0.0)
    h = jnp.array(FD_STEPS, jnp.float64)
    steps = (h[:, None] * jnp.array([2.0, 1.0, -1.0, -2.0], jnp.float64)[None, :]).reshape(-1)  # [H * 4]
    moved = flat[None, None] + steps[None, :, None] * directions[:, None, :]
    values = jax.vmap(jax.vmap(lambda theta: _neg_log_lik(family, unravel(theta), targets, mask)))(moved)
    values = values.reshape(FD_DIRECTIONS, len(FD_STEPS), 4)
    f_2h, f_h, f_mh, f_m2h = (values[..., i] for i in range(4))
    fd = (8 * (f_h - f_mh) - (f_2h - f_m2h)) / (12 * h[None, :])
    # inf * 0 on a masked entry would be NaN: the product is taken only where the direction lives.
    exact = jnp.sum(jnp.where(live[None], closed_flat[None] * directions, 0.0), axis=-1)
    return fd, exact


def expected_hessian(family: Family, outputs, rule: str = "expectation_nodes") -> jax.Array:
    """``E_y[hessian of -log_prob in the flattened per-example outputs]``, shape [n, P, P].

    The expectation is exact over ``family.expectation_nodes(outputs)``; outputs must already have
    the full batch shape (as the ``check`` cases do). With ``rule="score_nodes"`` it is
    ``E_y[grad grad^T]`` over ``family.score_nodes(outputs)`` instead: the same matrix (the
    information identity) for a family whose Hessian autodiff cannot see, e.g. Laplace's point
    mass at ``y = loc``. Traceable; ``jax.jit`` it with ``family`` and ``rule`` static.
    """
    nodes, weights = getattr(family, rule)(outputs)
    batch = weights.shape[1:]
    n = math.prod(batch)
    leaves, treedef = jax.tree.flatten(outputs)
    flat = [x.reshape((n,) + x.shape[len(batch):]) for x in leaves]
    _, unravel = ravel_pytree(jax.tree.unflatten(treedef, [x[0] for x in flat]))
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


def fisher_rule(family: Family) -> str | None:
    """The oracle rule for ``family.fisher``: ``expectation_nodes``, ``score_nodes`` or None."""
    if not callable(getattr(family, "fisher", None)):
        return None
    return next((r for r in ("expectation_nodes", "score_nodes") if callable(getattr(family, r, None))), None)


def evaluate(family: Family, outputs, targets, *, seed: int, finite_differences: bool,
             fd_mask: jax.Array | None = None) -> dict:
    """Every quantity the check compares, as arrays (traceable; ``check_grad`` jit-compiles it).

    ``seed`` draws the finite-difference directions (numpy, at trace time); ``fd_mask`` [batch]
    keeps the examples the finite differences run on (the check command leaves out its extreme
    inputs, where a step of 1e-3 is meaningless).
    """
    dtype = _leaf_dtype(outputs)
    out = {
        "closed": _summed_grad(family, outputs, targets),
        "auto": jax.grad(lambda o: _neg_log_lik(family, o, targets))(outputs),
    }
    rule = fisher_rule(family)
    if rule is not None:
        try:
            fisher = family.fisher(outputs)
        except NotImplementedError:  # a family with no closed-form Fisher information
            fisher = None
        if fisher is not None:
            # The quadrature is the oracle, so it runs in float64 (at log_scale = 60 the float32
            # nodes loc + sqrt(2) scale x_k lose 4 digits), then rounds to the checked dtype.
            expected = expected_hessian(family, _to_float64(outputs), rule).astype(dtype)
            out["fisher"], out["expected"] = fisher.reshape(expected.shape), expected
    if finite_differences:
        out["fd"], out["exact"] = _finite_differences(family, outputs, targets, seed, fd_mask)
    return out


@functools.partial(jax.jit, static_argnames=("family", "seed", "finite_differences"))
def _evaluate(family, outputs, targets, *, seed, finite_differences):
    return evaluate(family, outputs, targets, seed=seed, finite_differences=finite_differences)


# -- the numpy part: errors and the verdict ---------------------------------------------------------


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
    return [root[:, lo:hi].reshape(np.shape(x)) for x, lo, hi in zip(leaves, bounds[:-1], bounds[1:])]


def _fd_error(fd: np.ndarray, exact: np.ndarray) -> float:
    """The largest over directions of the smaller relative gap over the two steps."""
    fd, exact = np.asarray(fd, np.float64), np.asarray(exact, np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(fd - exact) / np.maximum(np.maximum(np.abs(fd), np.abs(exact)), 1e-300)
    gap = np.where(np.isfinite(gap), gap, np.inf)
    return float(np.max(np.min(gap, axis=1)))


def judge(family: Family, outputs, arrays: dict, *, rtol: float | None = None) -> GradCheck:
    """The ``GradCheck`` of ``evaluate``'s arrays (numpy)."""
    dtype = _leaf_dtype(outputs)
    rtol = tolerances.grad_rtol(dtype) if rtol is None else rtol
    arrays = jax.device_get(arrays)
    fisher_abs = fisher_rel = None
    fisher = None
    if "fisher" in arrays:
        fisher = np.asarray(arrays["fisher"], np.float64)
        fisher_abs, fisher_rel = _matrix_errors(fisher, np.asarray(arrays["expected"], np.float64))
    floors = _score_scales(fisher, outputs)
    pairs = [_errors(c, a, f) for c, a, f in
             zip(jax.tree.leaves(arrays["closed"]), jax.tree.leaves(arrays["auto"]), floors)]
    return GradCheck(
        family=repr(family), dtype=str(np.dtype(dtype)), backend=jax.default_backend(),
        grad_abs_err=max(p[0] for p in pairs), grad_rel_err=max(p[1] for p in pairs),
        fd_rel_err=_fd_error(arrays["fd"], arrays["exact"]) if "fd" in arrays else None,
        fisher_abs_err=fisher_abs, fisher_rel_err=fisher_rel, rtol=rtol,
    )


def check_grad(family: Family, outputs: Outputs, targets: Targets, *, rtol: float | None = None, seed: int = 0,
               finite_differences: bool = True, key: jax.Array | None = None) -> GradCheck:
    """Compare ``family``'s closed forms with autodiff (and finite differences) at one input.

    Args:
      family: any mlnll family (an instance).
      outputs: raw outputs at the full batch shape (a broadcast leaf is compared after summing the
        closed form over its broadcast axes).
      targets: targets for those outputs.
      rtol: relative tolerance; default by dtype (``tolerances.TOLERANCES``: float64 1e-12, float32
        1e-5).
      seed: seeds the finite-difference directions (numpy's generator).
      finite_differences: compare with finite differences, computed in float64 whatever the
        outputs' dtype (a local x64 scope; x64 need not be enabled).
      key: deprecated (a JAX key for the directions); use ``seed``.

    Returns:
      A ``GradCheck`` with the errors and ``passed``.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> r = mlnll.check_grad(mlnll.Categorical(), jnp.array([[20.0, 0.0, 0.0]]), jnp.array([0]))
      >>> r.passed, r.fd_rel_err < 1e-7
      (True, True)
    """
    check_family(family, caller="check_grad")
    if key is not None:
        warnings.warn("check_grad(key=...) is deprecated; the directions are drawn from seed=...",
                      DeprecationWarning, stacklevel=2)
        seed = int(np.asarray(jax.random.key_data(key)).sum())
    with x64_scope():
        arrays = _evaluate(family, outputs, targets, seed=int(seed), finite_differences=bool(finite_differences))
    return judge(family, outputs, arrays, rtol=rtol)

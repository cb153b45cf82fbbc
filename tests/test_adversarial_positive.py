"""The adversarial table of positive targets and of the multivariate normal's Cholesky diagonal.

Each row names a family, raw outputs and targets (rounded to the working dtype first) and the
textbook log-density evaluated by mpmath on those rounded inputs. Targets include subnormal
numbers (1.4e-45 and 4.9e-324, the smallest of float32 and float64): XLA on a CPU reads them as 0
(denormals-are-zero) in fused kernels and eagerly, so ``log y`` gave -inf (eagerly, with NaN
gradients) or NaN (jitted) where the density is finite. The convention (numerics/positive.py): a
subnormal target is the positive number its bits say. Every row runs eagerly and under
``jax.jit``; the value must equal mpmath's, ``jax.grad`` in the outputs must be finite wherever the
value is and equal mpmath's derivative, and the target gradient must equal mpmath's (or be an
infinity of its sign where it overflows). One batch per family and dtype: one compile each.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

import mlnll

F32, F64 = np.dtype("float32"), np.dtype("float64")
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


def _target(spec, dtype) -> float:
    """A target by name (subnormals depend on the dtype) or a number, rounded to ``dtype``."""
    info = np.finfo(dtype)
    named = {"min": info.smallest_subnormal, "3min": 3 * info.smallest_subnormal,
             "-min": -info.smallest_subnormal, "half_tiny": info.tiny / 2, "tiny": info.tiny,
             "1-": 1 - info.epsneg}
    return float(np.asarray(named.get(spec, spec), dtype))


def _eps(dtype) -> float:
    return float(np.finfo(dtype).eps)  # a Python float: tolerances of huge gradients do not overflow


def _tiny(dtype) -> float:
    return float(np.finfo(dtype).tiny)


def _rounded(values, dtype):
    return [float(np.asarray(v, dtype)) for v in values]


# -- textbook log-densities (mpmath) -----------------------------------------------------------------


def _gamma(log_a, log_b, y):
    a, b = mp.exp(log_a), mp.exp(log_b)
    return a * log_b - mp.loggamma(a) + (a - 1) * mp.log(y) - b * y


def _beta(log_a, log_b, y):
    a, b = mp.exp(log_a), mp.exp(log_b)
    return ((a - 1) * mp.log(y) + (b - 1) * mp.log1p(-y)
            - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)))


def _log_normal(loc, log_scale, y):
    r = (mp.log(y) - loc) * mp.exp(-log_scale)
    return -r ** 2 / 2 - log_scale - mp.log(2 * mp.pi) / 2 - mp.log(y)


def _exponential(log_rate, y):
    return log_rate - mp.exp(log_rate) * y


# d log p / dy of the textbook densities (a finite difference in y cannot see a term b y of 1e-300
# next to a log p of 10 at any working precision).
def _gamma_dy(log_a, log_b, y):
    return (mp.exp(log_a) - 1) / y - mp.exp(log_b)


def _beta_dy(log_a, log_b, y):
    return (mp.exp(log_a) - 1) / y - (mp.exp(log_b) - 1) / (1 - y)


def _log_normal_dy(loc, log_scale, y):
    s = mp.exp(log_scale)
    return -((mp.log(y) - loc) / s ** 2 + 1) / y


def _exponential_dy(log_rate, y):
    return -mp.exp(log_rate)


def _dirichlet(log_a, y):
    a = [mp.exp(v) for v in log_a]
    return (mp.loggamma(sum(a)) - sum(mp.loggamma(v) for v in a)
            + sum((v - 1) * mp.log(t) for v, t in zip(a, y)))


# (name, family, (log p, d log p / dy), points): a point is (outputs..., target); a target off the
# support must give -inf.
# Beta's and Dirichlet's saddle-point form takes ``a u`` and ``-log y`` separately, each of size
# |log y| (103 at 1.4e-45, 744 at 4.9e-324), where the textbook value may be 0 (Beta(1, 1)): their
# tolerance is relative to |log y| too (``_tolerance``).
SCALAR_ROWS = [
    ("Gamma", mlnll.Gamma(), (_gamma, _gamma_dy), [
        (0.0, 0.0, "min"), (0.0, 0.0, "3min"), (0.0, 0.0, "half_tiny"), (0.0, 0.0, "tiny"),
        (math.log(0.5), 0.0, "min"), (math.log(3.0), math.log(2.0), "min"), (4.0, -2.0, "half_tiny"),
        (0.0, 80.0, "min"), (-3.0, 1.0, "3min"), (0.0, 0.0, 1.0), (0.0, 0.0, "-min"), (0.0, 0.0, 0.0),
    ]),
    ("Beta", mlnll.Beta(), (_beta, _beta_dy), [
        (0.0, 0.0, "min"), (0.0, 0.0, "half_tiny"), (math.log(2.0), 0.0, "min"),
        (math.log(0.5), math.log(0.5), "min"), (0.0, math.log(3.0), "half_tiny"), (3.0, -1.0, "3min"),
        (0.0, 0.0, "1-"), (math.log(0.5), 2.0, "1-"), (0.0, 0.0, 0.25), (0.0, 0.0, "-min"), (0.0, 0.0, 0.0),
    ]),
    ("LogNormal", mlnll.LogNormal(), (_log_normal, _log_normal_dy), [
        (0.0, 0.0, "min"), (-100.0, 0.0, "min"), (0.0, 5.0, "half_tiny"), (0.0, 10.0, "half_tiny"),
        (-700.0, 3.0, "3min"), (0.0, 0.0, 1.0), (0.0, 0.0, "-min"), (0.0, 0.0, 0.0),
    ]),
    ("Exponential", mlnll.Exponential(), (_exponential, _exponential_dy), [
        (0.0, "min"), (10.0, "half_tiny"), (80.0, "min"), (0.0, 0.0), (0.0, -0.0), (0.0, "-min"),
        (0.0, 1.0), (88.7, "half_tiny"), (-88.7, 3e38),
    ]),
]


def _step(x):
    """A central-difference step of 1e-25 relative to max(|x|, 1): at 60 digits it keeps ~35."""
    return max(abs(x), 1) * mp.mpf(10) ** -25


def _mp_grad(exact, exact_dy, point):
    """``d log p / d (outputs..., y)`` by mpmath at 60 digits (the outputs' by central differences)."""
    with mp.workdps(60):
        args = [mp.mpf(v) for v in point]

        def partial(i):
            return mp.diff(lambda t: exact(*args[:i], t, *args[i + 1:]), args[i], h=_step(args[i]))

        return [partial(i) for i in range(len(args) - 1)] + [exact_dy(*args)]


def _tolerance(name, dtype, want, y):
    extra = abs(math.log(y)) if name in ("Beta", "Dirichlet") else 0.0
    return 16 * _eps(dtype) * max(abs(want), 1.0, extra)


# Every table is padded to one batch size (repeating its first point): eagerly, the closed forms'
# partials run primitive by primitive, each compiled per shape, and the families then share them.
BATCH = 14


def _padded(points):
    assert len(points) <= BATCH
    return list(points) + [points[0]] * (BATCH - len(points))


def _value_and_grads(family, outputs, targets, use_jit):
    """Per-example values and gradients in the outputs and the targets (examples are independent)."""

    def run(o, y):
        values, vjp = jax.vjp(family.log_prob, o, y)
        d_out, d_y = vjp(jnp.ones_like(values))
        return values, d_out, d_y

    # As numpy arrays: indexing a jax array per point would dispatch (and compile) a gather each time.
    return jax.tree.map(np.asarray, (jax.jit(run) if use_jit else run)(outputs, targets))


def _assert_close(got, want, tol, what, dtype):
    """``got`` equals ``want`` to ``tol``, or where ``want`` is beyond the dtype's range an infinity of
    its sign."""
    info = np.finfo(dtype)
    if abs(want) > info.max:
        assert math.isinf(got) and (got > 0) == (want > 0), (what, got, want)
    else:
        assert abs(got - float(want)) <= tol, (what, got, float(want), tol)


@DTYPES
@pytest.mark.parametrize("row", SCALAR_ROWS, ids=[r[0] for r in SCALAR_ROWS])
def test_positive_targets_give_the_exact_value_eagerly_and_jitted(row, dtype):
    name, family, (exact, exact_dy), points = row
    points = [_rounded(p[:-1], dtype) + [_target(p[-1], dtype)] for p in points]
    columns = [jnp.asarray(c, dtype) for c in zip(*_padded(points))]
    outputs = columns[0] if len(columns) == 2 else tuple(columns[:-1])
    results = [_value_and_grads(family, outputs, columns[-1], use_jit) for use_jit in (False, True)]
    for i, point in enumerate(points):
        *params, y = point
        with mp.workdps(50):
            in_support = y > 0 or (y == 0 and name == "Exponential")
            want = exact(*(mp.mpf(v) for v in params), mp.mpf(y)) if in_support else None
        got = []
        for (values, d_out, d_y), use_jit in zip(results, ("eager", "jit")):
            value = float(values[i])
            grads = [float(g[i]) for g in jax.tree.leaves(d_out)]
            got.append(value)
            if want is None:  # outside the support: -inf, NaN derivatives
                assert value == -math.inf and all(math.isnan(g) for g in grads), (name, point, use_jit, grads)
                continue
            tol = _tolerance(name, dtype, float(want), y)
            _assert_close(value, want, tol, (name, point, use_jit, "value"), dtype)
            assert all(math.isfinite(g) for g in grads), (name, point, use_jit, grads)
            *d_params, d_target = _mp_grad(exact, exact_dy, point)
            for g, w in zip(grads, d_params):
                # Each partial multiplies terms of size |log y| at most: the value's tolerance scaled
                # by the partial's own size.
                tol = 16 * _eps(dtype) * max(abs(float(w)), 1.0, abs(math.log(y)) if y > 0 else 0.0)
                _assert_close(g, w, tol, (name, point, use_jit, "d outputs"), dtype)
            _assert_close(float(d_y[i]), d_target, 16 * _eps(dtype) * abs(float(d_target)) + _tiny(dtype),
                          (name, point, use_jit, "d target"), dtype)
        if want is not None:
            assert abs(got[0] - got[1]) <= _tolerance(name, dtype, float(want), y), (name, point, got)


# Dirichlet, K = 3: (log concentrations, target row); rows sum to 1 up to the subnormal entries.
DIRICHLET_POINTS = [
    ((0.0, 0.0, 0.0), ("min", 0.5, 0.5)),
    ((0.0, math.log(2.0), math.log(0.5)), ("min", "min", 1.0)),
    ((math.log(0.5), 0.0, 1.0), ("half_tiny", 0.25, 0.75)),
    ((2.0, -1.0, 0.0), ("3min", 0.5, 0.5)),
    ((0.0, 0.0, 0.0), (0.25, 0.25, 0.5)),
    ((0.0, 0.0, 0.0), ("-min", 0.5, 0.5)),
]


@DTYPES
def test_dirichlet_subnormal_entries_give_the_exact_value_eagerly_and_jitted(dtype):
    family = mlnll.Dirichlet()
    log_a = [_rounded(a, dtype) for a, _ in DIRICHLET_POINTS]
    ys = [[_target(t, dtype) for t in y] for _, y in DIRICHLET_POINTS]
    outputs, targets = jnp.asarray(_padded(log_a), dtype), jnp.asarray(_padded(ys), dtype)
    results = [_value_and_grads(family, outputs, targets, use_jit) for use_jit in (False, True)]
    eps = _eps(dtype)
    for i, (a, y) in enumerate(zip(log_a, ys)):
        got = [float(r[0][i]) for r in results]
        if min(y) <= 0:
            for r in results:
                assert got == [-math.inf, -math.inf] and np.all(np.isnan(r[1][i])), (a, y, got)
            continue
        with mp.workdps(60):
            args = [mp.mpf(v) for v in a + y]
            exact = lambda *v: _dirichlet(v[:3], v[3:])  # noqa: E731
            want = exact(*args)
            d_want = [mp.diff(lambda t: exact(*args[:k], t, *args[k + 1:]), args[k], h=_step(args[k]))
                      for k in range(3)]
            d_want += [(mp.exp(args[k]) - 1) / args[3 + k] for k in range(3)]  # (a_k - 1) / y_k
        scale = sum(abs(math.log(t)) for t in y)
        tol = 16 * eps * max(abs(float(want)), 1.0, scale)
        for r, value in zip(results, got):
            _assert_close(value, want, tol, (a, y, "value"), dtype)
            for k in range(3):
                _assert_close(float(r[1][i, k]), d_want[k], 16 * eps * max(abs(float(d_want[k])), 1.0, scale),
                              (a, y, k, "d log_concentration"), dtype)
                tol_y = 16 * eps * abs(float(d_want[3 + k])) + _tiny(dtype)
                _assert_close(float(r[2][i, k]), d_want[3 + k], tol_y, (a, y, k, "d target"), dtype)
        assert abs(got[0] - got[1]) <= tol, (a, y, got)


# -- MultivariateNormal, d = 2: Cholesky log-diagonals of +-1e4 and +-88.7, targets 3e38 -------------
# (loc, raw scale_tril [[log L00, ignored], [L10, log L11]], y). At log L00 = 1e4 and y = loc the
# diagonal partial L00 w0 z0 - 1 was 0 * inf - 1 = NaN; at log L00 = -1e4, y = loc, the solve was
# 0 / 0; at log L00 = 89 (float32), exp overflowed before dividing 3e38.
MVN_POINTS = [
    ((0.0, 0.0), (1e4, 0.0, 0.0), (0.0, 0.0)),
    ((0.0, 0.0), (-1e4, 0.0, 0.0), (0.0, 0.0)),
    ((0.5, -1.0), (1e4, 1e30, 1e4), (0.5, -1.0)),
    ((0.0, 0.0), (1e4, 0.5, 0.0), (1.0, 1.0)),
    ((0.0, 0.0), (88.7, 0.5, 0.0), (3e38, 1.0)),
    ((0.0, 0.0), (89.0, 0.0, -88.7), (3e38, 1e-30)),
    ((-3e38, 0.0), (88.7, 0.0, 0.0), (3e38, 1.0)),
    ((0.0, 0.0), (-88.7, 0.5, 0.0), (2e-38, 0.5)),
    ((0.0, 0.0), (-88.7, 0.0, 88.7), (0.0, 3e38)),
    ((0.2, 0.1), (0.5, 0.7, -0.3), (1.0, -2.0)),
    # a log-diagonal of -1e4 with y != loc: z overflows (exact log p about -e^(2e4)), where the solve
    # carried inf into inf - inf = NaN
    ((0.0, 0.0), (-1e4, 0.5, 0.0), (1.0, 1.0)),
    ((0.0, 0.0), (0.0, 0.5, -1e4), (0.0, 1.0)),
    ((0.0, 0.0), (-1e4, 1.0, -1e4), (1.0, 1.0)),
    # (y_1 - loc_1) / L_11 and (L_10 / L_11) z_0 both -inf: the solve's -inf + inf was NaN
    ((0.0, 0.0), (0.0, -1.0, -1e4), (1.0, -0.5)),
]


def _mvn(loc0, loc1, d0, l10, d1, y0, y1):
    """log N(y; loc, L L^T) with L = [[e^d0, 0], [l10, e^d1]], by forward substitution."""
    z0 = (y0 - loc0) * mp.exp(-d0)
    z1 = (y1 - loc1 - l10 * z0) * mp.exp(-d1)
    return -(z0 ** 2 + z1 ** 2) / 2 - d0 - d1 - mp.log(2 * mp.pi)


@DTYPES
def test_multivariate_normal_extreme_cholesky_diagonals(dtype):
    family = mlnll.MultivariateNormal()
    points = [(_rounded(loc, dtype), _rounded(raw, dtype), _rounded(y, dtype)) for loc, raw, y in MVN_POINTS]
    loc = jnp.asarray([p[0] for p in _padded(points)], dtype)
    raw = jnp.asarray([[[p[1][0], 7.0], [p[1][1], p[1][2]]] for p in _padded(points)], dtype)
    y = jnp.asarray([p[2] for p in _padded(points)], dtype)
    results = [_value_and_grads(family, (loc, raw), y, use_jit) for use_jit in (False, True)]
    info = np.finfo(dtype)
    for i, (l, r, t) in enumerate(points):
        args = [*l, r[0], r[1], r[2], *t]
        with mp.workdps(60):
            margs = [mp.mpf(v) for v in args]
            want = _mvn(*margs)
            d_want = [mp.diff(lambda s: _mvn(*margs[:k], s, *margs[k + 1:]), margs[k], h=_step(margs[k]))
                      for k in range(7)]
        got = [float(res[0][i]) for res in results]
        if abs(want) > info.max:  # the exact value overflows the dtype
            assert got == [-math.inf, -math.inf], (args, got)
            continue
        # exp(-log_diag) is range-reduced beyond 86 (float32): its exponent off by an ulp of log_diag.
        rel = 16 * _eps(dtype) * max(1.0, abs(r[0]), abs(r[2]))
        for res, value in zip(results, got):
            _assert_close(value, want, rel * max(abs(float(want)), 1.0), (args, "value"), dtype)
            d_loc, d_raw = res[1]
            grads = [float(d_loc[i, 0]), float(d_loc[i, 1]), float(d_raw[i, 0, 0]), float(d_raw[i, 1, 0]),
                     float(d_raw[i, 1, 1])]
            assert float(d_raw[i, 0, 1]) == 0.0  # the strict upper triangle is ignored
            for g, w in zip(grads + [float(res[2][i, 0]), float(res[2][i, 1])], d_want):
                # Finite wherever the exact partial is a number of the dtype (checked by
                # _assert_close: an infinity only where it overflows). Below the normal range a
                # partial is a flushed 0 or a tiny number.
                tol = rel * max(abs(float(w)), 1.0) if abs(w) >= _tiny(dtype) else 2 * _tiny(dtype)
                _assert_close(g, w, tol, (args, "gradient"), dtype)
        assert abs(got[0] - got[1]) <= rel * max(abs(float(want)), 1.0), (args, got)


def test_hessians_stay_finite_at_subnormal_targets():
    """Second order runs through the closed-form partials, which read subnormal targets exactly."""
    dtype = F32
    y = jnp.asarray(np.finfo(dtype).smallest_subnormal, dtype)
    zeros = (jnp.zeros((), dtype), jnp.zeros((), dtype))
    gamma = jax.jit(jax.hessian(lambda o: mlnll.Gamma().log_prob(o, y)))(zeros)
    assert all(np.isfinite(h) for h in jax.tree.leaves(gamma)), gamma
    beta = jax.jit(jax.hessian(lambda o: mlnll.Beta().log_prob(o, y)))(zeros)
    assert all(np.isfinite(h) for h in jax.tree.leaves(beta)), beta
    # Gamma at a = b = 1: d^2 log p / d log_a^2 = a (log y - digamma(a)) - a^2 trigamma(a) at y = 1.4e-45.
    want = math.log(float(y)) + 0.5772156649015329 - math.pi ** 2 / 6
    assert abs(float(gamma[0][0]) - want) <= 1e-5 * abs(want), (gamma, want)


def test_a_rate_that_overflows_meets_a_subnormal_target():
    """``b y`` (Gamma) and ``n y`` (Dirichlet) with b, n = e^1e4 = inf and y = 1.4e-45, which
    denormals-are-zero read as 0: inf * 0 = NaN, where the exact log-density is -inf to float32
    (Gamma(1, e^1e4): log b - b y = 1e4 - e^(1e4 - 103.3); Dirichlet(e^1e4, e^1e4) at (y, 1 - y):
    below -n KL, -e^(1e4 - 104)). numerics.multiply_by_positive reads y from its bits."""
    sub = float(np.finfo(F32).smallest_subnormal)
    with mp.workdps(50):
        gamma_exact = _gamma(mp.mpf(0), mp.mpf(10000), mp.mpf(sub))
    assert gamma_exact < -np.finfo(F64).max  # -inf in both dtypes
    gamma = mlnll.Gamma().log_prob
    dirichlet = mlnll.Dirichlet().log_prob
    for run_g, run_d in ((gamma, dirichlet), (jax.jit(gamma), jax.jit(dirichlet))):
        assert float(run_g((jnp.zeros(1, F32), jnp.full(1, 1e4, F32)), jnp.full(1, sub, F32))[0]) == -math.inf
        value = run_d(jnp.full((1, 2), 1e4, F32), jnp.asarray([[sub, 1.0]], F32))
        assert float(value[0]) == -math.inf, value

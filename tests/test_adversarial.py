"""The adversarial table: odd and extreme inputs, each with its exact expected outcome.

Every row names a family, raw outputs and targets (rounded to the working dtype first, so the
table measures the function and not the rounding of its inputs) and what must come out: a finite
value equal to the textbook formula evaluated by mpmath at 50 digits on those rounded inputs, or
``-inf`` (outside the support, with NaN derivatives by the one convention), or at least never a
finite number (a NaN target). Each row runs eagerly and under ``jax.jit`` (XLA flushes subnormals,
so the two must agree), and ``jax.grad`` must be finite wherever the value is.
"""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

import mlnll

F32, F64 = np.dtype("float32"), np.dtype("float64")
PI = mp.pi


def _r(loc, log_scale, y):
    return (mp.mpf(y) - mp.mpf(loc)) * mp.exp(-mp.mpf(log_scale))


def _normal(loc, log_scale, y):
    return -_r(loc, log_scale, y) ** 2 / 2 - log_scale - mp.log(2 * PI) / 2


def _laplace(loc, log_scale, y):
    return -abs(_r(loc, log_scale, y)) - log_scale - mp.log(2)


def _cauchy(loc, log_scale, y):
    return -mp.log(PI) - log_scale - mp.log1p(_r(loc, log_scale, y) ** 2)


def _logistic(loc, log_scale, y):
    r = _r(loc, log_scale, y)
    return -abs(r) - log_scale - 2 * mp.log1p(mp.exp(-abs(r)))


def _student_t4(loc, log_scale, y):
    nu = mp.mpf(4)
    r = _r(loc, log_scale, y)
    return (mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2) - mp.log(nu * PI) / 2 - log_scale
            - (nu + 1) / 2 * mp.log1p(r ** 2 / nu))


def _student_t_learned(log_df, y):
    """StudentT(loc 0, log_scale 0, log_df) at y, the textbook density (nu may be e^10000)."""
    # log Gamma((nu+1)/2) - log Gamma(nu/2) cancels ~log10(nu) digits: carry that many more.
    with mp.workdps(60 + int(log_df / math.log(10))):
        nu, y = mp.exp(mp.mpf(log_df)), mp.mpf(y)
        return +(mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2) - mp.log(nu * PI) / 2
                 - (nu + 1) / 2 * mp.log1p(y ** 2 / nu))


LOCATION_SCALE = [
    ("Normal", mlnll.Normal(), _normal),
    ("Laplace", mlnll.Laplace(), _laplace),
    ("Cauchy", mlnll.Cauchy(), _cauchy),
    ("Logistic", mlnll.Logistic(), _logistic),
    ("StudentT(df=4)", mlnll.StudentT(df=4.0), _student_t4),
]

# (loc, log_scale, y): a scale of e^-10000 with y = loc (0 * inf inside r), a scale near the top of
# float32 with y = 3e38 (e^-88.7 is subnormal in float32), and ordinary points for contrast.
LOCATION_SCALE_POINTS = [
    (0.5, -10000.0, 0.5),
    (0.0, 88.7, 3e38),
    (-3e38, 88.7, 3e38),
    (1.0, -80.0, 1.0 + 2.0 ** -20),
    (0.0, 0.0, 1e30),
]


def _rounded(values, dtype):
    return tuple(float(np.asarray(v, dtype)) for v in values)


def _value_rows():
    rows = []
    for name, family, exact in LOCATION_SCALE:
        for loc, log_scale, y in LOCATION_SCALE_POINTS:
            rows.append((f"{name} at loc={loc:g}, log_scale={log_scale:g}, y={y:g}", family,
                         lambda d, a=(loc, log_scale): tuple(jnp.asarray([v], d) for v in a),
                         lambda d, y=y: jnp.asarray([y], d),
                         lambda d, p=(loc, log_scale, y), f=exact: f(*_rounded(p, d))))
    for log_df, y in ((88.5, 1.0), (1e4, 1.0), (1e4, 1e10), (80.0, 1e10), (30.0, 1.0)):
        # A learned df at the top of the range: the Normal limit (log_df = 1e4 gave NaN, 88.5 in
        # float32 lost r^2/2 to an underflowed r^2/nu).
        rows.append((f"StudentT at log_df={log_df:g}, y={y:g}", mlnll.StudentT(),
                     lambda d, ldf=log_df: tuple(jnp.asarray([v], d) for v in (0.0, 0.0, ldf)),
                     lambda d, y=y: jnp.asarray([y], d),
                     lambda d, p=(log_df, y): _student_t_learned(*_rounded(p, d))))
    rows.append(("Exponential at log_rate=10000, y=0", mlnll.Exponential(),
                 lambda d: jnp.asarray([10000.0], d), lambda d: jnp.asarray([0.0], d),
                 lambda d: mp.mpf(10000)))
    return rows


VALUE_ROWS = _value_rows()

def _params():
    for row in VALUE_ROWS:
        for dtype in (F32, F64):
            yield pytest.param(row, dtype, id=f"{row[0]}-{dtype}")


def _run(family, outputs, targets, use_jit):
    def value_and_grad(o):
        return jax.value_and_grad(lambda o: jnp.sum(family.log_prob(o, targets)))(o)

    return (jax.jit(value_and_grad) if use_jit else value_and_grad)(outputs)


@pytest.mark.parametrize("row, dtype", list(_params()))
def test_extreme_but_finite_inputs_give_the_exact_value_and_a_finite_gradient(row, dtype):
    _, family, outputs, targets, exact = row
    with mp.workdps(50):  # local: other test modules set their own mpmath precision
        want = exact(dtype)
    if not abs(want) < np.finfo(dtype).max:
        pytest.skip("the exact value overflows this dtype")
    for use_jit in (False, True):
        value, grad = _run(family, outputs(dtype), targets(dtype), use_jit)
        assert value.dtype == dtype
        # The value's conditioning is at most ~1 in each raw output at these points (a relative
        # change of log_scale moves log p by at most |log_scale| * |d log p / d log_scale|
        # <= |log p| + 1): a few roundings of the dtype.
        tol = 16 * np.finfo(dtype).eps * max(abs(float(want)), 1.0)
        assert abs(float(value) - float(want)) <= tol, (use_jit, float(value), float(want))
        assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad)), (use_jit, grad)


# Gradient points: the loc gradient's 1/s meets a ratio that is a subnormal (Cauchy, StudentT at
# r = -1.6e38 give -4 and -2.5 (df 4), not 0), and the points of the value table above.
# (The scale e^-10000 at y = loc is asserted on its own: a numerical derivative there needs a step
# far below e^-10000.)
GRADIENT_POINTS = LOCATION_SCALE_POINTS[1:] + [(0.5, -88.7, 0.0), (0.5, -80.0, 0.0), (0.0, -100.0, 1e-30)]


def _exact_gradient(exact, loc, log_scale, y):
    """``d log p / d (loc, log_scale)`` by mpmath at 150 digits (a gradient of e^-240 next to a
    value of 120 needs more than 50)."""
    with mp.workdps(150):
        loc, log_scale, y = mp.mpf(loc), mp.mpf(log_scale), mp.mpf(y)
        return (mp.diff(lambda t: exact(t, log_scale, y), loc), mp.diff(lambda t: exact(loc, t, y), log_scale))


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("row", LOCATION_SCALE, ids=[r[0] for r in LOCATION_SCALE])
def test_extreme_location_scale_gradients_match_mpmath(row, dtype):
    _, family, exact = row
    info = np.finfo(dtype)
    points = [_rounded(point, dtype) for point in GRADIENT_POINTS]
    locs, log_scales, ys = (jnp.asarray(column, dtype) for column in zip(*points))
    _, grads = _run(family, (locs, log_scales), ys, use_jit=True)  # one program for every point
    for i, (loc, log_scale, y) in enumerate(points):
        point = points[i]
        if -log_scale > math.log(info.max):
            # 1/scale is not a number of this dtype (a scale below 1/largest, e^-100 in float32):
            # the partials then carry 1/scale clamped at the largest float (standardize's limit).
            continue
        for got, want in zip((float(g[i]) for g in grads), _exact_gradient(exact, loc, log_scale, y)):
            if abs(want) > info.max:
                assert abs(got) == np.inf and np.sign(got) == np.sign(float(want)), (point, got)
            elif abs(want) >= info.tiny:
                # exp(-log_scale) is range-reduced beyond |log_scale| = 86 (float32): an exponent
                # off by at most an ulp of log_scale, so a relative |log_scale| eps, plus roundings.
                tol = 8 * info.eps * max(1.0, abs(log_scale))
                assert abs(got - float(want)) <= tol * abs(float(want)), (point, got, float(want))
            else:  # the exact gradient is below the normal range: a flushed 0 or a tiny number
                assert abs(got) < 2 * info.tiny, (point, got, float(want))
    # At y = loc every one of these densities is stationary in loc (symmetric about it; Laplace's
    # subgradient 0), and log p = const - log_scale there: the gradient is exactly (0, -1).
    at_loc = tuple(jnp.asarray([v], dtype) for v in (0.5, -10000.0))
    _, (d_loc, d_log_scale) = _run(family, at_loc, jnp.asarray([0.5], dtype), use_jit=True)
    assert float(d_loc[0]) == 0.0 and float(d_log_scale[0]) == -1.0, (d_loc, d_log_scale)


def _one(d, *values):
    return tuple(jnp.asarray([v], d) for v in values)


# Families of real, positive or bounded targets at targets that are not in their support.
CONTINUOUS = [
    ("Normal", mlnll.Normal(), lambda d: _one(d, 0.0, 0.0)),
    ("Laplace", mlnll.Laplace(), lambda d: _one(d, 0.0, 0.0)),
    ("Cauchy", mlnll.Cauchy(), lambda d: _one(d, 0.0, 0.0)),
    ("Logistic", mlnll.Logistic(), lambda d: _one(d, 0.0, 0.0)),
    ("StudentT", mlnll.StudentT(), lambda d: _one(d, 0.0, 0.0, 1.0)),
    ("LogNormal", mlnll.LogNormal(), lambda d: _one(d, 0.0, 0.0)),
    ("Exponential", mlnll.Exponential(), lambda d: jnp.asarray([0.0], d)),
    ("Gamma", mlnll.Gamma(), lambda d: _one(d, 0.0, 0.0)),
    ("Beta", mlnll.Beta(), lambda d: _one(d, 0.0, 0.0)),
    ("VonMises", mlnll.VonMises(), lambda d: _one(d, 0.0, 0.0)),
    ("MixtureSameFamily(Normal)", mlnll.MixtureSameFamily(mlnll.Normal()),
     lambda d: (jnp.zeros((1, 2), d), (jnp.zeros((1, 2), d), jnp.zeros((1, 2), d)))),
]


@pytest.mark.parametrize("y", [np.inf, -np.inf], ids=["+inf", "-inf"])
@pytest.mark.parametrize("row", CONTINUOUS, ids=[r[0] for r in CONTINUOUS])
def test_an_infinite_target_is_outside_every_support(row, y):
    _, family, outputs = row
    for use_jit in (False, True):
        value, grad = _run(family, outputs(F32), jnp.asarray([y], F32), use_jit)
        assert value == -np.inf, (use_jit, value)
        assert all(np.all(np.isnan(g)) for g in jax.tree.leaves(grad)), (use_jit, grad)


@pytest.mark.parametrize("row", CONTINUOUS, ids=[r[0] for r in CONTINUOUS])
def test_a_nan_target_never_gives_a_finite_number(row):
    _, family, outputs = row
    for use_jit in (False, True):
        value, _ = _run(family, outputs(F32), jnp.asarray([np.nan], F32), use_jit)
        assert not np.isfinite(value), (use_jit, value)


def test_multivariate_normal_at_an_infinite_target():
    family = mlnll.MultivariateNormal()
    outputs = (jnp.zeros((1, 2)), jnp.zeros((1, 2, 2)))
    for use_jit in (False, True):
        value, grad = _run(family, outputs, jnp.asarray([[0.0, np.inf]]), use_jit)
        assert value == -np.inf, (use_jit, value)
        assert all(np.all(np.isnan(g)) for g in jax.tree.leaves(grad)), (use_jit, grad)


def test_the_table_size_is_reported():
    """The number of inputs tried (for the issue's closing note), and that the table is not empty."""
    n = 2 * 2 * len(VALUE_ROWS) + 2 * 2 * len(CONTINUOUS) + 2 * len(CONTINUOUS) + 2
    assert n >= 100
    assert math.isfinite(n)


# -- targets are judged as given, never after a rounding into or out of the support ----------------


def test_wider_float_targets_are_judged_in_their_own_precision():
    z32 = jnp.zeros((1,), F32)
    assert mlnll.Bernoulli().log_prob(z32, jnp.asarray([1 + 1e-12], F64))[0] == -np.inf
    beta = mlnll.Beta().log_prob((z32, z32), jnp.asarray([1 - 1e-12], F64))
    assert beta.dtype == F32 and np.isfinite(beta[0])  # Beta(1, 1) has density 1 on (0, 1)
    logits = jnp.zeros((1, 3), F32)
    assert mlnll.Categorical().log_prob(logits, jnp.asarray([[1 + 1e-12, 0.0, 0.0]], F64))[0] == -np.inf


def test_integer_targets_are_not_rounded_to_a_neighbouring_count_or_wrapped_to_a_class():
    one = jnp.zeros((1,), F32)
    # 10**9 + 1 rounds to 10**9 in float32, a valid count of Binomial(10**9): it must stay invalid.
    assert mlnll.Binomial(total_count=10**9).log_prob(one, jnp.asarray([10**9 + 1], jnp.int32))[0] == -np.inf
    # An int64 label of 2**32 would wrap to class 0 in an int32 cast.
    logits = jnp.zeros((1, 3), F32)
    assert mlnll.Categorical().log_prob(logits, jnp.asarray([2**32], jnp.int64))[0] == -np.inf
    np.testing.assert_allclose(mlnll.Categorical().log_prob(logits, jnp.asarray([2], jnp.uint8)), -math.log(3), rtol=1e-6)


# -- samples stay inside the support at concentrations that pile mass against its edge ----------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("family, outputs", [
    # Beta(0.542, 0.1): 17% of float32 draws (2% of float64) lie within an ulp of 1.
    (mlnll.Beta(), lambda d: (jnp.asarray([math.log(0.542)], d), jnp.asarray([math.log(0.1)], d))),
    (mlnll.Beta(), lambda d: (jnp.asarray([math.log(0.05)], d), jnp.asarray([math.log(3.0)], d))),
    # Dirichlet(0.05, ...): entries below the normal range.
    (mlnll.Dirichlet(), lambda d: jnp.full((1, 4), math.log(0.05), d)),
], ids=["Beta(0.542, 0.1)", "Beta(0.05, 3)", "Dirichlet(0.05 x 4)"])
def test_samples_at_extreme_concentrations_stay_inside_the_support(family, outputs, dtype):
    o = outputs(dtype)
    draws = jax.jit(lambda k: family.sample(k, o, sample_shape=(4096,)))(jax.random.PRNGKey(5))
    log_prob = jax.jit(jax.vmap(family.log_prob, in_axes=(None, 0)))(o, draws)
    assert np.all(np.isfinite(np.asarray(log_prob))), f"{np.mean(~np.isfinite(log_prob)):.1%} outside"


def test_counts_beyond_the_exact_integers_of_the_working_dtype():
    # An integer target the working dtype holds exactly is a count, whatever its size (1e9 is a
    # float32); one it cannot hold (10**9 + 1) is outside every support (test above).
    f32 = jnp.zeros((1,), F32)
    got = mlnll.Binomial(total_count=10**9).log_prob(f32, jnp.asarray([10**9], jnp.int32))[0]
    np.testing.assert_allclose(got, 10**9 * math.log(0.5), rtol=1e-6)
    # Multinomial sums counts: in float32 5e8 + 32 and 5e8 sum to 1e9, so an off-support vector
    # would pass the check. Totals of 2^24 and more are refused at trace time in float32 ...
    with pytest.raises(ValueError, match=r"Multinomial\(total_count=1000000000\).*float32.*2\^24"):
        mlnll.Multinomial(total_count=10**9).log_prob(jnp.zeros((1, 3), F32), jnp.asarray([[1e9, 0.0, 0.0]], F32))
    # ... and judged exactly in float64.
    family, logits = mlnll.Multinomial(total_count=10**9), jnp.zeros((2, 3), F64)
    lp = family.log_prob(logits, jnp.asarray([[5e8 + 32, 5e8, 0.0], [1e9, 0.0, 0.0]], F64))
    assert lp[0] == -np.inf
    np.testing.assert_allclose(lp[1], -1e9 * math.log(3), rtol=1e-12)


def test_exponential_family_builders_at_a_natural_parameter_of_minus_inf():
    # eta = -inf with a zero statistic: the outcome is certain (log p = 0); -inf * 0 gave NaN.
    ef = mlnll.exponential_family
    for family in (ef.bernoulli(), ef.poisson()):
        eta, y = jnp.asarray([-np.inf, 0.0], F32), jnp.asarray([0.0, 1.0], F32)
        value, grad = jax.jit(jax.value_and_grad(lambda o: jnp.sum(family.log_prob(o, y))))(eta)
        assert float(value) == float(jnp.sum(family.log_prob(jnp.asarray([0.0], F32), y[1:])))
        assert np.all(np.isfinite(grad)) and float(grad[0]) == 0.0
    logits = jnp.asarray([[-np.inf, 0.0, 0.0]], F32)
    np.testing.assert_allclose(ef.categorical(3).log_prob(logits, jnp.asarray([1])), [-math.log(2)], rtol=1e-6)


def test_a_list_of_numbers_as_one_output_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"Bernoulli takes logits alone.*list of length 2.*jnp\.asarray"):
        mlnll.Bernoulli().log_prob([0.5, -1.0], [1.0, 0.0])


SUB32 = float(np.finfo(F32).smallest_subnormal)


def _log_sigmoid(z):
    return -mp.log1p(mp.exp(-z))


# (family, outputs, targets, exact log p or None for -inf): subnormal targets at the edge of a
# support that includes 0. XLA:CPU compares a subnormal as 0 (denormals-are-zero): -1.4e-45
# passed ``y >= 0`` and a count of 1.4e-45 passed ``y == floor(y)``; the support is read from the
# bits (numerics.nonnegative_and_finite, nonzero_subnormal).
SUBNORMAL_EDGE_ROWS = [
    ("Bernoulli at y=-1.4e-45", mlnll.Bernoulli(), [0.5], [-SUB32], None),
    ("Bernoulli at y=1.4e-45", mlnll.Bernoulli(), [0.5], [SUB32],
     lambda: SUB32 * _log_sigmoid(mp.mpf(0.5)) + (1 - mp.mpf(SUB32)) * _log_sigmoid(-mp.mpf(0.5))),
    ("Categorical soft with an entry -1.4e-45", mlnll.Categorical(), [[0.0, 1.0]], [[-SUB32, 1.0]], None),
    ("Multinomial(n=2) with a count 1.4e-45", mlnll.Multinomial(total_count=2), [[0.0, 1.0]], [[SUB32, 2.0]], None),
    ("exponential_family.poisson at y=1.4e-45", mlnll.exponential_family.poisson(), [0.5], [SUB32], None),
    ("exponential_family.bernoulli at y=-1.4e-45", mlnll.exponential_family.bernoulli(), [0.5], [-SUB32], None),
    ("Poisson at y=1.4e-45", mlnll.Poisson(), [0.5], [SUB32], None),
    ("Geometric at y=-1.4e-45", mlnll.Geometric(), [0.5], [-SUB32], None),
    ("Binomial(n=10) at y=1.4e-45", mlnll.Binomial(total_count=10), [0.5], [SUB32], None),
    ("NegativeBinomial at y=1.4e-45", mlnll.NegativeBinomial(), ([0.5], [0.3]), [SUB32], None),
    ("exponential_family.categorical(3) at y=1.4e-45", mlnll.exponential_family.categorical(3), [[0.0, 1.0, 2.0]],
     [SUB32], None),
]


@pytest.mark.parametrize("row", SUBNORMAL_EDGE_ROWS, ids=[r[0] for r in SUBNORMAL_EDGE_ROWS])
def test_subnormal_targets_at_the_edge_of_a_support_are_read_from_their_bits(row):
    _, family, outputs, targets, exact = row
    outputs = tuple(jnp.asarray(o, F32) for o in outputs) if isinstance(outputs, tuple) else jnp.asarray(outputs, F32)
    targets = jnp.asarray(targets, F32)
    for use_jit in (False, True):
        value, grad = _run(family, outputs, targets, use_jit)
        if exact is None:
            assert float(value) == -math.inf and np.all(np.isnan(grad)), (use_jit, value, grad)
        else:
            with mp.workdps(50):
                want = float(exact())
            assert abs(float(value) - want) <= 4 * np.finfo(F32).eps * abs(want), (use_jit, float(value), want)
            assert np.all(np.isfinite(grad)), (use_jit, grad)


def test_float32_subnormal_targets_keep_their_value_with_float64_outputs():
    """Float32 targets with float64 outputs run in float64 (unpack), converted exactly: XLA:CPU's
    convert read a float32 subnormal as 0 (Gamma(2, 1) at 1.4e-45 gave -inf; exponential_family's
    poisson took 1.4e-45 for the count 0)."""
    y = jnp.asarray([SUB32], F32)
    zeros = jnp.zeros(1, F64)
    gamma = lambda o: mlnll.Gamma().log_prob(o, y)  # noqa: E731
    outputs = (jnp.asarray([math.log(2.0)], F64), zeros)
    with mp.workdps(50):
        want = float(_gamma_log_pdf(2, 1, mp.mpf(SUB32)))
    for run in (gamma, jax.jit(gamma)):
        value = run(outputs)
        assert value.dtype == F64 and abs(float(value[0]) - want) <= 8 * np.finfo(F64).eps * abs(want), (value, want)
    grad = jax.jit(jax.grad(lambda o: jnp.sum(gamma(o))))(outputs)
    assert all(np.all(np.isfinite(g)) for g in grad), grad
    poisson = mlnll.exponential_family.poisson()
    for run in (poisson.log_prob, jax.jit(poisson.log_prob)):
        assert float(run(zeros, y)[0]) == -math.inf


def _gamma_log_pdf(a, b, y):
    return a * mp.log(b) - mp.loggamma(a) + (a - 1) * mp.log(y) - b * y


def _von_mises_log_pdf_and_d_log_k(loc, log_k, y):
    """log p of VonMises(loc, e^log_k) at y and d log p / d log_k by mpmath; log I0(k) from
    ``besseli`` up to k = e^60, beyond from Hankel's expansion ``I0(k) = e^k / sqrt(2 pi k) (1 +
    1/(8k) + 9/(128 k^2) + O(k^-3))`` (its remainder is below 1e-50 of it there)."""
    k, theta = mp.exp(mp.mpf(log_k)), mp.mpf(y) - mp.mpf(loc)
    one_minus_cos = 2 * mp.sin(theta / 2) ** 2  # k cos(theta) - k, without cancelling e^1e4
    if log_k <= 60:
        log_i0e = mp.log(mp.besseli(0, k)) - k
        complement = 1 - mp.besseli(1, k) / mp.besseli(0, k)
    else:
        log_i0e = -mp.log(2 * PI * k) / 2 + mp.log1p(1 / (8 * k) + 9 / (128 * k ** 2))
        complement = 1 / (2 * k) + 1 / (8 * k ** 2)  # 1 - I1/I0 = 1/(2k) + 1/(8k^2) + O(k^-3)
    return -k * one_minus_cos - mp.log(2 * PI) - log_i0e, k * complement - k * one_minus_cos


# (loc, log_concentration, y): a concentration of e^1e4 = inf (float32 and float64) at the mode
# gave NaN (i0e(inf) = 0 and 0 * inf; the exact density there is sqrt(k / 2 pi)), and its gradient
# NaN (exact: 1/2 in log_k, 0 in loc); e^50 and a point just off the mode for contrast.
VON_MISES_POINTS = [(0.0, 1e4, 0.0), (0.0, 50.0, 0.0), (0.0, 50.0, 1e-10), (1.0, 1e4, 1.0), (0.0, 1e4, 0.5)]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_von_mises_at_huge_concentrations(dtype):
    family = mlnll.VonMises()
    points = [_rounded(p, dtype) for p in VON_MISES_POINTS]
    loc, log_k, y = (jnp.asarray(c, dtype) for c in zip(*points))
    for use_jit in (False, True):
        def run(o):
            values, vjp = jax.vjp(lambda o: family.log_prob(o, y), o)
            return values, vjp(jnp.ones_like(values))[0]
        values, (d_loc, d_log_k) = (jax.jit(run) if use_jit else run)((loc, log_k))
        for i, p in enumerate(points):
            with mp.workdps(50):
                want, want_d = _von_mises_log_pdf_and_d_log_k(*p)
            if want < -np.finfo(dtype).max:
                assert float(values[i]) == -math.inf, (use_jit, p, values[i])
                continue
            tol = 16 * np.finfo(dtype).eps * max(abs(float(want)), 1.0)
            assert abs(float(values[i]) - float(want)) <= tol, (use_jit, p, float(values[i]), float(want))
            assert abs(float(d_log_k[i]) - float(want_d)) <= 16 * np.finfo(dtype).eps * max(abs(float(want_d)), 1.0), (
                use_jit, p, float(d_log_k[i]), float(want_d))
            assert np.isfinite(float(d_loc[i])), (use_jit, p, d_loc[i])


def test_mixture_target_gradient_drops_a_component_of_probability_zero():
    """d log p / dy of a mixture is sum_k r_k dl_k/dy: a component with scale e^-1e4 away from y has
    r_k = 0 and dl_k/dy = inf, which the vjp of r through the components turned into 0 * inf = NaN.
    The exact value is log(1/2 N(0.5; 1, 1)) and d/dy = -(0.5 - 1) = 0.5. A target outside every
    component's support is -inf whatever the mixture logits (+inf made log pi NaN, NaN + -inf NaN)."""
    family = mlnll.MixtureSameFamily(mlnll.Normal())
    for dtype in (F32, F64):
        outputs = (jnp.asarray([[0.0, 0.0]], dtype), (jnp.asarray([[0.0, 1.0]], dtype), jnp.asarray([[-1e4, 0.0]], dtype)))
        y = jnp.asarray([0.5], dtype)
        with mp.workdps(50):
            want = float(mp.log(mp.mpf(0.5)) + _normal(1.0, 0.0, 0.5))
        for use_jit in (False, True):
            f = lambda y: jnp.sum(family.log_prob(outputs, y))  # noqa: E731
            value, d_y = (jax.jit(jax.value_and_grad(f)) if use_jit else jax.value_and_grad(f))(y)
            assert abs(float(value) - want) <= 4 * np.finfo(dtype).eps * abs(want), (use_jit, float(value), want)
            assert float(d_y[0]) == 0.5, (use_jit, d_y)
        infinite_logit = (jnp.asarray([[np.inf, 0.0]], dtype), (jnp.zeros((1, 2), dtype), jnp.zeros((1, 2), dtype)))
        for run in (family.log_prob, jax.jit(family.log_prob)):
            assert float(run(infinite_logit, jnp.asarray([np.inf], dtype))[0]) == -math.inf

"""Hand-picked points for what the adversarial sweep found in the families it did not sweep before
(OrderedLogistic, NormalInverseGamma, Censored, IntervalCensored, Truncated) and in the formulas
they share (StudentT's, Cauchy's, the Normal tails, the Beta and Dirichlet deviance), and Poisson at
a rate that overflows (strict xfails of the sweep before): each point with
its mpmath value and derivatives, run jitted (one program per family and dtype) and, for the
subnormal targets that XLA:CPU flushes, eagerly too.
"""

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

import mlnll

mp.mp.dps = max(mp.mp.dps, 50)
F32, F64 = np.dtype("float32"), np.dtype("float64")
SUB32 = float(np.finfo(F32).smallest_subnormal)


def _eps(dtype) -> float:
    return float(np.finfo(dtype).eps)


def _rounded(values, dtype):
    """The point's numbers as the dtype holds them (the table measures the function, not the
    rounding of its inputs), as Python floats for mpmath."""
    return [float(np.asarray(v, dtype)) for v in values]


def _mp_value_and_gradient(f, point, dps=60):
    """``f(*point)`` and its partial derivatives by mpmath (central differences at ``dps`` digits)."""
    with mp.workdps(dps):
        x = [mp.mpf(v) for v in point]
        value = f(*x)
        grads = []
        for i in range(len(x)):
            def along(t, i=i):
                return f(*(x[:i] + [t] + x[i + 1:]))
            grads.append(mp.diff(along, x[i]))
    return value, grads


def _close(got, want, tol, what):
    want = float(want) if abs(want) <= np.finfo(F64).max else (math.inf if want > 0 else -math.inf)
    if math.isinf(want):
        assert got == want, (what, got, want)
    else:
        assert abs(got - want) <= tol * max(1.0, abs(want)), (what, got, want)


def _value_and_vjp(log_prob):
    """Per-row values and the vjp of ones (each row's gradient in every output and target leaf)."""
    def run(outputs, targets):
        values, vjp = jax.vjp(log_prob, outputs, targets)
        return values, vjp(jnp.ones_like(values))
    return jax.jit(run)


# -- OrderedLogistic -------------------------------------------------------------------------------


def _exp(x):
    """e^x, inf beyond e^(1e6) (whose digits mpmath would not form; past them nothing depends on x)."""
    return mp.inf if x > 1e6 else mp.exp(x)


def _ordered_log_pmf(eta, raw0, raw1, raw2, k):
    c = [raw0, raw0 + _exp(raw1)]
    c.append(c[1] + _exp(raw2))
    cdf = [1 / (1 + _exp(eta - t)) if t != mp.inf else mp.mpf(1) for t in c] + [mp.mpf(1)]
    return mp.log(cdf[k] - (cdf[k - 1] if k > 0 else 0))


# (eta, raw_cutpoints, label): a gap exp(raw_2) of e^1e4 and e^3e38 (inf in both dtypes) around
# the middle class 2: its d/d raw_2 was s_k A + d/expm1(d) = inf * 0 = NaN (exact 0, the class's
# probability no longer depends on the upper cutpoint); a gap exp(-88.7), subnormal in float32,
# which XLA:CPU flushed to 0: -inf for the exact -90.22 (the sweep's find); and a middle class at
# ordinary values.
ORDERED_POINTS = [
    (-1.1726970672607422, (-0.2933128774166107, -0.06811729818582535, 1e4), 2),
    (2.519587516784668, (-0.13952042162418365, -0.14868836104869843, 3e38), 2),
    (1.5103960037231445, (-0.06102792173624039, -0.18463532626628876, -88.69999694824219), 2),
    (0.3, (-0.5, 0.1, 0.2), 1),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_ordered_logistic_at_an_infinite_and_a_subnormal_gap(dtype):
    eta = jnp.asarray([p[0] for p in ORDERED_POINTS], dtype)
    raw = jnp.asarray([p[1] for p in ORDERED_POINTS], dtype)
    labels = jnp.asarray([p[2] for p in ORDERED_POINTS], jnp.int32)
    family = mlnll.OrderedLogistic()
    values, (d_outputs, _) = _value_and_vjp(family.log_prob)((eta, raw), labels)
    d_eta, d_raw = d_outputs
    for i, (e, r, k) in enumerate(ORDERED_POINTS):
        point = _rounded([e, *r], dtype)
        want, grads = _mp_value_and_gradient(lambda *x, k=k: _ordered_log_pmf(*x, k), point)
        tol = 16 * _eps(dtype)
        _close(float(values[i]), want, tol, ("value", i))
        for j, got in enumerate([d_eta[i], *d_raw[i]]):
            _close(float(got), grads[j], tol, ("gradient", i, j))


def test_ordered_logistic_with_a_nan_cutpoint_is_nan_for_every_label():
    """A NaN raw cutpoint that a label does not read (label 1 reads c_0 and c_1 only) made a finite
    number; the distribution is undefined, so every label's value is NaN."""
    family = mlnll.OrderedLogistic()
    raw = jnp.asarray([[-0.965, -0.163, jnp.nan]] * 4, jnp.float32)
    eta = jnp.full((4,), 0.85, jnp.float32)
    for run in (family.log_prob, jax.jit(family.log_prob)):
        values = run((eta, raw), jnp.arange(4, dtype=jnp.int32))
        assert np.all(np.isnan(np.asarray(values))), values


# -- IntervalCensored and the Normal tails -----------------------------------------------------------


def _ncdf(z):
    """Phi(z); beyond |z| = 1e10 by its asymptotic series (four terms: the next is below 1e-80 of it;
    mpmath's erfc cannot take such arguments)."""
    if z == mp.inf or z == -mp.inf:
        return mp.mpf(1) if z > 0 else mp.mpf(0)
    if abs(z) <= 1e10:
        return mp.ncdf(z)
    t = -abs(z)
    if t * t / 2 > 1e6:
        tail = mp.mpf(0)  # e^-(1e6): nothing here depends on it
    else:
        tail = mp.exp(-t * t / 2) / (-t * mp.sqrt(2 * mp.pi)) * (1 - 1 / t**2 + 3 / t**4 - 15 / t**6)
    return tail if z < 0 else 1 - tail


def _normal_interval(loc, log_scale, lower, upper):
    s = mp.exp(log_scale)
    cdf = [_ncdf((t - loc) / s) for t in (lower, upper)]
    sf = [_ncdf((loc - t) / s) for t in (lower, upper)]
    # the smaller side, as mpmath's 60 digits may not hold 1 - tiny
    return mp.log(cdf[1] - cdf[0]) if cdf[1] <= sf[0] else mp.log(sf[0] - sf[1])


# float32 (loc, log_scale, lower, upper) found by the sweep: a bound of -+3e38 (its tail's -h z
# overflows, times the weight 0 of that tail: NaN), scales of e^-88.7 and e^-1e4 (z = +-inf: h z
# was 0 * inf, and the tail not taken, far out, sent 0 * inf back through its where), and one
# ordinary interval. Exact derivatives: the interval's mass is 1 or its lower tail is e^-1e76.
INTERVAL_POINTS = [
    (0.36828991770744324, 0.8054936528205872, -3e38, -0.9133056998252869),
    (-1.6312676668167114, -1.8891314268112183, -2.0947163105010986, 3e38),
    (-0.4414622187614441, -88.7, -math.inf, -0.4218517243862152),
    (SUB32, -88.7, -1.1934027671813965, 0.7703000903129578),
    (0.23326224088668823, -1e4, -math.inf, 34.55430603027344),
    (0.3, 0.2, -0.5, 1.5),
]


def test_interval_censored_where_a_tail_overflows():
    dtype = F32
    points = [_rounded(p, dtype) for p in INTERVAL_POINTS]
    loc, log_scale, lower, upper = (jnp.asarray(c, dtype) for c in zip(*points))
    family = mlnll.IntervalCensored(mlnll.Normal())
    values, ((d_loc, d_log_scale), (d_lower, d_upper)) = _value_and_vjp(family.log_prob)((loc, log_scale), (lower, upper))
    for i, p in enumerate(points):
        finite = [j for j in range(4) if math.isfinite(p[j])]

        def f(*x, p=p, finite=finite):
            full = [mp.mpf(v) if math.isfinite(v) else (mp.inf if v > 0 else -mp.inf) for v in p]
            for j, v in zip(finite, x):
                full[j] = v
            return _normal_interval(*full)

        want, grads = _mp_value_and_gradient(f, [p[j] for j in finite])
        want_grads = [0.0] * 4
        for j, g in zip(finite, grads):
            want_grads[j] = g
        # an interval's value is relative-accurate to eps |log F| / |log F(u) - log F(l)|: 64 eps here
        tol = 64 * _eps(dtype)
        _close(float(values[i]), want, tol, ("value", i))
        for j, got in enumerate([d_loc[i], d_log_scale[i], d_lower[i], d_upper[i]]):
            _close(float(got), want_grads[j], tol, ("gradient", i, j))


# -- Cauchy, StudentT and NormalInverseGamma: r = (y - loc)/scale beyond the dtype -----------------


def _cauchy(loc, log_scale, y):
    r = (y - loc) * mp.exp(-log_scale)
    return -mp.log(1 + r * r) - log_scale - mp.log(mp.pi)


def _student_t(loc, log_scale, log_df, y):
    nu, r = mp.exp(log_df), (y - loc) * mp.exp(-log_scale)
    return (mp.loggamma((nu + 1) / 2) - mp.loggamma(nu / 2) - mp.log(nu * mp.pi) / 2 - log_scale
            - (nu + 1) / 2 * mp.log1p(r * r / nu))


def _nig(loc, log_nu, log_alpha_minus_one, log_beta, y):
    nu, alpha, beta = mp.exp(log_nu), 1 + mp.exp(log_alpha_minus_one), mp.exp(log_beta)
    log_scale = (mp.log(beta) + mp.log((1 + nu) / nu) - mp.log(alpha)) / 2
    return _student_t(loc, log_scale, mp.log(2 * alpha), y)


# (family, outputs, y, mpmath log p, dtypes): y - loc over a scale below 1 beyond float32 (was
# -inf: log1p(r^2) of r = inf), a scale of e^-1e4 at y != loc in both dtypes (r = inf; exact
# -1e4 - log pi for Cauchy), StudentT's nu = e^89.4 beyond float32's range with r^2 of the order of
# nu (nu was held at 1.7e38: 5% off, and the log_df partial r^4/(4 nu) ~ 3e34 was taken as 0), and
# NormalInverseGamma at alpha = e^88.7 (df = 2 alpha beyond float32), where the same held nu made
# -1.21e37 of the exact -1.28e37.
OVERFLOW_POINTS = [
    (mlnll.Cauchy(), (0.11247412115335464, -0.2974572479724884), 3e38, _cauchy, (F32,)),
    (mlnll.Cauchy(), (0.0, -1e4), 1.0, _cauchy, (F32, F64)),
    (mlnll.StudentT(), (0.11247412115335464, -0.2974572479724884, 5.153399467468262), 3e38, _student_t, (F32,)),
    (mlnll.StudentT(), (0.0, -1e4, 1.5), 1.0, _student_t, (F32, F64)),
    (mlnll.StudentT(), (0.0, 0.0, 89.4), 3e18, _student_t, (F32,)),
    (mlnll.NormalInverseGamma(), (-0.5682364106178284, 0.014759303070604801, 88.69999694824219, -0.3986338973045349),
     -0.24539092183113098, _nig, (F32,)),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_standardized_targets_beyond_the_dtype(dtype):
    for family, outputs, y, exact, dtypes in OVERFLOW_POINTS:
        if dtype not in dtypes:
            continue
        point = _rounded([*outputs, y], dtype)
        o = tuple(jnp.asarray([v], dtype) for v in point[:-1])
        values, (d_outputs, d_y) = _value_and_vjp(family.log_prob)(o, jnp.asarray([point[-1]], dtype))
        want, grads = _mp_value_and_gradient(exact, point, dps=90)
        # the value to its conditioning: |log_scale| (and the log of nu) enter it once
        tol = 16 * _eps(dtype) * max(1.0, *(abs(v) for v in point[1:-1]))
        _close(float(values[0]), want, tol, (family, point, "value"))
        for j, got in enumerate([*(g[0] for g in d_outputs), d_y[0]]):
            g = float(grads[j])
            if abs(g) < float(np.finfo(dtype).tiny):
                # exact 2/(y - loc) = 7e-39 is a subnormal, which XLA flushes
                assert abs(float(got)) <= 2 * float(np.finfo(dtype).tiny), (family, point, j, got, g)
            else:
                _close(float(got), g, tol, (family, point, "gradient", j))


# -- Beta and Dirichlet at a subnormal target ----------------------------------------------------


def _beta(log_a, log_b, y):
    a, b = mp.exp(log_a), mp.exp(log_b)
    return (a - 1) * mp.log(y) + (b - 1) * mp.log1p(-y) - (mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b))


# float32 (log_a, log_b) at y = 1.4e-45, which XLA:CPU flushes to 0 under jit and eagerly: a
# concentration of e^1e4 (inf) gave NaN (n y = inf * 0, and b (e^u - 1 - u) = inf * 0 at u = 0;
# the exact log p is below -1e308), and e^80, e^88.7 beside a concentration of 1 (log p = log b,
# d/dlog_a = log y + gamma + digamma(1 + b)).
BETA_POINTS = [(0.0, 1e4), (1e4, 0.0), (0.0, 80.0), (80.0, 0.0)]


def test_beta_and_dirichlet_at_a_subnormal_target():
    dtype = F32
    beta, dirichlet = mlnll.Beta(), mlnll.Dirichlet()
    log_a, log_b = (jnp.asarray(c, dtype) for c in zip(*BETA_POINTS))
    y = jnp.full((len(BETA_POINTS),), SUB32, dtype)
    simplex = jnp.stack([y, jnp.ones_like(y)], axis=-1)  # 1.4e-45 + 1 rounds to 1: on the simplex
    beta_values, ((beta_da, beta_db), _) = _value_and_vjp(beta.log_prob)((log_a, log_b), y)
    dirichlet_values, (dirichlet_d, _) = _value_and_vjp(dirichlet.log_prob)(jnp.stack([log_a, log_b], -1), simplex)
    eager = [np.asarray(beta.log_prob((log_a, log_b), y)), np.asarray(dirichlet.log_prob(jnp.stack([log_a, log_b], -1), simplex))]
    for i, (la, lb) in enumerate(BETA_POINTS):
        # Dirichlet((a, b)) at (y, 1 - y) is Beta(a, b) at y; 1 - 1.4e-45 is 1 to far below float32's eps
        want, grads = _mp_value_and_gradient(lambda a, b: _beta(a, b, mp.mpf(SUB32)), (la, lb), dps=80)
        tol = 16 * _eps(dtype) * max(1.0, abs(la), abs(lb))
        for what, got in [("beta", beta_values[i]), ("dirichlet", dirichlet_values[i]),
                          ("beta eager", eager[0][i]), ("dirichlet eager", eager[1][i])]:
            _close(float(got), want, tol, (what, la, lb))
        if math.isfinite(float(want)) and abs(want) < np.finfo(dtype).max:
            for what, got in [("beta", (beta_da[i], beta_db[i])), ("dirichlet", tuple(dirichlet_d[i]))]:
                for j in range(2):
                    _close(float(got[j]), grads[j], tol, (what, la, lb, j))


# -- Poisson at a rate that overflows ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_poisson_where_the_rate_overflows(dtype):
    """log_rate = 3e38 (and 1e4): y log_rate - e^log_rate - log y! is below -1e308 for every count
    (mpmath), where Loader's bd0 formed m - x (1 - t) = inf - inf = NaN (a strict xfail of the sweep)."""
    family = mlnll.Poisson()
    log_rate = jnp.asarray([3e38, 3e38, 1e4] if dtype == F32 else [1e300, 1e300, 1e4], dtype)
    y = jnp.asarray([37.0, 0.0, 5.0], dtype)
    for lr, k in zip(np.asarray(log_rate, np.float64), np.asarray(y, np.float64)):
        with mp.workdps(30):
            assert k * mp.mpf(lr) - mp.exp(mp.mpf(lr)) - mp.loggamma(k + 1) < -np.finfo(F64).max
    for run in (family.log_prob, jax.jit(family.log_prob)):
        assert np.all(np.asarray(run(log_rate, y)) == -np.inf), run(log_rate, y)
    d = jax.jit(jax.grad(lambda o: jnp.sum(family.log_prob(o, y))))(log_rate)
    assert not np.any(np.isnan(np.asarray(d))), d  # y - rate = -inf: never NaN inside the support


# -- VonMisesFisher (d = 3) ----------------------------------------------------------------------


def _vmf3(v0, v1, v2, log_k, x0, x1, x2):
    """d = 3: ``log C_3(k) + k - k |x - mu|^2 / 2`` (``k mu.x + log C_3`` on the sphere, the form the
    family documents), ``log C_3 = log k - log(4 pi) - log sinh k``, mu = v / |v|."""
    k = mp.exp(log_k)
    norm = mp.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
    mu = [v0 / norm, v1 / norm, v2 / norm]
    gap = sum((x - m) ** 2 for x, m in zip((x0, x1, x2), mu))
    return log_k - mp.log(4 * mp.pi) - mp.log(mp.sinh(k)) + k - k * gap / 2


# (direction, log_concentration, target): ordinary inputs at which the Bessel path's float32 value
# was off by 1.9e-5 (6.4 times the sweep's tolerance: Debye's log(I_25.5 e^-k) and 25 log-ratios of
# size ~4 summed to c ~ -1.7; now the closed form of C_3) and a concentration of 0.05 (160 eps
# there); directions with entries of 3e38, whose norm overflows (the log-density was -inf, then NaN
# where XLA:CPU's 1/max|v| flushed to 0).
VMF_POINTS = [
    ((1.0526700019836426, 0.029527414590120316, -1.089188814163208), -0.9403597116470337,
     (0.8222713470458984, 0.5501538515090942, 0.14560405910015106)),
    ((-0.7178327441215515, -0.13462534546852112, 0.6773449182510376), math.log(0.05),
     (-0.9297536611557007, 0.04859011247754097, -0.3649618625640869)),
    ((1.819326639175415, -0.3009195029735565, 3e38), -1.4944745302200317,
     (-0.6484209895133972, 0.7033288478851318, -0.29133957624435425)),
    ((3e38, 1.0651518106460571, 3e38), -1.0731371641159058,
     (0.9058073163032532, -0.2547200620174408, 0.3385716676712036)),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_von_mises_fisher_on_the_sphere(dtype):
    family = mlnll.VonMisesFisher()
    v = jnp.asarray([p[0] for p in VMF_POINTS], dtype)
    log_k = jnp.asarray([p[1] for p in VMF_POINTS], dtype)
    # on the sphere to the dtype's rounding (float32 unit vectors are off it by ~1e-7 > sqrt(eps) of float64)
    x = jnp.asarray([np.asarray(p[2]) / np.linalg.norm(p[2]) for p in VMF_POINTS], dtype)
    values, ((d_v, d_log_k), _) = _value_and_vjp(family.log_prob)((v, log_k), x)
    for i in range(len(VMF_POINTS)):
        point = _rounded([*np.asarray(v[i]), log_k[i], *np.asarray(x[i])], dtype)
        want, grads = _mp_value_and_gradient(_vmf3, point, dps=120)
        # the value to its conditioning: k |x - mu|^2 / 2 and c are of order 1 at these k
        tol = 16 * _eps(dtype)
        _close(float(values[i]), want, tol, (i, "value"))
        for j, got in enumerate([*np.asarray(d_v[i]), d_log_k[i]]):
            _close(float(got), grads[j], tol, (i, "gradient", j))


# -- Negative-binomial terms at a concentration of inf (NegativeBinomial, BetaBinomial, DirichletMultinomial)


def _log_rising(x, k):
    """``log Gamma(x + k) / Gamma(x)`` for a whole k >= 0, as a sum of logs (exact at x = e^1e4, where
    two loggammas would need thousands of digits to cancel)."""
    return mp.fsum(mp.log(x + j) for j in range(int(k)))


def _negative_binomial(log_mean, log_r, y):
    mu, r = mp.exp(log_mean), mp.exp(log_r)
    return _log_rising(r, y) - mp.loggamma(y + 1) - r * mp.log1p(mu / r) + y * (log_mean - mp.log(r + mu))


def _beta_binomial(n, y):
    def f(log_a, log_b):
        a, b = mp.exp(log_a), mp.exp(log_b)
        return (mp.loggamma(n + 1) - mp.loggamma(y + 1) - mp.loggamma(n - y + 1) + _log_rising(a, y)
                + _log_rising(b, n - y) - _log_rising(a + b, n))
    return f


def _dirichlet_multinomial(n, ys):
    def f(*log_a):
        a = [mp.exp(x) for x in log_a]
        return (mp.loggamma(n + 1) - mp.fsum(mp.loggamma(y + 1) for y in ys) - _log_rising(mp.fsum(a), n)
                + mp.fsum(_log_rising(ak, y) for ak, y in zip(a, ys)))
    return f


# A concentration e^1e4 (inf in both dtypes; e^3e38 is the same): Loader's r-terms (-delta(r) +
# delta(r + y) - bd0(r, m_r), ~ -(y - mu)^2/(2r)) were inf - inf = NaN, where the exact value is the
# Poisson limit (NegativeBinomial) or finite and far below 0 (BetaBinomial's -y log b, the sweep's
# row at y = 6; DirichletMultinomial's -(n - y_k) log a_k). NegativeBinomial's row was a strict xfail.
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_counts_at_an_infinite_concentration(dtype):
    nb = lambda y: lambda a, b: _negative_binomial(a, b, mp.mpf(y))  # noqa: E731
    cases = [  # (family, rows of (outputs, target, mpmath log p)): one program per family
        (mlnll.NegativeBinomial(), [((1.0, 1e4), 28.0, nb(28)), ((-0.4409768283367157, 1e4), 0.0, nb(0))]),
        (mlnll.BetaBinomial(total_count=10), [((0.5274223368444175, 1e4), 6.0, _beta_binomial(10, 6)),
                                               ((1e4, 1.0006767511367798), 0.0, _beta_binomial(10, 0))]),
        (mlnll.DirichletMultinomial(total_count=4),
         [(((0.5274223368444175, -2.7987450069758144, 1e4),), (2.0, 1.0, 1.0), _dirichlet_multinomial(4, (2, 1, 1)))]),
    ]
    # relative to the value (or 1): the value is -y log b (or -(n - y_k) log a_k) at e^1e4, a product of
    # one rounded input, and its other terms are of order 1
    tol = 16 * _eps(dtype)
    if dtype == F64:
        cases = cases[:2]  # DirichletMultinomial's float64 path is BetaBinomial's (one compile less)
    for family, rows in cases:
        points = [_rounded(outputs[0] if len(outputs) == 1 else outputs, dtype) for outputs, _, _ in rows]
        if len(rows[0][0]) == 1:  # one output leaf, a vector (DirichletMultinomial)
            o = jnp.asarray(points, dtype)
        else:
            o = tuple(jnp.asarray(column, dtype) for column in zip(*points))
        values, (d_outputs, _) = _value_and_vjp(family.log_prob)(o, jnp.asarray([y for _, y, _ in rows], dtype))
        d_rows = np.asarray(d_outputs) if len(rows[0][0]) == 1 else np.stack([np.asarray(g) for g in d_outputs], -1)
        for i, (point, (_, _, exact)) in enumerate(zip(points, rows)):
            want, grads = _mp_value_and_gradient(exact, point)
            _close(float(values[i]), want, tol, (family, point, "value"))
            for j, g in enumerate(grads):
                _close(float(d_rows[i][j]), g, tol, (family, point, "gradient", j))


# -- LowRankMultivariateNormal: variances far below the factor, and overflowing residuals -------------


def _low_rank_mvn(loc, W, log_diag, y):
    """50-digit log N(y; loc, W W^T + D) on the dense covariance (d = 3)."""
    Wm = mp.matrix(W)
    sigma = Wm * Wm.T
    for i in range(3):
        sigma[i, i] += mp.exp(mp.mpf(log_diag[i]))
    L = mp.cholesky(sigma)
    r = [mp.mpf(a) - mp.mpf(b) for a, b in zip(y, loc)]
    z = []
    for i in range(3):  # L z = y - loc by forward substitution (lu_solve's pivot test rejects e^3e38)
        z.append((r[i] - mp.fsum(L[i, j] * z[j] for j in range(i))) / L[i, i])
    return (-mp.fsum(t * t for t in z) / 2 - mp.fsum(mp.log(L[i, i]) for i in range(3))
            - 3 * mp.log(2 * mp.pi) / 2)


_LR_W = ((-0.2576349973678589, 2.1329891681671143), (-0.43045035004615784, -1.3538278341293335),
         (0.2783001959323883, 0.6263559460639954))
_LR_LOC = (0.6098311543464661, 0.799039363861084, 1.413498044013977)
# (loc, cov_factor, log_cov_diag, y, exact): the sweep's rows. A log-variance of -88.7 (NaN in both
# dtypes: the capacitance's Cholesky lost its small direction), of -1e4 (the D_1 -> 0 limit, which
# mpmath gives at -200 to 80 digits), a target of 3e38 (float32 gave -4.52; exact -1.06e76 is -inf
# there), two log-variances of 3e38 (their sum overflowed float32: -inf for the exact -3e38).
LOW_RANK_POINTS = [
    (_LR_LOC, _LR_W, (-88.7, 0.24510560929775238, 0.8237295150756836), (2.2493767738342285, -0.14797182381153107, 2.4740560054779053), None),
    (_LR_LOC, _LR_W, (-1e4, 0.24510560929775238, 0.8237295150756836), (2.2493767738342285, -0.14797182381153107, 2.4740560054779053), -200.0),
    (_LR_LOC, _LR_W, (0.7090614438056946, 0.24510560929775238, 0.8237295150756836), (3e38, -0.14797182381153107, 2.4740560054779053), None),
    (_LR_LOC, _LR_W, (3e38, 3e38, 0.518680989742279), (0.06845888495445251, 2.3156497478485107, 3.997950315475464), None),
]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_low_rank_mvn_at_tiny_variances_and_huge_residuals(dtype):
    family = mlnll.LowRankMultivariateNormal()
    loc, W, l, y = (jnp.asarray([p[k] for p in LOW_RANK_POINTS], dtype) for k in range(4))
    values, ((d_loc, d_W, d_l), _) = _value_and_vjp(family.log_prob)((loc, W, l), y)
    for i, (*point, stand_in) in enumerate(LOW_RANK_POINTS):
        loc_i, W_i, l_i, y_i = (np.asarray(jnp.asarray(p, dtype), np.float64).tolist() for p in point)
        if stand_in is not None:
            l_i[0] = stand_in
        with mp.workdps(80):
            want = _low_rank_mvn(loc_i, W_i, l_i, y_i)
        # the value is of order 10 and its inputs of order 1 (the 3e38 log-variances add -3e38 exactly):
        # 16 eps relative to max(1, |value|)
        _close(float(values[i]), want if abs(want) <= np.finfo(dtype).max else -mp.inf, 16 * _eps(dtype), (i, "value"))
        if np.isfinite(float(values[i])):
            for g in (d_loc[i], d_W[i], d_l[i]):
                assert np.all(np.isfinite(np.asarray(g))), (i, g)


# -- Tweedie at a tiny target ---------------------------------------------------------------------


def _tweedie(power):
    """Dunn and Smyth's series summed term by term at 60 digits (j < 400: M <= 1 at these points)."""
    def f(log_mean, log_dispersion, y):
        p = mp.mpf(power)
        mu, phi, a = mp.exp(log_mean), mp.exp(log_dispersion), (2 - p) / (p - 1)
        z = a * mp.log(y / (p - 1)) - (1 + a) * mp.log(phi) - mp.log(2 - p)
        log_w = [j * z - mp.loggamma(j + 1) - mp.loggamma(j * a) for j in range(1, 400)]
        top = max(log_w)
        return ((y * mu ** (1 - p) / (1 - p) - mu ** (2 - p) / (2 - p)) / phi - mp.log(y) + top
                + mp.log(mp.fsum(mp.exp(t - top) for t in log_w)))
    return f


# (log_mean, log_dispersion, y) at y = 1.2e-38 and 1e-30, where M = y^(2-p)/(phi (2-p)) ~ 1e-19: -log y and
# the (1 + a) log M of the first term (each ~87 nats) cancelled to ~1 (float32 15 to 61 eps off), as did
# (2-p) log y and (2-p) log(mu/y) in the exponent of the deviance and of d/d log_mean (~44 nats each);
# and a target of 1e-10 (25 eps before).
TWEEDIE_POINTS = [(0.3, -0.2, 1.2e-38), (1.0, 0.5, 1.2e-38), (-1.0, 1.0, 1e-30), (0.1, -0.1, 1e-10)]


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_tweedie_at_a_tiny_target(dtype):
    family = mlnll.Tweedie(power=1.5)
    log_mean, log_dispersion, y = (jnp.asarray(c, dtype) for c in zip(*TWEEDIE_POINTS))
    values, ((d_log_mean, d_log_dispersion), _) = _value_and_vjp(family.log_prob)((log_mean, log_dispersion), y)
    for i, p in enumerate(TWEEDIE_POINTS):
        point = _rounded(p, dtype)
        exact = _tweedie(1.5)
        want, grads = _mp_value_and_gradient(lambda lm, ld, y=point[2]: exact(lm, ld, mp.mpf(y)), point[:2])
        # the value is ~1 and its inputs of order 1 (y enters through (a - 1) log y = 0 at p = 3/2)
        tol = 8 * _eps(dtype)
        _close(float(values[i]), want, tol, (i, "value"))
        for j, got in enumerate([d_log_mean[i], d_log_dispersion[i]]):
            _close(float(got), grads[j], tol, (i, "gradient", j))


def test_tweedie_at_a_dispersion_that_flushes_to_zero():
    """log_dispersion = -1e4 (phi = 0 in both dtypes) at y != mu: the exact log p is -inf (the deviance
    over phi), where the series' window was inf - inf: NaN (the sweep's find)."""
    family = mlnll.Tweedie(power=1.5)
    for dtype in (F32, F64):
        o = (jnp.asarray([-0.02898946776986122], dtype), jnp.asarray([-1e4], dtype))
        values = jax.jit(family.log_prob)(o, jnp.asarray([1.0991088151931763], dtype))
        assert np.asarray(values).tolist() == [-math.inf], values


# -- BetaBinomial and DirichletMultinomial at a near-certain count --------------------------------


# All n draws in class k with A - a_k small beside a_k: log p = -sum_{j<n} log1p((A - a_k)/(a_k + j)) ~ -1e-7,
# where the identity's negative-binomial terms (each ~1) cancelled (float32 0.0 for -2.55e-8 at a = 1e-8,
# y = 0; -2.38e-7 for -3.13e-7 at a_1 = 1e8, y = (0, 4, 0); float64 1.2e-8 and 1.4e-10 relative off).
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_counts_at_a_near_certain_count(dtype):
    bb, dm = mlnll.BetaBinomial(total_count=10), mlnll.DirichletMultinomial(total_count=4)
    bb_points = [(math.log(1e-8), 0.3), (-0.5, 18.42)]
    bb_y = [0.0, 0.0]
    la, lb = (jnp.asarray(c, dtype) for c in zip(*bb_points))
    bb_values, ((bb_da, bb_db), _) = _value_and_vjp(bb.log_prob)((la, lb), jnp.asarray(bb_y, dtype))
    dm_point, dm_y = (-0.69, 18.4, 1.97), (0.0, 4.0, 0.0)
    dm_values, (dm_d, _) = _value_and_vjp(dm.log_prob)(jnp.asarray([dm_point], dtype), jnp.asarray([dm_y], dtype))
    rows = [(_rounded(p, dtype), _beta_binomial(10, y), float(bb_values[i]), [bb_da[i], bb_db[i]])
            for i, (p, y) in enumerate(zip(bb_points, bb_y))]
    rows.append((_rounded(dm_point, dtype), _dirichlet_multinomial(4, dm_y), float(dm_values[0]), list(dm_d[0])))
    for point, exact, value, grads in rows:
        want, want_grads = _mp_value_and_gradient(exact, point)
        # relative to the value: it and its derivatives are each ~(A - a_k) times sums of order 1, and the
        # inputs of order 1 to 18 enter through e^x (a rounding of x moves the value by eps |x| of it)
        tol = 16 * _eps(dtype) * max(abs(v) for v in point)
        assert abs(value - float(want)) <= tol * abs(float(want)), (point, value, want)
        # The closed-form score G(a_k, y_k) + a_k log1p(w_k) - p_k G(A, n) adds terms of order 1 to a result of
        # ~1e-8: its accuracy here is absolute, 16 eps (float32's d/d log_concentration0 at a = 1e-8 is 0 for
        # the exact 1.33e-8: the score's own cancellation, not fixed by the value's corner form)
        for j, g in enumerate(grads):
            assert abs(float(g) - float(want_grads[j])) <= 16 * _eps(dtype), (point, j, g, want_grads[j])

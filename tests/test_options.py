"""Loss options: closed forms against jax.grad of plain formulas, and torch.nn where they overlap
(recorded in tests/reference/torch_losses.json, and live when torch is importable)."""

import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import optax
import pytest

import mlnll
from conftest import RTOL

F64 = jnp.float64
N, C = 12, 5


def _logits(seed, n=N, c=C, dtype=F64):
    return (2 * jax.random.normal(jax.random.PRNGKey(seed), (n, c))).astype(dtype)


def _labels(seed, n=N, c=C):
    return jax.random.randint(jax.random.PRNGKey(seed), (n,), 0, c)


# -- plain per-example formulas (the autodiff oracle) --------------------------------------------


def plain_categorical(z, q, *, gamma=0.0, beta=0.0):
    """-sum_c q_c (1 - p_c)^gamma log p_c + beta lse^2, written naively."""
    lse = jnp.log(jnp.sum(jnp.exp(z)))
    log_p = z - lse
    p = jnp.exp(log_p)
    return -jnp.sum(q * (1 - p) ** gamma * log_p) + beta * lse**2


def plain_bernoulli(z, y, *, pos_weight=1.0, gamma=0.0):
    p = 1 / (1 + jnp.exp(-z))
    return -(pos_weight * y * (1 - p) ** gamma * jnp.log(p) + (1 - y) * p**gamma * jnp.log(1 - p))


CATEGORICAL_OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"class_weights": (0.5, 1.0, 2.0, 0.0, 1.5)},
    {"class_weights": (0.5, 1.0, 2.0, 0.1, 1.5), "label_smoothing": 0.2},
    {"z_loss": 1e-2},
    {"focal_gamma": 2.0},
    {"focal_gamma": 0.5},
    {"focal_gamma": 1.0, "label_smoothing": 0.1, "z_loss": 1e-3, "class_weights": (1.0, 2.0, 1.0, 1.0, 3.0)},
    {"ignore_index": -100},
]


def _expected_categorical(z, y, options, soft=False):
    """Mean loss from the plain formula, with torch's denominators."""
    alpha = options.get("label_smoothing", 0.0)
    w = jnp.asarray(options.get("class_weights", (1.0,) * C), F64)
    index = options.get("ignore_index")
    keep = jnp.ones(y.shape[:1], bool) if (soft or index is None) else y != index
    q = y if soft else jax.nn.one_hot(jnp.where(keep, y, 0), C, dtype=F64)
    q = (1 - alpha) * q + alpha / C
    per = jax.vmap(lambda a, b: plain_categorical(a, w * b, gamma=options.get("focal_gamma", 0.0), beta=options.get("z_loss", 0.0)))(z, q)
    norm = jnp.ones(z.shape[:1], F64) if soft else w[jnp.where(keep, y, 0)]
    return jnp.sum(jnp.where(keep, per, 0.0)) / jnp.sum(jnp.where(keep, norm, 0.0))


@pytest.mark.parametrize("options", CATEGORICAL_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_categorical_options_value_and_closed_form_grad(options):
    z = _logits(0)
    y = _labels(1)
    if "ignore_index" in options:
        y = y.at[jnp.array([2, 5])].set(-100)
    loss = mlnll.nll(mlnll.Categorical(), **options)
    # the loss, its gradients and the plain formula's in one compiled program (op by op, the
    # oracle's jax.grad compiled every primitive separately)
    value, want, closed, auto, want_grad = jax.jit(lambda a, t: (
        loss(a, t), _expected_categorical(a, t, options), loss.grad(a, t), jax.grad(loss)(a, t),
        jax.grad(lambda b: _expected_categorical(b, t, options))(a)))(z, y)
    np.testing.assert_allclose(value, want, rtol=1e-13)
    np.testing.assert_allclose(closed, want_grad, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(auto, want_grad, rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("options", CATEGORICAL_OPTIONS[:-1], ids=lambda o: ",".join(o) or "plain")
def test_categorical_options_with_soft_targets(options):
    z = _logits(2)
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(3), (N, C), F64))
    loss = mlnll.nll(mlnll.Categorical(), **options)
    np.testing.assert_allclose(loss(z, q), _expected_categorical(z, q, options, soft=True), rtol=1e-13)
    want_grad = jax.grad(lambda a: _expected_categorical(a, q, options, soft=True))(z)
    np.testing.assert_allclose(loss.grad(z, q), want_grad, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(jax.grad(loss)(z, q), want_grad, rtol=1e-11, atol=1e-15)


BERNOULLI_OPTIONS = [
    {},
    {"pos_weight": 3.0},
    {"pos_weight": (1.0, 2.0, 0.5)},
    {"label_smoothing": 0.2},
    {"focal_gamma": 2.0},
    {"focal_gamma": 0.5, "pos_weight": 2.0, "label_smoothing": 0.1},
]


@pytest.mark.parametrize("options", BERNOULLI_OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("soft", [False, True])
def test_bernoulli_options_value_and_closed_form_grad(options, soft):
    z = _logits(4, c=3)
    key = jax.random.PRNGKey(5)
    y = jax.random.uniform(key, (N, 3), F64) if soft else jax.random.bernoulli(key, 0.5, (N, 3)).astype(F64)
    alpha = options.get("label_smoothing", 0.0)
    pw = jnp.broadcast_to(jnp.asarray(options.get("pos_weight", 1.0), F64), (N, 3))

    def expected(a):
        ys = (1 - alpha) * y + alpha / 2
        return jnp.mean(plain_bernoulli(a, ys, pos_weight=pw, gamma=options.get("focal_gamma", 0.0)))

    loss = mlnll.nll(mlnll.Bernoulli(), **options)
    np.testing.assert_allclose(loss(z, y), expected(z), rtol=1e-13)
    np.testing.assert_allclose(loss.grad(z, y), jax.grad(expected)(z), rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(jax.grad(loss)(z, y), jax.grad(expected)(z), rtol=1e-11, atol=1e-15)


def test_bernoulli_focal_matches_optax_sigmoid_focal_loss():
    z = _logits(6, c=4)
    y = jax.random.bernoulli(jax.random.PRNGKey(7), 0.3, (N, 4)).astype(F64)
    got = mlnll.nll(mlnll.Bernoulli(), focal_gamma=2.0, reduction="none")(z, y)
    with jax.numpy_dtype_promotion("standard"):
        want = optax.sigmoid_focal_loss(z, y, alpha=None, gamma=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("options", [{"focal_gamma": 0.5}, {"focal_gamma": 2.0}, {"z_loss": 1e-4}])
def test_option_gradients_stay_finite_at_extreme_logits(options):
    z = jnp.array([[3e38, -3e38, 0.0], [1e4, 0.0, -jnp.inf], [20.0, 0.0, 0.0]], jnp.float32)
    y = jnp.array([0, 0, 0])
    loss = mlnll.nll(mlnll.Categorical(), **options)
    g = jax.grad(loss)(z, y)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(loss.grad(z, y)), np.asarray(g), rtol=1e-6, atol=0)
    zb = jnp.array([3e38, -3e38, 1e4, -1e4], jnp.float32)
    yb = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
    bl = mlnll.nll(mlnll.Bernoulli(), focal_gamma=options.get("focal_gamma", 0.0) or 1.0)
    assert np.all(np.isfinite(np.asarray(jax.grad(bl)(zb, yb))))


# -- torch.nn as the oracle ---------------------------------------------------------------
#
# torch's values are recorded in tests/reference/torch_losses.json with the inputs they were computed
# from (tests/reference/make_torch_references.py makes the file, from seeded numpy inputs), so these
# tests need no torch: each runs against the recorded values, and again live against torch.nn on the
# same stored inputs when torch is importable (the torch-oracle extra); only the live variant skips.

_REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "reference"


def _load_reference_module():
    spec = importlib.util.spec_from_file_location("mlnll_tests_torch_references", _REFERENCE_DIR / "make_torch_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_ref = _load_reference_module()
TORCH_REFERENCE = torch_ref.load(_REFERENCE_DIR / "torch_losses.json")


@pytest.fixture(params=["recorded", "live"])
def torch_oracle(request):
    """name -> (inputs, outputs) of a case of torch_losses.json: the outputs as recorded, or ("live")
    recomputed now by torch.nn from the stored inputs."""
    if request.param == "live":
        try:
            import torch  # noqa: F401
        except ImportError as e:
            pytest.skip(f"live torch parity needs torch (the torch-oracle extra): {e}")

    def oracle(name):
        case = TORCH_REFERENCE["cases"][name]
        assert json.loads(json.dumps(torch_ref.CASES[name]["options"])) == case["options"], name
        inputs = case["inputs"]
        outputs = torch_ref.torch_outputs(name, inputs) if request.param == "live" else case["outputs"]
        return {k: jnp.asarray(v) for k, v in inputs.items()}, outputs

    return oracle


def test_torch_reference_file_records_its_maker_and_covers_every_case():
    assert TORCH_REFERENCE["torch_version"].split("+")[0] == "2.13.0"
    assert sorted(TORCH_REFERENCE["cases"]) == sorted(torch_ref.CASES)
    for case in TORCH_REFERENCE["cases"].values():
        assert all(v.dtype == np.float64 for v in case["outputs"].values())
    assert (_REFERENCE_DIR / "torch_losses.json").stat().st_size < 100_000


@pytest.mark.parametrize("reduction", torch_ref.REDUCTIONS)
@pytest.mark.parametrize("options", torch_ref.CROSS_ENTROPY_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_categorical_matches_torch_cross_entropy_loss(options, reduction, torch_oracle):
    # torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=..., label_smoothing=..., reduction=...)
    inputs, want = torch_oracle(torch_ref.cross_entropy_case(options))
    if "ignore_index" in options:
        assert np.sum(inputs["y"] == options["ignore_index"]) >= 2
    got = mlnll.nll(mlnll.Categorical(), reduction=reduction, **options)(inputs["z"], inputs["y"])
    np.testing.assert_allclose(got, want[reduction], rtol=1e-12)


def test_soft_targets_with_class_weights_match_torch(torch_oracle):
    # torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1)(z, q), q probabilities
    inputs, want = torch_oracle("cross_entropy/soft_targets")
    z, q = inputs["z"], inputs["q"]
    got = mlnll.nll(mlnll.Categorical(), class_weights=torch_ref.WEIGHTS, label_smoothing=0.1)(z, q)
    np.testing.assert_allclose(got, want["mean"], rtol=1e-12)


def test_nll_loss_on_log_probabilities_matches_torch(torch_oracle):
    # torch.nn.NLLLoss()(log_p, y)
    inputs, want = torch_oracle("nll_loss")
    log_p, y = inputs["log_p"], inputs["y"]
    # Categorical at logits = log-probabilities: log_softmax(log p) = log p.
    np.testing.assert_allclose(mlnll.nll(mlnll.Categorical())(log_p, y), want["mean"], rtol=1e-12)


def test_all_ignored_batch_gives_zero_where_torch_gives_nan(torch_oracle):
    # torch.nn.CrossEntropyLoss(ignore_index=-100)(z, y), every y = -100
    inputs, want = torch_oracle("cross_entropy/all_ignored")
    z, y = inputs["z"], inputs["y"]
    assert np.all(np.asarray(y) == -100)
    loss = mlnll.nll(mlnll.Categorical(), ignore_index=-100)
    assert float(loss(z, y)) == 0.0
    np.testing.assert_array_equal(jax.grad(loss)(z, y), 0.0)
    assert math.isnan(float(want["mean"]))


@pytest.mark.parametrize("pos_weight", torch_ref.POS_WEIGHTS)
def test_bernoulli_matches_torch_bce_with_logits(pos_weight, torch_oracle):
    # torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight broadcast to (3,))(z, y), soft y in [0, 1]
    inputs, want = torch_oracle(torch_ref.bce_case(pos_weight))
    z, y = inputs["z"], inputs["y"]
    got = mlnll.nll(mlnll.Bernoulli(), **({} if pos_weight is None else {"pos_weight": pos_weight}))(z, y)
    np.testing.assert_allclose(got, want["mean"], rtol=1e-12)


def test_normal_matches_torch_gaussian_nll_loss(torch_oracle):
    # torch.nn.GaussianNLLLoss(full=..., eps=1e-12)(loc, y, var), var = exp(2 log_scale)
    inputs, want = torch_oracle("gaussian_nll")
    loc, log_scale, y = inputs["loc"], inputs["log_scale"], inputs["y"]
    np.testing.assert_allclose(inputs["var"], np.exp(2 * np.asarray(log_scale)), rtol=1e-15)
    np.testing.assert_allclose(mlnll.nll(mlnll.Normal())((loc, log_scale), y), want["full=True"], rtol=1e-12)
    got = mlnll.nll(mlnll.Normal(), drop_constants=True)((loc, log_scale), y)
    np.testing.assert_allclose(got, want["full=False"], rtol=1e-12)


def test_poisson_matches_torch_poisson_nll_loss_and_pins_the_stirling_difference(torch_oracle):
    # torch.nn.PoissonNLLLoss(log_input=True, full=..., reduction="none")(log_rate, y)
    inputs, want = torch_oracle("poisson_nll")
    log_rate, y = inputs["log_rate"], inputs["y"]
    np.testing.assert_array_equal(y[:7], [0.0, 1.0, 2.0, 3.0, 10.0, 1e3, 1e6])
    # full=False is exp(log_rate) - y log_rate: mlnll's loss without its constant log(y!).
    got = mlnll.nll(mlnll.Poisson(), drop_constants=True, reduction="none")(log_rate, y)
    np.testing.assert_allclose(got, want["full=False"], rtol=1e-13, atol=1e-300)
    # full=True adds Stirling's y log y - y + log(2 pi y)/2 for y > 1 (0 for y <= 1); mlnll adds the
    # exact log(y!). The difference is Stirling's remainder, pinned here: ~1/(12 y), and log(y!) = 0
    # for y in {0, 1}.
    torch_full = want["full=True"]
    mlnll_full = np.asarray(mlnll.nll(mlnll.Poisson(), reduction="none")(log_rate, y))
    yy = np.asarray(y)
    with mpmath.workdps(40):
        remainder = np.array([
            float(mpmath.loggamma(mpmath.mpf(v) + 1) - (v * mpmath.log(v) - v + mpmath.log(2 * mpmath.pi * v) / 2))
            if v > 1 else 0.0
            for v in yy
        ])
    # Both losses are float64 sums of terms up to ~1e7 (at y = 1e6): their difference carries a few
    # ulps of those terms.
    rounding = 8 * np.finfo(np.float64).eps * np.abs(torch_full)
    np.testing.assert_array_less(np.abs((mlnll_full - torch_full) - remainder), rounding + 1e-6 * remainder + 1e-300)
    assert remainder[2] == pytest.approx(1 / 24, rel=0.02) and remainder[6] == pytest.approx(1 / 12e6, rel=1e-6)


def test_kl_divergence_matches_torch_kl_div_loss(torch_oracle):
    # torch.nn.KLDivLoss(reduction="batchmean")(log_softmax(zq), softmax(zp))
    inputs, want = torch_oracle("kl_div")
    zp, zq, p = inputs["zp"], inputs["zq"], inputs["p"]
    np.testing.assert_allclose(p, jax.nn.softmax(zp), rtol=1e-14)
    np.testing.assert_allclose(inputs["log_q"], jax.nn.log_softmax(zq), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(jnp.mean(mlnll.kl_divergence(p, jax.nn.softmax(zq))), want["batchmean"], rtol=1e-12)
    np.testing.assert_allclose(jnp.mean(mlnll.kl_divergence_with_logits(zp, zq)), want["batchmean"], rtol=1e-12)


# -- drop_constants ------------------------------------------------------------------------


def test_drop_constants_leaves_half_squared_error_and_the_same_gradient():
    loc = jnp.array([0.5, -1.0, 3.0], F64)
    y = jnp.array([1.0, 1.0, -2.0], F64)
    loss = mlnll.nll(mlnll.Normal(scale=1.0), drop_constants=True, reduction="none")
    np.testing.assert_allclose(loss(loc, y), 0.5 * (y - loc) ** 2, rtol=1e-15)
    full = mlnll.nll(mlnll.Normal(scale=1.0))
    dropped = mlnll.nll(mlnll.Normal(scale=1.0), drop_constants=True)
    np.testing.assert_allclose(jax.grad(dropped)(loc, y), jax.grad(full)(loc, y), rtol=1e-15)
    np.testing.assert_allclose(full(loc, y) - dropped(loc, y), 0.5 * math.log(2 * math.pi), rtol=1e-14)
    z = _logits(20)
    np.testing.assert_allclose(
        mlnll.nll(mlnll.Categorical(), drop_constants=True)(z, _labels(21)), mlnll.nll(mlnll.Categorical())(z, _labels(21)), rtol=1e-15
    )


@pytest.mark.parametrize("dtype", [np.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("family, exact", [
    (mlnll.Normal(scale=1.0), lambda d: 0.5 * d * d),
    (mlnll.Laplace(scale=1.0), abs),
    (mlnll.Cauchy(scale=1.0), lambda d: math.log1p(d * d)),
], ids=["Normal(scale=1)", "Laplace(scale=1)", "Cauchy(scale=1)"])
def test_drop_constants_never_adds_them(family, exact, dtype):
    # log(2 pi)/2 added then subtracted rounded a half squared error of 5e-9 to 0 in float32 (and
    # 5e-7 to 4.6% low): the data term alone must come out, to the rounding of its own formula.
    residuals = np.asarray([1e-4, 1e-3, 0.25, 2.1213203, 1e3], dtype)
    loss = mlnll.nll(family, drop_constants=True, reduction="none")
    got = np.asarray(jax.jit(loss)(jnp.zeros(5, dtype), jnp.asarray(residuals)), np.float64)
    want = np.asarray([exact(float(d)) for d in residuals])
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("family", [mlnll.Normal(), mlnll.Laplace(), mlnll.Cauchy(), mlnll.Logistic(), mlnll.LogNormal(),
                                    mlnll.Normal(scale=2.0), mlnll.LogNormal(scale=0.5)], ids=repr)
def test_log_prob_without_constants_is_log_prob_less_the_constant_terms(family):
    key = jax.random.PRNGKey(31)
    k1, k2, k3 = jax.random.split(key, 3)
    loc, log_scale = jax.random.normal(k1, (N,), F64), 0.3 * jax.random.normal(k2, (N,), F64)
    outputs = loc if getattr(family, "scale", None) is not None else (loc, log_scale)
    y = jnp.exp(jax.random.normal(k3, (N,), F64))  # positive, so LogNormal's support too
    without = family.log_prob_without_constants(outputs, y)
    np.testing.assert_allclose(without, family.log_prob(outputs, y) - family.constant_terms(y), rtol=1e-13, atol=1e-14)
    grad = jax.grad(lambda o: jnp.sum(family.log_prob_without_constants(o, y)))(outputs)
    want = jax.grad(lambda o: jnp.sum(family.log_prob(o, y)))(outputs)
    for g, w in zip(jax.tree.leaves(grad), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-14)


def test_closed_form_grad_of_the_reduced_loss_with_masks_and_weights():
    z = _logits(22)
    y = _labels(23)
    w = jnp.linspace(0.0, 2.0, N, dtype=F64)
    keep = jnp.arange(N) % 3 != 0
    for reduction in ("mean", "sum"):
        loss = mlnll.nll(mlnll.Categorical(), reduction=reduction, label_smoothing=0.1)
        np.testing.assert_allclose(
            loss.grad(z, y, where=keep, weights=w), jax.grad(lambda a: loss(a, y, where=keep, weights=w))(z), rtol=1e-12, atol=1e-16
        )
    normal = mlnll.nll(mlnll.Normal())
    out = (z[:, 0], z[:, 1])
    np.testing.assert_allclose(
        jnp.stack(normal.grad(out, z[:, 2], weights=w)), jnp.stack(jax.grad(lambda o: normal(o, z[:, 2], weights=w))(out)), rtol=1e-12
    )


# -- Normal: the beta-NLL (Seitzer et al. 2022) ---------------------------------------------


def plain_beta_nll(outputs, y, beta, scale=None):
    """``stop_gradient(s^(2 beta)) * -log N(y; loc, s)``, the paper's formula written naively."""
    loc, log_scale = (outputs, jnp.full_like(outputs, math.log(scale))) if scale is not None else outputs
    s = jnp.exp(log_scale)
    nll = 0.5 * ((y - loc) / s) ** 2 + jnp.log(s) + 0.5 * jnp.log(2 * jnp.pi)
    return jax.lax.stop_gradient(s ** (2 * beta)) * nll


def _normal_batch(dtype, n=N, seed=40):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    loc = jax.random.normal(k1, (n,), F64)
    log_scale = 0.8 * jax.random.normal(k2, (n,), F64)
    y = loc + 3.0 * jnp.exp(log_scale) * jax.random.normal(k3, (n,), F64)
    return (loc.astype(dtype), log_scale.astype(dtype)), y.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, F64], ids=["float32", "float64"])
def test_beta_nll_value_and_closed_form_gradient_match_autodiff_of_the_plain_formula(dtype):
    (loc, log_scale), y = _normal_batch(dtype)
    rtol = RTOL[np.dtype(dtype)]
    y64 = jnp.asarray(y, F64)  # the oracle in float64, at the same (rounded) inputs
    for beta, scale in ((0.5, None), (1.0, None), (0.25, 2.0)):
        outputs = loc if scale is not None else (loc, log_scale)
        o64 = jax.tree.map(lambda a: jnp.asarray(a, F64), outputs)

        def expected(o, beta=beta, scale=scale):
            return jnp.mean(plain_beta_nll(o, y64, beta, scale))

        loss = mlnll.nll(mlnll.Normal(scale=scale), beta=beta)

        @jax.jit
        def everything(o, t, loss=loss):  # one program per case: jax.grad runs the closed form
            per = mlnll.nll(loss.family, beta=loss.options.beta, reduction="none")(o, t)
            return per, loss(o, t), loss.grad(o, t), jax.grad(loss)(o, t)

        per, value, closed, through = everything(outputs, y)
        assert per.dtype == value.dtype == dtype
        np.testing.assert_allclose(np.asarray(per, np.float64), plain_beta_nll(o64, y64, beta, scale), rtol=4 * rtol)
        np.testing.assert_allclose(float(value), expected(o64), rtol=4 * rtol)
        want_grad = jax.jit(jax.grad(expected))(o64)
        for c, t, w in zip(jax.tree.leaves(closed), jax.tree.leaves(through), jax.tree.leaves(want_grad)):
            assert c.dtype == t.dtype == dtype
            np.testing.assert_allclose(np.asarray(c, np.float64), w, rtol=8 * rtol, atol=8 * rtol * float(np.max(np.abs(w))))
            np.testing.assert_allclose(np.asarray(t, np.float64), np.asarray(c, np.float64), rtol=2 * rtol)
    # second order: jax.hessian holds the weight constant, as stop_gradient does in the formula
    first = jax.tree.map(lambda a: a[:1], (loc, log_scale))
    h_got = jax.jit(jax.hessian(lambda o: mlnll.nll(mlnll.Normal(), beta=0.5)(o, y[:1])))(first)
    h_want = jax.jit(jax.hessian(lambda o: jnp.sum(plain_beta_nll(o, y64[:1], 0.5))))(jax.tree.map(lambda a: jnp.asarray(a, F64), first))
    for g, w in zip(jax.tree.leaves(h_got), jax.tree.leaves(h_want)):
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=8 * rtol, atol=8 * rtol)


@pytest.mark.parametrize("dtype", [np.float32, F64], ids=["float32", "float64"])
def test_beta_zero_is_the_plain_nll_bit_for_bit(dtype):
    outputs, y = _normal_batch(dtype, seed=41)
    w = jnp.linspace(0.0, 2.0, N, dtype=dtype)
    for drop_constants in (False, True):

        @jax.jit
        def both(o, t, drop_constants=drop_constants):
            out = []
            for options in ({}, {"beta": 0.0}):
                loss = mlnll.nll(mlnll.Normal(), reduction="none", drop_constants=drop_constants, **options)
                total = mlnll.nll(mlnll.Normal(), reduction="sum", drop_constants=drop_constants, **options)
                out.append((loss(o, t, weights=w), loss.grad(o, t, weights=w), jax.grad(total)(o, t)))
            return out

        (value, grad, through), (value0, grad0, through0) = both(outputs, y)
        np.testing.assert_array_equal(value0, value)
        for got, want in zip(grad0, grad):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(through0, through):
            np.testing.assert_allclose(got, want, rtol=2 * RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", [np.float32, F64], ids=["float32", "float64"])
def test_beta_one_gives_loc_the_squared_error_gradient_at_any_scale(dtype):
    _, eps = _normal_batch(dtype, seed=42)
    # scales from e^-50 to e^40 about loc = 0: in float32 s^2 under- and overflows at the ends, the
    # residual y - loc (from 1e-22 to 1e17) does not
    loc = jnp.zeros(N, dtype)
    log_scale = jnp.linspace(-50.0, 40.0, N, dtype=dtype)
    y = (jnp.exp(log_scale) * eps).astype(dtype)
    squared_error = jax.grad(lambda m: 0.5 * jnp.sum((y - m) ** 2))(loc)
    loss = mlnll.nll(mlnll.Normal(), beta=1.0, reduction="sum")
    closed_loc, _ = loss.grad((loc, log_scale), y)
    through_loc, _ = jax.grad(loss)((loc, log_scale), y)
    rtol = 8 * float(np.finfo(dtype).eps)
    np.testing.assert_allclose(closed_loc, loc - y, rtol=rtol, atol=0)
    np.testing.assert_allclose(through_loc, squared_error, rtol=rtol, atol=0)
    # the formula as written (s^2 in its loc gradient, then the weight) loses it at the small scales
    naive_loc, _ = jax.grad(lambda o: jnp.sum(plain_beta_nll(o, y, 1.0)))((loc, log_scale))
    if dtype == np.float32:
        assert not np.allclose(naive_loc, loc - y, rtol=1e-3, atol=0)
    # beta = 1/2: (loc - y) / s, halfway between the NLL's (loc - y) / s^2 and squared error's
    log_s = jnp.full_like(loc, 0.7)
    half, _ = mlnll.nll(mlnll.Normal(), beta=0.5, reduction="sum").grad((loc, log_s), eps)
    np.testing.assert_allclose(half, (loc - eps) / jnp.exp(log_s), rtol=rtol)


def test_beta_nll_options_are_checked_and_named():
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\]; got 1.5"):
        mlnll.nll(mlnll.Normal(), beta=1.5)
    with pytest.raises(ValueError, match="beta must be"):
        mlnll.nll(mlnll.Normal(), beta=-0.1)
    with pytest.raises(TypeError, match=r"nll\(Normal\(\)\) got unexpected option\(s\) \['scale'\]; it accepts: beta\."):
        mlnll.nll(mlnll.Normal(), scale=2.0)  # the fixed scale is the family's, not an option
    for family in (mlnll.Laplace(), mlnll.StudentT(), mlnll.Bernoulli(), mlnll.NormalInverseGamma(),
                   mlnll.Censored(mlnll.Normal())):
        with pytest.raises(TypeError, match=r"beta is an option of nll\(Normal\(\)\) only"):
            mlnll.nll(family, beta=0.5)
    # a target off the support: inf for that example, NaN derivatives for it only
    loss = mlnll.nll(mlnll.Normal(), beta=0.5, reduction="none")
    outputs, y = (jnp.zeros(2), jnp.zeros(2)), jnp.asarray([1.0, jnp.inf])
    value = loss(outputs, y)
    assert np.isfinite(value[0]) and value[1] == np.inf
    g = loss.grad(outputs, y)
    assert np.all(np.isfinite([a[0] for a in g])) and np.all(np.isnan([a[1] for a in g]))
    # jit-static and hashable, as every Loss
    assert hash(mlnll.nll(mlnll.Normal(), beta=0.5)) == hash(mlnll.nll(mlnll.Normal(), beta=0.5))

"""The rows of docs/coming_from_torch_optax.md, each checked: the mlnll spelling against torch's value
as recorded in tests/reference/torch_losses.json (no torch needed) or against optax live.

Every row of the page names one of these tests in its last column, and
``test_every_row_of_the_page_names_a_test_here`` keeps the two in step.
"""

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlnll
from mlnll import Bernoulli, Categorical, Laplace, Normal, Poisson, nll

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "coming_from_torch_optax.md"
F64 = jnp.float64


def _load_torch_references():
    path = ROOT / "tests" / "reference" / "make_torch_references.py"
    spec = importlib.util.spec_from_file_location("mlnll_docs_torch_references", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


torch_ref = _load_torch_references()
RECORDED = torch_ref.load(ROOT / "tests" / "reference" / "torch_losses.json")["cases"]


def torch_case(name):
    """(inputs, torch's recorded outputs) of a case of torch_losses.json, as numpy arrays."""
    case = RECORDED[name]
    return dict(case["inputs"]), case["outputs"]


def jitted(f, *args):
    """``jax.jit(f)(*args)`` as numpy: one compiled program per check instead of one per operation
    (eager jax compiles every primitive on first use, which made this file take half a minute)."""
    return jax.tree.map(np.asarray, jax.jit(f)(*args))


RNG = np.random.default_rng(0)


def _normal(shape, scale=1.0):
    return scale * RNG.standard_normal(shape)


def _uniform(shape):
    return RNG.uniform(size=shape)


def _soft(shape):
    x = np.exp(RNG.standard_normal(shape))
    return x / x.sum(axis=-1, keepdims=True)


def test_every_row_of_the_page_names_a_test_here():
    text = PAGE.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    cited = [re.findall(r"`(test_\w+)`", row) for row in rows]
    assert rows and all(len(c) == 1 for c in cited), [r for r, c in zip(rows, cited) if len(c) != 1]
    not_rows = {"test_every_row_of_the_page_names_a_test_here", "test_ci_builds_the_docs_as_readme_says"}
    here = {name for name in globals() if name.startswith("test_") and name not in not_rows}
    assert {c[0] for c in cited} == here


def test_ci_builds_the_docs_as_readme_says():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = next(c for c in re.findall(r"```bash\n(.+?)\n```", readme) if "sphinx" in c)
    assert command.endswith("python -m sphinx -W --keep-going -b html docs docs/_build/html")
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


# -- torch.nn, from the recorded values ---------------------------------------------------------


@pytest.mark.parametrize("reduction", torch_ref.REDUCTIONS)
def test_cross_entropy_loss(reduction):
    # CrossEntropyLoss(weight=w, ignore_index=3, label_smoothing=0.1, reduction=r)(z, y)
    w, i, a = torch_ref.WEIGHTS, 3, 0.1
    inputs, want = torch_case(torch_ref.cross_entropy_case({"class_weights": w, "label_smoothing": a, "ignore_index": i}))
    loss = nll(Categorical(), class_weights=w, ignore_index=i, label_smoothing=a, reduction=reduction)
    np.testing.assert_allclose(jitted(loss, inputs["z"], inputs["y"]), want[reduction], rtol=1e-12)


def test_cross_entropy_loss_default_ignore_index():
    # CrossEntropyLoss()(z, y): torch ignores the -100 labels by default.
    inputs, want = torch_case(torch_ref.cross_entropy_case({"ignore_index": -100}))
    z, y = inputs["z"], inputs["y"]
    assert np.sum(y == -100) >= 2
    ignoring, plain = jitted(lambda z, y: (nll(Categorical(), ignore_index=-100)(z, y), nll(Categorical())(z, y)), z, y)
    np.testing.assert_allclose(ignoring, want["mean"], rtol=1e-12)
    assert plain == np.inf  # not asked to ignore: -100 is outside the support
    inputs, want = torch_case("cross_entropy/all_ignored")
    assert jitted(nll(Categorical(), ignore_index=-100), inputs["z"], inputs["y"]) == 0.0
    assert np.isnan(want["mean"])


def test_cross_entropy_loss_soft_targets():
    inputs, want = torch_case("cross_entropy/soft_targets")
    w, a = torch_ref.WEIGHTS, 0.1
    got = jitted(nll(Categorical(), class_weights=w, label_smoothing=a), inputs["z"], inputs["q"])
    np.testing.assert_allclose(got, want["mean"], rtol=1e-12)


def test_cross_entropy_loss_class_axis():
    # torch's [N, C, d] is mlnll's [N, d, C]; torch's mean over the N * d positions equals the
    # recorded mean over the same 12 rows flattened to [12, C].
    inputs, want = torch_case(torch_ref.cross_entropy_case({}))
    z_torch_layout = np.moveaxis(inputs["z"].reshape(4, 3, 5), -1, 1)  # [N=4, C=5, d=3]
    y = inputs["y"].reshape(4, 3)
    got = jitted(lambda z, y: nll(Categorical())(jnp.moveaxis(z, 1, -1), y), z_torch_layout, y)
    np.testing.assert_allclose(got, want["mean"], rtol=1e-12)


def test_nll_loss():
    inputs, want = torch_case("nll_loss")
    np.testing.assert_allclose(jitted(nll(Categorical()), inputs["log_p"], inputs["y"]), want["mean"], rtol=1e-12)


@pytest.mark.parametrize("pw", torch_ref.POS_WEIGHTS[1:])
def test_bce_with_logits_loss(pw):
    inputs, want = torch_case(torch_ref.bce_case(pw))
    got = jitted(nll(Bernoulli(), pos_weight=pw), inputs["z"], inputs["y"])
    np.testing.assert_allclose(got, want["mean"], rtol=1e-12)


def test_bce_with_logits_loss_weight():
    # torch: mean(W * l) over all elements; checked against that formula with optax's l.
    z, y, W = _normal((8, 3), 2.0), _uniform((8, 3)), _uniform((8, 3))

    def both(z, y, W):
        per_element = optax.sigmoid_binary_cross_entropy(z, y)
        return ((nll(Bernoulli(), reduction="sum")(z, y, weights=W) / z.size, jnp.mean(W * per_element)),
                (nll(Bernoulli())(z, y, weights=W), jnp.sum(W * per_element) / jnp.sum(W)))

    (got, want), (weighted_mean, want_weighted_mean) = jitted(both, z, y, W)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(weighted_mean, want_weighted_mean, rtol=1e-12)


def test_gaussian_nll_loss():
    # GaussianNLLLoss(full=f, eps=1e-12)(mu, y, var); eps is below every var, so nothing is clamped.
    inputs, want = torch_case("gaussian_nll")

    def both(mu, y, var):
        return (nll(Normal(), drop_constants=True)((mu, jnp.log(var) / 2), y), nll(Normal())((mu, jnp.log(var) / 2), y))

    dropped, full = jitted(both, inputs["loc"], inputs["y"], inputs["var"])
    np.testing.assert_allclose(dropped, want["full=False"], rtol=1e-12)
    np.testing.assert_allclose(full, want["full=True"], rtol=1e-12)


def test_poisson_nll_loss():
    inputs, want = torch_case("poisson_nll")
    log_rate, y = inputs["log_rate"], inputs["y"]

    def both(log_rate, y):
        return (nll(Poisson(), drop_constants=True, reduction="none")(log_rate, y),
                nll(Poisson(), reduction="none")(log_rate, y))

    dropped, full = jitted(both, log_rate, y)
    np.testing.assert_allclose(dropped, want["full=False"], rtol=1e-13, atol=1e-300)
    # full=True: Stirling's approximation of log(y!) for y > 1 (0 otherwise); mlnll adds the exact one.
    gap = full - want["full=True"]
    np.testing.assert_allclose(gap[y <= 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(gap[y > 1] * 12 * y[y > 1], 1.0, rtol=0.05)  # about 1 / (12 y)


def test_kl_div_loss():
    # KLDivLoss(reduction="batchmean")(log_q, p)
    inputs, want = torch_case("kl_div")

    def both(p, log_q, zp, zq):
        return jnp.mean(mlnll.kl_divergence(p, jnp.exp(log_q))), jnp.mean(mlnll.kl_divergence_with_logits(zp, zq))

    for got in jitted(both, inputs["p"], inputs["log_q"], inputs["zp"], inputs["zq"]):
        np.testing.assert_allclose(got, want["batchmean"], rtol=1e-12)


def test_kl_div_loss_log_target():
    # KLDivLoss(reduction="batchmean", log_target=True)(log_q, log_p) is the same KL as above.
    inputs, want = torch_case("kl_div")
    log_p, log_q = np.log(inputs["p"]), inputs["log_q"]
    got = jitted(lambda a, b: jnp.mean(mlnll.kl_divergence_with_logits(a, b)), log_p, log_q)
    np.testing.assert_allclose(got, want["batchmean"], rtol=1e-12)


def test_mse_and_l1_loss():
    x, y = _normal((10,)), _normal((10,))

    def both(x, y):
        return 2 * nll(Normal(scale=1.0), drop_constants=True)(x, y), nll(Laplace(scale=1.0), drop_constants=True)(x, y)

    mse, l1 = jitted(both, x, y)
    np.testing.assert_allclose(mse, np.mean((x - y) ** 2), rtol=1e-13)
    np.testing.assert_allclose(l1, np.mean(np.abs(x - y)), rtol=1e-13)


# -- optax, live -------------------------------------------------------------------------------


def test_optax_softmax_cross_entropy():
    z, q = _normal((6, 4), 2.0), _soft((6, 4))
    got, want = jitted(lambda z, q: (nll(Categorical(), reduction="none")(z, q), optax.softmax_cross_entropy(z, q)), z, q)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_optax_where():
    z, q = _normal((6, 4), 2.0), _soft((6, 4))
    keep = np.array([True, False, True, True, False, True])
    mask = np.broadcast_to(np.arange(4) != 2, (6, 4))  # a mask over classes: class 2 is excluded
    q_masked = np.where(mask, q, 0.0)
    q_masked = q_masked / q_masked.sum(axis=-1, keepdims=True)

    def all_of_them(z, q, keep, mask, q_masked):
        z_masked = jnp.where(mask, z, -jnp.inf)
        return (nll(Categorical(), reduction="none")(z, q, where=keep), optax.softmax_cross_entropy(z, q, where=keep),
                nll(Categorical())(z, q, where=keep),
                nll(Categorical(), reduction="none")(z_masked, q_masked),
                optax.softmax_cross_entropy(z, q_masked, where=mask),
                optax.safe_softmax_cross_entropy(z_masked, q_masked))

    got, want, mean, got_masked, want_masked, want_safe = jitted(all_of_them, z, q, keep, mask, q_masked)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(mean, got.sum() / keep.sum(), rtol=1e-13)
    np.testing.assert_allclose(got_masked, want_masked, rtol=1e-13)
    np.testing.assert_allclose(got_masked, want_safe, rtol=1e-13)


def test_optax_integer_labels():
    z, y = _normal((6, 4), 2.0), np.array([0, 1, 2, 3, 1, 0])
    out_of_range = np.array([0, 4, 2, 3, 1, 0])

    def both(z, y):
        return nll(Categorical(), reduction="none")(z, y), optax.softmax_cross_entropy_with_integer_labels(z, y)

    got, want = jitted(both, z, y)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    got, want = jitted(both, z, out_of_range)
    assert got[1] == np.inf and np.isnan(want[1])
    got, want = jitted(both, np.array([[20.0, 0.0, 0.0]], np.float32), np.array([0]))
    assert want[0] == 0.0
    np.testing.assert_allclose(got, [4.1223e-9], rtol=1e-4)


def test_optax_smooth_labels():
    z, y, a = _normal((6, 4), 2.0), np.array([0, 1, 2, 3, 1, 0]), 0.2

    def both(z, y):
        smoothed = optax.smooth_labels(jax.nn.one_hot(y, 4, dtype=z.dtype), a)
        return nll(Categorical(), label_smoothing=a, reduction="none")(z, y), optax.softmax_cross_entropy(z, smoothed)

    got, want = jitted(both, z, y)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_optax_sigmoid_binary_cross_entropy():
    z, y = _normal((6, 3), 3.0), _uniform((6, 3))
    got, want = jitted(lambda z, y: (nll(Bernoulli(), reduction="none")(z, y), optax.sigmoid_binary_cross_entropy(z, y)), z, y)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_optax_sigmoid_focal_loss():
    z, y = _normal((6, 3), 2.0), (_uniform((6, 3)) < 0.4).astype(np.float64)
    g, a = 2.0, 0.25

    def all_of_them(z, y):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes a Python float alpha with the arrays
            want, want_alpha = optax.sigmoid_focal_loss(z, y, alpha=None, gamma=g), optax.sigmoid_focal_loss(z, y, alpha=a, gamma=g)
        got = nll(Bernoulli(), focal_gamma=g, reduction="none")(z, y)
        got_alpha = nll(Bernoulli(), focal_gamma=g, reduction="none")(z, y, weights=a * y + (1 - a) * (1 - y))
        return got, want, got_alpha, want_alpha

    got, want, got_alpha, want_alpha = jitted(all_of_them, z, y)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(got_alpha, want_alpha, rtol=1e-12)


def test_optax_squared_error_and_l2_loss():
    x, y = _normal((10,)), _normal((10,))

    def all_of_them(x, y):
        half = nll(Normal(scale=1.0), drop_constants=True, reduction="none")(x, y)
        return half, optax.l2_loss(x, y), 2 * half, optax.squared_error(x, y)

    half, want_half, twice, want_twice = jitted(all_of_them, x, y)
    np.testing.assert_allclose(half, want_half, rtol=1e-12)
    np.testing.assert_allclose(twice, want_twice, rtol=1e-12)


def test_optax_kl_divergence():
    zp, zq = _normal((6, 4)), _normal((6, 4))

    def all_of_them(zp, zq):
        p, q = jax.nn.softmax(zp), jax.nn.softmax(zq)
        return (mlnll.kl_divergence(p, q), mlnll.kl_divergence_with_logits(zp, zq), optax.kl_divergence(jnp.log(q), p),
                mlnll.kl_divergence_with_logits(jnp.log(p), jnp.log(q)),
                optax.losses.kl_divergence_with_log_targets(jnp.log(q), jnp.log(p)))

    kl, kl_logits, want, kl_log, want_log = jitted(all_of_them, zp, zq)
    for got in (kl, kl_logits):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(kl_log, want_log, rtol=1e-12)

"""linear_categorical_nll against the materialised path written here in plain jax.numpy."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import optax
import pytest

import mlnll
from mlnll._src.verify.tolerances import TOLERANCES
from mlnll._src.vocab import fused

N, D, V = 24, 8, 300

# Relative tolerances against the float64 materialised oracle (loss; gradient relative L2 error):
# the "grad" column of the one table (float32 84 ulps: a float32 matmul and a sum over V classes
# each add their rounding to the loss and to every gradient entry; float64 1e-12).
LOSS_RTOL = GRAD_RTOL = {np.dtype(d): TOLERANCES[np.dtype(d)].grad for d in ("float32", "float64")}


def materialized(hidden, weight, labels, *, bias=None, where=None, ignore_index=None, label_smoothing=0.0,
                 z_loss=0.0, reduction="mean"):
    """The textbook loss on materialised logits, in float64: the oracle."""
    h, w = hidden.astype(jnp.float64), weight.astype(jnp.float64)
    logits = h @ w + (0.0 if bias is None else bias.astype(jnp.float64)[None, :])
    num_classes = w.shape[1]
    lse = jax.scipy.special.logsumexp(logits, axis=-1)
    valid = (labels >= 0) & (labels < num_classes)
    onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.float64)
    q = (1 - label_smoothing) * onehot + label_smoothing / num_classes
    per_row = jnp.sum(q * (lse[..., None] - logits), axis=-1) + z_loss * lse**2
    per_row = jnp.where(valid, per_row, jnp.inf)
    keep = jnp.ones(labels.shape, bool) if where is None else where
    if ignore_index is not None:
        keep = keep & (labels != ignore_index)
    per_row = jnp.where(keep, per_row, 0.0)
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return jnp.sum(per_row)
    count = jnp.sum(keep.astype(jnp.float64))
    return jnp.where(count > 0, jnp.sum(per_row) / jnp.maximum(count, 1), 0.0)


def _inputs(key, dtype, n=N, d=D, v=V, bias=True):
    kh, kw, kb, ky = jax.random.split(key, 4)
    hidden = jax.random.normal(kh, (n, d)).astype(dtype)
    weight = (jax.random.normal(kw, (d, v)) / math.sqrt(d) * 3).astype(dtype)
    b = jax.random.normal(kb, (v,)).astype(dtype) if bias else None
    return hidden, weight, b, jax.random.randint(ky, (n,), 0, v)


def _rel_l2(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _value_and_grads(loss, hidden, weight, bias):
    """``jax.jit(jax.value_and_grad(loss))`` in hidden, weight (and bias, when given)."""
    if bias is None:
        return jax.jit(jax.value_and_grad(lambda h, w: loss(h, w, None), (0, 1)))(hidden, weight)
    return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(hidden, weight, bias)


CASES = [
    # (block_size, bias, options)
    (None, True, {}),  # the default block size: one block here
    (64, True, {"z_loss": 1e-3}),  # 4 full blocks and a tail of 44
    (100, False, {"reduction": "sum"}),  # exactly 3 blocks, no bias
    (7, True, {"label_smoothing": 0.1}),  # 42 narrow blocks and a tail of 6
    (50, True, {"label_smoothing": 0.2, "z_loss": 1e-2, "ignore_index": -100}),
    (64, False, {"reduction": "none", "label_smoothing": 0.05}),
]


@pytest.mark.parametrize(
    "dtype,block_size,with_bias,options",
    [("float32", *case) for case in CASES] + [("float64", *case) for case in CASES[1::3]],
)
def test_value_and_grads_match_materialized(dtype, block_size, with_bias, options):
    dtype = np.dtype(dtype)
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(0), dtype, bias=with_bias)
    if "ignore_index" in options:
        labels = labels.at[::5].set(options["ignore_index"])
    where = jnp.arange(N) % 7 != 3
    reduce_none = options.get("reduction") == "none"

    def ours(h, w, b):
        out = mlnll.linear_categorical_nll(h, w, labels, bias=b, where=where, block_size=block_size, **options)
        return jnp.sum(out) if reduce_none else out

    def oracle(h, w, b):
        out = materialized(h, w, labels, bias=b, where=where, **options)
        return jnp.sum(out) if reduce_none else out

    value, grads = _value_and_grads(ours, hidden, weight, bias)
    want_value, want_grads = _value_and_grads(oracle, hidden, weight, bias)
    assert value.dtype == dtype
    np.testing.assert_allclose(float(value), float(want_value), rtol=LOSS_RTOL[dtype])
    for g, w, x in zip(grads, want_grads, (hidden, weight, bias)):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert _rel_l2(g, w) <= GRAD_RTOL[dtype]


def test_reduction_none_per_row_and_batch_axes():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(1), np.float32)
    got = jax.jit(lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels.reshape(4, 6), bias=b, reduction="none",
                                                               block_size=64))(hidden.reshape(4, 6, D), weight, bias)
    assert got.shape == (4, 6)
    want = materialized(hidden, weight, labels, bias=bias, reduction="none")
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, rtol=LOSS_RTOL[np.dtype("float32")])


def test_bfloat16_inputs_accumulate_in_float32():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(2), jnp.bfloat16)
    want_rows = materialized(hidden, weight, labels, bias=bias, reduction="none")
    # The float32 per-row losses before the result is rounded to bfloat16.
    cfg = fused.Config(V, 64, 0.0, 0.0)
    rows = jax.jit(fused._per_example, static_argnums=4)(hidden, weight, bias, labels.astype(jnp.int32), cfg)
    assert rows.dtype == jnp.float32
    np.testing.assert_allclose(rows, want_rows, rtol=1e-4)
    value, grads = _value_and_grads(
        lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels, bias=b, block_size=64), hidden, weight, bias
    )
    want_value, want_grads = _value_and_grads(lambda h, w, b: materialized(h, w, labels, bias=b), hidden, weight, bias)
    assert value.dtype == jnp.bfloat16
    # The bfloat16 result is the float32 value rounded once: within half an ulp (2^-9) of the oracle.
    np.testing.assert_allclose(float(value), float(want_value), rtol=2.0**-9)
    for g, w in zip(grads, want_grads):
        assert g.dtype == jnp.bfloat16
        assert _rel_l2(g, w) <= 5e-3


def test_all_rows_dropped_gives_zero_and_zero_gradients():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(3), np.float32)
    labels = jnp.full_like(labels, -100)

    def loss(h, w, b):
        return mlnll.linear_categorical_nll(h, w, labels, bias=b, ignore_index=-100, block_size=64)

    value, grads = _value_and_grads(loss, hidden, weight, bias)
    assert float(value) == 0.0
    for g in grads:
        np.testing.assert_array_equal(g, jnp.zeros_like(g))
    where_none = jax.jit(lambda h, w: mlnll.linear_categorical_nll(h, w, labels * 0, where=jnp.zeros(N, bool)))(hidden, weight)
    assert float(where_none) == 0.0


def test_out_of_range_label_gives_inf_like_categorical():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(4), np.float32)
    labels = labels.at[0].set(V).at[1].set(-1)
    got, categorical = jax.jit(lambda h, w, b: (
        mlnll.linear_categorical_nll(h, w, labels, bias=b, reduction="none", block_size=64),
        mlnll.nll(mlnll.Categorical(), reduction="none")(h @ w + b[None, :], labels),
    ))(hidden, weight, bias)
    assert np.isinf(got[0]) and np.isinf(got[1]) and np.all(np.isfinite(got[2:]))
    np.testing.assert_allclose(got, categorical, rtol=1e-5)
    # Rows kept out by `where` do not poison the rest: finite value, finite gradients.
    keep = jnp.arange(N) >= 2
    value, grads = _value_and_grads(
        lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels, bias=b, where=keep, block_size=64), hidden, weight, bias
    )
    want_value, want_grads = _value_and_grads(
        lambda h, w, b: materialized(h, w, labels, bias=b, where=keep), hidden, weight, bias
    )
    np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
    for g, w in zip(grads, want_grads):
        assert _rel_l2(g, w) <= 1e-5


def test_confident_prediction_keeps_relative_accuracy_float32():
    # logits (20, 0, 0), label 0: -log p = log1p(2 exp(-20)) = 4.1223e-9, which lse - z_y rounds to 0.
    hidden = jnp.ones((1, 1), jnp.float32)
    weight = jnp.array([[20.0, 0.0, 0.0]], jnp.float32)
    bias = jnp.zeros(3, jnp.float32)
    labels = jnp.array([0])
    exact = float(mpmath.log1p(2 * mpmath.exp(-20)))
    value, (_, _, g_bias) = _value_and_grads(
        lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels, bias=b), hidden, weight, bias
    )
    np.testing.assert_allclose(float(value), exact, rtol=1e-6)
    # d loss / d bias = d loss / d logits = p - onehot: the target's is -(1 - p_0) = -4.1223e-9.
    np.testing.assert_allclose(np.asarray(g_bias, np.float64), [-exact, exact / 2, exact / 2], rtol=1e-6)


def test_extreme_logits_give_finite_values_and_gradients():
    hidden = jnp.ones((3, 1), jnp.float32)
    weight = jnp.array([[3e38, -3e38, 0.0, 1.0]], jnp.float32)
    bias = jnp.array([0.0, 0.0, -jnp.inf, 0.0], jnp.float32)  # class 2 masked out by its bias
    labels = jnp.array([0, 3, 0])
    hidden = hidden.at[2].set(-1.0)  # row 2: logits (-3e38, 3e38, -inf, -1), label 0 -> loss 6e38 = inf
    rows = jax.jit(lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels, bias=b, reduction="none", block_size=2))(
        hidden, weight, bias
    )
    np.testing.assert_allclose(rows[:2], [0.0, 3e38], rtol=1e-6)
    keep = jnp.array([True, True, False])
    _, grads = _value_and_grads(
        lambda h, w, b: mlnll.linear_categorical_nll(h, w, labels, bias=b, where=keep, block_size=2), hidden, weight, bias
    )
    for g in grads:
        assert np.all(np.isfinite(g))
    # Row 1 (label 3, probability ~0 next to 3e38): d loss / d logits = p - onehot(3) = onehot(0) - onehot(3),
    # halved by the mean over the two kept rows (row 0 is confident and correct: gradient 0).
    np.testing.assert_allclose(grads[2], [0.5, 0.0, 0.0, -0.5], atol=1e-30)


def test_agrees_with_nll_categorical_options():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(5), np.float64)
    labels = labels.at[::4].set(-100)
    options = {"label_smoothing": 0.1, "z_loss": 1e-3, "ignore_index": -100}
    got, want = jax.jit(lambda h, w, b: (
        mlnll.linear_categorical_nll(h, w, labels, bias=b, block_size=64, **options),
        mlnll.nll(mlnll.Categorical(), **options)(h @ w + b[None, :], labels),
    ))(hidden, weight, bias)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_temporary_memory_is_a_small_fraction_of_the_materialized_path():
    n, d, v = 1024, 64, 32768
    shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
              jax.ShapeDtypeStruct((n,), jnp.int32))

    def temp_bytes(loss):
        compiled = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(*shapes).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    ours = temp_bytes(lambda h, w, y: mlnll.linear_categorical_nll(h, w, y))
    reference = temp_bytes(lambda h, w, y: optax.softmax_cross_entropy_with_integer_labels(h @ w, y).mean())
    assert ours <= 0.10 * reference


def test_jit_grad_only_reverse_mode():
    hidden, weight, bias, labels = _inputs(jax.random.PRNGKey(6), np.float32)
    loss = jax.jit(lambda h, w: mlnll.linear_categorical_nll(h, w, labels, block_size=64))
    assert np.isfinite(float(loss(hidden, weight)))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(loss)(hidden, weight)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"hidden": jnp.ones((N, D), jnp.int32)}, TypeError, "hidden must be a floating array"),
        ({"labels": jnp.zeros(N, jnp.float32)}, TypeError, "labels must be integer"),
        ({"weight": jnp.ones((D + 1, V))}, ValueError, r"weight must have shape \[D, V\] with D = 8"),
        ({"labels": jnp.zeros(N + 1, jnp.int32)}, ValueError, r"labels must have shape \(24,\)"),
        ({"bias": jnp.ones(V + 1)}, ValueError, r"bias must have shape \(300,\)"),
        ({"where": jnp.ones(N)}, TypeError, "where must be a boolean mask"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing must be a number in"),
        ({"z_loss": -1.0}, ValueError, "z_loss must be a finite number"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"block_size": 0}, ValueError, "block_size must be a positive int"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, error, match):
    args = {"hidden": jnp.ones((N, D)), "weight": jnp.ones((D, V)), "labels": jnp.zeros(N, jnp.int32)}
    args.update(kwargs)
    hidden, weight, labels = args.pop("hidden"), args.pop("weight"), args.pop("labels")
    with pytest.raises(error, match=match):
        mlnll.linear_categorical_nll(hidden, weight, labels, **args)

"""The fused loss as RL pipelines use it: temperature, per-token log-probabilities and the entropy
from the same pass, against the materialised ``jax.nn.log_softmax(hidden @ weight / t)`` in float64
and against mpmath."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import mlnll
from helpers import fused_tolerances, rel, rel_l2, softmax_conditions
from mlnll._src.verify.tolerances import TOLERANCES
from mlnll._src.vocab import fused

# Several blocks of 96 columns and a ragged tail of 40.
N, D, V, BLOCK = 64, 32, 1000, 96
TEMPERATURE = 0.7

# Issue 16's bounds (values 1e-5 / 1e-4, gradients 1e-5 / 5e-3); see helpers.fused_tolerances.
RTOL, GRAD_RTOL = fused_tolerances()


def _inputs(seed, dtype):
    """``(hidden, weight, bias, labels)`` drawn in numpy (no device op to compile)."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((N, D), np.float32)
    weight = rng.standard_normal((D, V), np.float32) * np.float32(3 / math.sqrt(D))
    bias = rng.standard_normal(V, np.float32)
    cast = lambda x: jnp.asarray(x.astype(dtype))  # noqa: E731
    return cast(hidden), cast(weight), cast(bias), rng.integers(0, V, N).astype(np.int32)


def materialized_rows(hidden, weight, bias, labels, *, temperature=TEMPERATURE, label_smoothing=0.0, z_loss=0.0):
    """``(nll, entropy)`` per row from ``jax.nn.log_softmax((hidden @ weight + bias) / t)`` in float64."""
    z = (hidden.astype(jnp.float64) @ weight.astype(jnp.float64) + bias.astype(jnp.float64)[None, :]) / temperature
    log_p = jax.nn.log_softmax(z)
    nll = -jnp.take_along_axis(log_p, jnp.asarray(labels)[:, None], axis=1)[:, 0]
    if label_smoothing:
        nll = (1 - label_smoothing) * nll - label_smoothing * jnp.mean(log_p, axis=1)
    if z_loss:
        nll = nll + z_loss * jax.scipy.special.logsumexp(z, axis=1) ** 2
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=1)
    return nll, entropy


def entropy_condition(hidden, weight, bias, temperature=TEMPERATURE) -> np.ndarray:
    """Per row, how much the entropy moves, relative to itself, when every logit moves by one
    rounding of its matmul: ``sum_c p_c |log p_c + H| s_c / H`` with ``s_c = (|h| @ |W| + |b|) / t``
    (``dH/dz_c = -p_c (log p_c + H)``). A confident row's small entropy is ill-conditioned (30-40
    here), whatever computes it; the value test scales its tolerance by this, at least 1."""
    h, w, b = (np.asarray(x, np.float64) for x in (hidden, weight, bias))
    scale = (np.abs(h) @ np.abs(w) + np.abs(b)) / temperature
    z = (h @ w + b) / temperature
    log_p = z - np.max(z, axis=1, keepdims=True)
    log_p = log_p - np.log(np.sum(np.exp(log_p), axis=1, keepdims=True))
    entropy = -np.sum(np.exp(log_p) * log_p, axis=1)
    condition = np.sum(np.exp(log_p) * np.abs(log_p + entropy[:, None]) * scale, axis=1) / entropy
    return np.maximum(condition, 1.0)


# Per-row cotangents of the loss and of the entropy (an entropy bonus of varying weight).
A = np.linspace(0.5, 1.5, N)
C = np.linspace(-0.2, 0.3, N)


def _rows_and_grads(rows_fn, *args, extra=None):
    """One compiled program: ``rows_fn``'s two per-row outputs (and ``extra``'s, if given) and the
    gradients of ``sum(A * first) + sum(C * second)`` in the arguments."""
    def objective(*a):
        first, second = rows_fn(*a)
        value = jnp.sum(jnp.asarray(A) * first.astype(jnp.float64)) + jnp.sum(jnp.asarray(C) * second.astype(jnp.float64))
        return value, ((first, second), None if extra is None else extra(*a))

    (_, (rows, more)), grads = jax.jit(jax.value_and_grad(objective, tuple(range(len(args))), has_aux=True))(*args)
    return rows, more, grads


@pytest.mark.parametrize(
    "dtype,options",
    [("float32", {}), ("float32", {"label_smoothing": 0.1, "z_loss": 1e-3}), ("float64", {"label_smoothing": 0.1}),
     ("bfloat16", {})],
)
def test_nll_and_entropy_with_temperature_match_materialized(dtype, options):
    dtype = np.dtype(dtype)
    hidden, weight, bias, labels = _inputs(0, dtype)
    cfg = fused.Config(V, BLOCK, 0.0, 0.0, TEMPERATURE, True)

    def ours(h, w, b):
        return mlnll.linear_categorical_nll(h, w, labels, bias=b, temperature=TEMPERATURE, return_entropy=True,
                                            reduction="none", block_size=BLOCK, **options)

    def float32_rows(h, w, b):  # bfloat16 inputs: the float32 rows before they are rounded
        return fused._per_example(h, w, b, labels, cfg)

    (nll, entropy), rows32, grads = _rows_and_grads(ours, hidden, weight, bias,
                                                    extra=float32_rows if dtype == jnp.bfloat16 else None)
    (want_nll, want_entropy), _, want_grads = _rows_and_grads(
        lambda h, w, b: materialized_rows(h, w, b, labels, **options), hidden, weight, bias)
    assert nll.dtype == entropy.dtype == dtype and nll.shape == entropy.shape == (N,)
    if dtype == jnp.bfloat16:
        assert rows32[0].dtype == rows32[1].dtype == jnp.float32
        for got, want in zip(rows32, (want_nll, want_entropy)):
            assert np.max(rel(got, want)) <= RTOL[dtype]
        assert np.max(rel(nll, want_nll)) <= 2.0**-8 and np.max(rel(entropy, want_entropy)) <= 2.0**-8
    else:
        assert np.max(rel(nll, want_nll)) <= RTOL[dtype]
        # The entropy within the "value" tolerance (17 ulps) times its condition number; the
        # exact-logit test below checks the algorithm alone at 17 ulps.
        condition = entropy_condition(hidden, weight, bias)
        assert np.max(rel(entropy, want_entropy) / condition) <= TOLERANCES[dtype].value
        assert np.max(rel(entropy, want_entropy)) <= RTOL[dtype]  # and the flat bound
    for g, w, x in zip(grads, want_grads, (hidden, weight, bias)):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert rel_l2(g, w) <= GRAD_RTOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_logprobs_and_entropy_rl_objective(dtype):
    # A policy-gradient step (cotangents: advantages on log p, an entropy bonus on H), padding rows
    # masked two ways (ignore_index and where), with labels on them that are no class at all.
    dtype = np.dtype(dtype)
    hidden, weight, bias, labels = _inputs(1, dtype)
    labels[::9] = -100
    where = np.arange(N) % 7 != 3
    garbage = np.where(where, labels, V + 5)
    kept = where & (labels != -100)

    def ours(h, w, b):
        return mlnll.linear_categorical_logprobs(h, w, garbage, temperature=TEMPERATURE, bias=b, where=where,
                                                 ignore_index=-100, return_entropy=True, block_size=BLOCK)

    def oracle(h, w, b):
        nll, entropy = materialized_rows(h, w, b, np.where(kept, labels, 0))
        return jnp.where(kept, -nll, 0.0), jnp.where(kept, entropy, 0.0)

    (log_p, entropy), _, grads = _rows_and_grads(ours, hidden, weight, bias)
    (want_log_p, want_entropy), _, want_grads = _rows_and_grads(oracle, hidden, weight, bias)
    assert log_p.dtype == dtype and log_p.shape == (N,)
    # Dropped rows are exactly 0, in value and in gradient.
    assert not np.any(np.asarray(log_p)[~kept]) and not np.any(np.asarray(entropy)[~kept])
    assert not np.any(np.asarray(grads[0])[~kept])
    tol = RTOL[dtype] if dtype != jnp.bfloat16 else 2.0**-8  # bfloat16: one rounding of the float32 rows
    assert np.max(rel(np.asarray(log_p)[kept], np.asarray(want_log_p)[kept])) <= tol
    condition = entropy_condition(hidden, weight, bias)[kept] if dtype != jnp.bfloat16 else 1.0
    assert np.max(rel(np.asarray(entropy)[kept], np.asarray(want_entropy)[kept]) / condition) <= tol
    for g, w in zip(grads, want_grads):
        assert rel_l2(g, w) <= GRAD_RTOL[dtype]


def test_mean_reduction_reduces_the_entropy_like_the_loss():
    hidden, weight, bias, labels = _inputs(3, np.float32)
    labels[::5] = -100
    where = np.arange(N) % 6 != 1
    loss, entropy = jax.jit(lambda h, w, b: mlnll.linear_categorical_nll(
        h, w, labels, bias=b, where=where, ignore_index=-100, temperature=TEMPERATURE, return_entropy=True,
        block_size=BLOCK))(hidden, weight, bias)
    kept = where & (labels != -100)
    want_nll, want_entropy = (np.asarray(r) for r in materialized_rows(hidden, weight, bias, np.where(kept, labels, 0)))
    np.testing.assert_allclose(float(loss), np.mean(want_nll[kept]), rtol=RTOL[np.dtype("float32")])
    np.testing.assert_allclose(float(entropy), np.mean(want_entropy[kept]), rtol=RTOL[np.dtype("float32")])


def _mp_rows(logits, labels, temperature):
    """mpmath (80 digits, set locally: the suite shares one mpmath context): per row
    ``(-log p_y, H)`` of ``softmax(logits / t)``."""
    with mpmath.workdps(80):
        out = []
        for row, label in zip(np.asarray(logits, np.float64), labels):
            z = [mpmath.mpf(float(v)) / temperature for v in row]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
            out.append((lse - z[label], -mpmath.fsum(mpmath.exp(v - lse) * (v - lse) for v in z)))
        return out


@pytest.mark.parametrize("temperature", [2.0, 0.7])
def test_entropy_and_logprobs_of_confident_rows_keep_relative_accuracy(temperature):
    # Exact float32 logits (hidden one-hot rows pick rows of weight; mpmath divides them by t
    # exactly): a generic row and rows ever more confident, down to an entropy of ~1e-23, each once
    # with the label at its max and once with another label (a sampled token of probability 1e-13,
    # or a label outside the vocabulary: the entropy does not depend on the label). At t = 0.7 the
    # quotient a / t is never formed: (a - top) / t keeps the max class's u exactly 0.
    v = 200
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((4, v)) * 3).astype(np.float32)
    logits[1, 5] += 30.0 * temperature / 2  # the same tempered logits at either temperature
    logits[2, 7] += 60.0 * temperature / 2
    logits[3, 11] += 110.0 * temperature / 2
    logits = np.concatenate([logits, logits])
    labels = np.array([3, 5, 7, 11, 8, 6, 9, -1])
    exact = _mp_rows(logits, np.where(labels >= 0, labels, 0), temperature)
    hidden, weight = np.eye(8, dtype=np.float32), logits
    log_p, entropy = jax.jit(lambda h, w: mlnll.linear_categorical_logprobs(
        h, w, labels, temperature=temperature, return_entropy=True, block_size=48))(hidden, weight)
    want_nll = np.array([float(n) for n, _ in exact])
    want_entropy = np.array([float(h) for _, h in exact])
    assert want_entropy[3] < 1e-16 and want_nll[3] < 1e-16  # the regime where lse - sum p z rounds to 0
    # 2e-6: the float32 "value" tolerance (17 ulps of the one table), times the condition number of
    # each value in its rounded differences u = (a - top) / t (up to 80 on the most confident rows).
    tol = TOLERANCES[np.dtype("float32")].value
    cond_nll, cond_entropy = softmax_conditions(logits, np.where(labels >= 0, labels, 0), temperature)
    assert np.max(rel(-np.asarray(log_p)[:7], want_nll[:7]) / cond_nll[:7]) <= tol and np.asarray(log_p)[7] == -np.inf
    assert np.max(rel(entropy, want_entropy) / cond_entropy) <= tol


def test_masked_classes_give_the_reduced_vocabulary_result():
    # A -inf bias removes classes: entropy, log-probabilities and their gradients equal those of the
    # vocabulary without them (and the removed columns' gradients are exactly 0, not NaN).
    hidden, weight, bias, labels = _inputs(5, np.float32)
    masked = np.zeros(V, bool)
    masked[100:300] = True  # two whole blocks and parts of two others
    masked[V - 7:] = True  # part of the tail
    labels = np.where(masked[labels], 0, labels)
    bias = np.where(masked, -np.inf, np.asarray(bias)).astype(np.float32)
    keep = np.flatnonzero(~masked)
    remap = (np.cumsum(~masked) - 1)[labels].astype(np.int32)

    def rows_fn(y):
        return lambda h, w, b: mlnll.linear_categorical_logprobs(h, w, y, temperature=TEMPERATURE, bias=b,
                                                                 return_entropy=True, block_size=BLOCK)

    rows, _, grads = _rows_and_grads(rows_fn(labels), hidden, weight, bias)
    small = (hidden, np.asarray(weight)[:, keep], bias[keep])
    want_rows, _, want_grads = _rows_and_grads(rows_fn(remap), *small)
    for got, want in zip(rows, want_rows):
        assert np.max(rel(got, want)) <= RTOL[np.dtype("float32")]
    assert not np.any(np.asarray(grads[1])[:, masked]) and not np.any(np.asarray(grads[2])[masked])
    for got, want in ((grads[0], want_grads[0]), (np.asarray(grads[1])[:, keep], want_grads[1]),
                      (np.asarray(grads[2])[keep], want_grads[2])):
        assert rel_l2(got, want) <= RTOL[np.dtype("float32")]
    nll, _ = materialized_rows(*small, remap)
    assert np.max(rel(-np.asarray(rows[0]), nll)) <= RTOL[np.dtype("float32")]


def test_out_of_range_label_gives_minus_inf_log_prob():
    hidden, weight, bias, labels = _inputs(6, np.float32)
    labels[0], labels[1] = V, -1
    log_p, entropy = jax.jit(lambda h, w, b: mlnll.linear_categorical_logprobs(
        h, w, labels, bias=b, return_entropy=True, block_size=BLOCK))(hidden, weight, bias)
    log_p = np.asarray(log_p)
    assert log_p[0] == -np.inf and log_p[1] == -np.inf and np.all(np.isfinite(log_p[2:]))
    # The entropy does not depend on the label: finite and right for those rows too.
    _, want_entropy = materialized_rows(hidden, weight, bias, np.zeros_like(labels), temperature=1.0)
    assert np.max(rel(entropy, want_entropy)) <= RTOL[np.dtype("float32")]


@pytest.mark.parametrize(
    "fn,kwargs,error,match",
    [
        (mlnll.linear_categorical_nll, {"temperature": 0.0}, ValueError, "temperature must be a finite Python number > 0"),
        (mlnll.linear_categorical_nll, {"temperature": -1.0}, ValueError, "temperature must be"),
        (mlnll.linear_categorical_nll, {"temperature": float("nan")}, ValueError, "temperature must be"),
        (mlnll.linear_categorical_nll, {"temperature": jnp.float32(0.5)}, ValueError, "temperature must be"),
        (mlnll.linear_categorical_nll, {"return_entropy": 1}, TypeError, "return_entropy must be True or False"),
        (mlnll.linear_categorical_logprobs, {"temperature": True}, ValueError, "temperature must be"),
        (mlnll.linear_categorical_logprobs, {"block_size": 0}, ValueError, "block_size must be a positive int"),
        (mlnll.linear_categorical_logprobs, {"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
        (mlnll.linear_categorical_logprobs, {"labels": np.zeros(N + 1, np.int32)}, ValueError,
         r"linear_categorical_logprobs: labels must have shape \(64,\)"),
    ],
)
def test_bad_options_raise_naming_the_argument(fn, kwargs, error, match):
    args = {"hidden": np.ones((N, D), np.float32), "weight": np.ones((D, V), np.float32),
            "labels": np.zeros(N, np.int32)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        fn(args.pop("hidden"), args.pop("weight"), args.pop("labels"), **args)

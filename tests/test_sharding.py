"""The losses, the fused NLL (with temperature and entropy), the log-probabilities and the fused KL
on 8 simulated CPU devices match the single-device results.

The devices exist only if XLA_FLAGS is set before JAX starts, so the checks run in one subprocess
(``python tests/test_sharding.py``) that prints a JSON report; each test below reads one entry.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mlnll._src.verify.tolerances import TOLERANCES

DEVICES = 8
# Sharded vs single-device, float32: the same sums in another order, so half the one table's float32
# "value" tolerance (1e-6, ~8 ulps).
RTOL = TOLERANCES[np.dtype("float32")].value / 2


def _rel(got, want) -> float:
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def _run_checks() -> dict:
    """Runs in the subprocess: every sharded computation and its single-device twin."""
    import functools
    import math

    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import mlnll
    from helpers import softmax_conditions  # tests/ is on the path: this file runs as a script

    # The same configuration as conftest.py (the subprocess does not load it).
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    assert jax.device_count() == DEVICES, jax.devices()
    report = {}

    def compare(name, sharded, single):
        s_value, s_grads = sharded
        value, grads = single
        report[name] = {
            "value": _rel(s_value, value),
            "grads": max(_rel(a, b) for a, b in zip(jax.tree.leaves(s_grads), jax.tree.leaves(grads))),
            # Where the gradients live: evidence that the computation really was sharded.
            # jax 0.6.1 to 0.7.x print a spec as PartitionSpec(...), 0.10 as P(...): one spelling here.
            "grad_specs": [str(getattr(g.sharding, "spec", None)).replace("PartitionSpec(", "P(")
                           for g in jax.tree.leaves(s_grads)],
        }

    keys = jax.random.split(jax.random.PRNGKey(0), 6)  # float32 inputs throughout (x64 is on for the oracle)
    rows, classes = 64, 40

    # 1. The plain losses with the batch sharded over all devices (jit propagates the layout).
    batch_mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
    z = 3 * jax.random.normal(keys[0], (rows, classes), jnp.float32)
    labels = jax.random.randint(keys[1], (rows,), 0, classes)
    loc, log_scale = jax.random.normal(keys[2], (rows,), jnp.float32), 0.3 * jax.random.normal(keys[3], (rows,), jnp.float32)
    cases = {
        "Categorical": (mlnll.nll(mlnll.Categorical()), z, labels),
        "Bernoulli": (mlnll.nll(mlnll.Bernoulli()), z[:, 0], (labels % 2).astype(jnp.float32)),
        "Normal": (mlnll.nll(mlnll.Normal()), (loc, log_scale), z[:, 1]),
    }
    rows_spec = NamedSharding(batch_mesh, P("data"))
    for name, (loss, outputs, targets) in cases.items():
        f = jax.jit(jax.value_and_grad(loss))
        single = f(outputs, targets)
        place = lambda x: jax.device_put(x, NamedSharding(batch_mesh, P("data", *([None] * (x.ndim - 1)))))  # noqa: E731
        sharded = f(jax.tree.map(place, outputs), jax.device_put(targets, rows_spec))
        compare(f"batch-sharded nll({name})", sharded, single)

    # 2. The fused NLL: batch sharded (plain jit), then vocab-parallel (shard_map), then both.
    n, d, v = 32, 16, 240
    hidden = jax.random.normal(keys[4], (n, d), jnp.float32)
    weight = jax.random.normal(keys[5], (d, v), jnp.float32) / math.sqrt(d) * 3
    bias = 0.5 * jax.random.normal(keys[0], (v,), jnp.float32)
    y = jax.random.randint(keys[1], (n,), 0, v).at[::7].set(-100)
    options = {"label_smoothing": 0.1, "z_loss": 1e-3, "ignore_index": -100, "block_size": 16}

    def single_fused(h, w, b):
        return mlnll.linear_categorical_nll(h, w, y, bias=b, **options)

    single = jax.jit(jax.value_and_grad(single_fused, (0, 1, 2)))(hidden, weight, bias)
    h_sharded = jax.device_put(hidden, NamedSharding(batch_mesh, P("data", None)))
    batch = jax.jit(jax.value_and_grad(single_fused, (0, 1, 2)))(h_sharded, weight, bias)
    compare("batch-sharded linear_categorical_nll", batch, single)

    # The materialised loss in float64: the shared oracle of the single-device and sharded runs.
    logits = hidden.astype(jnp.float64) @ weight.astype(jnp.float64) + bias.astype(jnp.float64)[None, :]
    lse = jax.scipy.special.logsumexp(logits, axis=-1)
    keep = y != -100
    q = 0.9 * jax.nn.one_hot(jnp.where(keep, y, 0), v, dtype=jnp.float64) + 0.1 / v
    per_row = jnp.sum(q * (lse[:, None] - logits), axis=-1) + 1e-3 * lse**2
    oracle = float(jnp.sum(jnp.where(keep, per_row, 0.0)) / jnp.sum(keep.astype(jnp.float64)))
    report["single-device linear_categorical_nll vs materialised float64"] = {"value": _rel(single[0], oracle), "grads": 0.0}

    meshes = {
        "vocab (8,)": (jax.make_mesh((DEVICES,), ("model",)), {"vocab_axis": "model"}),
        "batch x vocab (2, 4)": (jax.make_mesh((2, 4), ("data", "model")), {"vocab_axis": "model", "batch_axis": "data"}),
        "vocab (8,), auto axes": (jax.make_mesh((DEVICES,), ("model",), axis_types=(AxisType.Auto,)), {"vocab_axis": "model"}),
    }
    for name, (mesh, axes) in meshes.items():
        def parallel(h, w, b, mesh=mesh, axes=axes):
            return mlnll.vocab_parallel_linear_categorical_nll(h, w, y, bias=b, mesh=mesh, **axes, **options)

        compare(f"vocab-parallel {name}", jax.jit(jax.value_and_grad(parallel, (0, 1, 2)))(hidden, weight, bias), single)

    rows_out = jax.jit(
        lambda h, w: mlnll.vocab_parallel_linear_categorical_nll(
            h, w, y, mesh=meshes["vocab (8,)"][0], vocab_axis="model", reduction="none", block_size=16
        )
    )(hidden, weight)
    want_rows = jax.jit(lambda h, w: mlnll.linear_categorical_nll(h, w, y, reduction="none", block_size=16))(hidden, weight)
    report["vocab-parallel reduction='none'"] = {"value": _rel(jnp.where(y >= 0, rows_out, 0), jnp.where(y >= 0, want_rows, 0)), "grads": 0.0}

    # 3. What RL and distillation use: temperature, the entropy, per-token log-probabilities and the
    #    KL, vocab-parallel (and batch x vocab) against the single-device fused result.
    vocab_mesh, grid_mesh = meshes["vocab (8,)"][0], meshes["batch x vocab (2, 4)"][0]
    layouts = {"vocab (8,)": {"mesh": vocab_mesh, "vocab_axis": "model"},
               "batch x vocab (2, 4)": {"mesh": grid_mesh, "vocab_axis": "model", "batch_axis": "data"}}
    rl = {"temperature": 0.7, "block_size": 16}
    advantage = jax.random.normal(keys[2], (n,), jnp.float32)
    keep = jnp.arange(n) % 5 != 2

    def entropy_bonus(nll_fn):
        def loss(h, w, b):
            value, entropy = nll_fn(h, w, y, bias=b, ignore_index=-100, return_entropy=True, **rl)
            return value - 0.01 * entropy
        return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))

    def policy_gradient(logprobs_fn):
        def loss(h, w, b):
            log_p, entropy = logprobs_fn(h, w, y, bias=b, where=keep, ignore_index=-100, return_entropy=True, **rl)
            return -jnp.sum(advantage * log_p) - 0.01 * jnp.sum(entropy)
        return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))

    single_bonus = entropy_bonus(mlnll.linear_categorical_nll)(hidden, weight, bias)
    single_pg = policy_gradient(mlnll.linear_categorical_logprobs)(hidden, weight, bias)
    for name, layout in layouts.items():
        nll_fn = functools.partial(mlnll.vocab_parallel_linear_categorical_nll, **layout)
        compare(f"vocab-parallel temperature + entropy {name}", entropy_bonus(nll_fn)(hidden, weight, bias), single_bonus)
    logprobs_fn = functools.partial(mlnll.vocab_parallel_linear_categorical_logprobs, **layouts["vocab (8,)"])
    compare("vocab-parallel logprobs + entropy vocab (8,)", policy_gradient(logprobs_fn)(hidden, weight, bias), single_pg)

    t_hidden = jax.random.normal(keys[3], (n, 24), jnp.float32)
    t_weight = jax.random.normal(keys[4], (24, v), jnp.float32) / math.sqrt(24) * 3
    t_bias = 0.5 * jax.random.normal(keys[5], (v,), jnp.float32)

    def distillation(kl_fn, direction):
        def loss(h, w, b):
            return kl_fn(h, w, t_hidden, t_weight, student_bias=b, teacher_bias=t_bias, direction=direction,
                         where=keep, **rl)
        return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))

    for direction, name in (("forward", "vocab (8,)"), ("reverse", "batch x vocab (2, 4)")):
        kl_fn = functools.partial(mlnll.vocab_parallel_linear_categorical_kl, **layouts[name])
        compare(f"vocab-parallel kl {direction} {name}", distillation(kl_fn, direction)(hidden, weight, bias),
                distillation(mlnll.linear_categorical_kl, direction)(hidden, weight, bias))

    # 4. Tiny values survive the merge across shards: confident rows' entropies and log-probabilities
    #    (labels at and off the max), and the KL of nearly identical models (1e-9 down to 1e-24), per
    #    row against the single-device result (which tests/test_fused_rl.py and test_fused_kl.py check
    #    against mpmath), at t = 0.7, with the max of a row in one shard and most of its mass in others.
    rng = np.random.default_rng(4)
    confident = (rng.standard_normal((8, 200)) * 3).astype(np.float32)
    for row, (col, jump) in enumerate([(5, 0.0), (5, 10.0), (77, 21.0), (190, 38.0)] * 2):
        confident[row, col] += jump
    eye = np.eye(8, dtype=np.float32)
    tokens = np.array([3, 5, 77, 190, 8, 6, 9, -1])

    def per_token(fn):
        return jax.jit(lambda w: fn(eye, w, tokens, temperature=0.7, return_entropy=True, block_size=16))(confident)

    def max_row_rel(got, want, condition=1.0):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        finite = np.isfinite(want)
        assert np.array_equal(got[~finite], want[~finite])
        condition = np.broadcast_to(condition, want.shape)[finite]
        return float(np.max(np.abs(got[finite] - want[finite]) / np.abs(want[finite]) / condition))

    # Each value's condition number in its rounded differences u = (a - top) / t (to 80 here): two
    # computations that round u in other orders differ by that many of their ulps.
    conditions = softmax_conditions(confident, np.where(tokens >= 0, tokens, 0), 0.7)
    single_rows = per_token(mlnll.linear_categorical_logprobs)
    for name, layout in layouts.items():
        rows = per_token(functools.partial(mlnll.vocab_parallel_linear_categorical_logprobs, **layout))
        report[f"vocab-parallel confident rows {name}"] = {
            "value": max(max_row_rel(a, b, c) for a, b, c in zip(rows, single_rows, conditions)), "grads": 0.0}
    teacher = confident.copy()
    student = (teacher + rng.standard_normal(teacher.shape).astype(np.float32) * np.float32(1e-4)).astype(np.float32)
    for direction, name in (("forward", "batch x vocab (2, 4)"), ("reverse", "vocab (8,)")):
        def kl_rows(fn, direction=direction):
            return jax.jit(lambda s, t: fn(eye, s, eye, t, temperature=0.7, direction=direction, reduction="none",
                                           block_size=16))(student, teacher)

        got = kl_rows(functools.partial(mlnll.vocab_parallel_linear_categorical_kl, **layouts[name]))
        want = kl_rows(mlnll.linear_categorical_kl)
        assert float(np.min(want)) < 1e-20 and float(np.max(want)) < 1e-7, want
        report[f"vocab-parallel kl nearly identical {direction} {name}"] = {"value": max_row_rel(got, want), "grads": 0.0}

    try:
        mlnll.vocab_parallel_linear_categorical_nll(hidden, weight[:, :-1], y, mesh=meshes["vocab (8,)"][0], vocab_axis="model")
        report["indivisible vocabulary error"] = "no error"
    except ValueError as e:
        report["indivisible vocabulary error"] = str(e)
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


SHARDED = [
    "batch-sharded nll(Categorical)",
    "batch-sharded nll(Bernoulli)",
    "batch-sharded nll(Normal)",
    "batch-sharded linear_categorical_nll",
    "vocab-parallel vocab (8,)",
    "vocab-parallel batch x vocab (2, 4)",
    "vocab-parallel vocab (8,), auto axes",
    "vocab-parallel reduction='none'",
    "vocab-parallel temperature + entropy vocab (8,)",
    "vocab-parallel temperature + entropy batch x vocab (2, 4)",
    "vocab-parallel logprobs + entropy vocab (8,)",
    "vocab-parallel kl forward vocab (8,)",
    "vocab-parallel kl reverse batch x vocab (2, 4)",
    "vocab-parallel confident rows vocab (8,)",
    "vocab-parallel confident rows batch x vocab (2, 4)",
    "vocab-parallel kl nearly identical forward batch x vocab (2, 4)",
    "vocab-parallel kl nearly identical reverse vocab (8,)",
]


# The KL's student gradient (p_c (d_c - KL) reverse, q_c - p_c forward) subtracts O(1) numbers per
# class after the shift c = L_p - L_q, itself a different rounding in each computation: judged by the
# one table's "grad" column, two float32 computations against each other (84 ulps, 1e-5).
GRAD_RTOL = {name: TOLERANCES[np.dtype("float32")].grad for name in
             ("vocab-parallel kl forward vocab (8,)", "vocab-parallel kl reverse batch x vocab (2, 4)")}


@pytest.mark.parametrize("name", SHARDED)
def test_sharded_matches_single_device(report, name):
    assert report[name]["value"] <= RTOL, report[name]
    assert report[name]["grads"] <= GRAD_RTOL.get(name, RTOL), report[name]


@pytest.mark.parametrize(
    "name,leaf,spec",
    [
        ("batch-sharded nll(Categorical)", 0, "P('data', None)"),
        ("batch-sharded linear_categorical_nll", 0, "P('data', None)"),  # d hidden
        ("vocab-parallel vocab (8,)", 1, "P(None, 'model')"),  # d weight
        ("vocab-parallel batch x vocab (2, 4)", 0, "P('data',)"),
        ("vocab-parallel batch x vocab (2, 4)", 1, "P(None, 'model')"),
        ("vocab-parallel kl forward vocab (8,)", 1, "P(None, 'model')"),  # the student's d weight
        ("vocab-parallel kl reverse batch x vocab (2, 4)", 0, "P('data',)"),
    ],
)
def test_gradients_stay_sharded(report, name, leaf, spec):
    assert report[name]["grad_specs"][leaf] == spec


def test_single_device_fused_matches_materialized_oracle(report):
    assert report["single-device linear_categorical_nll vs materialised float64"]["value"] <= 1e-5


def test_indivisible_vocabulary_raises_naming_the_axis(report):
    message = report["indivisible vocabulary error"]
    assert "V = 239 must be divisible by the 8 devices of vocab_axis='model'" in message


if __name__ == "__main__":
    print(json.dumps(_run_checks()))

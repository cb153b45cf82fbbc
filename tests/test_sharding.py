"""The losses and the fused NLL on 8 simulated CPU devices match the single-device results.

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
    import math

    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding
    from jax.sharding import PartitionSpec as P

    import mlnll

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
]


@pytest.mark.parametrize("name", SHARDED)
def test_sharded_matches_single_device(report, name):
    assert report[name]["value"] <= RTOL, report[name]
    assert report[name]["grads"] <= RTOL, report[name]


@pytest.mark.parametrize(
    "name,leaf,spec",
    [
        ("batch-sharded nll(Categorical)", 0, "P('data', None)"),
        ("batch-sharded linear_categorical_nll", 0, "P('data', None)"),  # d hidden
        ("vocab-parallel vocab (8,)", 1, "P(None, 'model')"),  # d weight
        ("vocab-parallel batch x vocab (2, 4)", 0, "P('data',)"),
        ("vocab-parallel batch x vocab (2, 4)", 1, "P(None, 'model')"),
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

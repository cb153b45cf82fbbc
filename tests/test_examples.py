"""examples/: each script trains a small model with an mlnll loss and prints the loss going down.

Each runs in this process as ``python examples/NAME.py`` would run it (``runpy``, as ``__main__``),
with the settings a user has: float32 (x64 off), standard dtype promotion, rank promotion allowed.
flax and equinox are test dependencies (pyproject's ``test`` extra); without them these tests fail.

Every script fits data drawn from a known model, prints the loss every few steps and at the last,
then two references: the loss of the best model that ignores the inputs (``mlnll.mle`` of the family
over all targets) and the true model's. What the inputs can explain is the gap between the two, so
the test asks the training to have closed at least half of it, and the loss to have fallen from its
first value by at least half of it too. And nothing silly: on its own training data a fit can beat
the true model only by what its k parameters can absorb, about k / (2n) in expectation for a
well-specified model (Akaike); the test allows k / n.
"""

import importlib
import pathlib
import re
import runpy

import jax
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _flax_parameters(ns):
    from flax import nnx

    return nnx.state(ns["model"], nnx.Param)


def _equinox_parameters(ns):
    import equinox as eqx

    return eqx.filter(ns["model"], eqx.is_array)


SCRIPTS = {  # script: (the package it needs beyond optax, its trained parameters)
    "flax_nnx.py": ("flax", _flax_parameters),
    "equinox_model.py": ("equinox", _equinox_parameters),
    "optax_chain.py": ("optax", lambda ns: ns["params"]),
}


def _numbers(text):
    return [float(s) for s in re.findall(r"-?\d+\.\d+", text)]


def test_every_example_is_tested_and_listed():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted(SCRIPTS)
    listing = (EXAMPLES / "README.md").read_text()
    assert all(f"python examples/{name}" in listing for name in scripts)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_trains(script, capsys):
    package, parameters = SCRIPTS[script]
    try:
        importlib.import_module(package)
    except ImportError as error:  # a test dependency: fail, never skip
        pytest.fail(f"examples/{script} needs {package} (the test extra: pip install -e '.[test]'): {error}")
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        ns = runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    printed = capsys.readouterr().out.splitlines()

    # "step i  loss L" lines from the first step to the last, then "... {constant}, ... {truth}".
    step_losses = [_numbers(line)[0] for line in printed if line.startswith("step")]
    first, final = ns["losses"][0], ns["losses"][-1]
    assert len(step_losses) >= 2 and (step_losses[0], step_losses[-1]) == (round(first, 4), round(final, 4))
    assert _numbers(printed[-1]) == [round(ns["constant"], 4), round(ns["truth"], 4)]

    constant, truth = ns["constant"], ns["truth"]
    explainable = constant - truth
    assert explainable > 0.1, (constant, truth)  # the inputs matter in every example
    assert final < truth + 0.5 * explainable, (final, constant, truth)
    assert first - final > 0.5 * explainable, (first, final, explainable)

    k = sum(leaf.size for leaf in jax.tree.leaves(parameters(ns)))
    n = ns["y"].shape[0]
    assert final > truth - k / n, (final, truth, k, n)

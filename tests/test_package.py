"""The project's promises about itself: public names documented, README's commands, the check CLI."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import mlnll
from mlnll._src.families.bernoulli import Bernoulli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_public_name_is_in_readme_api_table():
    table_names = set(re.findall(r"^\| `([A-Za-z_]+)", README, flags=re.M))
    missing = [name for name in mlnll.__all__ if name not in table_names]
    assert not missing, f"public names missing from README's API table: {missing}"
    for name in mlnll.__all__:
        assert hasattr(mlnll, name)


def test_ci_runs_readme_test_command_exactly():
    commands = re.findall(r"```bash\n(.+?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    run_command = next(c for c in commands if "mlnll check" in c)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
    assert run_command.startswith("python -m pip install -e .")


def test_readme_python_examples_run():
    for block in re.findall(r"```python\n(.+?)```", README, flags=re.S):
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)
        if "params" in namespace:  # the optax example: it learns the separating direction
            w = namespace["params"]
            assert float(namespace["loss"](namespace["x"] @ w[:3] + w[3], namespace["y"])) < 0.1


def test_check_command_passes_and_prints_a_row_per_family():
    out = subprocess.run([sys.executable, "-m", "mlnll", "check"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    from mlnll._src.cases import CASES

    for case in CASES:
        assert re.search(rf"^{re.escape(case.name)}\s+float32\s+cpu\s.*pass$", out.stdout, flags=re.M), case.name
        assert re.search(rf"^{re.escape(case.name)}\s+float64\s+cpu\s.*pass$", out.stdout, flags=re.M), case.name


@dataclasses.dataclass(frozen=True)
class _WrongGradient:
    """A family whose closed-form gradient is off by 1%: check_grad must catch it."""

    inner: Bernoulli = Bernoulli()

    def log_prob(self, outputs, targets):
        return self.inner.log_prob(outputs, targets)

    def grad(self, outputs, targets):
        return 1.01 * self.inner.grad(outputs, targets)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_check_grad_reports_errors_and_catches_a_wrong_closed_form():
    z = jnp.linspace(-3.0, 3.0, 7, dtype=jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1, 0, 1], jnp.float64)
    good = mlnll.check_grad(mlnll.Bernoulli(), z, y)
    assert good.passed and good.grad_rel_err < 1e-13 and good.fd_rel_err < 1e-8
    assert good.fisher_rel_err < 1e-13 and good.dtype == "float64"
    bad = mlnll.check_grad(_WrongGradient(), z, y)
    assert not bad.passed
    assert bad.grad_rel_err == pytest.approx(0.01 / 1.01, rel=1e-6)
    assert bad.fd_rel_err > 1e-3

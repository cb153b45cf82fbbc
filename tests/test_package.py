"""The project's promises about itself: public names documented, README's commands run."""

import pathlib
import re

import jax

import mlnll

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


def test_the_version_is_single_sourced_and_the_license_ships():
    # pyproject reads the version from mlnll.__version__; the installed metadata must agree, and
    # the license the metadata names is the file in the repository (and in the wheel).
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("mlnll") == mlnll.__version__
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")

"""The project's promises about itself: public names documented, README's commands run."""

import pathlib
import re

import jax
import numpy as np

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


def _numbers(text):
    return [float(s) for s in re.findall(r"-?\d+(?:\.\d*)?(?:e[-+]?\d+)?", text)]


def test_readme_python_examples_run(capsys):
    # Each ```python block runs with the settings a user has (float32, standard promotion, rank
    # promotion allowed), must print what it shows, and prints what its "# ..." comments say (to the
    # printed digits, give or take two in the last one: other jax versions round differently).
    blocks = re.findall(r"```python\n(.+?)```", README, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)
        printed = capsys.readouterr().out.splitlines()
        assert printed, f"README example prints nothing:\n{block}"
        shown = re.findall(r"^print\(.*\)\s+# (.+)$", block, flags=re.M)
        if shown:
            assert len(shown) == len(printed), (shown, printed)
            for comment, line in zip(shown, printed):
                digits = max((len(s.split(".")[1]) for s in re.findall(r"\d+\.\d+", comment)), default=0)
                close = np.allclose(_numbers(line), _numbers(comment), rtol=0, atol=2.5 * 10.0**-digits)
                assert close, (line, comment)
        if "optax" in block:
            _check_optax_example(namespace, printed)
        elif "vocab_parallel" in block:
            fused, materialised = _numbers(printed[0])
            assert abs(fused - materialised) <= 1e-5 * abs(materialised)


def _check_optax_example(ns, printed):
    # Logistic regression on labels drawn from the model: starting from zero parameters the loss is
    # log 2; the fit is the maximum-likelihood estimate, so its loss is at most the loss at the true
    # parameters, and it lies within a few standard errors (from the Fisher information) of them.
    first, last = _numbers(printed[0])
    assert abs(first - np.log(2.0)) < 1e-4 and last < first
    x, y, w_true, params = (np.asarray(ns[k], np.float64) for k in ("x", "y", "w_true", "params"))
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    nll_true = float(np.mean(np.logaddexp(0.0, design @ w_true) - y * (design @ w_true)))
    assert last <= nll_true + 5e-5  # 5e-5: the printed rounding
    assert np.allclose(_numbers(printed[1]), w_true) and np.allclose(_numbers(printed[2]), params.round(2))
    p = 1.0 / (1.0 + np.exp(-(design @ params)))
    standard_error = np.sqrt(np.diag(np.linalg.inv(design.T @ (design * (p * (1 - p))[:, None]))))
    assert np.all(np.abs(params - w_true) < 4 * standard_error), (params, w_true, standard_error)


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


def _public_functions():
    """``(name, function)`` for every public callable: the functions in ``mlnll.__all__`` (and in its
    modules' ``__all__``) and the public methods (and ``__call__``) of its classes."""
    import inspect

    for name in mlnll.__all__:
        obj = getattr(mlnll, name)
        members = ([(f"{name}.{m}", getattr(obj, m)) for m in getattr(obj, "__all__", ())]
                   if inspect.ismodule(obj) else [(name, obj)])
        for qualname, member in members:
            if not inspect.isclass(member):
                yield qualname, member
                continue
            for attr, value in vars(member).items():
                if attr.startswith("_") and attr != "__call__":
                    continue
                value = value.fget if isinstance(value, property) else value
                value = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if inspect.isfunction(value):
                    yield f"{qualname}.{attr}", value


def test_the_package_is_typed_and_every_public_signature_is_annotated():
    # PEP 561: the marker exists and ships (package-data); mypy checks the package in .ci/run.
    import inspect
    import tomllib

    assert (ROOT / "mlnll" / "py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["mlnll"]
    assert "python -m mypy mlnll" in " ".join((ROOT / ".ci" / "run").read_text().splitlines())
    missing = []
    for name, fn in _public_functions():
        signature = inspect.signature(fn)
        missing += [f"{name}({p.name})" for p in signature.parameters.values()
                    if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
        if signature.return_annotation is inspect.Signature.empty:
            missing.append(f"{name} -> ?")
    assert not missing, f"public signatures without annotations: {missing}"

"""Execute every notebook in notebooks/ from a fresh kernel; any error (a failed assertion) fails.

The notebooks assert what they claim, so a wrong derivation or a broken API call fails CI here.
The kernel is this interpreter (a kernelspec written to a temporary directory points at
``sys.executable``), so it sees the same installed mlnll as the tests, in a venv or in CI's
system Python alike.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

# What the notebooks import, besides mlnll and jax: the test extra installs all of it, so a missing
# one is an error here rather than a skipped notebook.
import ipykernel  # noqa: F401
import matplotlib  # noqa: F401
import optax  # noqa: F401
import sklearn  # noqa: F401
import statsmodels  # noqa: F401  (07: the Engel data and QuantReg; 08: ZeroInflatedPoisson, OrderedModel)

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
KERNEL_NAME = "mlnll-test-python"


def _execute(path: pathlib.Path, workdir: pathlib.Path) -> None:
    """Run one notebook top to bottom on a kernel of this interpreter (in the calling process)."""
    spec_dir = workdir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mlnll tests",
        "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    manager = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=manager)
    client = nbclient.NotebookClient(
        # No wall-clock limit per cell: a busy machine only makes a notebook slower, never wrong.
        nb, km=km, kernel_name=KERNEL_NAME, timeout=None,
        resources={"metadata": {"path": str(workdir)}},  # run in a scratch directory
    )
    # Raises CellExecutionError, naming the cell, on any exception in the notebook. cleanup_kc: shut
    # the kernel down and close its sockets afterwards (nbclient only does so by default for a
    # kernel manager it created itself).
    client.execute(cleanup_kc=True)


def test_there_are_eight_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) == 8 and [n[:3] for n in names] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_"], names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    """Every code cell was run in order, and the figures are stored so they show when browsed."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: not run top to bottom"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: stored outputs contain an error"
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert pngs >= 1, f"{path.name}: no stored figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    # In a child process, so the kernel client's threads, sockets and imports never share a test
    # worker with the rest of the suite's JAX computations.
    done = subprocess.run(
        [sys.executable, __file__, str(path), str(tmp_path)], capture_output=True, text=True,
    )
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


if __name__ == "__main__":
    _execute(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))

"""Sphinx configuration for mlnll's documentation site.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (from the repository root).
"""

from __future__ import annotations

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import mlnll  # noqa: E402  (the installed, editable package)

project = "mlnll"
author = "mlnll contributors"
copyright = "mlnll contributors"  # noqa: A001
release = version = mlnll.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings' "Args:", "Returns:", "Example:" sections (Google style)
    "sphinx.ext.mathjax",  # $...$ in the notebooks' markdown
    "myst_nb",  # Markdown pages (MyST) and the notebooks; it loads myst_parser itself
    "mlnll_docs",  # docs/_ext: the undocumented-name check, the family pages, the notebook copies
]

# furo: a small, actively maintained theme with one dependency of its own (sphinx-basic-ng), a
# readable width for the long derivation docstrings, and light/dark modes without configuration.
html_theme = "furo"
html_title = f"mlnll {release}"

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# The examples in the docstrings are doctests, run by pytest's --doctest-modules in the test suite;
# this build only renders them (sphinx.ext.doctest is not loaded, so nothing runs them twice).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
highlight_language = "text"  # the docstrings' "::" blocks are formulas, not Python

# Signatures show the type aliases by name (``NormalOutputs``, ``ArrayLike``), not expanded into
# the unions they stand for (the docstrings say what each tuple holds).
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike", "Outputs": "Outputs", "Targets": "Targets"}
try:
    from mlnll._src import types as _types
except ImportError:  # an older checkout without the aliases module
    _types = None
autodoc_type_aliases.update(
    {name: name for name in vars(_types) if name.endswith(("Outputs", "OutputArrays"))} if _types else {}
)
del _types
autosummary_generate = False  # the reference pages are written by hand (api.md) and by mlnll_docs
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# The notebooks are rendered from their stored outputs: the test suite executes them already
# (tests/test_notebooks.py), and executing them again here would cost about a minute.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

"""Sphinx extension for mlnll's documentation site.

It does three things when the builder starts (``builder-inited``), before any page is read:

* walks ``mlnll.__all__`` and emits a Sphinx warning for every public name, and every public method
  of a public class (or public function of a public module), without a docstring; under ``-W`` the
  build then fails, so nothing public goes undocumented;
* writes one page per family (every public class with all the ``Family`` protocol's methods) to
  ``_generated/families/``, each rendering the family's docstring and methods with autodoc;
* copies ``notebooks/*.ipynb`` (the committed files, outputs included) to ``_generated/notebooks/``,
  since a toctree can only name documents inside the source folder.

Generated files are rewritten only when their content changes, so incremental builds stay
incremental. ``_generated/`` is ignored by git.

A family's protocol method without a docstring of its own (``Normal.params``, say) is documented by
the protocol's (``Family.params``): the check accepts it, and ``autodoc-process-docstring`` shows
the protocol's text on the family's page, marked as such.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import shutil
import types

from sphinx.util import logging

logger = logging.getLogger(__name__)

DOCS = pathlib.Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"


def _protocol_methods() -> dict[str, str]:
    """The ``Family`` protocol's method names and their docstrings."""
    import mlnll

    return {
        name: inspect.cleandoc(value.__doc__ or "")
        for name, value in vars(mlnll.Family).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def _own_doc(obj) -> str | None:
    """``obj``'s own docstring, or None: never one inherited from a base class, nor the
    ``Name(field: type = ...)`` text that ``dataclasses`` writes for a class without one."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if doc and dataclasses.is_dataclass(obj):
            try:
                generated = obj.__name__ + str(inspect.signature(obj)).replace(" -> None", "")
            except (TypeError, ValueError):
                generated = None
            if doc == generated:
                return None
    else:
        doc = getattr(obj, "__doc__", None)
    return doc if doc and doc.strip() else None


def _function_of(member):
    """The function behind a class attribute (method, classmethod, staticmethod, property, or a
    wrapped callable such as a ``functools.cache``), or None for data and nested classes."""
    if isinstance(member, (classmethod, staticmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    return member if callable(member) and not isinstance(member, type) else None


def is_family(obj) -> bool:
    """A public class that has every method of the ``Family`` protocol (the protocol itself excluded)."""
    import mlnll

    return isinstance(obj, type) and obj is not mlnll.Family and all(hasattr(obj, m) for m in _protocol_methods())


def undocumented() -> list[str]:
    """Every public name of mlnll, public method of a public class and public function or class of a
    public module, that has no docstring (a family's protocol method may rely on the protocol's)."""
    import mlnll

    protocol = {name for name, doc in _protocol_methods().items() if doc}
    missing = []
    for name in mlnll.__all__:
        obj = getattr(mlnll, name)
        if _own_doc(obj) is None:
            missing.append(f"mlnll.{name}")
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                function = _function_of(member)
                if attr.startswith("_") or function is None or _own_doc(function):
                    continue
                if is_family(obj) and attr in protocol:
                    continue
                missing.append(f"mlnll.{name}.{attr}")
        elif isinstance(obj, types.ModuleType):
            public = getattr(obj, "__all__", [n for n in vars(obj) if not n.startswith("_")])
            for attr in public:
                member = getattr(obj, attr)
                if getattr(member, "__module__", None) != obj.__name__:
                    continue  # re-exported from elsewhere: checked where it is public
                if callable(member) and _own_doc(member) is None:
                    missing.append(f"mlnll.{name}.{attr}")
    return missing


def family_names() -> list[str]:
    import mlnll

    return sorted(name for name in mlnll.__all__ if is_family(getattr(mlnll, name)))


def _write(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it already holds exactly that (keeps the mtime)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _sync_folder(folder: pathlib.Path, files: dict[str, str | pathlib.Path]) -> None:
    """Make ``folder`` hold exactly ``files`` (name -> text, or a path to copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(p.name for p in folder.iterdir()) - set(files):
        (folder / stale).unlink()
    for name, source in files.items():
        target = folder / name
        if isinstance(source, str):
            _write(target, source)
        elif not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)


FAMILY_PAGE = """\
# {name}

```{{eval-rst}}
.. currentmodule:: mlnll

.. autoclass:: {name}
   :members:
   :inherited-members: object
```

The loss is `mlnll.nll(mlnll.{name}(...))`; its reductions, `where` and `weights` are described under
{{func}}`mlnll.nll`.
"""


OPTIONS_SECTION = """
## Loss options

`mlnll.nll(mlnll.{name}(), **options)` takes the options below, validated when the loss is built;
each has a closed-form gradient, checked against `jax.grad`.

```{{eval-rst}}
{module}.. autoclass:: {cls}
   :no-index:
```
"""


def _options_section(name: str) -> str:
    """The family's ``nll`` options (its ``loss_options()`` class, and that class's module when the
    module holds only the options), or "" for a family without options or without a default."""
    import mlnll

    family = getattr(mlnll, name)
    if not hasattr(family, "loss_options"):
        return ""
    try:
        options = type(family().loss_options())
    except TypeError:  # a family that needs arguments (a wrapper): its options are the inner family's
        return ""
    module = ""
    if options.__module__.endswith(".options"):
        module = f".. automodule:: {options.__module__}\n   :no-index:\n\n"
    return OPTIONS_SECTION.format(name=name, cls=f"{options.__module__}.{options.__qualname__}", module=module)


def generate(app) -> None:
    """``builder-inited``: run the docstring check, write the family pages, copy the notebooks."""
    for name in undocumented():
        logger.warning("mlnll docs: public name without a docstring: %s", name, type="mlnll", subtype="undocumented")
    names = family_names()
    pages = {f"{name}.md": FAMILY_PAGE.format(name=name) + _options_section(name) for name in names}
    pages["index.md"] = (
        "# Families\n\nOne page per family: its density, closed-form gradient and Fisher information "
        "(the derivations are the docstrings), the outputs it takes, and an example where the docstring "
        "has one.\n\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n"
    )
    _sync_folder(GENERATED / "families", pages)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    _sync_folder(GENERATED / "notebooks", {path.name: path for path in notebooks})


def protocol_docstring(app, what, name, obj, options, lines) -> None:
    """``autodoc-process-docstring``: a family's protocol method without its own docstring shows
    the ``Family`` protocol's, marked as such."""
    if what != "method" or lines:
        return
    *owner, attr = name.split(".")
    import mlnll

    cls = getattr(mlnll, owner[-1], None) if owner else None
    doc = _protocol_methods().get(attr)
    if doc and is_family(cls):
        lines.extend(doc.splitlines() + ["", f"(As every family's: see :meth:`mlnll.Family.{attr}`.)"])


def keep_protocol_methods(app, what, name, obj, skip, options):
    """``autodoc-skip-member``: keep a family's undocumented protocol methods (documented above)."""
    if what == "class" and name in _protocol_methods() and callable(obj) and not _own_doc(obj):
        return False
    return None


def check_coverage(app, env) -> None:
    """``env-check-consistency``: every public name must be described on some page (api.md and the
    family pages are written by hand and by ``generate``; a new export nobody placed fails here)."""
    import mlnll

    described = set(env.get_domain("py").objects)
    for name in mlnll.__all__:
        obj = getattr(mlnll, name)
        if isinstance(obj, types.ModuleType):
            for attr in getattr(obj, "__all__", []):
                if f"mlnll.{name}.{attr}" not in described and f"mlnll.{attr}" not in described:
                    logger.warning("mlnll docs: mlnll.%s.%s is on no page (docs/api.md)", name, attr,
                                   type="mlnll", subtype="uncovered")
        elif f"mlnll.{name}" not in described:
            logger.warning("mlnll docs: mlnll.%s is on no page (docs/api.md)", name, type="mlnll", subtype="uncovered")


def setup(app):
    app.connect("builder-inited", generate)
    app.connect("env-check-consistency", check_coverage)
    app.connect("autodoc-process-docstring", protocol_docstring)
    app.connect("autodoc-skip-member", keep_protocol_methods)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

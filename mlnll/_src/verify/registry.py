"""The registry of check cases: every public family of ``mlnll`` that publishes ``check_cases()``.

Nothing here lists family types: the public ``mlnll`` namespace is the list, and each family
module owns its rows. A user's family joins by defining ``check_cases`` (see ``case.Case``) and
being passed to ``python -m mlnll check --import MODULE`` or to ``collect_cases``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from mlnll._src.verify.case import Case


def family_classes(namespace: Any) -> list[type[Any]]:
    """The classes among ``namespace``'s public names (``__all__``) that publish ``check_cases``."""
    names = getattr(namespace, "__all__", None)
    own = names is None  # without __all__, only the classes the module defines (not its imports)
    if own:
        names = [n for n in vars(namespace) if not n.startswith("_")]
    found = []
    for name in names:  # type: ignore[union-attr]  # not None: set above when the module has no __all__
        obj = getattr(namespace, name)
        if not (isinstance(obj, type) and callable(getattr(obj, "check_cases", None))) or obj in found:
            continue
        if own and obj.__module__ != namespace.__name__:
            continue
        found.append(obj)
    return found


def collect_cases(namespaces: Iterable) -> tuple[Case, ...]:
    """Every case of every family class in ``namespaces`` (modules or objects with ``__all__``)."""
    cases: list[Case] = []
    for namespace in namespaces:
        for cls in family_classes(namespace):
            cases.extend(cls.check_cases())
    names = [c.name for c in cases]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"check cases must have distinct names; repeated: {duplicated}.")
    return tuple(cases)


def builtin_cases() -> tuple[Case, ...]:
    """The cases of mlnll's own families, in the order of ``mlnll.__all__``."""
    import mlnll

    return collect_cases([mlnll])


def import_cases(module_names: Iterable[str]) -> tuple[Case, ...]:
    """The cases of the families defined in the named modules (``--import`` of the check command)."""
    return collect_cases([importlib.import_module(name) for name in module_names])

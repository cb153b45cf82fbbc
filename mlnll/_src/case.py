"""``Case``: one row of the check table (a family and how to draw its inputs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from mlnll._src.family import Family

Inputs = tuple[object, object]  # (outputs, targets)


@dataclasses.dataclass(frozen=True)
class Case:
    """A family with an input generator ``random(key, dtype, batch)`` and fixed ``extreme(dtype)``."""

    name: str
    family: Family
    random: Callable[[jax.Array, np.dtype, int], Inputs]
    extreme: Callable[[np.dtype], Inputs]

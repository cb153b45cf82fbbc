"""Which dtype to compute in and which to return: the rule every family and loss follows.

Results come back in the inputs' floating dtype (bfloat16 in, bfloat16 out); everything is computed
and accumulated in that dtype but never narrower than float32.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np


class HasDtype(Protocol):
    """Anything with a ``.dtype``: an array, or ``unpack.Params`` (whose dtype is its result dtype)."""

    @property
    def dtype(self) -> Any: ...


def float_dtype(*arrays: HasDtype) -> np.dtype:
    """The floating dtype a result is returned in: the widest floating dtype among ``arrays``.

    Two different 16-bit types (bfloat16 with float16) give float32. Non-floating arrays are
    ignored; with none floating, float32.
    """
    floats = [np.dtype(a.dtype) for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    if not floats:
        return np.dtype(jnp.float32)
    widest = max(f.itemsize for f in floats)
    kinds = {f for f in floats if f.itemsize == widest}
    if len(kinds) > 1:
        return np.dtype(jnp.float32)
    return kinds.pop()


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype to compute and accumulate in: ``dtype``, but never narrower than float32."""
    dtype = np.dtype(dtype)
    return dtype if dtype.itemsize >= 4 else np.dtype(jnp.float32)


def upcast(*arrays: jax.Array) -> tuple[list[jax.Array], np.dtype]:
    """``arrays`` cast to their common accumulation dtype, and the dtype to return results in."""
    dtype = float_dtype(*arrays)
    acc = accumulation_dtype(dtype)
    return [a.astype(acc) for a in arrays], dtype

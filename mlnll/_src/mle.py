"""``mle(family, targets)``: the outputs at the maximum-likelihood estimate, where a closed form exists."""

from __future__ import annotations

from typing import Any

from jax.typing import ArrayLike

from mlnll._src.family import Family, Outputs


def mle(family: Family, targets: ArrayLike, *, axis: int = 0, **options: Any) -> Outputs:
    """Raw outputs (same convention as the family's outputs) maximising the likelihood of ``targets``.

    The estimate is taken over ``axis`` of the targets; e.g. ``mle(Bernoulli(), y)`` is the logit of
    the mean, and ``mle(Normal(), y)`` is ``(mean, log of the 1/n standard deviation)``. At the
    returned outputs the gradient of the summed NLL vanishes. Family-specific options (such as
    ``num_classes`` for Categorical with integer labels) are passed through.

    Example:
      >>> import jax, jax.numpy as jnp, mlnll
      >>> heads = jnp.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0])  # 7 heads in 10 tosses
      >>> round(float(jax.nn.sigmoid(mlnll.mle(mlnll.Bernoulli(), heads))), 6)
      0.7
    """
    method = getattr(family, "mle", None)
    if method is None:
        raise NotImplementedError(f"{type(family).__name__} has no closed-form maximum-likelihood estimate.")
    return method(targets, axis=axis, **options)

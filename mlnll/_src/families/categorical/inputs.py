"""Categorical's outputs and targets: logits ``[..., C]``; integer labels ``[...]`` or probability
vectors ``[..., C]``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.losses.checks import ValueCheck


class Inputs(NamedTuple):
    """Validated, broadcast logits and targets; ``dtype`` is the dtype results are returned in."""

    logits: jax.Array  # [..., C]
    targets: jax.Array  # labels [...] (int32) or probability vectors [..., C]
    is_soft: bool
    dtype: np.dtype

    @property
    def num_classes(self) -> int:
        return self.logits.shape[-1]

    def valid(self) -> jax.Array:
        """The examples whose target is in the support (a label in 0..C-1, probabilities in [0, 1])."""
        if self.is_soft:
            return jnp.all(_probability(self.targets), axis=-1)
        return (self.targets >= 0) & (self.targets < self.num_classes)


def _probability(y: jax.Array) -> jax.Array:
    """``0 <= y <= 1``, the sign from the bits: under denormals-are-zero -1.4e-45 compares as -0."""
    return numerics.nonnegative_and_finite(y) & (y <= 1)


def logits(outputs, *, family: str = "Categorical", upcast: bool = True) -> tuple[jax.Array, np.dtype]:
    """Validated logits ``[..., C]`` (in the accumulation dtype unless ``upcast=False``) and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=("logits",), event_ndims={"logits": 1}, upcast=upcast)
    return p.logits, p.dtype


def is_labels(targets) -> bool:
    """Whether ``targets`` are integer (or bool) class labels rather than probability vectors."""
    return not jnp.issubdtype(jnp.asarray(targets).dtype, jnp.floating)


def _int32_labels(y: jax.Array, num_classes: int) -> jax.Array:
    """Labels as int32. A label beyond int32 (an int64 2**32) becomes int32's minimum first, an
    invalid label, instead of wrapping to class 0 in the cast; every other label keeps its value
    (an ``ignore_index`` of -100 included)."""
    if y.dtype == jnp.bool_ or np.dtype(y.dtype).itemsize < 4 or y.dtype == jnp.int32:
        return y.astype(jnp.int32)
    limits = jnp.iinfo(jnp.int32)
    info = jnp.iinfo(y.dtype)
    fits = y <= limits.max
    if info.min < 0:
        fits = fits & (y >= limits.min)
    return jnp.where(fits, y, jnp.full_like(y, limits.min if info.min < 0 else limits.max)).astype(jnp.int32)


def prepare(outputs, targets, *, upcast: bool = True) -> Inputs:
    """Logits and targets broadcast to one batch shape.

    Integer (or bool) targets are labels of shape [...]; floating targets are probability vectors
    of shape [..., C]. With ``upcast=False`` bfloat16/float16 logits stay as they are (the label
    kernel upcasts per use, so no float32 copy of the logits is stored).
    """
    z, dtype = logits(outputs, upcast=upcast)
    y = validate.numeric_targets(targets, where="Categorical targets")
    num_classes = z.shape[-1]
    if jnp.issubdtype(y.dtype, jnp.floating):
        if y.ndim == 0 or y.shape[-1] != num_classes:
            raise ValueError(
                f"Categorical: floating targets are probability vectors [..., C] with C = {num_classes} "
                f"as in outputs shape {z.shape}; got targets shape {y.shape}. Integer class labels "
                "must have an integer dtype, e.g. targets.astype(jnp.int32)."
            )
        batch = validate.broadcast_shapes("Categorical", [("outputs", z.shape), ("targets", y.shape)])[:-1]
        if np.dtype(y.dtype).itemsize > np.dtype(z.dtype).itemsize:
            # Judged in their own precision: float64 1 + 1e-12 must not round into [0, 1].
            y = jnp.where(_probability(y), y, jnp.nan)
        y = jnp.broadcast_to(y.astype(z.dtype), batch + (num_classes,))
        return Inputs(jnp.broadcast_to(z, batch + (num_classes,)), y, True, dtype)
    batch = validate.broadcast_shapes(
        "Categorical", [("outputs[..., :-1] (batch)", z.shape[:-1]), ("targets (labels)", y.shape)]
    )
    y = jnp.broadcast_to(_int32_labels(y, num_classes), batch)
    return Inputs(jnp.broadcast_to(z, batch + (num_classes,)), y, False, dtype)


def soft_target_tolerance(targets_dtype: DTypeLike, logits_dtype: DTypeLike, num_classes: int) -> float:
    """How far from 1 a soft target row may sum: ``4 eps + C eps_acc``, eps of the coarser of the
    targets' dtype and the dtype the loss computes in (the logits', at least float32), eps_acc of
    that dtype's accumulation dtype. 4 eps covers rounding each entry and a normalisation
    ``x / sum(x)``; ``C eps_acc`` bounds the rounding of a sum of C terms however it was computed
    (sequentially, the worst case). float32 with C = 32000: 3.8e-3; C = 4: 9.5e-7; bfloat16: 0.03."""
    coarse = max(np.dtype(targets_dtype), np.dtype(logits_dtype), key=lambda d: np.finfo(d).eps)
    eps = float(np.finfo(coarse).eps)
    return 4 * eps + num_classes * float(np.finfo(numerics.accumulation_dtype(coarse)).eps)


def target_checks(targets, num_classes: int, *, ignore_index: int | None = None,
                  logits_dtype: DTypeLike = np.float32) -> list[ValueCheck]:
    """``checked()``'s checks of Categorical targets: labels in 0..C-1 (or ``ignore_index``); soft
    targets in [0, 1] and summing to 1 within ``soft_target_tolerance``. Soft targets are a
    distribution over the C classes whatever the options (label smoothing and class weights are
    applied to it inside the loss)."""
    targets = jnp.asarray(targets)
    if jnp.issubdtype(targets.dtype, jnp.floating):
        total = jnp.sum(targets.astype(numerics.accumulation_dtype(targets.dtype)), axis=-1)
        tol = soft_target_tolerance(targets.dtype, logits_dtype, num_classes)
        return [
            ValueCheck((targets < 0) | (targets > 1) | jnp.isnan(targets), targets,
                       "targets: soft target outside [0, 1] at flat index {i}: got {v}", nan_targets=True),
            ValueCheck(~(jnp.abs(total - 1) <= tol), total, "targets: soft targets do not sum to 1 at flat index {i}: the sum is {v}"),
        ]
    in_range = (targets >= 0) & (targets < num_classes)
    if ignore_index is not None:
        in_range = in_range | (targets == ignore_index)
    expected = f"0..{num_classes - 1}" + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
    return [ValueCheck(~in_range, targets, f"targets: label out of range at flat index {{i}}: got {{v}}, expected {expected}")]


def impossible_targets(logits, targets, *, ignore_index: int | None = None, label_smoothing: float = 0.0,
                       class_weights: tuple[float, ...] | None = None) -> ValueCheck:
    """``checked()``'s check that the target puts no mass on a class of probability 0 (a logit of
    -inf), which makes the loss +inf: the label's class (every class with ``label_smoothing``, which
    spreads mass over all C), or each class where a soft target is > 0; a class whose
    ``class_weights`` entry is 0 carries no mass. Labels out of range and ``ignore_index`` examples
    are left to the label check. The flat index is the example's for labels, the entry's for soft
    targets; the value is the label or the soft target."""
    z, y = jnp.asarray(logits), jnp.asarray(targets)
    num_classes = z.shape[-1]
    weighted = None if class_weights is None else jnp.asarray(class_weights) > 0
    if len(class_weights or ()) not in (0, num_classes):
        weighted = None  # the loss raises naming the lengths
    reason = "a logit is -inf and label_smoothing puts mass on every class" if label_smoothing > 0 else (
        "the logit is -inf")
    message = f"targets: probability 0 ({reason}) at flat index {{i}}: got {{v}}"
    if not is_labels(y):
        shape = jnp.broadcast_shapes(y.shape, z.shape)
        y = jnp.broadcast_to(y, shape)
        mass = (y > 0) | (label_smoothing > 0)
        if weighted is not None:
            mass = mass & jnp.broadcast_to(weighted, shape)
        return ValueCheck(mass & jnp.broadcast_to(jnp.isneginf(z), shape), y, message)
    batch = validate.broadcast_shapes(
        "Categorical", [("outputs[..., :-1] (batch)", z.shape[:-1]), ("targets (labels)", y.shape)])
    y = jnp.broadcast_to(y, batch)
    in_range = (y >= 0) & (y < num_classes)
    if ignore_index is not None:
        in_range = in_range & (y != ignore_index)
    z = jnp.broadcast_to(z, batch + (num_classes,))
    if label_smoothing > 0:
        impossible = jnp.isneginf(z)
        if weighted is not None:
            impossible = impossible & jnp.broadcast_to(weighted, z.shape)
        bad = jnp.any(impossible, axis=-1)
    else:
        label = jnp.where(in_range, y, 0).astype(jnp.int32)
        bad = jnp.isneginf(jnp.take_along_axis(z, label[..., None], axis=-1)[..., 0])
        if weighted is not None:
            bad = bad & weighted[label]
    return ValueCheck(bad & in_range, y, message)

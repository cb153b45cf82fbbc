"""Validation of loss options, shared by the families' ``loss_options`` and the fused losses: each
check raises naming the option and the value it got, and returns the value normalised (hashable)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def fraction(name: str, value) -> float:
    """A number in [0, 1] (e.g. ``label_smoothing``)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}.")
    return float(value)


def nonnegative(name: str, value) -> float:
    """A finite number >= 0 (e.g. ``z_loss``, ``focal_gamma``)."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def label_value(name: str, value) -> int | None:
    """None or an int label value (e.g. ``ignore_index=-100``)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise TypeError(f"{name} must be an int label value (e.g. -100); got {value!r}.")
    return None if value is None else int(value)


def nonnegative_weights(name: str, value, *, scalar_ok: bool, shape_rule: str):
    """None, or finite weights >= 0: a tuple for a 1-D array, a float for a number (``scalar_ok``).

    ``shape_rule`` completes the message for a wrong shape: "{name} must be {shape_rule}; got shape ...".
    """
    if value is None:
        return None
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 0 and not scalar_ok):
        raise ValueError(f"{name} must be {shape_rule}; got shape {array.shape}.")
    values = tuple(float(v) for v in array.reshape(-1))
    if any(not (math.isfinite(v) and v >= 0) for v in values):
        raise ValueError(f"{name} must be finite and >= 0; got {values}.")
    return values[0] if array.ndim == 0 else values


# Options that belong to one family, and why: the error for another family that is given one says so.
_ONE_FAMILY = {
    "beta": ("Normal", "its weight stop_gradient(scale ** (2 beta)) turns the Gaussian loc gradient "
             "(loc - y) / scale^2 into (loc - y) / scale^(2 - 2 beta), squared error's at beta = 1; no "
             "other family's gradient has that form (for another family, multiply its reduction=\"none\" losses "
             "by a weight of your own under jax.lax.stop_gradient)"),
}


def unknown(family: str, names, accepted: str) -> TypeError:
    """The error for options a family does not take, saying which family owns any of them."""
    names = sorted(names)
    text = f"nll({family}()) got unexpected option(s) {names}; it accepts: {accepted}."
    for name in names:
        if name in _ONE_FAMILY:  # (its owner accepts it: this is another family)
            owner, why = _ONE_FAMILY[name]
            text += f" {name} is an option of nll({owner}()) only: {why}."
    return TypeError(text)


def build(cls, family: str, options: dict, **fixed):
    """``cls(**options, **fixed)`` for a family's options dataclass; an unknown name raises listing the
    accepted. ``fixed``: fields the family sets itself (its fixed scale), never options."""
    accepted = [f.name for f in dataclasses.fields(cls) if f.name not in fixed]
    wrong = set(options) - set(accepted)
    if wrong:
        raise unknown(family, wrong, ", ".join(accepted))
    return cls(**options, **fixed)

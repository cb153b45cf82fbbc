"""Categorical, all in one place: ``family`` (the distribution, its closed forms and checks),
``kernels`` (the softmax cross-entropy with its closed-form tangent), ``options`` (``nll``'s
ignore_index, label_smoothing, class_weights, z_loss, focal_gamma), ``inputs`` (logits and targets)
and ``cases`` (its rows of the check table)."""

from mlnll._src.families.categorical.family import Categorical as Categorical
from mlnll._src.families.categorical.kernels import cross_entropy_logits as cross_entropy_logits
from mlnll._src.families.categorical.options import CategoricalOptions as CategoricalOptions

__all__ = ["Categorical", "CategoricalOptions", "cross_entropy_logits"]

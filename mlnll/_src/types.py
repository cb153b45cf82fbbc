"""Type aliases of the public signatures: what each family takes as ``outputs`` and gives back.

Arguments are ``jax.typing.ArrayLike`` (jax and numpy arrays, numpy and Python scalars) and results
are ``jax.Array``. ``<Family>Outputs`` is the raw outputs a family takes, in the order of its row of
README's table; ``<Family>OutputArrays`` is the same layout as arrays, what ``grad`` and ``mle``
return. A one-output family (Bernoulli, Categorical, Poisson, ...) takes ``ArrayLike`` and returns
``jax.Array``, so it has no alias. These are annotations only: nothing is checked at run time (a
list of arrays where a tuple is written is accepted as before).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import jax
from jax.typing import ArrayLike

# (loc, log_scale), or loc alone when the family's ``scale`` is fixed.
LocScaleOutputs: TypeAlias = tuple[ArrayLike, ArrayLike] | ArrayLike
LocScaleOutputArrays: TypeAlias = tuple[jax.Array, jax.Array] | jax.Array
# Two raw outputs, both always given.
PairOutputs: TypeAlias = tuple[ArrayLike, ArrayLike]
PairOutputArrays: TypeAlias = tuple[jax.Array, jax.Array]

NormalOutputs: TypeAlias = LocScaleOutputs  # (loc, log_scale); loc with Normal(scale=s)
NormalOutputArrays: TypeAlias = LocScaleOutputArrays
LaplaceOutputs: TypeAlias = LocScaleOutputs  # (loc, log_scale); loc with Laplace(scale=b)
LaplaceOutputArrays: TypeAlias = LocScaleOutputArrays
CauchyOutputs: TypeAlias = LocScaleOutputs  # (loc, log_scale); loc with Cauchy(scale=s)
CauchyOutputArrays: TypeAlias = LocScaleOutputArrays
LogisticOutputs: TypeAlias = LocScaleOutputs  # (loc, log_scale); loc with Logistic(scale=s)
LogisticOutputArrays: TypeAlias = LocScaleOutputArrays
LogNormalOutputs: TypeAlias = LocScaleOutputs  # (loc, log_scale) of log y; loc with LogNormal(scale=s)
LogNormalOutputArrays: TypeAlias = LocScaleOutputArrays
# (loc, log_scale, log_df), less what StudentT(df=..., scale=...) fixes.
StudentTOutputs: TypeAlias = tuple[ArrayLike, ArrayLike, ArrayLike] | tuple[ArrayLike, ArrayLike] | ArrayLike
StudentTOutputArrays: TypeAlias = tuple[jax.Array, jax.Array, jax.Array] | tuple[jax.Array, jax.Array] | jax.Array
NegativeBinomialOutputs: TypeAlias = PairOutputs  # (log_mean, log_concentration)
NegativeBinomialOutputArrays: TypeAlias = PairOutputArrays
GammaOutputs: TypeAlias = PairOutputs  # (log_concentration, log_rate)
# (log_mean, log_dispersion), or log_mean alone with Tweedie(power=p, dispersion=phi).
TweedieOutputs: TypeAlias = LocScaleOutputs
TweedieOutputArrays: TypeAlias = LocScaleOutputArrays
GammaOutputArrays: TypeAlias = PairOutputArrays
BetaOutputs: TypeAlias = PairOutputs  # (log_concentration1, log_concentration0)
BetaOutputArrays: TypeAlias = PairOutputArrays
VonMisesOutputs: TypeAlias = PairOutputs  # (loc, log_concentration)
VonMisesOutputArrays: TypeAlias = PairOutputArrays
MultivariateNormalOutputs: TypeAlias = PairOutputs  # (loc [..., d], scale_tril [..., d, d], log diagonal)
MultivariateNormalOutputArrays: TypeAlias = PairOutputArrays
# (loc [..., d], cov_factor [..., d, r], log_cov_diag [..., d])
LowRankMultivariateNormalOutputs: TypeAlias = tuple[ArrayLike, ArrayLike, ArrayLike]
LowRankMultivariateNormalOutputArrays: TypeAlias = tuple[jax.Array, jax.Array, jax.Array]
VonMisesFisherOutputs: TypeAlias = PairOutputs  # (direction [..., d], log_concentration [...])
VonMisesFisherOutputArrays: TypeAlias = PairOutputArrays
OrderedLogisticOutputs: TypeAlias = PairOutputs  # (eta [...], raw_cutpoints [..., K-1])
OrderedLogisticOutputArrays: TypeAlias = PairOutputArrays
# (mixture logits [..., K], the component's outputs, each with a K axis): the second is the
# component's own layout, so it stays open.
MixtureOutputs: TypeAlias = tuple[ArrayLike, Any]
MixtureOutputArrays: TypeAlias = tuple[jax.Array, Any]
# (gate_logit or zero_logit [...], the component's outputs): ZeroInflated's and Hurdle's, nested as
# MixtureSameFamily nests its component's.
ZeroInflatedOutputs: TypeAlias = tuple[ArrayLike, Any]
ZeroInflatedOutputArrays: TypeAlias = tuple[jax.Array, Any]
# (log_concentration1, log_concentration0): BetaBinomial's.
BetaBinomialOutputs: TypeAlias = PairOutputs
BetaBinomialOutputArrays: TypeAlias = PairOutputArrays
# Whatever the user's ``natural_params`` takes: any tree of arrays.
ExponentialFamilyOutputs: TypeAlias = Any
ExponentialFamilyOutputArrays: TypeAlias = Any

"""mlnll: maximum likelihood as training losses, in JAX.

Pick the distribution of the target given the model's outputs; its negative log-likelihood is the
loss. Every family has pure, jittable log-likelihoods and closed-form gradients checked by autodiff.
"""

from mlnll._src.verify.check_grad import GradCheck as GradCheck
from mlnll._src.verify.check_grad import check_grad as check_grad
from mlnll._src.losses.checked import CheckError as CheckError
from mlnll._src.losses.checked import checked as checked
from mlnll._src.families.bernoulli import Bernoulli as Bernoulli
from mlnll._src.families.categorical import Categorical as Categorical
from mlnll._src.families.normal import Normal as Normal
from mlnll._src.family import Family as Family
from mlnll._src.info import cross_entropy as cross_entropy
from mlnll._src.info import cross_entropy_with_logits as cross_entropy_with_logits
from mlnll._src.info import entropy as entropy
from mlnll._src.info import entropy_with_logits as entropy_with_logits
from mlnll._src.info import information_content as information_content
from mlnll._src.info import kl_divergence as kl_divergence
from mlnll._src.info import kl_divergence_with_logits as kl_divergence_with_logits
from mlnll._src.mle import mle as mle
from mlnll._src.losses.nll import Loss as Loss
from mlnll._src.losses.nll import nll as nll

# --- counts (Binomial, Geometric, Poisson, NegativeBinomial, Multinomial, ZeroInflated, Hurdle,
# BetaBinomial, DirichletMultinomial) ---
from mlnll._src.families.binomial import Binomial as Binomial
from mlnll._src.families.dirichlet_multinomial import BetaBinomial as BetaBinomial
from mlnll._src.families.dirichlet_multinomial import DirichletMultinomial as DirichletMultinomial
from mlnll._src.families.geometric import Geometric as Geometric
from mlnll._src.families.multinomial import Multinomial as Multinomial
from mlnll._src.families.negative_binomial import NegativeBinomial as NegativeBinomial
from mlnll._src.families.poisson import Poisson as Poisson
from mlnll._src.families.zero_inflated import Hurdle as Hurdle
from mlnll._src.families.zero_inflated import ZeroInflated as ZeroInflated
# --- reals (Laplace, Cauchy, Logistic, StudentT, LogNormal) ---
from mlnll._src.families.asymmetric_laplace import AsymmetricLaplace as AsymmetricLaplace
from mlnll._src.families.cauchy import Cauchy as Cauchy
from mlnll._src.families.gumbel import Gumbel as Gumbel
from mlnll._src.families.laplace import Laplace as Laplace
from mlnll._src.families.log_normal import LogNormal as LogNormal
from mlnll._src.families.logistic import Logistic as Logistic
from mlnll._src.families.student_t import StudentT as StudentT
from mlnll._src.families.normal_inverse_gamma import NormalInverseGamma as NormalInverseGamma
# --- positive (Exponential, Gamma, Beta, Dirichlet, VonMises, Weibull, Tweedie) ---
from mlnll._src.families.beta import Beta as Beta
from mlnll._src.families.dirichlet import Dirichlet as Dirichlet
from mlnll._src.families.exponential import Exponential as Exponential
from mlnll._src.families.gamma import Gamma as Gamma
from mlnll._src.families.von_mises import VonMises as VonMises
from mlnll._src.families.von_mises_fisher import VonMisesFisher as VonMisesFisher
from mlnll._src.families.weibull import Weibull as Weibull
from mlnll._src.families.tweedie import Tweedie as Tweedie
# --- ordinal and rankings (OrderedLogistic, PlackettLuce) ---
from mlnll._src.families.ordered_logistic import OrderedLogistic as OrderedLogistic
from mlnll._src.families.plackett_luce import PlackettLuce as PlackettLuce
# --- structured (MultivariateNormal, MixtureSameFamily, ExponentialFamily) ---
from mlnll._src.families import exponential_family as exponential_family
from mlnll._src.families.exponential_family import ExponentialFamily as ExponentialFamily
from mlnll._src.families.mixture_same_family import MixtureSameFamily as MixtureSameFamily
# --- censoring and truncation (Censored, IntervalCensored, Truncated) ---
from mlnll._src.families.censored import Censored as Censored
from mlnll._src.families.censored import IntervalCensored as IntervalCensored
from mlnll._src.families.censored import Truncated as Truncated
from mlnll._src.families.multivariate_normal import MultivariateNormal as MultivariateNormal
from mlnll._src.families.low_rank_multivariate_normal import LowRankMultivariateNormal as LowRankMultivariateNormal
# --- speed (linear_categorical_nll, ...) ---
from mlnll._src.vocab.distill import linear_categorical_kl as linear_categorical_kl
from mlnll._src.vocab.fused import linear_categorical_logprobs as linear_categorical_logprobs
from mlnll._src.vocab.fused import linear_categorical_nll as linear_categorical_nll
from mlnll._src.vocab.sharded import vocab_parallel_linear_categorical_kl as vocab_parallel_linear_categorical_kl
from mlnll._src.vocab.sharded import vocab_parallel_linear_categorical_logprobs as vocab_parallel_linear_categorical_logprobs
from mlnll._src.vocab.sharded import vocab_parallel_linear_categorical_nll as vocab_parallel_linear_categorical_nll

__version__ = "0.1.0"

__all__ = [
    "Bernoulli",
    "Categorical",
    "CheckError",
    "Family",
    "GradCheck",
    "Loss",
    "Normal",
    "check_grad",
    "checked",
    "cross_entropy",
    "cross_entropy_with_logits",
    "entropy",
    "entropy_with_logits",
    "information_content",
    "kl_divergence",
    "kl_divergence_with_logits",
    "mle",
    "nll",
    # counts
    "Binomial",
    "Geometric",
    "Multinomial",
    "NegativeBinomial",
    "Poisson",
    "ZeroInflated",
    "Hurdle",
    "BetaBinomial",
    "DirichletMultinomial",
    # reals
    "AsymmetricLaplace",
    "Cauchy",
    "Gumbel",
    "Laplace",
    "LogNormal",
    "Logistic",
    "StudentT",
    "NormalInverseGamma",
    # positive
    "Beta",
    "Dirichlet",
    "Exponential",
    "Gamma",
    "VonMises",
    "VonMisesFisher",
    "Weibull",
    "Tweedie",
    # ordinal and rankings
    "OrderedLogistic",
    "PlackettLuce",
    # structured
    "ExponentialFamily",
    "MixtureSameFamily",
    "MultivariateNormal",
    "LowRankMultivariateNormal",
    "exponential_family",
    # censoring and truncation
    "Censored",
    "IntervalCensored",
    "Truncated",
    # speed
    "linear_categorical_kl",
    "linear_categorical_logprobs",
    "linear_categorical_nll",
    "vocab_parallel_linear_categorical_kl",
    "vocab_parallel_linear_categorical_logprobs",
    "vocab_parallel_linear_categorical_nll",
]

"""The stable primitives, each written once, under one flat namespace: ``numerics.bd0``,
``numerics.log_sigmoid``, ``numerics.stirling_remainder``.

* ``dtypes``: which dtype to compute in and which to return.
* ``elementary``: log-sigmoid, ``log1mexp``, logsumexp with relative accuracy, ``0 log 0``, a one-select
  ``where``, ``expm1mx``, ``log1pmx`` and the overflow-free ratios of the location-scale families.
* ``series``: Horner evaluation and the shared coefficient tables (Bernoulli numbers, Stirling).
* ``counts``: Loader's saddle-point pieces (``stirlerr``, ``bd0``) and sums over counts.
* ``gamma_bessel``: the log-gamma remainder, trigamma, log-gamma near its zeros, ``log I0`` and
  the Bessel ratio.
* ``logit_kl``: Bernoulli and geometric KL divergences from logits.
* ``quadrature``: quadrature rules that broadcast over a batch.
* ``positive``: support tests, ``log y`` and ``x / y`` of positive targets, subnormal ones included.
"""

from mlnll._src.numerics.dtypes import float_dtype as float_dtype
from mlnll._src.numerics.dtypes import accumulation_dtype as accumulation_dtype
from mlnll._src.numerics.dtypes import upcast as upcast
from mlnll._src.numerics.series import BERNOULLI_2K as BERNOULLI_2K
from mlnll._src.numerics.series import STIRLING_COEFFS as STIRLING_COEFFS
from mlnll._src.numerics.series import EXPM1MX_COEFFS as EXPM1MX_COEFFS
from mlnll._src.numerics.series import horner as horner
from mlnll._src.numerics.series import stirling_series as stirling_series
from mlnll._src.numerics.series import expm1mx_series as expm1mx_series
from mlnll._src.numerics.elementary import HALF_LOG_2PI as HALF_LOG_2PI
from mlnll._src.numerics.elementary import LOG_2 as LOG_2
from mlnll._src.numerics.elementary import LOG_2PI as LOG_2PI
from mlnll._src.numerics.elementary import log_sigmoid as log_sigmoid
from mlnll._src.numerics.elementary import log1mexp as log1mexp
from mlnll._src.numerics.elementary import max_and_rest as max_and_rest
from mlnll._src.numerics.elementary import rest_of_max as rest_of_max
from mlnll._src.numerics.elementary import log_softmax as log_softmax
from mlnll._src.numerics.elementary import logsumexp as logsumexp
from mlnll._src.numerics.elementary import logsumexp_or_neg_inf as logsumexp_or_neg_inf
from mlnll._src.numerics.elementary import expand_to as expand_to
from mlnll._src.numerics.elementary import xlogy as xlogy
from mlnll._src.numerics.elementary import mul_nonzero as mul_nonzero
from mlnll._src.numerics.elementary import where as where
from mlnll._src.numerics.elementary import softplus as softplus
from mlnll._src.numerics.elementary import expm1mx as expm1mx
from mlnll._src.numerics.elementary import log1pmx_over_x as log1pmx_over_x
from mlnll._src.numerics.elementary import log1pmx as log1pmx
from mlnll._src.numerics.elementary import safe_divide as safe_divide
from mlnll._src.numerics.elementary import log_cosh as log_cosh
from mlnll._src.numerics.elementary import log_hypot1 as log_hypot1
from mlnll._src.numerics.counts import check_total_count as check_total_count
from mlnll._src.numerics.counts import is_count as is_count
from mlnll._src.numerics.counts import labels_or_zero as labels_or_zero
from mlnll._src.numerics.counts import stirlerr as stirlerr
from mlnll._src.numerics.counts import stirlerr_static as stirlerr_static
from mlnll._src.numerics.counts import log_ratio as log_ratio
from mlnll._src.numerics.counts import log_share as log_share
from mlnll._src.numerics.counts import bd0 as bd0
from mlnll._src.numerics.counts import log_factorial as log_factorial
from mlnll._src.numerics.counts import log_factorial_part as log_factorial_part
from mlnll._src.numerics.counts import multinomial_log_pmf as multinomial_log_pmf
from mlnll._src.numerics.counts import binomial_log_pmf as binomial_log_pmf
from mlnll._src.numerics.counts import scaled_digamma_gap as scaled_digamma_gap
from mlnll._src.numerics.counts import softplus_times_exp as softplus_times_exp
from mlnll._src.numerics.counts import sum_over_counts as sum_over_counts
from mlnll._src.numerics.counts import window_nodes as window_nodes
from mlnll._src.numerics.gamma_bessel import stirling_remainder as stirling_remainder
from mlnll._src.numerics.gamma_bessel import stirling_remainder_grad as stirling_remainder_grad
from mlnll._src.numerics.gamma_bessel import scaled_trigamma as scaled_trigamma
from mlnll._src.numerics.gamma_bessel import scaled_trigamma_difference as scaled_trigamma_difference
from mlnll._src.numerics.gamma_bessel import scaled_expm1mx as scaled_expm1mx
from mlnll._src.numerics.gamma_bessel import gammaln_bregman as gammaln_bregman
from mlnll._src.numerics.gamma_bessel import log_i0e as log_i0e
from mlnll._src.numerics.gamma_bessel import bessel_ratio_complement as bessel_ratio_complement
from mlnll._src.numerics.gamma_bessel import bessel_ratio as bessel_ratio
from mlnll._src.numerics.gamma_bessel import scaled_bessel_ratio_grad as scaled_bessel_ratio_grad
from mlnll._src.numerics.gamma_bessel import lgamma1p as lgamma1p
from mlnll._src.numerics.gamma_bessel import lgamma_exp as lgamma_exp
from mlnll._src.numerics.gamma_bessel import lgamma_bregman_at_one as lgamma_bregman_at_one
from mlnll._src.numerics.gamma_bessel import EULER_GAMMA as EULER_GAMMA
from mlnll._src.numerics.logit_kl import bernoulli_kl as bernoulli_kl
from mlnll._src.numerics.logit_kl import geometric_kl as geometric_kl
from mlnll._src.numerics.quadrature import batch_nodes as batch_nodes
from mlnll._src.numerics.quadrature import trapezoid_grid as trapezoid_grid
from mlnll._src.numerics.quadrature import gauss_legendre_panel as gauss_legendre_panel
from mlnll._src.numerics.quadrature import log_integral_and_mean as log_integral_and_mean
from mlnll._src.numerics.quadrature import quadratic_root as quadratic_root
from mlnll._src.numerics.quadrature import newton_cut as newton_cut
from mlnll._src.numerics.quadrature import tail_cut_depth as tail_cut_depth
from mlnll._src.numerics.quadrature import geometric_panels as geometric_panels
from mlnll._src.numerics.positive import positive_and_finite as positive_and_finite
from mlnll._src.numerics.positive import nonnegative_and_finite as nonnegative_and_finite
from mlnll._src.numerics.positive import log_of_positive as log_of_positive
from mlnll._src.numerics.positive import divide_by_positive as divide_by_positive
from mlnll._src.numerics.positive import nonzero_subnormal as nonzero_subnormal
from mlnll._src.numerics.positive import widen as widen
from mlnll._src.numerics.positive import multiply_by_positive as multiply_by_positive

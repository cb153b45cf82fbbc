"""Check cases for MultivariateNormal, MixtureSameFamily, ExponentialFamily."""

from __future__ import annotations

from mlnll._src.cases import Case

CASES: tuple[Case, ...] = ()

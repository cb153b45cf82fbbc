"""Check cases for Binomial, Geometric, Poisson, NegativeBinomial, Multinomial."""

from __future__ import annotations

from mlnll._src.cases import Case

CASES: tuple[Case, ...] = ()

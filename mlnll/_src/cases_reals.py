"""Check cases for Laplace, Cauchy, Logistic, StudentT, LogNormal."""

from __future__ import annotations

from mlnll._src.cases import Case

CASES: tuple[Case, ...] = ()

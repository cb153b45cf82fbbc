"""Check cases for Exponential, Gamma, Beta, Dirichlet, VonMises."""

from __future__ import annotations

from mlnll._src.cases import Case

CASES: tuple[Case, ...] = ()

"""Losses from likelihoods: ``nll`` (``nll.py``), the shared reduction step (``reduce.py``), option
validation (``options.py``), the value checks (``checks.py``) and ``checked`` (``checked.py``)."""

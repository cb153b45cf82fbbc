"""Verification: ``check_grad`` (``check_grad.py``), the check table's rows (``case.py``) collected
from the public families (``registry.py``), the tolerances (``tolerances.py``) and the
``python -m mlnll check`` command (``command.py``)."""

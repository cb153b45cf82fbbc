"""The large-vocabulary losses: the fused linear + Categorical NLL, log-probabilities and entropy
(``fused.py``), the fused distillation KL (``distill.py``) and their vocab-parallel twins under
``shard_map`` (``sharded.py``)."""

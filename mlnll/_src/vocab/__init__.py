"""The large-vocabulary losses: the fused linear + Categorical NLL (``fused.py``) and its
vocab-parallel twin under ``shard_map`` (``sharded.py``)."""

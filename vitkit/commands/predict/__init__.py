"""``vitkit predict`` and ``vitkit.load``: ``cli``, ``predictor`` (``Predictor``: images -> the run's input ->
labels), ``command`` (files in batches: table, JSON, grid), ``attention_maps``."""

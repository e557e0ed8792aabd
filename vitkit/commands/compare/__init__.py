"""``vitkit compare``: ``cli``, ``command`` (train the variants or take runs, rank them), ``plan`` (variants,
repeats, verdicts), ``jobs`` (runs as parallel processes), ``report`` (table, curves, compare.html), ``tune``."""

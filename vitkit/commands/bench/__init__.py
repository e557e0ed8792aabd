"""``vitkit bench``: ``cli`` (arguments), ``command`` (a model or recipe -> ``BenchSpec``, the table), ``measure``
(timed steps, FLOPs, memory), ``memory`` (a step's peak RSS in a fresh process), ``timm_twin`` (``--vs timm``)."""

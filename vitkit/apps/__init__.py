"""The commands that stand before or after a run, each module its logic with its CLI glue beside it:
``predict`` (``vitkit predict``, ``vitkit.load``), ``attention_maps``, ``reevaluate`` (``vitkit eval``),
``export``, ``compare`` (with ``compare_plan``, ``compare_jobs``, ``compare_report``), ``bench``,
``lr_find``, ``quickstart`` (``vitkit run DIR``), ``runs`` and ``scaffold`` (``vitkit new-plugin``).

They use ``vitkit.engine`` (the training loop and what it alone needs); the engine never imports them.
"""

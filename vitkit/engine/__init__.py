"""Training: build components from a recipe (``build``, the one data path), train (``trainer``, ``epoch``,
``fit``) and what only training uses; run directories are ``vitkit.runs``, evaluation ``vitkit.evaluation``."""

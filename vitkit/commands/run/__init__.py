"""``vitkit run``: ``cli`` (a recipe, or ``--resume RUN_DIR``), ``folder`` (``vitkit run DIR``: the recipe for a
folder of images, and ``recipe_for``, a recipe file or a folder, for every command that trains)."""

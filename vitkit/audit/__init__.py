"""Know your data (``vitkit audit``): duplicates and leaks between splits, likely label errors, and the
facts of a folder (class balance, sizes, colour modes, unreadable files). Every image is read through
the one data path (``vitkit.engine.build.load_dataset``), so the splits reported are a run's splits.

- ``duplicates``: exact and near copies, grouped (no torch needed to import it);
- ``facts``: counts per class, sizes, aspect ratios, colour modes;
- ``labels``: out-of-fold probabilities handed to cleanlab's ``find_label_issues``;
- ``report``: ``audit.json``, ``audit.html``, the console summary and the fix plan.
"""

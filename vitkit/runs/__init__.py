"""A run directory: ``finished`` (``open_run``: a finished run for every command after training), ``checkpoint``,
``resume``, ``failed``, ``outputs`` (what a run writes), ``layout`` (what a run directory is, new ones),
``listing`` (``vitkit runs``). No module here imports a command."""

"""``vitkit tune``: ``cli``, ``command`` (the study from start to report), ``settings`` (what it searches and
ranks on), ``study`` (storage, sampler, prune plan, identity, dead trials), ``trials`` (one trial, the worker
loop), ``space``, ``live``, ``ranks`` (under torchrun), ``report``, ``costs``."""

"""Evaluation of a model on a split and its reports: ``evaluate``, ``calibration``, ``tta``, ``mistakes``,
``report``, ``multilabel_report``, ``html_report``."""

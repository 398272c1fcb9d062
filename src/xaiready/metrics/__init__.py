"""Quantitative metrics of explanations, health checks, and ``evaluate`` over many methods.

Importing this package registers every metric in ``METRICS`` under its CLI name.
"""

from __future__ import annotations

from . import complexity, faithfulness, localization, randomization, robustness  # noqa: F401  (register)
from .base import METRICS, Metric, MetricResult, Settings

__all__ = ["METRICS", "Metric", "MetricResult", "Settings"]

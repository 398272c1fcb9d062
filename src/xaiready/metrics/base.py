"""Metric metadata, the MetricResult, shared settings, and the metric registry.

A metric is a small class with class-level metadata and one entry point::

    metric(handle, x, attribution, target, settings=..., mask=..., explainer=...) -> MetricResult

``direction`` says which way is better, ``category`` groups metrics in tables, and ``needs`` lists
what it consumes beyond the model and input:

* ``attribution``: the map being judged (all metrics);
* ``mask``: per-pixel ground truth (localization);
* ``explainer``: a function ``(x, target) -> values`` that re-explains perturbed inputs or other
  targets (robustness, randomization);
* ``randomizer``: a backend that implements the optional ``randomized`` protocol (randomization).

Instances hold configuration only (steps, runs, noise); results are never stored on them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .._registry import Registry

CATEGORIES = ("faithfulness", "robustness", "randomization", "localization", "complexity")
NEEDS = frozenset({"attribution", "mask", "explainer", "randomizer"})

Explainer = Callable[[np.ndarray, Any], np.ndarray]  # (x batch, resolved target) -> attribution values


@dataclass(frozen=True)
class Settings:
    """Options every metric shares, passed in once instead of repeated in each constructor.

    ``chunk_size`` bounds the rows per model call (memory); ``seed`` fixes every random draw;
    ``progress`` prints the planned model evaluations and a progress line on stderr (None: only
    when stderr is a terminal and the run is long).
    """

    chunk_size: int = 64
    seed: int = 0
    progress: bool | None = None
    long_run: int = 2000  # evaluations above which a run counts as long


@dataclass(frozen=True)
class MetricResult:
    """One metric on a batch: a value per sample (NaN where undefined) plus what it cost."""

    metric: str
    values: np.ndarray
    higher_is_better: bool
    category: str
    evaluations: int = 0  # samples passed through the model (forward rows)
    explanations: int = 0  # samples re-explained (explainer rows)
    calls: int = 0  # batched model/explainer calls made
    curves: np.ndarray | None = None  # (N, steps) score curves (deletion, insertion, pixel flipping)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(np.isfinite(self.values).sum())

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.values)) if self.n else float("nan")

    @property
    def std(self) -> float:
        return float(np.nanstd(self.values)) if self.n else float("nan")

    def row(self, method: str) -> dict[str, Any]:
        """The JSON row of ``evaluate --json``: method, metric, mean, std, n, higher_is_better."""
        return {"method": method, "metric": self.metric, "mean": _json_float(self.mean),
                "std": _json_float(self.std), "n": self.n, "higher_is_better": self.higher_is_better}


def _json_float(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 6)


class Metric:
    """Base of every metric; subclasses set the metadata and implement ``compute`` and ``plan``."""

    name: ClassVar[str] = ""
    direction: ClassVar[str] = "higher"  # "higher" or "lower" is better
    category: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"attribution"})

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def plan(self, n: int, x_shape: tuple[int, ...]) -> dict[str, int]:
        """Model evaluations and re-explanations this metric will make for ``n`` inputs."""
        return {"evaluations": 0, "explanations": 0}

    def __call__(self, handle, x: np.ndarray, attribution: np.ndarray, target, *,
                 settings: Settings | None = None, mask: np.ndarray | None = None,
                 explainer: Explainer | None = None) -> MetricResult:
        settings = settings or Settings()
        announce(self, x, settings)
        return self.compute(handle, x, np.asarray(attribution), target, settings=settings, mask=mask,
                            explainer=explainer)

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer) -> MetricResult:
        raise NotImplementedError

    def result(self, values, **kwargs) -> MetricResult:
        return MetricResult(self.name, np.asarray(values, dtype=np.float64), self.higher_is_better,
                            self.category, **kwargs)


METRICS: Registry[type[Metric]] = Registry("metric")


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: add a metric to the registry under its CLI name."""
    if cls.category not in CATEGORIES or cls.direction not in ("higher", "lower"):
        raise ValueError(f"{cls.__name__}: category must be one of {CATEGORIES}, direction higher|lower")
    if not cls.needs <= NEEDS:
        raise ValueError(f"{cls.__name__}.needs must be a subset of {sorted(NEEDS)}")
    METRICS.register(cls.name, cls)
    return cls


# ---- announcing long runs ---------------------------------------------------------------------------
def announce(metric: Metric, x: np.ndarray, settings: Settings) -> None:
    """Say how many model evaluations a metric will make before it starts (others learn it from the wait)."""
    plan = metric.plan(len(x), tuple(x.shape))
    total = plan["evaluations"] + plan["explanations"]
    # the plan goes to stderr for every long run (also when piped); the progress line only to terminals
    if total and (settings.progress if settings.progress is not None else total >= settings.long_run):
        parts = [f"{plan['evaluations']} model evaluations"] if plan["evaluations"] else []
        if plan["explanations"]:
            parts.append(f"{plan['explanations']} re-explanations")
        calls = -(-total // settings.chunk_size)
        print(f"{metric.name}: {len(x)} inputs -> {' + '.join(parts)} in about {calls} batched calls "
              f"of <= {settings.chunk_size}", file=sys.stderr)

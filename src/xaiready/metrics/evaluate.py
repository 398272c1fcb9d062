"""Run metrics on one attribution, or on several methods' attributions of the same inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._batching import iter_chunks
from ..errors import UsageError
from ..targets import Class, SegmentationRegion, target_for_output
from .base import METRICS, Explainer, Metric, MetricResult, Settings


def metric_for(spec: str | Metric) -> Metric:
    return spec if isinstance(spec, Metric) else METRICS.get(spec)()


def default_target(handle, x: np.ndarray, target=None, *, output: np.ndarray | None = None):
    """The given target, or the task's default guessed from the output shape; resolved on ``x``.

    ``output`` is the model's output on ``x`` when the caller has it (no forward is run then)."""
    tensor = output is not None and hasattr(output, "shape")  # a detector's output is a list of dicts
    if target is None:
        target = target_for_output(lambda: tuple(output.shape) if tensor else tuple(handle.forward(x[:1]).shape))
    if isinstance(target, Class | SegmentationRegion) and target.resolved:
        return target  # already fixed on the clean input (e.g. by take()); resolving again would redo it
    if tensor and target.framework_fn is None:
        return target.resolve(output, channel_axis=handle.channel_axis)
    return handle.resolve(target, x)


def evaluate(handle, x: np.ndarray, attribution, metrics: Sequence[str | Metric], target=None, *,
             mask: np.ndarray | None = None, explainer: Explainer | None = None,
             settings: Settings | None = None) -> dict[str, MetricResult]:
    """Each metric on ``attribution`` (an Attribution or its values) of ``x``; keyed by metric name."""
    settings = settings or Settings()
    values = np.asarray(getattr(attribution, "values", attribution))
    if len(values) != len(x):
        raise UsageError(f"{len(values)} attributions for {len(x)} inputs", hint="give one map per input")
    target = default_target(handle, x, target)
    results = {}
    for spec in metrics:
        metric = metric_for(spec)
        results[metric.name] = metric(handle, x, values, target, settings=settings, mask=mask,
                                      explainer=explainer)
    return results


def evaluate_methods(handle, x: np.ndarray, explainers: dict[str, Explainer], metrics: Sequence[str | Metric],
                     target=None, *, mask: np.ndarray | None = None, settings: Settings | None = None,
                     ) -> dict[str, dict[str, MetricResult]]:
    """``{name: {metric: result}}``: every explainer explains ``x`` (chunked) and is scored by every metric."""
    settings = settings or Settings()
    target = default_target(handle, x, target)
    out = {}
    for method, explain in explainers.items():
        values = np.concatenate([explain(x[sl], target.take(np.arange(sl.start, sl.stop)))
                                 for sl in iter_chunks(len(x), settings.chunk_size)])
        out[method] = evaluate(handle, x, values, metrics, target, mask=mask, explainer=explain, settings=settings)
    return out


def rows(results: dict[str, dict[str, MetricResult]]) -> list[dict[str, Any]]:
    """The ``--json`` rows: one per method x metric."""
    return [r.row(method) for method, per in results.items() for r in per.values()]

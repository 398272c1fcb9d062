"""What a run costs: model passes per image, measured by explaining the first image once.

Methods decide their passes at run time (a CAM's one pass, IG's steps, a noise tunnel's samples,
occlusion's windows), so the count is measured, not estimated: the first image is explained with
its health checks through a backend that counts the rows it is given (forward and gradient passes),
after one uncounted call (the first also verifies the model's capabilities, which happens once).
Metrics declare theirs (``Metric.plan``).
"""

from __future__ import annotations

import copy

import numpy as np


class _CountingBackend:
    """The model's backend, counting the rows of every forward and vjp it serves."""

    def __init__(self, backend):
        self._backend = backend
        self.rows = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def forward(self, x):
        self.rows += len(x)
        return self._backend.forward(x)

    def vjp(self, x, target, **kwargs):
        self.rows += len(x)
        return self._backend.vjp(x, target, **kwargs)


def measure(ctx, x: np.ndarray) -> dict:
    """``{"model_calls_per_image": {method: rows}, "metric_calls_per_image": {metric: rows per (image,
    method)}}`` on one input ``x`` (a batch of one)."""
    from ..api import with_health
    from ..errors import XaiReadyError
    from ..metrics.evaluate import metric_for
    from ..targets import Class

    counted = copy.copy(ctx.handle)
    backend = counted.backend = _CountingBackend(ctx.handle.backend)
    sanity = ctx.config.get("sanity", "cheap")
    from .pipeline import _special_target, _target

    target = Class(int(ctx.config["target"])) if ctx.task == "classification" and ctx.config.get("target") \
        is not None else None
    if _special_target(ctx.config):
        target = _target(ctx, [], x, None)[0]
    per_method = {}
    for name, cls in ctx.methods.items():
        layer = ctx.config.get("layer") if cls.family == "cam" else None
        try:
            for _ in range(2):  # the first call also verifies the model's capabilities, once per model
                backend.rows = 0
                attr = cls()(counted, x, target, layer=layer, contrast=sanity == "cheap", **ctx.options(name))
                with_health(counted, x, attr, target, sanity, ctx.options(name))
            per_method[name] = backend.rows
        except XaiReadyError:
            per_method[name] = None  # the run itself reports why
    per_metric = {}
    for name in ctx.config.get("metrics") or []:
        plan = metric_for(name).plan(1, tuple(x.shape))
        per_metric[name] = plan["evaluations"] + plan["explanations"]
    return {"model_calls_per_image": per_method, "metric_calls_per_image": per_metric}


def describe(cost: dict, images: int, scored: int) -> str:
    """One line: passes per image for each method and metric, and about how many in all."""
    methods = cost["model_calls_per_image"]
    metrics = cost["metric_calls_per_image"]
    per_image = sum(v or 0 for v in methods.values()) + scored * sum(metrics.values())
    parts = [f"{m} {'?' if n is None else n}" for m, n in methods.items()]
    text = "cost: model passes per image: " + ", ".join(parts)
    if metrics:
        text += "; per image and method (x" + str(scored) + "): " + ", ".join(f"{m} {n}" for m, n in metrics.items())
    return text + f"; about {per_image} per image, {per_image * images} for {images} images"

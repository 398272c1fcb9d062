"""One batch of a run, from files to rows: read, preprocess, explain, check, score, draw.

``Context`` is what a process needs to do batches (the model loaded once, the methods, the options);
``process_batch`` turns a batch's items into a ``BatchResult`` of plain rows and arrays, which the
driver writes to the store. Every engine (in-process, worker processes, Ray actors) runs this same
function, so their rows are the same.

Images of different sizes are explained in groups of one shape (the model sees one shape per call).
An image that cannot be read is a recorded failure (``failures`` table), not the end of the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import XaiReadyError
from .dataset import Item, read_item, read_mask


@dataclass
class AttributionRow:
    image: str
    method: str
    values: np.ndarray
    target: dict[str, Any]
    health: list[dict[str, str]]
    seconds: float
    overlay: bytes | None


@dataclass
class BatchResult:
    batch: int
    images: list[tuple] = field(default_factory=list)  # (image, path, label, predicted, height, width)
    failures: list[tuple] = field(default_factory=list)  # (image, path, error line)
    attributions: list[AttributionRow] = field(default_factory=list)
    scores: list[tuple] = field(default_factory=list)  # (image, method, metric, value)
    curves: list[tuple] = field(default_factory=list)  # (image, method, metric, fractions, values)


class Context:
    """A loaded model and a run's configuration, ready to process batches."""

    def __init__(self, config: dict[str, Any], handle=None):
        from ..inputs import ImageOptions
        from ..methods import load_methods
        from ..metrics.base import Settings

        self.config = config
        self.handle = handle if handle is not None else load_handle(config)
        if config.get("layout"):
            self.handle.layout = config["layout"]
        pre = config["preprocessing"]
        self.image = ImageOptions(resize=tuple(pre["resize"]) if pre.get("resize") else None,
                                  mean=pre.get("mean"), std=pre.get("std"))
        registry = load_methods()
        self.methods = {m: registry.get(m) for m in config["methods"]}
        self.settings = Settings(chunk_size=config.get("chunk_size") or 64, seed=config["seed"], progress=False)
        self.task = config.get("task")
        self._explainers: dict[str, Any] = {}

    def explainer(self, method: str):
        from ..api import explainer_for

        if method not in self._explainers:
            layer = self.config.get("layer") if method in self.methods and self.methods[method].family == "cam" else None
            self._explainers[method] = explainer_for(self.handle, method, layer=layer,
                                                     **self.options(method))
        return self._explainers[method]

    def options(self, method: str) -> dict[str, Any]:
        """The run's method options that ``method`` takes (a noise tunnel also passes its base's)."""
        from ..methods.base import METHODS

        cls = self.methods.get(method)
        if cls is None:
            return {}
        given = self.config.get("method_options") or {}
        accepted = set(getattr(cls, "defaults", {}))
        if "base" in accepted:
            accepted |= set(getattr(METHODS.get(given.get("base") or cls.defaults["base"]), "defaults", {}))
        return {k: v for k, v in given.items() if v is not None and k in accepted}


def load_handle(config: dict[str, Any]):
    """The model as the configuration names it, with the run's resource limits."""
    from .. import limits
    from ..api import load

    limits.configure(**(config.get("limits") or {}))
    opts = dict(config.get("model_options") or {})
    return load(config["model"], device=config.get("device"), **opts)


@dataclass
class Loaded:
    """A batch read from disk: its images grouped by shape, and the images that could not be read."""

    batch: int
    groups: dict[tuple, list[tuple[Item, np.ndarray, np.ndarray | None]]]
    failures: list[tuple]


def read_batch(ctx: Context, batch: int, items: list[Item]) -> Loaded:
    """Read and preprocess a batch's images and masks (no model call: this can run ahead in a thread)."""
    loaded = Loaded(batch, {}, [])
    for item in items:
        try:
            x = ctx.handle.as_input(read_item(item, layout=ctx.handle.layout, options=ctx.image))
            mask = read_mask(item, _spatial(x, ctx.handle.channel_axis))
        except XaiReadyError as exc:
            loaded.failures.append((item.image, item.path, exc.one_line().removeprefix("error: ")))
            continue
        loaded.groups.setdefault(tuple(x.shape[1:]), []).append((item, x, mask))
    return loaded


def compute_batch(ctx: Context, loaded: Loaded) -> BatchResult:
    """Explain, check, score and draw a read batch."""
    result = BatchResult(loaded.batch, failures=list(loaded.failures))
    with ctx.handle.session(), gradients_enabled(ctx.handle):
        for members in loaded.groups.values():
            _process_group(ctx, members, result)
    return result


def process_batch(ctx: Context, batch: int, items: list[Item]) -> BatchResult:
    return compute_batch(ctx, read_batch(ctx, batch, items))


@contextlib.contextmanager
def gradients_enabled(handle):
    """Gradients on, whatever the caller set: Ray's and others' inference loops run under
    ``torch.inference_mode``, in which no attribution can be computed."""
    if handle.framework != "torch":
        yield
        return
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        yield


def _spatial(x: np.ndarray, channel_axis: int) -> tuple[int, int]:
    return (x.shape[2], x.shape[3]) if channel_axis == 1 else (x.shape[1], x.shape[2])


def _process_group(ctx: Context, members, result: BatchResult) -> None:
    from ..api import with_health
    from ..targets import infer_task

    handle, config = ctx.handle, ctx.config
    items = [m[0] for m in members]
    x = np.concatenate([m[1] for m in members])
    output = None
    if ctx.task is None and _special_target(config):
        ctx.task = config.get("task") or ("detection" if not config["target_options"].get("target_fn") else "custom")
    if ctx.task is None:
        output = handle.forward(x)
        ctx.task = infer_task(tuple(np.shape(output)))
    target, chosen, output = _target(ctx, items, x, output)
    h, w = _spatial(x, handle.channel_axis)
    masks = _masks(members, (h, w))
    predicted: np.ndarray | None = None
    sanity = config.get("sanity", "cheap")
    for name, cls in ctx.methods.items():
        started = time.perf_counter()
        attr = cls()(handle, x, target, layer=config.get("layer") if cls.family == "cam" else None,
                     contrast=sanity == "cheap", **ctx.options(name))
        took = (time.perf_counter() - started) / len(x)
        if output is None and attr.output is not None:
            output = attr.output
        resolved = _resolved(handle, target, x, output)
        if predicted is None and ctx.task == "classification":
            output = handle.forward(x) if output is None else output
            predicted = np.asarray(output).argmax(1)
        options = ctx.options(name)
        for i, item in enumerate(items):
            started = time.perf_counter()
            findings = []
            if sanity != "off":  # each image judged on its own, not by its batch's median
                one = with_health(handle, x[i:i + 1], _take(attr, i), _pin(resolved, i), sanity, options)
                findings = [{"check": f["name"], "status": f["status"], "message": f["detail"]}
                            for f in one.info.get("health", []) if f["status"] in ("warn", "fail")]
            seconds = took + time.perf_counter() - started
            values = np.asarray(attr.values[i], dtype=np.float32)
            overlay = None
            if config.get("overlays", True):
                from .overlay import overlay_png

                overlay = overlay_png(x[i], values, handle.layout)
            result.attributions.append(AttributionRow(item.image, name, values, _target_row(ctx, resolved, chosen, i),
                                                      findings, round(seconds, 6), overlay))
        _score(ctx, name, items, x, attr.values, resolved, masks, result)
    if config.get("metrics"):
        from ..metrics.baselines import baseline_explainer

        resolved = _resolved(handle, target, x, output)
        for name in config.get("baselines") or []:
            values = baseline_explainer(name, handle.channel_axis)(x, resolved)
            _score(ctx, name, items, x, values, resolved, masks, result)
    if predicted is None and ctx.task == "classification":
        predicted = np.asarray(handle.forward(x) if output is None else output).argmax(1)
    for i, item in enumerate(items):
        p = None if predicted is None else int(predicted[i])
        result.images.append((item.image, item.path, item.label, p, h, w))


def _target(ctx: Context, items: list[Item], x: np.ndarray, output):
    """The target explained for this group, the per-image ``chosen`` reasons, and the output if a
    forward was needed to decide (only when some images have a label and others do not)."""
    from ..targets import Class, for_task

    config = ctx.config
    if _special_target(config):  # a target function or a detection box: as explain builds it
        import argparse

        from ..commands._common import make_target

        flags = {"task": config.get("task"), "target": config.get("target"), "blank": config.get("blank"),
                 "target_text": None if config.get("target_text") is None
                 else ",".join(str(v) for v in config["target_text"]), **config["target_options"]}
        return make_target(argparse.Namespace(**flags)), None, output
    if ctx.task != "classification":
        labels = config.get("target_text")
        return for_task(ctx.task, config.get("target"), labels=labels, blank=config.get("blank")), None, output
    if config.get("target") is not None:
        return Class(int(config["target"])), ["given"] * len(items), output
    use_labels = config.get("target_from", "label") == "label"
    given = [it.label if use_labels else None for it in items]
    if all(k is None for k in given):
        return Class(None), ["predicted"] * len(items), output
    if any(k is None for k in given):
        output = ctx.handle.forward(x) if output is None else output
        predicted = np.asarray(output).argmax(1)
        given = [int(predicted[i]) if k is None else k for i, k in enumerate(given)]
        return Class(given), ["label" if it.label is not None else "predicted" for it in items], output
    return Class([int(k) for k in given]), ["label"] * len(items), output


def _special_target(config) -> bool:
    return any(v not in (None, False) for v in (config.get("target_options") or {}).values()) or \
        config.get("task") == "detection"


def _resolved(handle, target, x: np.ndarray, output):
    from ..metrics.evaluate import default_target

    return default_target(handle, x, target, output=output)


def _pin(resolved, i: int):
    """Sample ``i``'s resolved target, on its own."""
    return resolved.take(np.array([i]))


def _take(attr, i: int):
    """Sample ``i`` of an Attribution, with what its health checks read (output, runner-up map)."""
    sl = slice(i, i + 1)
    cut = {k: getattr(attr, k)[sl] for k in ("values", "raw", "scores", "output") if getattr(attr, k) is not None}
    if attr.contrast is not None:
        c = attr.contrast
        cut["contrast"] = dataclasses.replace(c, other=c.other[sl],
                                              explained=None if c.explained is None else c.explained[sl])
    return dataclasses.replace(attr, **cut)


def _target_row(ctx: Context, resolved, chosen, i: int) -> dict[str, Any]:
    from ..targets import Class

    if isinstance(resolved, Class) and chosen is not None:
        return {"kind": "class", "index": int(np.asarray(resolved._k)[i]), "chosen": chosen[i],
                "score": resolved.score}
    described = resolved.describe()
    return {"kind": ctx.task, **{k: v for k, v in described.items() if k != "type"}}


def _masks(members, size: tuple[int, int]) -> np.ndarray | None:
    found = [m[2] for m in members]
    if all(m is None for m in found):
        return None
    return np.stack([np.zeros(size, dtype=bool) if m is None else m for m in found])


def _score(ctx: Context, method: str, items: list[Item], x, values, target, masks, result: BatchResult) -> None:
    from ..metrics.evaluate import evaluate, metric_for

    metrics = ctx.config.get("metrics") or []
    if not metrics:
        return
    needs_explainer = any("explainer" in metric_for(m).needs for m in metrics)
    explainer = ctx.explainer(method) if needs_explainer else None
    local = [m for m in metrics if "mask" not in metric_for(m).needs or masks is not None]
    scored = evaluate(ctx.handle, x, np.asarray(values), local, target, mask=masks, explainer=explainer,
                      settings=ctx.settings)
    for name in metrics:
        r = scored.get(name)
        for i, item in enumerate(items):
            result.scores.append((item.image, method, name, float("nan") if r is None else float(r.values[i])))
            if r is not None and r.curves is not None:
                steps = r.curves.shape[1]
                fractions = r.info.get("fractions") or np.linspace(0, 1, steps).tolist()
                result.curves.append((item.image, method, name, [round(float(f), 6) for f in fractions],
                                      [float(v) for v in r.curves[i]]))

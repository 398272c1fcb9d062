"""The Python API of DESIGN 3.3: load, check (explain and evaluate live beside it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import safe_isinstance
from .errors import UsageError
from .model import ModelHandle, Source
from .readiness.report import Report
from .targets import Target


def load(path: str | Path, arch: str | None = None, trust: bool = False, *, arch_kwargs=None,
         imports: Sequence[str] = (), output: str | int | None = None, convert: bool = True,
         device: str | None = None, **options) -> ModelHandle:
    """Load a model file or folder by content; see ``xaiready.formats.load``.

    ``convert=False`` keeps inference-only formats (ONNX) as they are instead of converting them to a
    verified differentiable model. ``device`` (cpu, cuda, cuda:N, auto) is where the model runs; by
    default where its framework puts it (the CPU for PyTorch)."""
    from .formats.load import load as _load

    handle = _load(path, arch=arch, arch_kwargs=arch_kwargs, trust=trust, imports=imports, output=output,
                   convert=convert, **options)
    return handle if device is None else handle.to_device(device)


def as_handle(model: Any, *, output: str | int | None = None) -> ModelHandle:
    """A ModelHandle from a handle, a path, or an in-memory framework model."""
    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, (str, Path)):
        return load(model, output=output)
    if safe_isinstance(model, "torch.nn.Module"):
        from .backends.torch import TorchBackend

        kind = "torchscript" if safe_isinstance(model, "torch.jit.ScriptModule") else "eager"
        fmt = "torchscript" if kind == "torchscript" else "pytorch-eager"
        return ModelHandle(TorchBackend(model, output=output, kind=kind), Source(None, fmt, "torch"))
    if safe_isinstance(model, "keras.Model"):
        from .backends.tensorflow import TensorFlowBackend

        return ModelHandle(TensorFlowBackend(model, kind="keras", output=output), Source(None, "keras", "tensorflow"))
    raise UsageError(f"cannot use a {type(model).__name__} as a model",
                     hint="pass a path, a ModelHandle from xr.load, a torch.nn.Module or a keras.Model")


def prepare_input(handle: ModelHandle, x: Any = None, input_shape: Sequence[int] | None = None) -> np.ndarray:
    """The input as a NumPy batch: given, random of ``input_shape``, or of a shape read off the model."""
    from .inputs import random_input
    from .limits import check_built_input

    if x is not None:
        return handle.as_input(x)
    shape = tuple(int(d) for d in input_shape) if input_shape else handle.backend.example_shape()
    if shape is None:
        raise UsageError("no input given and none can be guessed from the model",
                         hint="pass --input FILE or --input-shape N,C,H,W")
    source = handle.source
    check_built_input(shape, what="--input-shape" if input_shape else "the input shape guessed from the model",
                      path=source.path, fmt=source.converted_from or source.format)
    if not input_shape:
        handle.notes.append(f"no input given: used a random input of guessed shape {shape}")
    return random_input(shape)


def check(model: Any, x: Any = None, target: Target | None = None, *, task: str | None = None,
          layer: str | None = None, input_shape: Sequence[int] | None = None,
          output: str | int | None = None, inputs: str | None = None) -> Report:
    """Measure what ``model`` can do for explanations on ``x``; returns a Report (DESIGN 3.2).

    A multi-input model takes ``x`` as a dict of its inputs by name; ``inputs`` names the one measured
    (default: the only 4-D one), the others are held fixed (``held_inputs``)."""
    from .held_inputs import first_sample, require_single, split
    from .readiness.checks import run_check

    handle = as_handle(model, output=output)
    if isinstance(x, Mapping):
        handle, x = split(handle, x, inputs)
        x = first_sample(handle, x)
    else:
        require_single(handle)
    x = prepare_input(handle, x, input_shape)
    report = run_check(handle, x, target=target, task=task, layer=layer)
    held = getattr(handle, "held_inputs", None)
    if held is not None:
        report.context["inputs"] = held.describe(x.shape)
    return report


def explain(model: Any, x: Any, method: str = "gradcam", target: Target | None = None, layer: str | None = None,
            *, inputs: str | None = None, **options: Any):
    """Explain ``target`` on ``x`` with a registered method; returns an Attribution (DESIGN 3.3).

    ``options`` go to the method (e.g. ``n_steps``, ``baseline``, ``batch_size`` for integrated
    gradients; ``base``, ``n_samples``, ``noise_level``, ``seed`` for smoothgrad); ``output`` picks an
    output of a multi-output model; ``verify=False`` skips the (cached) capability check;
    ``sanity`` ("cheap", "full" or "off") sets the health checks recorded in ``info["health"]``.
    A multi-input model takes ``x`` as a dict of its inputs by name; ``inputs`` names the one explained
    (default: the only 4-D one), the others are held fixed (``held_inputs``).
    """
    from .held_inputs import merge_attributions, per_sample, require_single, split

    handle = as_handle(model, output=options.pop("output", None))
    if not isinstance(x, Mapping):
        require_single(handle)
        return _explain(handle, x, method, target, layer, options)
    handle, x = split(handle, x, inputs)
    parts = per_sample(handle, x, target, lambda xs, t, _: _explain(handle, xs, method, t, layer, dict(options)))
    attr = merge_attributions(parts, x.shape)
    return replace(attr, info={**attr.info, "inputs": handle.held_inputs.describe(x.shape)})


def _explain(handle: ModelHandle, x: Any, method: str, target: Target | None, layer: str | None,
             options: dict[str, Any]):
    from .methods import load_methods

    sanity = options.pop("sanity", "cheap")
    cls = load_methods().get(method)
    if cls.family == "black_box":
        options.pop("verify", None)  # forward-only methods have no capability to verify
    contrast = options.pop("contrast", sanity == "cheap")  # the runner-up map for the class check
    attr = cls()(handle, x, target, layer=layer, contrast=contrast, **options)
    return with_health(handle, x, attr, target, sanity, options)


def explainer_for(handle: ModelHandle, method: str, *, layer: str | None = None, **options: Any):
    """``(x, target) -> values`` for a registered method or a baseline (``random``, ``center``): what
    metrics and the health checks call to re-explain."""
    from .methods import load_methods
    from .metrics.baselines import BASELINES, baseline_explainer
    from .targets import pinned

    if method in BASELINES:
        return baseline_explainer(method, handle.channel_axis)
    instance = load_methods().get(method)()
    if layer is not None:
        options = {**options, "layer": layer}

    def explain(xs: np.ndarray, target) -> np.ndarray:
        return np.asarray(instance(handle, xs, pinned(target), **options).values)

    return explain


def with_health(handle: ModelHandle, x: Any, attribution, target: Target | None = None, level: str = "cheap",
                options: dict | None = None):
    """The attribution with its health findings in ``info["health"]`` and warnings appended; the
    seconds they took are ``info["health_seconds"]``.

    Runs after the method (never inside one: the checks may re-explain). At ``cheap`` the class check
    reads the runner-up map the method computed in its own passes where it could; ``full`` and methods
    that could not re-explain with ``options``. ``level="off"`` returns the attribution unchanged.
    """
    import dataclasses
    import time

    from .metrics.evaluate import default_target
    from .metrics.health import run_health_checks

    if level == "off":
        return attribution
    start = time.perf_counter()
    x = handle.as_input(x)
    target = default_target(handle, x, target, output=getattr(attribution, "output", None))
    explainer = None
    if level == "full" or getattr(attribution, "contrast", None) is None:
        explainer = explainer_for(handle, attribution.method, layer=attribution.layer, **(options or {}))
    found = run_health_checks(handle, x, attribution, target, level=level, explainer=explainer)
    warnings = tuple(f"{f.name}: {f.detail}" for f in found if f.status == "warn")
    info = {**attribution.info, "health": [dataclasses.asdict(f) for f in found],
            "health_seconds": round(time.perf_counter() - start, 6)}
    return dataclasses.replace(attribution, warnings=attribution.warnings + warnings, info=info)


def evaluate(model: Any, x: Any, attribution: Any, metrics: Sequence[str] = ("deletion", "insertion"),
             target: Target | None = None, *, mask: Any = None, method: str | None = None,
             layer: str | None = None, settings: Any = None, inputs: str | None = None, **options: Any):
    """Score ``attribution`` of ``x`` with each metric; returns ``{metric name: MetricResult}``.

    Metrics that re-explain (max-sensitivity, random-logit, randomization) use ``method`` (default: the
    attribution's own method and layer, with ``options``); localization metrics need ``mask`` (N, H, W).
    A multi-input model takes ``x`` as a dict, as in ``explain``.
    """
    from .held_inputs import merge_metrics, per_sample, require_single, split, take_attribution
    from .metrics.evaluate import evaluate as _evaluate

    handle = as_handle(model, output=options.pop("output", None))
    if isinstance(x, Mapping):
        handle, x = split(handle, x, inputs)
    else:
        require_single(handle)
        x = handle.as_input(x)
    method = method or getattr(attribution, "method", None)
    layer = layer or getattr(attribution, "layer", None)
    explainer = explainer_for(handle, method, layer=layer, **options) if method else None
    mask = None if mask is None else np.asarray(mask)

    def run(xs, t, index):
        return _evaluate(handle, xs, take_attribution(attribution, index), metrics, t,
                         mask=None if mask is None else mask[index], explainer=explainer, settings=settings)

    if getattr(handle, "held_inputs", None) is None:
        return run(x, target, slice(None))
    return merge_metrics(per_sample(handle, x, target, run))

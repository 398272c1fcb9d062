"""Steps every method shares: resolve the target once, validate options, build the Attribution."""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._jsonable import jsonable
from ..errors import UsageError
from ..targets import Target, target_for_output
from .base import Attribution, Contrast

_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # handle -> {input shape: output shape}


@dataclass
class Prepared:
    """The input and target as every pass of a method sees them."""

    x: np.ndarray
    target: Target  # resolved on the unperturbed input
    output: np.ndarray | None
    scores: np.ndarray | None  # the explained score of each sample (None until a pass has run)


def prepare(handle, x: Any, target: Target | None, *, resolve: bool = True) -> Prepared:
    """One forward on ``x``: infer the task if no target is given, fix the target's choices.

    ``resolve=False`` skips that forward for methods whose single pass on ``x`` resolves the target on
    the way (the backend's ``vjp`` does); they complete the result with ``resolved``. The task of a
    missing target is then read off an output shape remembered per handle and input shape.
    """
    if target is not None and not isinstance(target, Target):
        raise UsageError(f"target must be a xaiready.targets.Target, not {type(target).__name__}",
                         hint="e.g. xr.targets.Class(3), SegmentationRegion(1), Regression(0)")
    x = handle.as_input(x)
    if not resolve:
        if target is None:
            target = target_for_output(lambda: _output_shape(handle, x))
        return Prepared(x, target, None, None)
    out = None
    if target is None:
        def shape():
            nonlocal out
            out = handle.forward(x)
            return out.shape

        target = target_for_output(shape)  # a detector's top-scoring box where there is no output tensor
    if getattr(target, "raw_output", False):
        # A raw-output target (a detector's list[dict]) may see no tensor: the backend's pass resolves
        # it once on x and scores it; every later pass reuses that resolved target.
        res = handle.vjp(x, target, input_grad=False)
        return Prepared(x, res.target or target, None, np.asarray(res.scores, dtype=np.float64))
    out = handle.forward(x) if out is None else out
    _SHAPES.setdefault(handle, {})[tuple(x.shape)] = tuple(out.shape)
    if target.framework_fn is not None:
        scores = handle.vjp(x, target, input_grad=False).scores
    else:
        target = target.resolve(out, channel_axis=handle.channel_axis)
        scores = target.scores(out)
    return Prepared(x, target, out, np.asarray(scores, dtype=np.float64))


def contrast_of(result, other_values=None, *, explained=None, measured_on: str = "map") -> Contrast | None:
    """The Contrast of a backend pass asked for ``contrast=True`` (None where the backend gave none);
    ``other_values`` is the runner-up's map, by default its input gradient."""
    other = result.contrast
    if other is None:
        return None
    values = other.input_grad if other_values is None else other_values
    return None if values is None else Contrast(values, other.target.describe(), measured_on, explained)


def resolved(prep: Prepared, result) -> Prepared:
    """``prep`` completed from a backend pass on ``prep.x`` (a GradResult): resolved target and scores."""
    return Prepared(prep.x, result.target or prep.target, result.output,
                    np.asarray(result.scores, dtype=np.float64))


def _output_shape(handle, x: np.ndarray) -> tuple[int, ...]:
    known = _SHAPES.setdefault(handle, {})
    if tuple(x.shape) not in known:
        known[tuple(x.shape)] = tuple(handle.forward(x).shape)
    return known[tuple(x.shape)]


def provenance(handle, options: dict[str, Any]) -> dict[str, Any]:
    from .. import __version__

    framework = sys.modules.get({"torch": "torch", "tensorflow": "tensorflow"}.get(handle.framework, ""))
    return {"model": handle.source.to_dict(),
            "options": {k: jsonable(v) for k, v in options.items()},
            "versions": {"xaiready": __version__, "numpy": np.__version__,
                         handle.framework: getattr(framework, "__version__", None)}}


def attribution(method, handle, prep: Prepared, values: np.ndarray, options: dict[str, Any], *,
                layer: str | None = None, raw: np.ndarray | None = None, info: dict | None = None,
                warnings: list[str] | tuple[str, ...] = (), contrast: Contrast | None = None) -> Attribution:
    return Attribution(values=np.asarray(values, dtype=np.float32), method=method.name, family=method.family,
                       target=prep.target.describe(), layer=layer,
                       raw=None if raw is None else np.asarray(raw, dtype=np.float32),
                       scores=prep.scores, input_shape=tuple(prep.x.shape), layout=handle.layout,
                       provenance=provenance(handle, options), info=dict(info or {}),
                       warnings=tuple(dict.fromkeys(warnings)), output=prep.output, contrast=contrast)

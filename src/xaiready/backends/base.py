"""The narrow protocol every framework backend implements, and the plain results it returns.

Methods, metrics and readiness checks talk only to this protocol (through ``ModelHandle``); they
never import a framework. All arrays crossing it are NumPy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import DetectionOutputError, InputError, UsageError
from ..targets import Target


@dataclass
class GradResult:
    """One forward and backward pass of a score.

    ``input_grad`` is None when the score has no gradient path to the input; a layer's entry in
    ``layer_grads`` is None when that layer is not on the score's path.
    """

    output: np.ndarray
    scores: np.ndarray
    input_grad: np.ndarray | None
    score_in_graph: bool
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    layer_grads: dict[str, np.ndarray | None] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    target: Target | None = None  # the target as resolved on this pass's output
    grad_mode_error: str | None = None  # the forward ran without gradients but raised with them
    contrast: GradResult | None = None  # vjp(contrast=True): the runner-up class, from the same forward


def grad_result(keep, output, scores, in_graph: bool, calls: dict, target, acts: dict, grads: list,
                input_grad: bool) -> GradResult:
    """A GradResult from one backward: ``grads`` holds the input's gradient first (when ``input_grad``)
    and then one per captured activation; every tensor goes through ``keep`` (to NumPy, or kept as is)."""
    result = GradResult(output=output, scores=scores, input_grad=None, score_in_graph=in_graph,
                        calls=calls, target=target)
    if input_grad:
        g = grads[0]
        result.input_grad = None if g is None else keep(g)
        grads = grads[1:]
    for (name, act), g in zip(acts.items(), grads, strict=True):
        result.activations[name] = keep(act)
        result.layer_grads[name] = None if g is None else keep(g)
    return result


@dataclass
class OverrideStats:
    """What a ReLU gradient override actually intercepted during the forward passes it covered."""

    mode: str
    relu_calls: int = 0
    overridden: int = 0
    not_overridable: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return {"mode": self.mode, "relu_calls": self.relu_calls, "overridden": self.overridden,
                "not_overridable": dict(self.not_overridable), "note": self.note}


@dataclass
class LayerAccess:
    """Which internal layers can be captured, or why none can."""

    names: list[str]
    reason: str = ""


@dataclass
class BreakFinding:
    """Where a gradient path dies. ``location`` names the layer as the framework names it."""

    location: str
    cause: str  # detach | numpy | no_grad | item | non-differentiable | custom-backward | zero-weights | unknown
    op: str = ""
    after: str | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        return {"location": self.location, "cause": self.cause, "op": self.op, "after": self.after,
                "detail": self.detail}


class Backend(Protocol):
    framework: str
    layout: str  # "NCHW" or "NHWC": how this framework's image inputs are laid out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The selected output, without gradients."""

    def output_names(self, x: np.ndarray) -> list[str]:
        """Names or indices of the raw outputs, for ``--output``."""

    def vjp(self, x: np.ndarray, target: Target, *, layers: Sequence[str] = (),
            input_grad: bool = True) -> GradResult:
        """Gradient of the (resolved) target's summed scores w.r.t. the input and/or layers.

        A backend with ``supports_contrast = True`` also takes ``contrast=True``: the runner-up class's
        gradients (``targets.runner_up``) from the same forward, in ``GradResult.contrast``."""

    def layers(self) -> LayerAccess:
        """Layers whose activation and gradient can be captured, in definition order."""

    def relu_override(self, mode: str) -> AbstractContextManager[OverrideStats]:
        """Within the block, ReLU backward follows ``mode`` ("guided" or "deconvnet")."""

    def locate_break(self, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
        """Name where the score's gradient path dies (``status``: missing, zero, non-finite, incorrect)."""

    def example_shape(self) -> tuple[int, ...] | None:
        """A plausible input shape read off the model, or None."""


class Randomizable(Protocol):
    """Optional protocol (parameter-randomization metrics and health checks); test with hasattr.

    Kept apart from ``Backend`` so that only backends able to rewrite weights implement it.
    """

    def randomizable_layers(self) -> list[str]:
        """Layers that own parameters, in definition order."""

    def randomized(self, layers: Sequence[str], seed: int = 0) -> AbstractContextManager[list[str]]:
        """Within the block the named layers hold seeded random weights; on exit, also after an
        exception, every original value is restored exactly."""


def select_output(raw, choice: str | int | None, is_tensor: Callable[[object], bool],
                  preferred: Sequence[str] = ("logits", "out")):
    """The output to explain from a tensor, dict(-like) or tuple/list output of any framework.

    ``choice`` is ``--output`` (a name or index); by default a dict's ``logits`` or ``out`` entry, or
    its only entry; a sequence's first item.
    """
    if is_tensor(raw):
        return raw
    if (_detections(raw) and (choice is None or isinstance(raw, (list, tuple)))) or (choice is None and _detr(raw)):
        kind = ("DETR-style (logits, pred_boxes)" if _detr(raw) else "dict(boxes, labels, scores)"
                if isinstance(raw, dict) or hasattr(raw, "keys") else f"{type(raw).__name__}[dict]")
        raise DetectionOutputError(f"this model returns {kind} detections, not a tensor",
                                   hint="use --task detection or a raw-output target (xaiready.targets.Detection)")
    if isinstance(raw, dict) or hasattr(raw, "keys"):
        keys = list(raw.keys())
        key = choice
        if key is None:
            key = next((k for k in preferred if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise UsageError(f"the model returns several outputs {keys}", hint="choose one with --output NAME")
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and key not in keys):
            key = keys[int(key)] if int(key) < len(keys) else key
        if key not in keys:
            raise UsageError(f"the model has no output '{key}'", hint=f"outputs are {keys}")
        return _tensor_output(raw[key], key, is_tensor)
    if isinstance(raw, (tuple, list)):
        try:
            index = int(0 if choice is None else choice)
            value = raw[index]
        except (ValueError, IndexError):
            raise UsageError(f"the model returns {len(raw)} outputs; '{choice}' is not one",
                             hint=f"use --output 0..{len(raw) - 1}") from None
        return _tensor_output(value, index, is_tensor)
    raise InputError(f"the model returned {type(raw).__name__}, not a tensor",
                     hint="wrap the model so it returns a tensor, or pick one with --output")


def _detections(raw) -> bool:
    """True for a detector's output: a dict with boxes and scores, or a list/tuple of such dicts."""
    def one(v):
        return (isinstance(v, dict) or hasattr(v, "keys")) and "boxes" in v and "scores" in v

    return one(raw) or (isinstance(raw, (list, tuple)) and len(raw) > 0 and all(one(v) for v in raw))


def _detr(raw) -> bool:
    return (isinstance(raw, dict) or hasattr(raw, "keys")) and "logits" in raw and "pred_boxes" in raw


def _tensor_output(value, key, is_tensor):
    if not is_tensor(value):
        raise InputError(f"output '{key}' is {type(value).__name__}, not a tensor",
                         hint="choose a tensor output with --output")
    return value


"""Tasks: the default target of each task, the task of an output shape, and resolved choices made
explicit."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import DetectionOutputError, UsageError
from .base import Target, _host
from .classification import Class
from .detection import Detection
from .regression import Regression
from .segmentation import SegmentationRegion
from .sequence import Sequence


def pinned(target: Target) -> Target:
    """The resolved choices made explicit, so a method re-resolving on a perturbed input keeps them
    (the class predicted on the clean input, not on each noisy copy)."""
    if isinstance(target, Class) and target.resolved:
        return Class(np.asarray(target._k).tolist(), score=target.score)
    if isinstance(target, SegmentationRegion) and target.resolved:
        return SegmentationRegion(target._k, target._mask)
    if isinstance(target, Sequence) and target._path is not None:
        return Sequence(target.blank, time_axis=target.time_axis, path=_host(target._path))
    return target


def runner_up(target: Target, output) -> Class | None:
    """The class each sample ranks next to the explained one (the top class, where another class is
    explained), resolved on ``output``; None for a target or output that has no other class."""
    if not isinstance(target, Class) or not target.resolved:
        return None
    out = np.asarray(output)
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    order = np.argsort(-out, axis=1)
    other = np.where(order[:, 0] == target._k, order[:, 1], order[:, 0])
    return Class(other.tolist(), score=target.score).resolve(out)


def for_task(task: str, target: int | None, mask: np.ndarray | None = None, *, labels=None,
             blank: int | None = None) -> Target:
    """The default target of a task, as the CLI's ``--task``/``--target``/``--target-text``/``--blank``
    choose it."""
    if task == "classification":
        return Class(target)
    if task == "segmentation":  # a one-channel (binary) map thresholds at probability 0.5
        return SegmentationRegion(target, mask)
    if task == "regression":
        return Regression(0 if target is None else int(target))
    if task == "detection":  # class K's top-scoring box, or the top-scoring box of any class
        return Detection(label=target)
    if task == "sequence":
        if target is not None:
            raise UsageError("--target K has no meaning for a sequence output",
                             hint="give the label sequence with --target-text 3,1,4, or leave it out (best path)")
        return Sequence(0 if blank is None else int(blank), labels)
    raise UsageError(f"unknown task '{task}'", hint="use one of " + ", ".join(TASKS))


TASKS = ("classification", "segmentation", "regression", "sequence", "detection")


def target_for_output(output_shape: Callable[[], tuple[int, ...]]) -> Target:
    """The default target of a model whose output has shape ``output_shape()``: the task's (``infer_task``),
    or a detector's top-scoring box when the model returns detections rather than a tensor."""
    try:
        return for_task(infer_task(output_shape()), None)
    except DetectionOutputError:
        return Detection()


def task_of(target: Target) -> str | None:
    """The task a target explains (None for Custom)."""
    kinds = {Class: "classification", SegmentationRegion: "segmentation", Regression: "regression",
             Sequence: "sequence", Detection: "detection"}
    return next((task for kind, task in kinds.items() if isinstance(target, kind)), None)


def infer_task(output_shape: tuple[int, ...], *, fallback: str | None = None) -> str:
    """The task read off the output's shape where it is unambiguous: (N, K>1) classification,
    (N,) or (N, 1) regression, 4-D segmentation (a one-channel map is binary segmentation).

    Any other shape, (B, T, K) among them (a sequence head, or regression of a 3-D array?), is the
    user's choice: a UsageError, unless the caller names an explicit ``fallback`` task.
    """
    shape = tuple(int(d) for d in output_shape)
    if len(shape) == 4:
        return "segmentation"
    if len(shape) == 2 and shape[1] > 1:
        return "classification"
    if len(shape) in (1, 2):
        return "regression"
    if fallback is not None:
        return fallback
    raise UsageError(f"the model's output has shape {shape}: choose --task sequence|detection|regression|segmentation",
                     hint="in Python pass a target (xr.targets.Sequence(), Detection(), Regression(i), ...) or task=")

"""What to explain: one target type mapping a batched model output to one scalar per sample.

A target is framework-neutral. It computes on the NumPy copy of the output:

* ``scores(output)``: the (N,) scores being explained, for reports and finite differences;
* ``seed(output)``: d(sum of scores)/d(output), the output-space seed of the vector-Jacobian product.
  Because every score is a function of the output alone, backpropagating this seed from the output
  gives exactly the gradient of the score with respect to anything upstream.

Data-dependent choices (the predicted class, the predicted-pixel mask) are fixed once by
``resolve(output)`` on the unperturbed input, so finite differences and integration paths explain
the same quantity throughout.

``Custom(fn)`` is the one exception: ``fn`` receives the framework's own output tensor and returns
one score per sample, so it may use any differentiable operation of that framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import UsageError


def _per_sample(value: int | Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        return np.repeat(arr, n)
    if arr.size != n:
        raise UsageError(f"{what}: got {arr.size} values for a batch of {n}",
                         hint="give one value for all samples or one per sample")
    return arr


def _softmax(z: np.ndarray, axis: int) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class Target:
    """Base: subclasses implement ``_resolve``, ``scores`` and ``seed``."""

    framework_fn = None  # only Custom sets it

    @property
    def resolved(self) -> bool:
        """True once data-dependent choices are fixed (see ``resolve``)."""
        return True

    def resolve(self, output: np.ndarray, *, channel_axis: int = 1) -> Target:
        """Fix data-dependent choices against the unperturbed output."""
        return self

    def take(self, index: np.ndarray) -> Target:
        """The resolved target for the samples ``index`` (e.g. a batch of IG path points)."""
        return self

    def scores(self, output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def seed(self, output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Class(Target):
    """Class ``k`` of a classifier's (N, K) output; ``k=None`` means the predicted class.

    ``score`` is ``"logit"`` (the raw output, default), ``"probability"`` (softmax of it) or
    ``"log-probability"``.
    """

    k: int | Sequence[int] | None = None
    score: str = "logit"
    _k: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.score not in ("logit", "probability", "log-probability"):
            raise UsageError(f"unknown class score '{self.score}'",
                             hint="use logit, probability or log-probability")

    def resolve(self, output, *, channel_axis=1):
        out = _as_2d(output, "Class")
        n, classes = out.shape
        k = out.argmax(axis=1) if self.k is None else _per_sample(self.k, n, "class index")
        if (k < 0).any() or (k >= classes).any():
            raise UsageError(f"class index {k.tolist()} is out of range for {classes} classes",
                             hint=f"use --target 0..{classes - 1}")
        return replace(self, _k=k)

    @property
    def resolved(self):
        return self._k is not None

    def take(self, index):
        return replace(self, _k=self._k[np.asarray(index)])

    def _indices(self, out):
        if self._k is None:
            raise RuntimeError("Class target used before resolve()")
        _check_batch(self._k.shape[0], out.shape[0])
        return np.arange(out.shape[0]), self._k

    def scores(self, output):
        out = _as_2d(output, "Class").astype(np.float64)
        rows, k = self._indices(out)
        if self.score == "logit":
            return out[rows, k]
        p = _softmax(out, 1)
        return p[rows, k] if self.score == "probability" else np.log(p[rows, k])

    def seed(self, output):
        out = _as_2d(output, "Class").astype(np.float64)
        rows, k = self._indices(out)
        onehot = np.zeros_like(out)
        onehot[rows, k] = 1.0
        if self.score == "logit":
            seed = onehot
        else:
            p = _softmax(out, 1)
            seed = onehot - p  # d log p_k / dz
            if self.score == "probability":
                seed = seed * p[rows, k][:, None]  # d p_k / dz = p_k (e_k - p)
        return seed.reshape(np.shape(output)).astype(output.dtype)

    def describe(self):
        k = None if self._k is None else self._k.tolist()
        return {"type": "class", "k": k if k is None or len(set(k)) > 1 else k[0], "score": self.score,
                "chosen": "predicted" if self.k is None else "given"}


@dataclass(frozen=True)
class SegmentationRegion(Target):
    """Sum of class-``k`` scores over a region of a (N, K, H, W) map (channel axis set by layout).

    ``mask=None`` means the pixels predicted as ``k``; if no pixel is, the whole map. ``k=None`` is
    the class with most predicted pixels.
    """

    k: int | None = None
    mask: np.ndarray | None = None
    _k: int | None = field(default=None, repr=False, compare=False)
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    _axis: int = field(default=1, repr=False, compare=False)
    _region: str = field(default="", repr=False, compare=False)

    def resolve(self, output, *, channel_axis=1):
        out = np.asarray(output)
        if out.ndim != 4:
            raise UsageError(f"a segmentation target needs a (N, K, H, W) output, got shape {out.shape}",
                             hint="use --task classification or regression for this model")
        axis = channel_axis % 4
        classes = out.shape[axis]
        pred = out.argmax(axis=axis)  # (N, H, W)
        k = int(np.bincount(pred.reshape(-1), minlength=classes).argmax()) if self.k is None else int(self.k)
        if not 0 <= k < classes:
            raise UsageError(f"class index {k} is out of range for {classes} classes",
                             hint=f"use --target 0..{classes - 1}")
        if self.mask is not None:
            mask = np.broadcast_to(np.asarray(self.mask, dtype=out.dtype), pred.shape).copy()
            region = "given mask"
        else:
            mask = (pred == k).astype(out.dtype)
            region = "pixels predicted as k"
            empty = mask.reshape(mask.shape[0], -1).sum(1) == 0
            if empty.any():
                mask[empty] = 1.0
                region += " (whole map where none is)"
        return replace(self, _k=k, _mask=mask, _axis=axis, _region=region)

    @property
    def resolved(self):
        return self._mask is not None

    def take(self, index):
        return replace(self, _mask=self._mask[np.asarray(index)])

    def _weights(self, out):
        if self._mask is None:
            raise RuntimeError("SegmentationRegion target used before resolve()")
        _check_batch(self._mask.shape[0], out.shape[0])
        w = np.zeros(out.shape, dtype=np.float64)
        idx = [slice(None)] * 4
        idx[self._axis] = self._k
        w[tuple(idx)] = self._mask
        return w

    def scores(self, output):
        out = np.asarray(output, dtype=np.float64)
        return (out * self._weights(out)).reshape(out.shape[0], -1).sum(1)

    def seed(self, output):
        return self._weights(np.asarray(output)).astype(output.dtype)

    def describe(self):
        return {"type": "segmentation-region", "k": self._k if self._k is not None else self.k,
                "region": self._region or ("given mask" if self.mask is not None else "predicted")}


@dataclass(frozen=True)
class Regression(Target):
    """The raw output value at flat ``index`` of each sample (never a loss against itself)."""

    index: int = 0

    def resolve(self, output, *, channel_axis=1):
        size = int(np.prod(np.shape(output)[1:], dtype=np.int64)) if np.ndim(output) > 1 else 1
        if not 0 <= self.index < size:
            raise UsageError(f"output index {self.index} is out of range for {size} output values",
                             hint=f"use --target 0..{size - 1}")
        return self

    def scores(self, output):
        out = np.asarray(output, dtype=np.float64)
        return out.reshape(out.shape[0], -1)[:, self.index]

    def seed(self, output):
        seed = np.zeros((np.shape(output)[0], max(1, int(np.prod(np.shape(output)[1:])))), dtype=output.dtype)
        seed[:, self.index] = 1
        return seed.reshape(np.shape(output))

    def describe(self):
        return {"type": "regression", "index": self.index}


@dataclass(frozen=True)
class Custom(Target):
    """``fn(output) -> (N,)`` written in the model's framework (e.g. torch ops on a torch tensor)."""

    fn: Callable[[Any], Any] = None
    name: str = "custom"

    def __post_init__(self):
        if not callable(self.fn):
            raise UsageError("Custom target needs a callable fn(output) -> one score per sample")

    @property
    def framework_fn(self):  # noqa: D401 - the backend applies it to its own tensors
        return self.fn

    def scores(self, output):
        raise TypeError("Custom targets are evaluated by the backend on framework tensors")

    seed = scores

    def describe(self):
        return {"type": "custom", "name": self.name}


def pinned(target: Target) -> Target:
    """The resolved choices made explicit, so a method re-resolving on a perturbed input keeps them
    (the class predicted on the clean input, not on each noisy copy)."""
    if isinstance(target, Class) and target.resolved:
        return Class(np.asarray(target._k).tolist(), score=target.score)
    if isinstance(target, SegmentationRegion) and target.resolved:
        return SegmentationRegion(target._k, target._mask)
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


def _check_batch(resolved: int, given: int) -> None:
    if resolved != given:
        raise ValueError(f"target was resolved for {resolved} samples but the output has {given}; "
                         "use target.take(sample_index) for replicated samples")


def _as_2d(output: np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(output)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2:
        raise UsageError(f"a {what} target needs a (N, K) output, got shape {out.shape}",
                         hint="pick another task (--task segmentation|regression) or output (--output)")
    return out


def for_task(task: str, target: int | None, mask: np.ndarray | None = None) -> Target:
    """The default target of a task, as the CLI's ``--task``/``--target`` choose it."""
    if task == "classification":
        return Class(target)
    if task == "segmentation":
        return SegmentationRegion(target, mask)
    if task == "regression":
        return Regression(0 if target is None else int(target))
    raise UsageError(f"unknown task '{task}'", hint="use classification, segmentation or regression")


def infer_task(output_shape: tuple[int, ...]) -> str:
    """Guess the task from the output's shape: (N,K>1) classification, 4-D segmentation, else regression."""
    if len(output_shape) == 4:
        return "segmentation"
    if len(output_shape) == 2 and output_shape[1] > 1:
        return "classification"
    return "regression"

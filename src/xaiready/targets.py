"""What to explain: one target type mapping a batched model output to one scalar per sample.

A target is framework-neutral. It computes with the array namespace of the output it is given
(NumPy, or the framework's own tensors on the model's device; see ``backends.arrays``):

* ``scores(output)``: the (N,) scores being explained, for reports and finite differences;
* ``seed(output)``: d(sum of scores)/d(output), the output-space seed of the vector-Jacobian product.
  Because every score is a function of the output alone, backpropagating this seed from the output
  gives exactly the gradient of the score with respect to anything upstream.

Resolved choices are NumPy until ``on(ops)`` moves them where the model runs, once per explanation,
so that a chunk loop builds its seeds without a copy between host and device.

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
from array_api_compat import array_namespace, device

from .errors import UsageError


def _per_sample(value: int | Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        return np.repeat(arr, n)
    if arr.size != n:
        raise UsageError(f"{what}: got {arr.size} values for a batch of {n}",
                         hint="give one value for all samples or one per sample")
    return arr


def _softmax(z, axis: int):
    xp = array_namespace(z)
    e = xp.exp(z - xp.max(z, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


# A class probability above which the softmax is saturated: d p / d logit = p (1 - p) < 1e-4, so the
# gradients of a probability score vanish into float noise (likewise below 1 - SATURATION). The one
# threshold of ``xaiready check``'s saturation check and of the explanation health check. Benchmark CNN
# (32 test inputs): 31 % exceed it (median top p 0.9994), so the health check warns only when a
# probability score is explained; logits are unaffected.
SATURATION = 1 - 1e-4


def _host(a) -> np.ndarray:
    """A small resolved array (class indices) as NumPy, for reports: one copy, after the passes."""
    return a if isinstance(a, np.ndarray) else np.asarray(a.cpu() if hasattr(a, "cpu") else a)


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

    def take(self, index) -> Target:
        """The resolved target for the samples ``index`` (e.g. a batch of IG path points); ``index`` is
        NumPy, or native to the device the target was moved to with ``on``."""
        return self

    def on(self, ops) -> Target:
        """This target with its resolved arrays where ``ops`` (a backend's ArrayOps) keeps arrays."""
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
        return replace(self, _k=self._k[index])

    def on(self, ops):
        return self if self._k is None else replace(self, _k=ops.asarray(self._k, dtype="int64"))

    def _classes(self, out):
        """Each sample's class as an (N, 1) index array in ``out``'s namespace and on its device."""
        if self._k is None:
            raise RuntimeError("Class target used before resolve()")
        _check_batch(self._k.shape[0], out.shape[0])
        xp = array_namespace(out)
        return xp.reshape(xp.asarray(self._k, device=device(out)), (-1, 1))

    def scores(self, output):
        out = _as_2d(output, "Class")
        xp = array_namespace(out)
        out = xp.astype(out, xp.float64)
        if self.score != "logit":
            out = _softmax(out, 1)
        picked = xp.take_along_axis(out, self._classes(out), axis=1)[:, 0]
        return xp.log(picked) if self.score == "log-probability" else picked

    def seed(self, output):
        out = _as_2d(output, "Class")
        xp = array_namespace(out)
        out = xp.astype(out, xp.float64)
        k = self._classes(out)
        onehot = xp.astype(xp.arange(out.shape[1], device=device(out))[None, :] == k, xp.float64)
        if self.score == "logit":
            seed = onehot
        else:
            p = _softmax(out, 1)
            seed = onehot - p  # d log p_k / dz
            if self.score == "probability":
                seed = seed * xp.take_along_axis(p, k, axis=1)  # d p_k / dz = p_k (e_k - p)
        return xp.astype(xp.reshape(seed, output.shape), output.dtype)

    def describe(self):
        k = None if self._k is None else _host(self._k).tolist()
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
        return replace(self, _mask=self._mask[index])

    def on(self, ops):
        return self if self._mask is None else replace(self, _mask=ops.asarray(self._mask, dtype="float64"))

    def _weights(self, out):
        """float64 weights shaped like ``out``: the mask on channel k, zero elsewhere."""
        if self._mask is None:
            raise RuntimeError("SegmentationRegion target used before resolve()")
        _check_batch(self._mask.shape[0], out.shape[0])
        xp = array_namespace(out)
        mask = xp.astype(xp.asarray(self._mask, device=device(out)), xp.float64)
        onehot = xp.astype(xp.arange(out.shape[self._axis], device=device(out)) == self._k, xp.float64)
        shape = [1, 1, 1, 1]
        shape[self._axis] = out.shape[self._axis]
        return xp.expand_dims(mask, axis=self._axis) * xp.reshape(onehot, tuple(shape))

    def scores(self, output):
        xp = array_namespace(output)
        out = xp.astype(output, xp.float64)
        return xp.sum(xp.reshape(out * self._weights(out), (out.shape[0], -1)), axis=1)

    def seed(self, output):
        xp = array_namespace(output)
        return xp.astype(self._weights(output), output.dtype)

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
        xp = array_namespace(output)
        out = xp.astype(output, xp.float64)
        return xp.reshape(out, (out.shape[0], -1))[:, self.index]

    def seed(self, output):
        xp = array_namespace(output)
        size = max(1, int(np.prod(output.shape[1:], dtype=np.int64)))
        onehot = xp.astype(xp.arange(size, device=device(output)) == self.index, output.dtype)
        rows = xp.ones((output.shape[0], 1), dtype=output.dtype, device=device(output))
        return xp.reshape(rows * onehot[None, :], output.shape)

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


def _as_2d(output, what: str):
    out = output if hasattr(output, "shape") and hasattr(output, "dtype") else np.asarray(output)
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

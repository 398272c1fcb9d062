"""Segmentation: one class over a region of a 4-D map (or a one-channel binary map)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from array_api_compat import array_namespace, device

from ..errors import UsageError
from .base import Target, _check_batch


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
        if classes == 1:  # binary (text, defect) maps: a threshold, never the argmax of one channel
            k = 0 if self.k is None else int(self.k)
            pred = None
        else:
            pred = out.argmax(axis=axis)  # (N, H, W)
            k = int(np.bincount(pred.reshape(-1), minlength=classes).argmax()) if self.k is None else int(self.k)
        if not 0 <= k < classes:
            raise UsageError(f"class index {k} is out of range for {classes} classes",
                             hint=f"use --target 0..{classes - 1}" if classes > 1 else
                             "a one-channel (binary) map has the one class 0: leave --target out")
        shape = out.shape[:axis] + out.shape[axis + 1:]  # (N, H, W)
        if self.mask is not None:
            mask = np.broadcast_to(np.asarray(self.mask, dtype=out.dtype), shape).copy()
            region = "given mask"
        else:
            if pred is None:
                channel = np.take(out, 0, axis=axis)
                as_prob = bool(np.all(channel >= 0) and np.all(channel <= 1))
                # probability > 0.5: the value itself where the output is already in [0, 1] (a sigmoid
                # applied), else sigmoid(logit) > 0.5, i.e. logit > 0
                mask = (channel > (0.5 if as_prob else 0.0)).astype(out.dtype)
                region = ("pixels with probability > 0.5 (the one-channel output read as probabilities)"
                          if as_prob else "pixels with sigmoid(logit) > 0.5 (the one-channel output read as logits)")
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
        region = self._region or ("given mask" if self.mask is not None else "predicted")
        return {"type": "segmentation-region", "k": self._k if self._k is not None else self.k, "region": region,
                "chosen": "given mask" if self.mask is not None else
                "threshold" if region.startswith("pixels with") else "predicted"}

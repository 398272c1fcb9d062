"""Classification: one class of an (N, K) output."""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass, field, replace

import numpy as np
from array_api_compat import array_namespace, device

from ..errors import UsageError
from .base import Target, _as_2d, _check_batch, _host, _per_sample, softmax


@dataclass(frozen=True)
class Class(Target):
    """Class ``k`` of a classifier's (N, K) output; ``k=None`` means the predicted class.

    ``score`` is ``"logit"`` (the raw output, default), ``"probability"`` (softmax of it) or
    ``"log-probability"``.
    """

    k: int | abc.Sequence[int] | None = None
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
            out = softmax(out, 1)
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
            p = softmax(out, 1)
            seed = onehot - p  # d log p_k / dz
            if self.score == "probability":
                seed = seed * xp.take_along_axis(p, k, axis=1)  # d p_k / dz = p_k (e_k - p)
        return xp.astype(xp.reshape(seed, output.shape), output.dtype)

    def describe(self):
        k = None if self._k is None else _host(self._k).tolist()
        return {"type": "class", "k": k if k is None or len(set(k)) > 1 else k[0], "score": self.score,
                "chosen": "predicted" if self.k is None else "given"}

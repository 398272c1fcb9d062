"""The target protocol and the helpers every target shares."""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ..errors import UsageError


def _per_sample(value: int | abc.Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        return np.repeat(arr, n)
    if arr.size != n:
        raise UsageError(f"{what}: got {arr.size} values for a batch of {n}",
                         hint="give one value for all samples or one per sample")
    return arr


def softmax(z, axis: int):
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


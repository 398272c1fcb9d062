"""Regression and custom scores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from ..errors import UsageError
from .base import Target


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
    """``fn(output) -> (N,)`` written in the model's framework (e.g. torch ops on a torch tensor).

    ``raw=True`` hands ``fn`` the model's output as the model returned it (a dict, a list of dicts, a
    ``ModelOutput``), before any ``--output`` selection; by default it gets the selected tensor."""

    fn: Callable[[Any], Any] = None
    name: str = "custom"
    raw: bool = False

    def __post_init__(self):
        if not callable(self.fn):
            raise UsageError("Custom target needs a callable fn(output) -> one score per sample")

    @property
    def raw_output(self) -> bool:  # the backend gives fn the model's own output
        return self.raw

    @property
    def framework_fn(self):  # noqa: D401 - the backend applies it to its own tensors
        return self.fn

    def scores(self, output):
        raise TypeError("Custom targets are evaluated by the backend on framework tensors")

    seed = scores

    def describe(self):
        return {"type": "custom", "name": self.name, "output": "raw" if self.raw else "selected"}

"""The narrow protocol every framework backend implements, and the plain results it returns.

Methods, metrics and readiness checks talk only to this protocol (through ``ModelHandle``); they
never import a framework. All arrays crossing it are NumPy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

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
    cause: str  # detach | numpy | no_grad | item | non-differentiable | custom-backward | unknown
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
        """Gradient of the (resolved) target's summed scores w.r.t. the input and/or layers."""

    def layers(self) -> LayerAccess:
        """Layers whose activation and gradient can be captured, in definition order."""

    def relu_override(self, mode: str) -> AbstractContextManager[OverrideStats]:
        """Within the block, ReLU backward follows ``mode`` ("guided" or "deconvnet")."""

    def locate_break(self, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
        """Name where the score's gradient path dies (``status``: missing, zero, non-finite, incorrect)."""

    def example_shape(self) -> tuple[int, ...] | None:
        """A plausible input shape read off the model, or None."""


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in chunks of at most ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))

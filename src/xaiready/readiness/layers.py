"""CAM hookability: which internal layers give both an activation and a non-zero gradient."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backends.base import GradResult


@dataclass
class LayerFindings:
    verified: list[str] = field(default_factory=list)  # spatial, captured, finite non-zero gradient
    default: str | None = None
    reason: str = ""
    rejected: dict[str, str] = field(default_factory=dict)


def spatial_size(shape: tuple[int, ...], layout: str) -> int:
    if len(shape) != 4:
        return 0
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    return h * w


def measure_layers(result: GradResult, requested: list[str], layout: str,
                   output_channels: int | None = None) -> LayerFindings:
    """Judge each requested layer from one pass that captured them all."""
    found = LayerFindings()
    for name in requested:
        act = result.activations.get(name)
        grad = result.layer_grads.get(name)
        if act is None:
            found.rejected[name] = "its hook never fired or its output is not a float tensor"
            continue
        if spatial_size(act.shape, layout) <= 1:
            found.rejected[name] = f"output {tuple(act.shape)} has no spatial extent"
            continue
        if grad is None:
            found.rejected[name] = "not on the score's gradient path"
            continue
        if not np.isfinite(grad).all():
            found.rejected[name] = "its gradient is not finite"
            continue
        if not np.any(grad):
            found.rejected[name] = "its gradient is zero"
            continue
        found.verified.append(name)
    found.default = _default_layer(found.verified, result, layout, output_channels)
    if not found.verified:
        found.reason = ("no internal layer gives a spatial activation with a non-zero gradient"
                        if requested else "no layer could be captured")
    return found


def _default_layer(verified: list[str], result: GradResult, layout: str,
                   output_channels: int | None) -> str | None:
    """The last layer to finish in the forward (deepest features), used once, not the output head."""
    order = [n for n in result.activations if n in verified]  # insertion order = first completion
    axis = 1 if layout == "NCHW" else 3
    for name in reversed(order):
        if result.calls.get(name, 1) > 1:
            continue
        act = result.activations[name]
        if output_channels is not None and act.shape[axis] == output_channels:  # a segmentation head
            continue
        return name
    return order[-1] if order else None

"""CAM layers: which internal layers have an established spatial layout, an activation and a non-zero
gradient on their grid, and which one a practitioner would pick by default (and why)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backends.base import GradResult
from .layouts import Layout, to_maps

# After the last layer with a layout, this many layers that still carry per-sample features (3-D or
# more) but no established layout mean the network's body was not read: only its stem was.
UNREAD_BODY = 3


@dataclass
class LayerFindings:
    verified: list[str] = field(default_factory=list)  # layout established, captured, gradient on the grid
    default: str | None = None
    default_reason: str = ""
    reason: str = ""
    rejected: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)


def measure_layers(result: GradResult, requested: list[str], layouts: dict[str, Layout],
                   output_channels: int | None = None, kinds: dict[str, str] | None = None) -> LayerFindings:
    """Judge each requested layer from one pass that captured them all, with its measured layout."""
    found = LayerFindings(layouts=dict(layouts))
    for name in requested:
        act, grad = result.activations.get(name), result.layer_grads.get(name)
        layout = layouts.get(name)
        if act is None:
            found.rejected[name] = "its hook never fired or its output is not a float tensor"
        elif layout is None or not layout.spatial:
            found.rejected[name] = f"output {tuple(act.shape)} has no established spatial layout" + (
                f" ({layout.evidence})" if layout is not None and layout.evidence else "")
        elif grad is None:
            found.rejected[name] = "not on the score's gradient path"
        elif not np.isfinite(grad).all():
            found.rejected[name] = "its gradient is not finite"
        elif not np.any(to_maps(grad, layout)):
            found.rejected[name] = ("its patch tokens get no gradient (after the last attention only the class "
                                    "token reaches the score)" if layout.kind == "tokens" and np.any(grad)
                                    else "its gradient is zero")
        else:
            found.verified.append(name)
    stem = _stem_only(found, result)
    if stem:
        found.reason = stem
        found.verified = []
    found.default, found.default_reason = default_layer(found, result, output_channels, kinds or {})
    if not found.verified and not found.reason:
        found.reason = ("no internal layer has an established spatial layout (image map or tokens on the "
                        "patch grid) with a non-zero gradient" if requested else "no layer could be captured")
    return found


def _order(result: GradResult, names) -> list[str]:
    return [n for n in result.activations if n in names]  # insertion order = first completion


def _stem_only(found: LayerFindings, result: GradResult) -> str:
    """A reason when only the first layers (a patch embedding or stem) read as maps and the body after
    them, still per-sample features on the score's path, has no layout anyone can read."""
    order = _order(result, set(found.verified) | set(found.rejected))
    if not found.verified:
        return ""
    unread = [i for i, n in enumerate(order) if n in found.rejected and not _has_layout(found, n)
              and _has_extent(result.activations[n]) and result.layer_grads.get(n) is not None
              and np.any(result.layer_grads[n])]
    # Attention internals have no layout either, but between them the blocks' tokens do: only a body
    # entirely after the last readable layer leaves the stem alone.
    last = max(order.index(n) for n in found.verified)
    if len(unread) < UNREAD_BODY or unread[0] < last:
        return ""
    unread = [order[i] for i in unread]
    return (f"only the stem reads as a map ({', '.join(found.verified[:3])}); the {len(unread)} layers after it "
            f"(e.g. '{unread[0]}': {found.rejected[unread[0]]}) have no established layout, so a CAM would be "
            "input x gradient at patch resolution")


def _has_extent(act: np.ndarray) -> bool:
    """More than one feature vector per sample (tokens, maps, heads), not a pooled (B, C, 1, 1)."""
    return act.ndim >= 3 and act.size // (act.shape[0] * max(act.shape[1:])) > 1


def _has_layout(found: LayerFindings, name: str) -> bool:
    layout = found.layouts.get(name)
    return layout is not None and layout.spatial


def default_layer(found: LayerFindings, result: GradResult, output_channels: int | None,
                   kinds: dict[str, str]) -> tuple[str | None, str]:
    """CNNs: the deepest map before pooling, not a class map in the head. Transformers: the input of
    the last attention that still reaches the score (its norm), where the patch tokens carry gradient."""
    order = [n for n in _order(result, found.verified) if result.calls.get(n, 1) == 1]
    if not order:
        return None, ""
    layouts = found.layouts
    maps = [n for n in order if output_channels is None or layouts[n].channels != output_channels]
    if not maps:
        return order[-1], "the last layer with a layout (every one has the output's class count)"
    last = maps[-1]
    if layouts[last].kind != "tokens":
        grid = layouts[last].grid
        return last, (f"the deepest {layouts[last].kind} map ({grid[0]}x{grid[1]}) on the score's path, "
                      "before global pooling")
    norms = [n for n in maps if layouts[n].kind == "tokens" and "norm" in kinds.get(n, n).lower()]
    pick = norms[-1] if norms else last
    grid = layouts[pick].grid
    # With a class-token readout that is the last attention's input norm (after the final attention only
    # the class token reaches the score); with pooled tokens it is the last block's MLP norm.
    why = ("the last token normalisation whose patch tokens still reach the score"
           if norms else "the last token layer whose patch tokens get gradient")
    return pick, f"{why} ({layouts[pick].prefix} prefix token(s), {grid[0]}x{grid[1]} grid)"

"""How an internal activation maps onto the input grid, measured per layer from shapes, never assumed.

A layer's output is read as one of:

* ``NCHW`` or ``NHWC``: a 4-D image map (B, C, h, w) or (B, h, w, C);
* ``tokens``: a sequence (B, N, C) with N = k + h * w, k prefix tokens (class, distillation or
  register tokens) before a patch grid h x w;
* nothing spatial: attention heads, q/k/v, MLP states, position-bias tables, pooled vectors.

A reading is a *candidate* when its grid fits the input at one integer stride s on both axes
(|h - H/s| <= max(1, 0.15 H/s), and likewise for w, so padded and unpadded convolutions both fit). Shapes at one input
size can fit several readings, or fit by accident: an attention matrix (B, heads, 16, 16) looks like a
16 x 16 map at stride 2 of a 32 x 32 input. So the model is run a second time at a size larger by one
stride, and a reading is *established* only if its grid follows the input (same stride, same prefix,
same channels) and exactly one reading does. A tensor whose values do not change with the input is no
activation at all. Models that accept only one input size are measured at that size with other
values; a reading is then established only when it is the only candidate, and square 4-D readings
whose side equals a token count (attention matrices, B x heads x N x N) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .. import _image_ops
from ..errors import XaiReadyError

MAX_PREFIX = 8  # class + distillation + register tokens seen in practice: 1, 2, 5 (4 registers + class)
SPATIAL = ("NCHW", "NHWC", "tokens")


@dataclass(frozen=True)
class Layout:
    kind: str  # NCHW | NHWC | tokens | none
    grid: tuple[int, int] | None = None
    prefix: int = 0
    stride: int | None = None
    channels: int | None = None
    evidence: str = ""

    @property
    def spatial(self) -> bool:
        return self.kind in SPATIAL

    def to_dict(self) -> dict:
        return {"kind": self.kind, "grid": list(self.grid) if self.grid else None, "prefix": self.prefix,
                "stride": self.stride, "evidence": self.evidence}

    @staticmethod
    def from_dict(d: Mapping) -> Layout:
        return Layout(d["kind"], tuple(d["grid"]) if d.get("grid") else None, d.get("prefix", 0),
                      d.get("stride"), None, d.get("evidence", ""))

    def follows(self, other: Layout, scale: tuple[float, float]) -> bool:
        """``other`` (at an input ``scale`` times larger per axis) is this reading with its grid scaled."""
        if (self.kind, self.prefix, self.channels) != (other.kind, other.prefix, other.channels):
            return False
        return other.grid != self.grid and all(abs(b - a * f) <= 1.5 for a, b, f in zip(self.grid, other.grid, scale, strict=True))


@dataclass(frozen=True)
class Observation:
    """What one forward saw of a layer: its output shape and a fingerprint of its values."""

    shape: tuple[int, ...]
    fingerprint: float


def candidates(shape: tuple[int, ...], input_hw: tuple[int, int], batch: int) -> list[Layout]:
    """Every reading of ``shape`` whose grid fits the input size at one integer stride."""
    if not shape or shape[0] != batch:
        return []
    out = []
    if len(shape) == 4:
        for kind, hw, c in (("NCHW", shape[2:4], shape[1]), ("NHWC", shape[1:3], shape[3])):
            s = _stride(hw, input_hw)
            if s is not None:
                out.append(Layout(kind, tuple(hw), 0, s, c))
    elif len(shape) == 3:
        n, c = shape[1], shape[2]
        for k in range(min(MAX_PREFIX, n - 1) + 1):
            for hw in _factor_pairs(n - k):
                s = _stride(hw, input_hw, exact=True)
                if s is not None:
                    out.append(Layout("tokens", hw, k, s, c))
    return out


def measure(first: Mapping[str, Observation], input_a: tuple[int, ...],
            second: Mapping[str, Observation] | None, input_b: tuple[int, ...] | None,
            spatial_axes: tuple[int, int], native: str | None = None) -> dict[str, Layout]:
    """The layout of each layer from a pass at ``input_a`` and, when the model took it, one at ``input_b``."""
    hw_a = tuple(input_a[a] for a in spatial_axes)
    batch = input_a[0]
    resized = input_b is not None and tuple(input_b[a] for a in spatial_axes) != hw_a
    token_counts = set()
    result: dict[str, Layout] = {}
    for name, obs in first.items():
        cands = candidates(obs.shape, hw_a, batch)
        other = second.get(name) if second is not None else None
        if not obs.shape or obs.shape[0] != batch:
            result[name] = Layout("none", evidence=f"output {obs.shape} is not one row per sample")
            continue
        if other is not None and other.shape == obs.shape and other.fingerprint == obs.fingerprint:
            result[name] = Layout("none", evidence="its values do not change with the input")
            continue
        if resized and other is not None:
            hw_b = tuple(input_b[a] for a in spatial_axes)
            scale = (hw_b[0] / hw_a[0], hw_b[1] / hw_a[1])
            follow = candidates(other.shape, hw_b, batch)
            kept = [c for c in cands if any(c.follows(f, scale) for f in follow)]
            result[name] = _decide(kept, cands, f"follows the input from {hw_a} to {hw_b}")
        else:
            result[name] = _decide(cands, cands, f"the only reading at input {hw_a} (the model takes one size)")
            maps = [c for c in cands if c.kind == native]
            if result[name].evidence.startswith("ambiguous") and len(maps) == 1 and all(
                    c.kind in ("NCHW", "NHWC") and c.grid == maps[0].grid for c in cands):
                # C equals h and w at one size: the framework's own map layout decides, as it does for
                # every layer it builds (Keras layers are channels-last).
                result[name] = _decide(maps, maps, f"square at input {hw_a}, read in the framework's {native}")
    _resolve_by_shared_grid(first, result, hw_a, batch)
    for lay in result.values():  # after the shared grids settled the ambiguous token readings
        if lay.kind == "tokens":
            token_counts |= {lay.grid[0] * lay.grid[1], lay.grid[0] * lay.grid[1] + lay.prefix}
    if not resized:  # one size only: a square 4-D "map" whose side is a token count is attention
        for name, lay in result.items():
            h, w = lay.grid or (0, 0)
            if lay.kind in ("NCHW", "NHWC") and h == w and h in token_counts:  # (B, heads, N, N)
                result[name] = Layout("none", evidence=f"{h}x{w} is tokens x tokens: an attention matrix, "
                                                       "not an image map")
    return result


def _resolve_by_shared_grid(first, result, hw, batch) -> None:
    """An ambiguous reading is settled when exactly one of its candidates has the grid another layer
    established (a patch embedding's map fixes the token grid of every block after it)."""
    grids = {(lay.grid, lay.stride): name for name, lay in result.items() if lay.spatial}
    for name, lay in list(result.items()):
        if not lay.evidence.startswith("ambiguous"):
            continue
        shared = [c for c in candidates(first[name].shape, hw, batch) if (c.grid, c.stride) in grids]
        if len(shared) == 1:
            c = shared[0]
            result[name] = _decide([c], [c], f"the {c.grid[0]}x{c.grid[1]} grid of '{grids[(c.grid, c.stride)]}'")


def _decide(kept: list[Layout], cands: list[Layout], why: str) -> Layout:
    if len(kept) == 1:
        c = kept[0]
        grid = f"{c.grid[0]}x{c.grid[1]}"
        what = f"{c.prefix} prefix token(s) + a {grid} grid" if c.kind == "tokens" else f"a {grid} map"
        return Layout(c.kind, c.grid, c.prefix, c.stride, c.channels, f"{what} at stride {c.stride}; {why}")
    if not cands:
        return Layout("none", evidence="no axis fits the input grid")
    if not kept:
        return Layout("none", evidence="its shape fits the input at one size but does not follow it")
    readings = ", ".join(f"{c.kind} {c.grid[0]}x{c.grid[1]}+{c.prefix}" for c in kept[:4])
    return Layout("none", evidence=f"ambiguous: {readings}")


def to_maps(values: np.ndarray, layout: Layout) -> np.ndarray:
    """A layer's activation or gradient as (B, C, h, w): prefix tokens dropped, the grid restored."""
    if layout.kind == "NCHW":
        return values
    if layout.kind == "NHWC":
        return np.moveaxis(values, -1, 1)
    if layout.kind == "tokens":
        h, w = layout.grid
        grid = values[:, layout.prefix:layout.prefix + h * w, :]
        return np.moveaxis(grid.reshape(values.shape[0], h, w, values.shape[-1]), -1, 1)
    raise ValueError(f"layout {layout.kind} has no spatial reading")


def fingerprint(values: np.ndarray) -> float:
    """A cheap summary that changes when the values do (for 'does it depend on the input')."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(np.round(flat[:: max(1, flat.size // 4096)].sum() + flat.std(), 10))


def _stride(hw, input_hw, exact: bool = False) -> int | None:
    """The integer stride at which an h x w grid covers the input: within one cell for maps (padding),
    floor or ceil of H/s for token grids (a patch embedding)."""
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1 or h * w < 2:
        return None
    big_h, big_w = input_hw
    for s in sorted({max(1, round(big_h / h)), max(1, round(big_w / w))}):
        if exact:
            if s >= 2 and h in (big_h // s, -(-big_h // s)) and w in (big_w // s, -(-big_w // s)):
                return s
        elif abs(h - big_h / s) <= max(1.0, 0.15 * big_h / s) and abs(w - big_w / s) <= max(1.0, 0.15 * big_w / s):
            return s  # unpadded convolutions lose a border of a few cells
    return None


def _factor_pairs(n: int) -> list[tuple[int, int]]:
    return [(h, n // h) for h in range(1, n + 1) if n % h == 0]


def measure_layouts(handle, x: np.ndarray, target, result, names) -> dict[str, Layout]:
    """Layouts of ``names`` from the pass that produced ``result`` plus one more: at an input larger
    by the coarsest stride seen (edge-padded), or, when the model takes one size only, at that size
    with other values."""
    axes = _image_ops.spatial_axes(x, handle.layout)
    if x.ndim != 4:
        return {n: Layout("none", evidence="the input is not an image batch") for n in names}
    first = {n: Observation(tuple(a.shape), fingerprint(a)) for n, a in result.activations.items() if n in names}
    hw = tuple(x.shape[a] for a in axes)
    strides = [c.stride for o in first.values() for c in candidates(o.shape, hw, x.shape[0])]
    step = min(1 << (max(strides or [1]) - 1).bit_length(), max(hw))  # every grid grows by a cell or more
    pad = [(0, 0)] * x.ndim
    for a in axes:
        pad[a] = (0, step)
    observe = getattr(handle.backend, "observe", None)
    if observe is None:  # a backend without it captures through a pass of the (resolved) target: same size
        def observe(inputs, layers):
            return handle.vjp(inputs, target, layers=layers, input_grad=False).activations
    other = (x + 0.1 * (np.abs(x).mean() + 1e-3) * np.random.default_rng(0).standard_normal(x.shape)).astype(x.dtype)
    tries = ([np.pad(x, pad, mode="edge")] if hasattr(handle.backend, "observe") else []) + [other]
    for inputs in tries:  # a larger input first; a model that takes one size gets other values
        try:
            seen = observe(inputs, list(first))
        except (XaiReadyError, RuntimeError, ValueError, TypeError):  # e.g. a graph with a fixed input size
            continue
        second = {n: Observation(tuple(a.shape), fingerprint(a)) for n, a in seen.items()}
        return measure(first, x.shape, second, inputs.shape, axes, handle.layout)
    return measure(first, x.shape, None, None, axes, handle.layout)

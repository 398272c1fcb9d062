"""Converters for ONNX Resize (versions 10, 11, 13, 18, 19) and Upsample (7, 9), exact to the spec.

onnx2torch maps Resize onto ``F.interpolate``, which has no equivalent for several of ONNX's modes
(``asymmetric`` linear, ``ceil`` / ``round_prefer_ceil`` nearest, sizes that are not a whole multiple),
and has no Upsample converter at all. Here each resized axis is interpolated on its own, from the
source coordinate ONNX defines for every output index; linear and cubic interpolation are separable,
so this is exactly the multi-axis interpolation ONNX Runtime computes, and it is differentiable.

Before opset 11 (Resize-10, Upsample) ONNX Runtime uses the ``asymmetric`` transform and its "simple"
nearest rounding (truncate when enlarging, ceil when shrinking); later versions read the attributes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def _text(value, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


class OnnxResize(nn.Module):
    """ONNX Resize on any number of axes. ``forward(x, roi, scales, sizes)`` as ONNX orders them
    (Resize-10 and Upsample-9 pass ``scales`` second; ``fixed_scales`` holds Upsample-7's attribute)."""

    def __init__(self, mode: str, transform: str, nearest: str, cubic_a: float, exclude_outside: bool,
                 *, scales_second: bool = False, fixed_scales: list[float] | None = None):
        super().__init__()
        if mode not in ("nearest", "linear", "cubic"):
            raise NotImplementedError(f"Resize with mode '{mode}'")
        if transform not in _TRANSFORMS:
            raise NotImplementedError(f"Resize with coordinate_transformation_mode '{transform}'")
        if nearest not in _NEAREST:
            raise NotImplementedError(f"Resize with nearest_mode '{nearest}'")
        self.mode, self.transform, self.nearest = mode, transform, nearest
        self.cubic_a, self.exclude_outside = float(cubic_a), bool(exclude_outside)
        self.scales_second, self.fixed_scales = scales_second, fixed_scales

    def forward(self, x, roi=None, scales=None, sizes=None):
        if self.scales_second:  # Resize-10 / Upsample-9: (X, scales)
            scales, roi = roi, None
        if self.fixed_scales is not None:
            scales = torch.tensor(self.fixed_scales)
        if sizes is not None and sizes.numel():
            out_sizes = [int(s) for s in sizes.tolist()]
            factors = [o / i for o, i in zip(out_sizes, x.shape, strict=True)]
        elif scales is not None and scales.numel():
            factors = [float(s) for s in scales.tolist()]
            out_sizes = [int(math.floor(i * s)) for i, s in zip(x.shape, factors, strict=True)]
        else:
            raise RuntimeError("Resize needs scales or sizes")
        for axis, (length, out, scale) in enumerate(zip(x.shape, out_sizes, factors, strict=True)):
            if out != length or scale != 1.0:
                x = self._axis(x, axis, int(length), out, scale)
        return x

    def _source(self, out: int, length: int, scale: float, device) -> torch.Tensor:
        """The source coordinate (float64) of each output index along one axis."""
        i = torch.arange(out, dtype=torch.float64, device=device)
        t = self.transform
        if t == "asymmetric":
            return i / scale
        if t == "align_corners":
            return i * 0.0 if out == 1 else i * (length - 1) / (out - 1)
        if t == "pytorch_half_pixel":
            return (i + 0.5) / scale - 0.5 if out > 1 else i * 0.0
        if t == "tf_half_pixel_for_nn":
            return (i + 0.5) / scale
        if t == "half_pixel_symmetric":
            adjustment = out / (scale * length)
            offset = length / 2 * (1 - adjustment)
            return offset + (i + 0.5) / scale - 0.5
        return (i + 0.5) / scale - 0.5  # half_pixel

    def _axis(self, x: torch.Tensor, axis: int, length: int, out: int, scale: float) -> torch.Tensor:
        src = self._source(out, length, scale, x.device)
        if self.mode == "nearest":
            index = self._round(src, scale).clamp(0, length - 1)
            return torch.index_select(x, axis, index)
        if self.mode == "linear":
            src = src.clamp(0, length - 1)
            low = torch.floor(src).to(torch.int64)
            high = (low + 1).clamp(max=length - 1)
            taps, weights = [low, high], [1 - (src - low), src - low]
        else:
            taps, weights = self._cubic(src, length)
        shape = [1] * x.dim()
        shape[axis] = out
        result = None
        for tap, weight in zip(taps, weights, strict=True):
            term = torch.index_select(x, axis, tap) * weight.to(x.dtype).reshape(shape)
            result = term if result is None else result + term
        return result

    def _round(self, src: torch.Tensor, scale: float) -> torch.Tensor:
        mode = self.nearest
        if mode == "simple":
            value = torch.ceil(src) if scale < 1 else torch.floor(src)
        elif mode == "floor":
            value = torch.floor(src)
        elif mode == "ceil":
            value = torch.ceil(src)
        else:  # round half to the preferred side; the rest to the nearest
            half = (src - torch.floor(src)) == 0.5
            value = torch.where(half, torch.floor(src) if mode == "round_prefer_floor" else torch.ceil(src),
                                torch.round(src))
        return value.to(torch.int64)

    def _cubic(self, src: torch.Tensor, length: int):
        a = self.cubic_a
        base = torch.floor(src)
        t = src - base
        weights = []
        for k in (-1, 0, 1, 2):
            d = torch.abs(t - k)
            near = ((a + 2) * d - (a + 3)) * d * d + 1
            far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
            weights.append(torch.where(d <= 1, near, far))
        raw = [base.to(torch.int64) + k for k in (-1, 0, 1, 2)]
        if self.exclude_outside:  # taps outside the input weigh nothing; the rest are renormalised
            weights = [torch.where((r >= 0) & (r < length), w, torch.zeros_like(w)) for r, w in zip(raw, weights,
                                                                                                   strict=True)]
            total = sum(weights)
            weights = [w / total for w in weights]
        return [r.clamp(0, length - 1) for r in raw], weights


def convert_resize(node, graph, version: int):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    attrs = node.attributes
    if version >= 18:
        if attrs.get("antialias", 0) and _text(attrs.get("mode"), "nearest") != "nearest":
            raise NotImplementedError(f"Resize-{version} with antialias=1")
        if attrs.get("axes") is not None:
            raise NotImplementedError(f"Resize-{version} with an 'axes' attribute")
        if _text(attrs.get("keep_aspect_ratio_policy"), "stretch") != "stretch":
            raise NotImplementedError(f"Resize-{version} with keep_aspect_ratio_policy other than 'stretch'")
    if version >= 11:
        module = OnnxResize(_text(attrs.get("mode"), "nearest"),
                            _text(attrs.get("coordinate_transformation_mode"), "half_pixel"),
                            _text(attrs.get("nearest_mode"), "round_prefer_floor"),
                            attrs.get("cubic_coeff_a", -0.75), attrs.get("exclude_outside", 0))
    else:
        module = OnnxResize(_text(attrs.get("mode"), "nearest"), "asymmetric", "simple", -0.75, False,
                            scales_second=True)
    mapping = OnnxMapping(inputs=tuple(node.input_values), outputs=tuple(node.output_values))
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


def convert_upsample(node, graph):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    attrs = node.attributes
    mode = _text(attrs.get("mode"), "nearest")
    mode = "linear" if mode == "bilinear" else mode
    fixed = [float(s) for s in attrs["scales"]] if "scales" in attrs else None
    module = OnnxResize(mode, "asymmetric", "simple", -0.75, False, scales_second=fixed is None, fixed_scales=fixed)
    inputs = tuple(node.input_values) if fixed is None else (node.input_values[0],)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=tuple(node.output_values)))


def _resize_at(version: int):
    return lambda node, graph: convert_resize(node, graph, version)


# (op, version, converter); these replace onnx2torch's own Resize converters
REGISTERED = [("Resize", v, _resize_at(v)) for v in (10, 11, 13, 18, 19)] + \
             [("Upsample", v, convert_upsample) for v in (7, 9)]

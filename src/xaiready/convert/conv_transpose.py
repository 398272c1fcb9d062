"""ConvTranspose with ``auto_pad`` or ``output_shape``, which onnx2torch refuses or ignores.

The pads then follow from the spec's equations (the total padding the requested output size implies,
split as ``auto_pad`` says); the transposed convolution runs unpadded and the result is cropped.
Nodes with neither attribute keep onnx2torch's converter.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvTransposeCropped(nn.Module):
    def __init__(self, attrs: dict):
        super().__init__()
        auto = attrs.get("auto_pad", "NOTSET")
        self.auto_pad = auto.decode() if isinstance(auto, bytes) else auto
        self.strides, self.dilations = attrs.get("strides"), attrs.get("dilations")
        self.output_padding, self.output_shape = attrs.get("output_padding"), attrs.get("output_shape")
        self.pads, self.group = attrs.get("pads"), int(attrs.get("group", 1))

    def forward(self, x, w, b=None):
        spatial = x.dim() - 2
        kernel = w.shape[2:]
        strides = list(self.strides or [1] * spatial)
        dilations = list(self.dilations or [1] * spatial)
        extra = list(self.output_padding or [0] * spatial)
        fn = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
              3: torch.nn.functional.conv_transpose3d}[spatial]
        y = fn(x, w, b, stride=strides, output_padding=extra, groups=self.group, dilation=dilations)
        begin, end = self._pads(x.shape[2:], kernel, strides, dilations, extra, spatial)
        index = [slice(None), slice(None)] + [slice(p, y.shape[2 + i] - q) for i, (p, q) in
                                              enumerate(zip(begin, end, strict=True))]
        return y[tuple(index)]

    def _pads(self, size, kernel, strides, dilations, extra, spatial):
        if self.output_shape is None and self.auto_pad in ("NOTSET", "VALID"):
            pads = list(self.pads or [0] * 2 * spatial) if self.auto_pad == "NOTSET" else [0] * 2 * spatial
            return pads[:spatial], pads[spatial:]
        target = list(self.output_shape)[-spatial:] if self.output_shape is not None else \
            [int(s) * st for s, st in zip(size, strides, strict=True)]
        begin, end = [], []
        for i in range(spatial):
            total = strides[i] * (int(size[i]) - 1) + extra[i] + (int(kernel[i]) - 1) * dilations[i] + 1 - target[i]
            if total < 0:
                raise RuntimeError("ConvTranspose output_shape larger than the full transposed convolution")
            half = total // 2
            first, last = (half, total - half) if self.auto_pad == "SAME_UPPER" else (total - half, half)
            begin.append(first)
            end.append(last)
        return begin, end


def _converter(version: int, original):
    def convert(node, graph):
        attrs = node.attributes
        auto = attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "NOTSET" and attrs.get("output_shape") is None:
            return original(node, graph)
        from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

        return OperationConverterResult(torch_module=ConvTransposeCropped(dict(attrs)),
                                        onnx_mapping=onnx_mapping_from_node(node))
    return convert


def install(registry) -> list[str]:
    """Wrap onnx2torch's ConvTranspose converters; the 'Op-version' keys wrapped."""
    done = []
    for version in (1, 11):
        key = registry.OperationDescription("", "ConvTranspose", version)
        original = registry._CONVERTER_REGISTRY.get(key)
        if original is not None:
            registry._CONVERTER_REGISTRY[key] = _converter(version, original)
            done.append(f"ConvTranspose-{version} (auto_pad, output_shape)")
    return done

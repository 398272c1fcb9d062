"""LayerNormalization (17) from the input's own shape at run time.

onnx2torch derives ``normalized_shape`` from shape inference, which for some exports (the legacy
exporter's Swin) leaves the axes unknown and yields an empty shape; here the normalised axes are
``x.shape[axis:]`` on every call, and scale and bias broadcast over them as ONNX defines.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNormalization(nn.Module):
    def __init__(self, axis: int, epsilon: float):
        super().__init__()
        self.axis, self.epsilon = axis, epsilon

    def forward(self, x, scale, bias=None):
        axis = self.axis % x.dim()
        y = torch.nn.functional.layer_norm(x, x.shape[axis:], eps=self.epsilon) * scale
        return y if bias is None else y + bias


def convert_layer_norm(node, graph):
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    if len(node.output_values) > 1 and any(node.output_values[1:]):
        raise NotImplementedError("LayerNormalization with its Mean / InvStdDev outputs")
    module = LayerNormalization(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
        inputs=tuple(node.input_values), outputs=(node.output_values[0],)))


REGISTERED = [("LayerNormalization", 17, convert_layer_norm)]

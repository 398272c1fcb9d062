"""GlobalAveragePool / GlobalMaxPool over every spatial axis of the input as it arrives.

onnx2torch's GlobalAveragePool trusts the shape inference gave it, which for some exports (the legacy
exporter's Swin at opset 13) is wrong, and it has no GlobalMaxPool at all.
"""

from __future__ import annotations

from torch import nn


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        dims = tuple(range(2, x.dim()))
        if self.kind == "max":
            return x.amax(dim=dims, keepdim=True)
        return x.mean(dim=dims, keepdim=True)


def _converter(kind: str):
    def convert(node, graph):
        from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

        return OperationConverterResult(torch_module=GlobalPool(kind), onnx_mapping=onnx_mapping_from_node(node))
    return convert


REGISTERED = [("GlobalAveragePool", 1, _converter("average")), ("GlobalAveragePool", 22, _converter("average")),
              ("GlobalMaxPool", 1, _converter("max")), ("GlobalMaxPool", 22, _converter("max"))]

"""Converters for DepthToSpace (both modes; onnx2torch has CRD only) and SpaceToDepth (it has none)."""

from __future__ import annotations

from torch import nn


class DepthToSpace(nn.Module):
    def __init__(self, block: int, mode: str):
        super().__init__()
        self.block, self.mode = block, mode

    def forward(self, x):
        b, c, h, w = x.shape
        k = self.block
        if self.mode == "DCR":  # depth is (block, block, channel)
            x = x.reshape(b, k, k, c // (k * k), h, w).permute(0, 3, 4, 1, 5, 2)
        else:  # CRD: depth is (channel, block, block)
            x = x.reshape(b, c // (k * k), k, k, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (k * k), h * k, w * k)


class SpaceToDepth(nn.Module):
    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def forward(self, x):
        b, c, h, w = x.shape
        k = self.block
        x = x.reshape(b, c, h // k, k, w // k, k).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(b, c * k * k, h // k, w // k)


def convert_depth_to_space(node, graph):
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    mode = node.attributes.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f"DepthToSpace with mode '{mode}'")
    return OperationConverterResult(torch_module=DepthToSpace(int(node.attributes["blocksize"]), mode),
                                    onnx_mapping=onnx_mapping_from_node(node))


def convert_space_to_depth(node, graph):
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    return OperationConverterResult(torch_module=SpaceToDepth(int(node.attributes["blocksize"])),
                                    onnx_mapping=onnx_mapping_from_node(node))


# (op, version, converter); DepthToSpace replaces onnx2torch's CRD-only one
REGISTERED = [("DepthToSpace", v, convert_depth_to_space) for v in (1, 11, 13)] + \
             [("SpaceToDepth", v, convert_space_to_depth) for v in (1, 13)]

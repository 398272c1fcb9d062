"""Converters that onnx2torch 1.5 lacks, added to its registry once.

The default (dynamo) exporter writes opset 18+, where onnx2torch stops: most of those op versions only
add features the exporters do not use (Reshape 19 adds types, AveragePool 19 dilations, Resize 19
antialiasing). For those we reuse the previous version's converter after checking that the node does
not use the new feature; a node that does is refused with that reason. The few ops whose inputs
changed (Reduce* 18 take ``axes`` as an input, Split 18 ``num_outputs``) or that are new (Gelu 20) get a
small converter here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# (op, version onnx2torch lacks, version whose converter applies, attribute -> the value it must have)
_SAME_AS_BEFORE: list[tuple[str, int, int, dict]] = [
    ("AveragePool", 19, 11, {"dilations": None}),
    ("Pad", 18, 13, {}),
    ("Pad", 19, 13, {}),
    ("Pad", 21, 13, {}),
    ("Squeeze", 21, 13, {}),
    ("Unsqueeze", 21, 13, {}),
    ("Transpose", 21, 13, {}),
    ("Flatten", 21, 13, {}),
    ("Identity", 19, 16, {}),
    ("Identity", 21, 16, {}),
    ("Cast", 19, 13, {"saturate": 1}),
    ("Constant", 19, 13, {}),
    ("Constant", 21, 13, {}),
    ("Shape", 19, 15, {}),
    ("Shape", 21, 15, {}),
    ("Size", 19, 13, {}),
    ("ConstantOfShape", 20, 9, {}),
    ("IsNaN", 20, 13, {}),  # 20 adds float8 types
    ("IsInf", 20, 10, {}),
    ("ConstantOfShape", 21, 9, {}),
]
_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceSumSquare")

_installed = False
ADDED: list[str] = []  # "Op-version" of every converter added here, for the conversion note
REPLACED: dict = {}  # onnx2torch's own converters that ours replace, by registry key


def install() -> None:
    """Register the gap-filling converters (idempotent)."""
    global _installed
    if _installed:
        return
    from onnx2torch.node_converters import registry

    def add(op: str, version: int, fn: Callable) -> None:
        key = registry.OperationDescription(domain="", operation_type=op, version=version)
        if key not in registry._CONVERTER_REGISTRY:  # a newer onnx2torch may have its own
            registry.add_converter(operation_type=op, version=version)(fn)
            ADDED.append(f"{op}-{version}")

    for op, version, before, required in _SAME_AS_BEFORE:
        try:
            registry.get_converter(operation_type=op, version=before)
        except NotImplementedError:
            continue
        add(op, version, _delegate(registry, op, version, before, required))
    for op in _REDUCE_18:
        add(op, 18, _reduce_axes_input)
    add("Gelu", 20, _gelu)
    from . import conv_transpose, normalization, pooling, rearrange, recurrent, resize

    for op, version in recurrent.REGISTERED:
        add(op, version, recurrent.convert)
    replacing = resize.REGISTERED + rearrange.REGISTERED + normalization.REGISTERED + pooling.REGISTERED
    for op, version, fn in replacing:  # exact to the spec: these replace onnx2torch's own
        key = registry.OperationDescription("", op, version)
        if key in registry._CONVERTER_REGISTRY:
            REPLACED[key] = registry._CONVERTER_REGISTRY[key]
        registry._CONVERTER_REGISTRY[key] = fn
        ADDED.append(f"{op}-{version}")
    ADDED.extend(conv_transpose.install(registry))
    add("Split", 18, _split_18)
    # Reshape: the dynamo exporter sets allowzero=1, which onnx2torch refuses at every version.
    original = registry.get_converter(operation_type="Reshape", version=14)
    registry._CONVERTER_REGISTRY[registry.OperationDescription("", "Reshape", 14)] = _reshape(original)
    ADDED.append("Reshape-14 (allowzero)")
    for version in (19, 21):
        add("Reshape", version, _reshape(original))
    _installed = True


def _delegate(registry, op: str, version: int, before: int, required: dict) -> Callable:
    def convert(node, graph):
        for attr, value in required.items():
            got = node.attributes.get(attr)
            if got is not None and got != value and not (attr == "dilations" and set(got) == {1}):
                raise NotImplementedError(f"{op}-{version} with {attr}={got!r} is not supported")
        if op == "Pad" and len([v for v in node.input_values if v]) > 3:
            raise NotImplementedError(f"{op}-{version} with an 'axes' input is not supported")
        if op == "Pad" and node.attributes.get("mode", "constant") == "wrap":
            raise NotImplementedError(f"{op}-{version} with mode 'wrap' is not supported")
        return registry.get_converter(operation_type=op, version=before)(node, graph)
    return convert


def _reduce_axes_input(node, graph):
    """Reduce* 18: ``axes`` moved from an attribute to an optional (constant) input."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    keepdims = node.attributes.get("keepdims", 1)
    axes = None
    if len(node.input_values) > 1 and node.input_values[1]:
        try:
            value = get_const_value(node.input_values[1], graph)
        except KeyError:
            raise NotImplementedError(f"{node.operation_type}-18 with computed (non-constant) axes") from None
        axes = [int(a) for a in (value.tolist() if isinstance(value, torch.Tensor) else value)]
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        return OperationConverterResult(torch_module=_Identity(), onnx_mapping=mapping)
    module = OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes, keepdims=keepdims)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


def _reshape(original: Callable) -> Callable:
    def convert(node, graph):
        if not node.attributes.get("allowzero", 0):
            return original(node, graph)
        from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

        return OperationConverterResult(torch_module=_ReshapeAllowZero(), onnx_mapping=onnx_mapping_from_node(node))
    return convert


class _ReshapeAllowZero(nn.Module):
    """Reshape with allowzero=1: a 0 in ``shape`` is a literal empty axis, exactly torch's meaning."""

    def forward(self, x, shape):
        return torch.reshape(x, [int(d) for d in shape.tolist()])


def _split_18(node, graph):
    """Split 18: sizes from the ``split`` input, or ``num_outputs`` parts of ceil(length / n) each
    (the last one smaller when the axis does not divide evenly)."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    axis = node.attributes.get("axis", 0)
    sizes = None
    if len(node.input_values) > 1 and node.input_values[1]:
        try:
            value = get_const_value(node.input_values[1], graph)
        except KeyError:
            raise NotImplementedError("Split-18 with computed (non-constant) split sizes") from None
        sizes = [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    return OperationConverterResult(torch_module=_Split(axis, len(node.output_values), sizes),
                                    onnx_mapping=mapping)


class _Split(nn.Module):
    def __init__(self, axis: int, parts: int, sizes: list[int] | None):
        super().__init__()
        self.axis, self.parts, self.sizes = axis, parts, sizes

    def forward(self, x):
        size = self.sizes or -(-x.shape[self.axis] // self.parts)
        return torch.split(x, size, dim=self.axis)


def _gelu(node, graph):
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return OperationConverterResult(torch_module=nn.GELU(approximate=approximate),
                                    onnx_mapping=onnx_mapping_from_node(node))


class _Identity(nn.Module):
    def forward(self, x):
        return x

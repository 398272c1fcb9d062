"""Graph rewrites that make exported ONNX graphs convertible, each semantics-preserving.

The legacy exporter deduplicates shared weights through ``Identity`` nodes whose input is an
initializer; onnx2torch's Conv/Gemm converters need the weight itself as an initializer, so those
Identities are folded (consumers read the initializer directly). Very old opsets are lifted with the
onnx version converter to one onnx2torch covers well.
"""

from __future__ import annotations

MIN_OPSET = 11  # below this, upgrade with onnx.version_converter first
UPGRADE_TO = 13


def prepare(proto) -> tuple[object, list[str]]:
    """A rewritten copy of ``proto`` and one note per rewrite that changed something."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    notes = []
    folded = fold_initializer_identities(model.graph)
    if folded:
        notes.append(f"folded {folded} Identity node(s) that alias weights")
    version = default_opset(model)
    if version is not None and version < MIN_OPSET:
        from onnx import version_converter

        model = version_converter.convert_version(model, UPGRADE_TO)
        notes.append(f"upgraded opset {version} -> {UPGRADE_TO} with onnx.version_converter")
    return model, notes


def default_opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


def fold_initializer_identities(graph) -> int:
    """Remove ``Identity(initializer)`` nodes by renaming their consumers' inputs; returns how many."""
    initializers = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    rename = {}
    keep = []
    for node in graph.node:
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1
                and node.input[0] in initializers and node.output[0] not in outputs):
            rename[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not rename:
        return 0
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(rename)

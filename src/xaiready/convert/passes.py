"""Graph rewrites that make exported ONNX graphs convertible, each semantics-preserving.

``prepare`` brings a copy of the graph into canonical form (``canonical``: Constant nodes and
Identity-aliased weights become initializers, constant subgraphs are folded), lifts very old opsets
with the onnx version converter to one onnx2torch covers well, and runs onnx shape inference last,
on the graph that is converted. Every canonical pass that ran is recorded with its count of changes.
"""

from __future__ import annotations

from .canonical import PassRecord, canonicalize, infer_shapes

MIN_OPSET = 11  # below this, upgrade with onnx.version_converter first
UPGRADE_TO = 13


def prepare(proto, unsupported=None) -> tuple[object, list[str], list[PassRecord]]:
    """A rewritten copy of ``proto``, one note per rewrite beyond the canonical passes, and the
    canonical passes that ran (in order, with what each changed).

    ``unsupported(model)`` lists the ops no converter takes: an old opset is upgraded only when it
    names some, since onnx's adapters are not always exact (Resize 10 -> 11 drops the ``asymmetric``
    coordinate transform that Resize-10 implies)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    notes = []
    records = canonicalize(model)
    version = default_opset(model)
    if version is not None and version < MIN_OPSET and (unsupported is None or unsupported(model)):
        from onnx import version_converter

        model = version_converter.convert_version(model, UPGRADE_TO)
        notes.append(f"upgraded opset {version} -> {UPGRADE_TO} with onnx.version_converter")
    model, record = infer_shapes(model)
    records.append(record)
    return model, notes, records


def default_opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


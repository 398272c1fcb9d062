"""ONNX graph -> differentiable PyTorch module (torch.fx GraphModule), or the reason why not.

onnx2torch does the conversion; ``passes`` and ``gapfill`` fill the gaps it has for today's exports.
Every op is checked against the converter registry first, so an unsupported op is named in the
reason instead of surfacing as a stack trace from deep inside the converter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import first_line

DOWNGRADE_TO = 17  # the newest opset onnx2torch 1.5 covers broadly


class ConversionFailed(Exception):
    """The graph could not be converted; ``str(exc)`` is the one-line reason, ``passes`` the canonical
    passes that ran before (``canonical.PassRecord``)."""

    def __init__(self, reason: str, passes: list | None = None):
        super().__init__(reason)
        self.passes = passes or []


@dataclass
class Converted:
    module: object  # torch.fx.GraphModule, in eval mode
    notes: list[str] = field(default_factory=list)
    gap_filled: list[str] = field(default_factory=list)  # "Op-version" converted by xaiready's converters
    passes: list = field(default_factory=list)  # canonical.PassRecord of every canonical pass that ran
    graph: object = None  # the prepared ModelProto that was converted (to localise a divergence)


def unsupported_ops(model) -> list[str]:
    """``domain::Op-version`` of every node no registered converter handles, in graph order."""
    from onnx import defs
    from onnx2torch.node_converters.registry import get_converter

    versions = {("" if e.domain == "ai.onnx" else e.domain): e.version for e in model.opset_import}
    missing: dict[str, None] = {}
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        label = f"{domain + '::' if domain else ''}{node.op_type}"
        if domain not in versions:
            missing[f"{label} (domain '{domain}' is not imported)"] = None
            continue
        try:
            get_converter(operation_type=node.op_type, version=versions[domain], domain=domain)
        except NotImplementedError:
            try:
                since = defs.get_schema(node.op_type, max_inclusive_version=versions[domain], domain=domain).since_version
                missing[f"{label}-{since}"] = None
            except defs.SchemaError:
                missing[f"{label} (custom op, no ONNX schema)"] = None
    return list(missing)


# Integer-quantized arithmetic: piecewise constant in the input (rounding), so it has no useful gradient
# and is not converted; the graph stays on ONNX Runtime, where black-box methods still run.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger",
                 "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                 "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                 "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere", "QGemm", "QAttention",
                 "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QOrderedMatMul",
                 "DequantizeBFP", "QuantizeBFP", "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized"}


def describe_unsupported(missing: list[str]) -> str:
    """The reason for a graph with ops no converter takes: which are integer-quantized, which belong to a
    custom domain, which are standard ops without a converter; each list names the ops."""
    def op_name(label: str) -> str:
        return label.split("::")[-1].split(" ")[0].rsplit("-", 1)[0]

    def listed(labels: list[str]) -> str:
        return ", ".join(labels[:6]) + (f" and {len(labels) - 6} more" if len(labels) > 6 else "")

    quantized = [m for m in missing if op_name(m) in QUANTIZED_OPS]
    custom = [m for m in missing if m not in quantized and "::" in m]
    standard = [m for m in missing if m not in quantized and m not in custom]
    parts = []
    if quantized:
        parts.append(f"integer-quantized ops {listed(quantized)} are not convertible (rounding has no gradient)")
    if custom:
        parts.append(f"custom-domain ops {listed(custom)} are not convertible (no ONNX definition to follow)")
    if standard:
        parts.append(f"no converter for {listed(standard)}")
    return "; ".join(parts)


def to_torch(proto) -> Converted:
    """Convert a ModelProto (external data loaded). Raises ConversionFailed with the reason."""
    import warnings

    import onnx2torch

    from . import gapfill
    from .passes import prepare

    gapfill.install()
    model, notes, passes = prepare(proto, unsupported_ops)
    missing = unsupported_ops(model)
    if missing:
        model, missing = _try_downgrade(model, missing, notes)
    if missing:
        raise ConversionFailed(describe_unsupported(missing), passes)
    versions = {e.domain: e.version for e in model.opset_import}
    used = {f"{n.op_type}-{_since(n, versions)}" for n in model.graph.node}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch.convert(model, attach_onnx_mapping=True)  # names outputs, for ``divergence``
    except (NotImplementedError, KeyError, ValueError, RuntimeError, TypeError, AttributeError,
            IndexError) as exc:
        text = first_line(exc)
        raise ConversionFailed(f"onnx2torch failed: {type(exc).__name__}: {text}", passes) from exc
    module.eval()
    return Converted(module, notes, sorted(used & set(gapfill.ADDED)), passes, model)


def _try_downgrade(model, missing: list[str], notes: list[str]):
    """Second chance for ops no converter takes: onnx's version converter to opset 17, if it can."""
    from onnx import version_converter

    from .passes import default_opset

    version = default_opset(model)
    if version is None or version <= DOWNGRADE_TO:
        return model, missing
    try:
        lowered = version_converter.convert_version(model, DOWNGRADE_TO)
    except (RuntimeError, ValueError):  # no adapter for some op (e.g. Gelu has no version before 20)
        return model, missing
    still = unsupported_ops(lowered)
    if still:
        return model, missing
    notes.append(f"downgraded opset {version} -> {DOWNGRADE_TO} with onnx.version_converter")
    return lowered, []


def _since(node, versions: dict) -> int:
    from onnx import defs

    try:
        return defs.get_schema(node.op_type, max_inclusive_version=versions.get(node.domain, 1),
                               domain=node.domain).since_version
    except defs.SchemaError:
        return versions.get(node.domain, 1)

"""Loader for ONNX models: validated, confined to their folder, run by ONNX Runtime.

Order matters for safety: the graph is parsed without external data, every external-data location
is checked to stay inside the model's own folder (no absolute paths, no ``..``, no symlink or
hardlink that could lead elsewhere), and only then is any weight file or ONNX Runtime opened.
The default ``torch.onnx.export`` (dynamo) writes weights to ``model.onnx.data`` beside the graph,
which is exactly the case this allows.

With ``convert=True`` (the default) the model is also converted to a differentiable PyTorch model;
see ``xaiready.convert``. The converted handle keeps the ONNX Runtime handle as its ``reference``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._lazy import import_optional
from ..errors import CorruptError, UnsafePathError, UnsupportedError, first_line
from ..limits import check_built_input, check_declared_input
from ..model import ModelHandle, Source
from .sniff import Sniffed

FORMAT = "onnx"


def load(sniffed: Sniffed, *, arch=None, arch_kwargs=None, trust: bool = False, output=None,
         convert: bool = True, **_) -> ModelHandle:
    path = sniffed.path
    proto = read_graph(path)
    check_declared_inputs(proto, path, built=convert)
    locations = check_external_data(proto, path)
    validate(proto, path, has_external=bool(locations))
    exposed = expose_internal_output(proto, output)
    layout, evidence = detect_layout(proto)
    handle = open_session(path, output=output, layout=layout, proto=proto if exposed else None,
                          external=bool(locations))
    _note_layout(handle, layout, evidence)
    if exposed:
        handle.notes.append(f"--output '{output}' is an internal tensor of the graph, made an output for this run")
    logits = logits_tensor(proto, handle.backend.outputs[handle.backend.output_index].name)
    if logits is not None:
        handle.logits_hint = logits
        handle.notes.append(f"the explained output comes from a final {logits[1]}; its input '{logits[0]}' "
                            f"holds the logits (explain them with --output {logits[0]})")
    if arch is not None:
        handle.notes.append("--arch is ignored for ONNX files: the graph is the architecture")
    if not convert:
        handle.notes.append("conversion to PyTorch disabled (--no-convert)")
        from ..readiness.report import CheckResult

        handle.extra_checks.append(CheckResult("conversion", "skip", "disabled with --no-convert"))
        return handle
    if locations:
        load_external_data(proto, path)
    from ..convert import convert_onnx_handle

    return convert_onnx_handle(handle, proto)


def check_declared_inputs(proto, path: Path, *, built: bool = False) -> None:
    """Refuse (exit 5) an input spec whose one sample would exceed the limit, before any allocation.

    ``built``: the input will be built at load (conversion checks run on random inputs of the shape
    guessed from the graph, symbolic dims filled with defaults), so that whole shape must fit too."""
    onnx = import_optional("onnx")
    from ..backends.onnxruntime import example_shape, guess_layout

    initializers = {t.name for t in proto.graph.initializer}
    for value in proto.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            itemsize = 4
        check_declared_input(dims, itemsize, path=str(path), fmt=FORMAT)
        guessed = example_shape(dims, guess_layout(dims)) if built else None
        if guessed is not None:
            check_built_input(guessed, 4, what=f"the input '{value.name}' guessed from the graph",
                              path=str(path), fmt=FORMAT)


def read_graph(path: Path):
    """The ModelProto without external data; corrupt or truncated content raises CorruptError."""
    onnx = import_optional("onnx")
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise CorruptError(f"the ONNX protobuf cannot be parsed ({first_line(exc)})", path=str(path),
                           format=FORMAT, hint="the file is damaged or truncated; re-export or re-copy it") from exc
    if not proto.graph.node and not proto.graph.output:
        raise CorruptError("the ONNX file holds no graph", path=str(path), format=FORMAT,
                           hint="the file is damaged or truncated; re-export or re-copy it")
    return proto


def _tensors(graph):
    """Every TensorProto of a graph: initializers, Constant values, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external_location(tensor) -> str | None:
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    entries = {e.key: e.value for e in tensor.external_data}
    return entries.get("location", "")


def check_external_data(proto, path: Path) -> list[Path]:
    """The external-data files the graph names, each proven to lie inside the model's folder.

    Refused (UnsafePathError, exit 4): absolute locations, ``..`` components, symbolic links anywhere
    on the way (a link can point anywhere, and onnx's checker refuses them too), files with several
    hard links (another name, possibly outside, shares the data).
    Nothing is opened here; only ``lstat`` is used.
    """
    folder = path.absolute().parent  # where ONNX Runtime looks: beside the path as given
    found: dict[str, Path] = {}
    for tensor in _tensors(proto.graph):
        location = _external_location(tensor)
        if location is None or location in found:
            continue
        found[location] = _safe_location(location, folder, path, tensor.name)
    for location, file in found.items():
        if not file.is_file():
            raise CorruptError(f"external data file '{location}' is missing", path=str(path), format=FORMAT,
                               hint="copy the weights file (often model.onnx.data) next to the graph")
    return list(found.values())


def _safe_location(location: str, folder: Path, path: Path, tensor: str) -> Path:
    def refuse(why: str):
        return UnsafePathError(f"external data '{location}' of tensor '{tensor}' {why}", path=str(path),
                               format=FORMAT, hint="external data must be a plain file inside the model's folder")

    if not location or "\x00" in location:
        raise refuse("is empty or malformed")
    parts = location.replace("\\", "/").split("/")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise refuse("is an absolute path")
    if ".." in parts:
        raise refuse("climbs out of the model's folder with '..'")
    current = folder
    for part in [p for p in parts if p not in ("", ".")]:
        current = current / part
        if current.is_symlink():  # onnx's own checker refuses every symlink too
            raise refuse(f"goes through a symbolic link ('{part}')")
    if not current.resolve().is_relative_to(folder.resolve()):
        raise refuse("resolves outside the model's folder")
    if current.exists():
        st = current.lstat()
        if st.st_nlink > 1 and current.is_file():
            raise refuse(f"is a file with {st.st_nlink} hard links, which may be a file outside the folder")
    return current


def load_external_data(proto, path: Path) -> None:
    """Read the (already checked) external data into the proto, for conversion."""
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(proto, str(path.absolute().parent))
    except (OSError, ValueError) as exc:
        raise CorruptError(f"external data cannot be read ({first_line(exc)})", path=str(path), format=FORMAT,
                           hint="the weights file is damaged or truncated") from exc


def validate(proto, path: Path, *, has_external: bool) -> None:
    """``onnx.checker`` on the graph; any finding is a corrupt-model error."""
    import onnx

    try:
        # With external data the checker needs the model's folder, which only the path form gives it
        # (the locations were proven safe before this point).
        onnx.checker.check_model(str(path) if has_external else proto)
    except onnx.checker.ValidationError as exc:
        raise CorruptError(f"the ONNX checker rejects the model: {first_line(exc)}", path=str(path),
                           format=FORMAT, hint="re-export the model; it is not valid ONNX") from exc


# ---- layout, internal outputs, logits ---------------------------------------------------------------------
_TO_NCHW = [0, 3, 1, 2]
# ops that carry a final activation's output to the graph output unchanged in value
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}


def _graph_input(proto):
    initializers = {t.name for t in proto.graph.initializer}
    return next((v for v in proto.graph.input if v.name not in initializers), None)


def detect_layout(proto) -> tuple[str, str]:
    """(NCHW | NHWC, the evidence) for the graph's image input.

    tf2onnx and other exporters of channels-last frameworks keep the NHWC input and begin with a
    ``Transpose`` to NCHW; otherwise the declared shape decides (``guess_layout``)."""
    from ..backends.onnxruntime import guess_layout

    value = _graph_input(proto)
    if value is None or not value.type.HasField("tensor_type"):
        return "NCHW", "no tensor input"
    dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    readers = [n for n in proto.graph.node if value.name in n.input]
    perms = [list(next((a.ints for a in n.attribute if a.name == "perm"), [])) for n in readers
             if n.op_type == "Transpose"]
    if len(dims) == 4 and readers and len(perms) == len(readers) and all(p == _TO_NCHW for p in perms):
        return "NHWC", "the graph begins with a Transpose from NHWC to NCHW, as tf2onnx exports do"
    shown = "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"
    layout = guess_layout(dims)
    if layout == "NHWC":
        return layout, f"the input {shown} has its channels on the last axis"
    return layout, f"the input {shown} has its channels on axis 1" if len(dims) == 4 else f"the input is {shown}"


def _note_layout(handle: ModelHandle, layout: str, evidence: str) -> None:
    from ..readiness.report import CheckResult

    if len(handle.backend.input.shape) != 4:
        return
    handle.extra_checks.append(CheckResult("input-layout", "pass", f"{layout} detected: {evidence}; inputs are "
                                           f"given {layout} (override with --layout)"))


def expose_internal_output(proto, output) -> bool:
    """Make ``output`` a graph output when it names a tensor inside the graph (the input of a final
    Softmax, say) rather than an output; True if it did. Names that are outputs, or indices, are left
    to the backend; a name found nowhere is a usage error that lists the outputs."""
    from ..errors import UsageError

    graph = proto.graph
    names = [o.name for o in graph.output]
    if not isinstance(output, str) or output in names or output.lstrip("-").isdigit():
        return False
    produced = {o for n in graph.node for o in n.output if o}
    if output not in produced:
        raise UsageError(f"the graph has no output or internal tensor '{output}'",
                         hint=f"outputs are {', '.join(names)}; any node output of the graph may be named")
    from onnx import ValueInfoProto

    known = next((v for v in graph.value_info if v.name == output), None)
    value = ValueInfoProto()
    if known is not None:
        value.CopyFrom(known)
    else:
        value.name = output
    graph.output.append(value)
    return True


def logits_tensor(proto, output: str) -> tuple[str, str] | None:
    """(the input of the final Softmax / Sigmoid that ``output`` comes from, that op), or None."""
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    node = producer.get(output)
    while node is not None and node.op_type in _PASS_THROUGH and node.input:
        node = producer.get(node.input[0])
    if node is not None and node.op_type in ("Softmax", "Sigmoid") and node.input:
        return node.input[0], node.op_type
    return None


def open_session(path: Path, *, output=None, layout: str | None = None, proto=None,
                 external: bool = False) -> ModelHandle:
    """ONNX Runtime on the file, or on ``proto`` (the file's graph with an internal tensor exposed) whose
    external data, already checked, ONNX Runtime reads from the model's folder."""
    ort = import_optional("onnxruntime")
    from ..backends.onnxruntime import NO_GRADIENTS, OnnxRuntimeBackend
    from ..readiness.report import CheckResult

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings would break the one-line promise
    if proto is not None and external:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(path.absolute().parent))
    try:
        model = str(path) if proto is None else proto.SerializeToString()
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped exceptions (Fail, InvalidGraph, ...)
        kind = type(exc).__name__
        if kind in ("NotImplemented", "InvalidGraph") or "not implemented" in str(exc).lower():
            raise UnsupportedError(f"ONNX Runtime cannot run this graph: {first_line(exc)}", path=str(path),
                                   format=FORMAT, hint="an op or opset this onnxruntime does not support") from exc
        raise CorruptError(f"ONNX Runtime cannot load the model: {first_line(exc)}", path=str(path),
                           format=FORMAT, hint="re-export the model") from exc
    backend = OnnxRuntimeBackend(session, output=output, layout=layout)
    handle = ModelHandle(backend, Source(str(path), FORMAT, "onnxruntime"))
    handle.notes.append(f"ONNX input {backend.input.describe()}; outputs "
                        + ", ".join(s.describe() for s in backend.outputs))
    if backend.output_choice_note:
        handle.notes.append(backend.output_choice_note)
    if backend.input.fixed_batch and backend.input.fixed_batch > 1:
        handle.notes.append(f"the graph fixes the batch size to {backend.input.fixed_batch}; other numbers of "
                            "samples run in chunks of that size, the last one padded by repeating a sample")
    handle.extra_checks.append(CheckResult("onnx-valid", "pass", "onnx.checker accepts the graph"))
    handle.extra_checks.append(CheckResult("gradient-backend", "fail",
                                           f"{NO_GRADIENTS}; the model is inference-only as stored"))
    return handle


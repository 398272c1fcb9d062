"""Which TensorFlow ops a GraphDef or SavedModel contains, read from the protobuf wire format.

No TensorFlow is imported: the graph is walked field by field (GraphDef.node = 1, .library = 2;
FunctionDefLibrary.function = 1; FunctionDef.signature = 1, .node_def = 3; OpDef.name = 1;
NodeDef.name = 1, .op = 2; SavedModel.meta_graphs = 2; MetaGraphDef.graph_def = 2). The result
feeds a policy decision made *before* any TensorFlow load call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptError, UntrustedError
from .sniff import proto_fields

# Ops that touch the file system or call back into Python; loading a graph with them runs code.
FILE_OR_PYTHON_OPS = {
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "FileSystemSetConfiguration", "ImmutableConst",
    "PyFunc", "PyFuncStateless", "EagerPyFunc",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "FixedLengthRecordReader",
    "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2", "IdentityReader", "IdentityReaderV2",
    "TextLineDataset", "TFRecordDataset", "FixedLengthRecordDataset",
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints",
    "ShardedFilename", "WriteSummary", "CreateSummaryFileWriter", "WriteAudioSummary", "WriteImageSummary",
    "PrintV2", "Print", "DecodeProtoV2",
}
# A SavedModel's own variable save/restore: expected inside the functions TensorFlow writes for it,
# anywhere else they read or write arbitrary files. Frozen GraphDefs have no reason to hold them.
_CHECKPOINT_OPS = {"Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2", "MergeV2Checkpoints",
                   "ShardedFilename"}
_CHECKPOINT_FUNCTIONS = ("_traced_save_", "_traced_restore_", "__inference_save_", "__inference_restore_")


@dataclass(frozen=True)
class OpUse:
    op: str
    node: str
    function: str | None  # the library function holding the node, or None for the main graph


def _strings(buf: bytes, number: int) -> list[str]:
    return [buf[s:e].decode("utf-8", "replace") for n, w, s, e in proto_fields(buf) if n == number and w == 2]


def _messages(buf: bytes, number: int) -> list[bytes]:
    return [buf[s:e] for n, w, s, e in proto_fields(buf) if n == number and w == 2]


def _node_ops(node: bytes) -> tuple[str, str]:
    names, ops = _strings(node, 1), _strings(node, 2)
    return (names[0] if names else ""), (ops[0] if ops else "")


def graph_ops(graph_def: bytes) -> list[OpUse]:
    uses = [OpUse(op, name, None) for name, op in map(_node_ops, _messages(graph_def, 1))]
    for library in _messages(graph_def, 2):
        for function in _messages(library, 1):
            signature = _messages(function, 1)
            fname = _strings(signature[0], 1)[0] if signature and _strings(signature[0], 1) else "?"
            uses += [OpUse(op, name, fname) for name, op in map(_node_ops, _messages(function, 3))]
    return uses


def model_ops(path: Path, fmt: str) -> list[OpUse]:
    """Every op of a GraphDef file or SavedModel folder (all meta graphs)."""
    file = Path(path) / "saved_model.pb" if fmt == "tf-savedmodel" else Path(path)
    try:
        buf = file.read_bytes()
        if fmt == "tf-savedmodel":
            return [use for meta in _messages(buf, 2) for g in _messages(meta, 2) for use in graph_ops(g)]
        return graph_ops(buf)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise CorruptError(f"the graph protobuf is damaged ({exc})", path=str(path), format=fmt,
                           hint="re-export the model") from exc


def unsafe_ops(uses: list[OpUse], allow_checkpoint: bool = True) -> list[OpUse]:
    """Uses of file-system or Python-calling ops, except (``allow_checkpoint``) a SavedModel's own
    checkpoint functions and its TF1 saver nodes."""
    def checkpoint(use: OpUse) -> bool:
        if not allow_checkpoint:
            return False
        if use.function is not None:
            return any(tag in use.function for tag in _CHECKPOINT_FUNCTIONS)
        return use.op in _CHECKPOINT_OPS and use.node.startswith(("save/", "saver"))

    return [use for use in uses if use.op in FILE_OR_PYTHON_OPS and not checkpoint(use)]


def gate(path: Path, fmt: str, trust: bool) -> None:
    """Refuse (exit 4) a GraphDef or SavedModel with file or Python ops unless trusted; no TF import."""
    if trust:
        return
    bad = unsafe_ops(model_ops(path, fmt), allow_checkpoint=fmt == "tf-savedmodel")
    if bad:
        names = ", ".join(f"{u.op} '{u.node}'" + (f" in {u.function}" if u.function else "") for u in bad[:3])
        raise UntrustedError(f"the graph holds ops that touch files or run Python: {names}"
                             + (" ..." if len(bad) > 3 else ""), path=str(path), format=fmt,
                             hint="pass --trust only if you trust its author")

"""Canonical form of an ONNX graph before conversion: the same function, in the form onnx2torch expects.

Exporters write the same network in different shapes. onnx2torch's Conv, Gemm and BatchNorm converters
read their weights from the graph's initializers, so a weight that reaches them any other way fails
with a ``KeyError`` naming the weight:

* paddle2onnx (and some hand-written graphs) store every weight as a ``Constant`` node;
* the legacy torch exporter deduplicates shared weights through ``Identity`` nodes (torchvision
  EfficientNet's squeeze-excitation biases, ShuffleNet's convolutions);
* some exporters compute a weight, or a shape, from constants (a ``Cast`` of an fp16 weight, a
  ``Reshape`` target built by ``Concat``).

Each pass below is one small function that preserves the graph's semantics and returns how many
things it changed; ``canonicalize`` runs them in order and records every pass that ran with its
count, which the conversion check shows. Nothing here decides whether the conversion is accepted:
the converted model must still match ONNX Runtime and pass the finite-difference gradient check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Constant folding is bounded: a node is evaluated only if its inputs hold at most this many elements
# together, and folded only if no output is larger than its inputs (or this floor, for shape-like
# outputs such as a ConstantOfShape mask), so folding never trades a small node for a large tensor.
FOLD_MAX_INPUT_ELEMENTS = 1 << 26
FOLD_MIN_OUTPUT_BUDGET = 1 << 16
FOLD_MAX_NODES = 2000  # evaluations per graph; beyond, the rest is left to onnx2torch

# Ops whose result is not a function of their inputs, or that hold subgraphs: never folded.
_NOT_FOLDABLE = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                 "Bernoulli", "Dropout", "If", "Loop", "Scan", "SequenceMap", "Constant", "Identity"}


@dataclass
class PassRecord:
    """One canonical pass that ran: its name, how many things it changed (``unit``), and a remark
    (why it was skipped or stopped early)."""

    name: str
    changed: int
    unit: str
    remark: str = ""

    def describe(self) -> str:
        return f"{self.name} {self.changed}" + (f" ({self.remark})" if self.remark else "")


def canonicalize(model) -> list[PassRecord]:
    """Rewrite ``model`` (a ModelProto, changed in place) into canonical form; the passes that ran."""
    graph = model.graph
    records = [PassRecord("constants-to-initializers", constants_to_initializers(graph), "Constant nodes"),
               PassRecord("identity-aliases", resolve_identity_aliases(graph), "Identity nodes")]
    folded, remark = fold_constant_subgraphs(model)
    records.append(PassRecord("constant-folding", folded, "nodes", remark))
    if folded:  # folding can leave new Identity(initializer) nodes behind
        records[1].changed += resolve_identity_aliases(graph)
    records.append(PassRecord("unused-initializers", drop_unused_initializers(graph), "initializers"))
    return records


def summary(records: list[PassRecord]) -> str:
    """One line for the conversion check: every pass that ran, with its count of changes."""
    return "canonical passes: " + ", ".join(r.describe() for r in records)


# ---- (a) Constant nodes ------------------------------------------------------------------------------------
def constants_to_initializers(graph) -> int:
    """Turn each top-level ``Constant`` node into an initializer of the same name; returns how many.

    Consumers keep reading the same name, and a subgraph that reads it from the outer scope sees an
    initializer instead of a node output. Left alone: sparse constants, names that are graph outputs
    (an output must be produced by a node here), names that would clash with an existing initializer.
    """
    taken = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, tensors = [], []
    for node in graph.node:
        tensor = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1 \
                and node.output[0] not in outputs and node.output[0] not in taken:
            tensor = _constant_value(node)
        if tensor is None:
            keep.append(node)
            continue
        tensor.name = node.output[0]
        taken.add(tensor.name)
        tensors.append(tensor)
    if tensors:
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(tensors)
    return len(tensors)


def _constant_value(node):
    """The TensorProto a Constant node produces, or None (sparse, or not a plain value)."""
    from onnx import TensorProto, helper, numpy_helper

    if len(node.attribute) != 1 or node.attribute[0].ref_attr_name:
        return None
    attr = node.attribute[0]
    if attr.name == "value":
        tensor = TensorProto()
        tensor.CopyFrom(attr.t)
        return tensor
    scalar_or_list = {"value_float": (attr.f, np.float32), "value_floats": (list(attr.floats), np.float32),
                      "value_int": (attr.i, np.int64), "value_ints": (list(attr.ints), np.int64)}
    if attr.name in scalar_or_list:
        value, dtype = scalar_or_list[attr.name]
        return numpy_helper.from_array(np.array(value, dtype=dtype))
    if attr.name == "value_string":
        return helper.make_tensor("", TensorProto.STRING, [], [attr.s])
    if attr.name == "value_strings":
        return helper.make_tensor("", TensorProto.STRING, [len(attr.strings)], list(attr.strings))
    return None  # sparse_value


# ---- (c) Identity aliases ------------------------------------------------------------------------------------
def resolve_identity_aliases(graph) -> int:
    """Remove ``Identity`` nodes whose input is an initializer (or such an Identity's output); their
    consumers read the initializer directly. Returns how many were removed.

    The legacy exporter shares one weight between several layers this way, and onnx2torch needs the
    weight itself. Kept: an Identity whose output is a graph output, or is read inside a subgraph
    (renaming there would need a rewrite of the subgraph's scope).
    """
    initializers = {t.name for t in graph.initializer}
    protected = {o.name for o in graph.output} | _subgraph_reads(graph)
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        source = rename.get(node.input[0], node.input[0]) if len(node.input) == 1 else None
        if (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and source in initializers
                and node.output[0] not in protected):
            rename[node.output[0]] = source
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


def _subgraph_reads(graph) -> set[str]:
    """Every name a node inside a subgraph (If/Loop/Scan bodies, at any depth) reads."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in sub.node:
                    names.update(n for n in inner.input if n)
                names |= _subgraph_reads(sub)
    return names


# ---- (b) constant subgraphs --------------------------------------------------------------------------------
def fold_constant_subgraphs(model) -> tuple[int, str]:
    """Evaluate, with ONNX Runtime, each node whose inputs are all initializers, and store its outputs
    as initializers; in graph order, so whole constant subgraphs fold. Returns (nodes folded, remark).

    ONNX Runtime is the reference the conversion is verified against, so a folded value is exactly
    what it would have computed. Bounded (``FOLD_*``): inputs too large to evaluate cheaply and
    outputs larger than their inputs stay nodes. Never folded: non-deterministic ops and ops with
    subgraphs (``_NOT_FOLDABLE``), ops of other domains, nodes that produce a graph output.
    """
    from onnx import numpy_helper

    graph = model.graph
    values = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    arrays: dict[str, np.ndarray] = {}
    folded, failed, evaluated = [], 0, 0
    remark = ""
    for node in graph.node:
        if not _foldable(node, values, outputs):
            continue
        if evaluated >= FOLD_MAX_NODES:
            remark = f"stopped after {FOLD_MAX_NODES} evaluations"
            break
        try:
            inputs = [_array(name, values, arrays) if name else None for name in node.input]
        except (ValueError, TypeError, KeyError):  # an element type numpy cannot hold
            continue
        if sum(a.size for a in inputs if a is not None) > FOLD_MAX_INPUT_ELEMENTS:
            continue
        evaluated += 1
        results = _evaluate(model, node, inputs)
        if results is None:
            failed += 1
            continue
        budget = max(sum(a.size for a in inputs if a is not None), FOLD_MIN_OUTPUT_BUDGET)
        if any(r.size > budget for r in results.values()):
            continue
        try:
            tensors = {name: numpy_helper.from_array(value, name) for name, value in results.items()}
        except (ValueError, TypeError, KeyError):  # a result numpy_helper cannot store
            continue
        values.update(tensors)
        arrays.update(results)
        folded.append(node)
    if folded:
        drop = {id(n) for n in folded}
        keep = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(keep)
        graph.initializer.extend(values[o] for n in folded for o in n.output if o)
    if failed:
        remark = "; ".join(filter(None, [remark, f"{failed} node(s) ONNX Runtime could not evaluate alone"]))
    return len(folded), remark


def _foldable(node, values: dict, outputs: set[str]) -> bool:
    return (node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDABLE
            and any(node.input) and all(not name or name in values for name in node.input)
            and not any(o in outputs for o in node.output)
            and not any(a.HasField("g") or len(a.graphs) for a in node.attribute))


def _array(name: str, values: dict, arrays: dict) -> np.ndarray:
    from onnx import numpy_helper

    if name not in arrays:
        arrays[name] = numpy_helper.to_array(values[name])
    return arrays[name]


def _evaluate(model, node, inputs: list) -> dict[str, np.ndarray] | None:
    """The outputs of ``node`` alone on ``inputs``, run by ONNX Runtime; None if it cannot run."""
    import onnxruntime as ort
    from onnx import ValueInfoProto, helper

    fed = {f"in{i}": a for i, a in enumerate(inputs) if a is not None}
    wired = helper.make_node(node.op_type, [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)],
                             list(node.output), domain=node.domain)
    wired.attribute.extend(node.attribute)
    graph_inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for name, a in fed.items()]
    graph_outputs = [ValueInfoProto(name=o) for o in node.output if o]
    try:
        tiny = helper.make_model(helper.make_graph([wired], "fold", graph_inputs, graph_outputs),
                                 opset_imports=list(model.opset_import), ir_version=model.ir_version)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(tiny.SerializeToString(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        results = session.run(None, fed)
    except Exception:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors; the node just stays
        return None
    names = [o for o in node.output if o]
    return {name: np.asarray(r) for name, r in zip(names, results, strict=True)}


# ---- cleanup -------------------------------------------------------------------------------------------------
def drop_unused_initializers(graph) -> int:
    """Remove initializers no node (at any depth) reads and no graph output names; returns how many.

    The earlier passes leave behind what they folded away (a weight that only fed a folded Cast).
    An initializer also listed as a graph input loses that entry too.
    """
    used = {name for node in graph.node for name in node.input} | _subgraph_reads(graph)
    used |= {o.name for o in graph.output}
    unused = {t.name for t in graph.initializer if t.name not in used}
    if not unused:
        return 0
    for field in (graph.initializer, graph.input):
        for i in reversed(range(len(field))):  # in place: no copy of the weights that stay
            if field[i].name in unused:
                del field[i]
    return len(unused)


# ---- (d) shape inference -------------------------------------------------------------------------------------
def infer_shapes(model):
    """onnx's shape inference with data propagation (shapes computed by Shape/Concat chains become
    known), stored as the graph's ``value_info``. Returns (model, record); the record counts the
    tensors that gained a known shape.

    It runs on a skeleton of the graph: initializers over ``SKELETON_MAX_ELEMENTS`` elements become
    typed graph inputs, so the weights are never serialized (for a ViT-B that is most of the cost),
    and graphs over protobuf's 2 GB limit are inferred too. Data propagation needs only the small
    (shape-like) initializers, which stay.
    """
    import onnx

    from ..errors import first_line

    def known(values) -> int:
        return sum(1 for v in values if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"))

    before = known(model.graph.value_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(_skeleton(model), check_type=False, strict_mode=False,
                                                     data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises InferenceError, ValueError, RuntimeError...
        return model, PassRecord("shape-inference", 0, "tensors", f"failed: {first_line(exc)[:80]}")
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    return model, PassRecord("shape-inference", max(0, known(model.graph.value_info) - before), "tensors")


SKELETON_MAX_ELEMENTS = 1024


def _skeleton(model):
    """``model`` without its large initializers: each becomes a graph input of the same type and shape."""
    import onnx
    from onnx import helper

    skeleton = onnx.ModelProto(ir_version=max(model.ir_version, 4), producer_name=model.producer_name)
    skeleton.opset_import.extend(model.opset_import)
    skeleton.functions.extend(model.functions)
    graph, copy = model.graph, skeleton.graph
    copy.name = graph.name
    copy.node.extend(graph.node)
    copy.output.extend(graph.output)
    copy.value_info.extend(graph.value_info)
    copy.sparse_initializer.extend(graph.sparse_initializer)
    listed = {i.name for i in graph.input}
    copy.input.extend(graph.input)
    for tensor in graph.initializer:
        if int(np.prod(tensor.dims, dtype=np.int64)) <= SKELETON_MAX_ELEMENTS:
            copy.initializer.append(tensor)
        elif tensor.name not in listed:
            copy.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return skeleton

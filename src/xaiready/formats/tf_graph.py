"""Compiled TensorFlow models: SavedModel folders and TF1 frozen GraphDef ``.pb`` files.

Policy: the graph is parsed as a protobuf and its op types scanned before TensorFlow runs anything.
Ops that touch files or call back into Python (``ReadFile``, ``WriteFile``, ``PyFunc``, readers, ...)
make the model untrusted; SavedModel's own variable save/restore functions are the one exception.

Both kinds become one callable of one input tensor. A frozen graph can also be *split* at an internal
tensor T: ``head(x) -> T`` and ``tail(x, T) -> output`` are pruned from the same imported graph, so the
tape sees T and CAM methods get its activation and gradient. A split is offered for the last few
spatial tensors on the input-to-output path and is used only if ``tail(x, head(x))`` reproduces the
model's output (checked by the backend on every pass).

A ``tf.custom_gradient`` traced into a graph (Keras' swish/silu, for one) is an ``IdentityN`` op whose
``_gradient_op_type`` attr names a backward registered for one traced graph in one process
("CustomGradient-N"): a GraphDef file cannot carry it, an entry of that name here belongs to some other
graph, and a SavedModel's restored backward does not run in the graph frozen from its signature
either (measured: no split got a gradient). Before the import, such ops lose the attr, so TensorFlow's
pass-through ``IdentityN`` gradient applies and the gradient is that of the forward ops computing its
inputs (the readiness check verifies it by finite differences).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CorruptError, UnsupportedError, UsageError, first_line
from ..model import ModelHandle, Source
from .sniff import Sniffed
from .tf_ops import gate

_NOT_OUTPUTS = {"NoOp", "Const", "Placeholder", "PlaceholderWithDefault", "Assert", "VarHandleOp",
                "VariableV2", "Variable"}
CAM_OPS = {"Conv2D", "DepthwiseConv2dNative", "Relu", "Relu6", "BiasAdd", "FusedBatchNorm", "FusedBatchNormV3",
           "AddV2", "Add", "Elu", "Selu", "LeakyRelu", "MaxPool", "AvgPool", "ConcatV2", "Mul"}
MAX_SPLITS = 8  # internal tensors offered for CAM: the deepest ones, where CAM wants its features


def load(sniffed: Sniffed, *, trust: bool, output, signature: str | None = None, inputs: str | None = None,
         outputs: str | None = None, **_) -> ModelHandle:
    from ..backends.tf_import import import_tensorflow

    gate(sniffed.path, sniffed.format, trust)  # from the protobuf bytes, before TensorFlow is imported
    tf, _ = import_tensorflow()
    if sniffed.format == "tf-savedmodel":
        return _load_savedmodel(tf, sniffed.path, trust, output, signature, outputs)
    return _load_graphdef(tf, sniffed.path, trust, output, inputs, outputs)


# ---- SavedModel --------------------------------------------------------------------------------------------------
def _load_savedmodel(tf, path: Path, trust: bool, output, signature: str | None, outputs: str | None):
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from ..backends.tensorflow import TensorFlowBackend
    from ..backends.tf_import import quiet_stderr

    fmt = "tf-savedmodel"
    proto = saved_model_pb2.SavedModel()
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise UnsupportedError("only binary saved_model.pb is read (saved_model.pbtxt is not)", path=str(path),
                               format=fmt, hint="re-export with tf.saved_model.save")
    try:
        proto.ParseFromString(pb.read_bytes())
    except Exception as exc:  # protobuf's DecodeError has no stable import path
        raise CorruptError(f"saved_model.pb is not a valid SavedModel protobuf ({type(exc).__name__})",
                           path=str(path), format=fmt, hint="re-export or re-copy the model") from exc
    if not proto.meta_graphs:
        raise CorruptError("the SavedModel holds no graph", path=str(path), format=fmt)
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, KeyError, OSError, AssertionError) as exc:
        raise CorruptError(f"TensorFlow could not load the SavedModel: {first_line(exc, 300)}", path=str(path),
                           format=fmt, hint="re-export or re-copy the model") from exc
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if not signatures:
        raise UnsupportedError("the SavedModel has no signatures to call", path=str(path), format=fmt,
                               hint="re-export with tf.saved_model.save(obj, path, signatures=...)")
    name = signature or ("serving_default" if "serving_default" in signatures else
                         next(iter(signatures)) if len(signatures) == 1 else None)
    if name is None or name not in signatures:
        raise UsageError(f"choose a signature: {', '.join(signatures)}" if name is None else
                         f"the SavedModel has no signature '{name}' (it has {', '.join(signatures)})",
                         hint="pass --signature NAME")
    fn = signatures[name]
    specs = fn.structured_input_signature[1]
    if len(specs) != 1:
        raise UnsupportedError(f"signature '{name}' takes {len(specs)} inputs ({', '.join(specs)}); "
                               "one image input is needed", path=str(path), format=fmt,
                               hint="export a signature with a single input")
    key, spec = next(iter(specs.items()))
    notes = [f"signature '{name}', input '{key}'"]
    out_keys = list(fn.structured_outputs) if isinstance(fn.structured_outputs, dict) else []
    chosen = outputs if outputs is not None else output
    splits = None
    graph_def = fn.graph.as_graph_def()
    try:
        with quiet_stderr():  # Grappler logs while it freezes
            frozen = convert_variables_to_constants_v2(fn)
        out_key = chosen if chosen in out_keys else ("logits" if "logits" in out_keys else
                                                      out_keys[0] if len(out_keys) == 1 else None)
        if out_key is not None:
            out_name = frozen.outputs[sorted(out_keys).index(out_key)].name  # nest flattens dicts by key
            in_name = frozen.inputs[0].name
            splits = GraphSplits(tf, frozen.graph.as_graph_def(), in_name, out_name)
    except (ValueError, TypeError, KeyError, IndexError, tf.errors.OpError) as exc:
        splits = NoSplits(f"the signature could not be frozen to expose internal tensors ({first_line(exc, 300)})")
    backend = TensorFlowBackend(fn, kind="savedmodel", output=chosen, input_key=key, splits=splits,
                                graph_def=graph_def, input_spec=(tuple(spec.shape), spec.dtype))
    backend.keep_alive = loaded  # the signature's variables live as long as the loaded object
    return ModelHandle(backend, Source(str(path), fmt, "tensorflow"), notes=notes)


# ---- frozen GraphDef ----------------------------------------------------------------------------------------------
def _load_graphdef(tf, path: Path, trust: bool, output, inputs: str | None, outputs: str | None):
    from ..backends.tensorflow import TensorFlowBackend

    fmt = "tf-graphdef"
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError has no stable import path
        raise CorruptError(f"the file is not a valid GraphDef protobuf ({type(exc).__name__})", path=str(path),
                           format=fmt, hint="re-export or re-copy the model") from exc
    if not graph_def.node:
        raise CorruptError("the GraphDef holds no nodes", path=str(path), format=fmt)
    in_name = _pick_input(graph_def, inputs, path)
    out_name = _pick_output(graph_def, outputs or (output if isinstance(output, str) else None), path)
    splits = GraphSplits(tf, graph_def, in_name, out_name, path=path)
    node = {n.name: n for n in graph_def.node}[in_name.split(":")[0]]
    shape = tuple(d.size for d in node.attr["shape"].shape.dim) if "shape" in node.attr else None
    dtype = tf.as_dtype(node.attr["dtype"].type) if "dtype" in node.attr else tf.float32
    backend = TensorFlowBackend(splits.full, kind="graphdef", output=None, splits=splits,
                                graph_def=splits.graph_def, input_spec=(shape, dtype))
    notes = [f"input tensor '{in_name}', output tensor '{out_name}'"]
    if splits.pass_through:
        notes.append(f"{len(splits.pass_through)} tf.custom_gradient op(s) (IdentityN, e.g. "
                     f"'{splits.pass_through[0]}') lost their backward when the graph was frozen; their gradient "
                     "is taken through the forward ops")
    return ModelHandle(backend, Source(str(path), fmt, "tensorflow"), notes=notes)


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _pick_input(graph_def, given: str | None, path: Path) -> str:
    names = {n.name for n in graph_def.node}
    if given:
        if given.split(":")[0] not in names:
            raise UsageError(f"the graph has no node '{given}'", hint="check --inputs")
        return _tensor_name(given)
    placeholders = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if len(placeholders) == 1:
        return _tensor_name(placeholders[0])
    if not placeholders:
        raise UnsupportedError("the graph has no Placeholder to feed", path=str(path), format="tf-graphdef",
                               hint="name the input tensor with --inputs NAME")
    raise UsageError(f"the graph has several inputs ({', '.join(placeholders[:6])}); which one is the image?",
                     hint="pass --inputs NAME")


def _pick_output(graph_def, given: str | None, path: Path) -> str:
    names = {n.name for n in graph_def.node}
    if given:
        if given.split(":")[0] not in names:
            raise UsageError(f"the graph has no node '{given}'", hint="check --outputs")
        return _tensor_name(given)
    consumed = {i.lstrip("^").split(":")[0] for n in graph_def.node for i in n.input}
    ends = [n.name for n in graph_def.node if n.name not in consumed and n.op not in _NOT_OUTPUTS]
    if len(ends) == 1:
        return _tensor_name(ends[0])
    if not ends:
        raise UnsupportedError("no output node found (every node feeds another)", path=str(path),
                               format="tf-graphdef", hint="name the output tensor with --outputs NAME")
    raise UsageError(f"the graph has several outputs ({', '.join(ends[:6])}); which one to explain?",
                     hint="pass --outputs NAME")


_CUSTOM_GRADIENT = "CustomGradient-"  # tf.custom_gradient's per-process name (ops/custom_gradient.py)


def pass_through_custom_gradients(tf, graph_def):
    """(graph_def, names): a copy whose ``IdentityN`` ops no longer name a custom backward this process
    cannot honour, and the names of those ops; the graph itself when there are none.

    Such an op is one whose ``_gradient_op_type`` is "CustomGradient-N" (registered only in the process
    that traced it) or is not registered here at all. Without the attr TensorFlow uses its own
    ``IdentityN`` gradient, which passes each output's gradient to the matching input."""
    from tensorflow.python.framework import ops

    def stale(node) -> bool:
        if node.op != "IdentityN" or "_gradient_op_type" not in node.attr:
            return False
        kind = node.attr["_gradient_op_type"].s.decode("utf-8", "replace")
        if kind.startswith(_CUSTOM_GRADIENT):
            return True
        try:
            ops.gradient_registry.lookup(kind)
        except LookupError:
            return True
        return False

    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    if not any(stale(n) for n in nodes):
        return graph_def, []
    copy = tf.compat.v1.GraphDef()
    copy.CopyFrom(graph_def)
    names = []
    for node in list(copy.node) + [n for f in copy.library.function for n in f.node_def]:
        if stale(node):
            del node.attr["_gradient_op_type"]
            names.append(node.name)
    return copy, names


class _Split:
    def __init__(self, head, tail):
        self.head, self.tail = head, tail


class NoSplits:
    """No internal tensor can be offered, and why."""

    def __init__(self, reason: str):
        self.reason = reason

    def names(self) -> list[str]:
        return []


class GraphSplits:
    """One imported GraphDef: the whole model as a function, and head/tail splits at internal tensors."""

    def __init__(self, tf, graph_def, in_name: str, out_name: str, path: Path | None = None):
        self.tf = tf
        self.graph_def, self.pass_through = pass_through_custom_gradients(tf, graph_def)
        self.reason = ""
        self._overridden: dict = {}

        def _import():
            tf.compat.v1.import_graph_def(self.graph_def, name="")

        try:
            self.wrapped = tf.compat.v1.wrap_function(_import, [])
            graph = self.wrapped.graph
            self.x = graph.get_tensor_by_name(in_name)
            self.out = graph.get_tensor_by_name(out_name)
            self.full = self.wrapped.prune(self.x, self.out)
        except (ValueError, KeyError, TypeError, tf.errors.OpError) as exc:
            raise CorruptError(f"TensorFlow could not import the graph: {first_line(exc, 300)}",
                               path=str(path) if path else None, format="tf-graphdef",
                               hint="check --inputs/--outputs, or re-export the graph") from exc
        self._names = self._candidates(graph)
        if not self._names:
            self.reason = "the graph has no spatial (4-D) tensor between its input and output to capture"
        self._cache: dict[str, _Split] = {}

    def _candidates(self, graph) -> list[str]:
        """Spatial tensors on the input-to-output path, deepest last, at most MAX_SPLITS of them.

        Also remembers the op types on that path, for counting activations under a ReLU override."""
        ops = graph.get_operations()
        downstream = {self.x.op.name}
        for op in ops:  # creation order is topological for imported graphs
            if any(t.op.name in downstream for t in op.inputs):
                downstream.add(op.name)
        upstream, todo = set(), [self.out.op]
        while todo:
            op = todo.pop()
            if op.name in upstream:
                continue
            upstream.add(op.name)
            todo.extend(t.op for t in op.inputs)
        self.path_ops = [op for op in ops if op.name in downstream and op.name in upstream]
        self.path_op_types = [op.type for op in self.path_ops]
        found = []
        for op in ops:
            if op.type not in CAM_OPS or op.name not in downstream or op.name not in upstream:
                continue
            if op is self.out.op or not op.outputs:
                continue
            t = op.outputs[0]
            if t.shape.rank == 4 and t.dtype.is_floating:
                found.append(op.name)
        return found[-MAX_SPLITS:]

    def names(self) -> list[str]:
        return list(self._names)

    def without_gradient(self):
        """The first op on the input-to-output path that TensorFlow has no gradient for (differentiating
        through it raises "No gradient defined"), or None. Ops registered as not differentiable
        (``tf.no_gradient``) are not counted: they give no gradient instead of an error."""
        from tensorflow.python.framework import ops

        for op in self.path_ops:
            if op is self.x.op or not any(t.dtype.is_floating for t in op.inputs):
                continue
            try:
                ops.get_gradient_function(op)
            except LookupError:
                return op
        return None

    def has(self, name: str) -> bool:
        """Any float tensor of the graph can be asked for by op name, not only the offered ones."""
        try:
            t = self.wrapped.graph.get_tensor_by_name(_tensor_name(name))
        except (KeyError, ValueError):
            return False
        return t.dtype.is_floating

    def overridden(self, mode: str):
        """The whole model re-imported with every ``Relu`` op's gradient replaced by the ``mode`` rule.

        ``gradient_override_map`` tags the imported ops; the registered rule lives under a name of our
        own, so TensorFlow's ``Relu`` gradient is untouched for everything else."""
        if mode not in self._overridden:
            tf, graph_def = self.tf, self.graph_def  # already without stale custom gradients
            op_type = _register_relu_rule(tf, mode)

            def _import():
                with tf.compat.v1.get_default_graph().gradient_override_map({"Relu": op_type}):
                    tf.compat.v1.import_graph_def(graph_def, name="")

            wrapped = tf.compat.v1.wrap_function(_import, [])
            graph = wrapped.graph
            self._overridden[mode] = wrapped.prune(graph.get_tensor_by_name(self.x.name),
                                                   graph.get_tensor_by_name(self.out.name))
        return self._overridden[mode]

    def get(self, name: str) -> _Split:
        if name not in self._cache:
            t = self.wrapped.graph.get_tensor_by_name(_tensor_name(name))
            head = self.wrapped.prune(self.x, t)
            tail = self.wrapped.prune([self.x, t], self.out)
            self._cache[name] = _Split(head, tail)
        return self._cache[name]


_RULES = {"guided": "XaiReadyGuidedRelu", "deconvnet": "XaiReadyDeconvnetRelu"}


def _register_relu_rule(tf, mode: str) -> str:
    """Register the guided/deconvnet ReLU gradient once, under our own op-type name."""
    from tensorflow.python.framework import ops

    name = _RULES[mode]
    try:
        ops.gradient_registry.lookup(name)
        return name
    except LookupError:
        pass

    def rule(op, grad):
        positive = tf.maximum(grad, tf.zeros_like(grad))
        if mode == "deconvnet":
            return positive
        return positive * tf.cast(op.outputs[0] > 0, grad.dtype)

    tf.RegisterGradient(name)(rule)
    return name


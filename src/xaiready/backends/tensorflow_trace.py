"""Find where a TensorFlow gradient path dies, and why.

Keras models: one eager pass records every layer and ``keras.ops`` node with its inputs and outputs
under a persistent tape. The layer that cuts the path is the one whose output still receives a
gradient from the score while its inputs receive none (or only zeros); when the output itself is not
differentiable (e.g. an argmax head), it is the first layer whose input depends on the model input
and whose output does not. The cause is read off the op types of that layer traced as a graph:
``StopGradient`` (detach), ``PyFunc``/``EagerPyFunc`` (numpy), integer casts, comparisons, argmax
and rounding (non-differentiable), ``tf.custom_gradient`` (custom-backward).

Compiled functions (SavedModel, GraphDef): the same op types are looked up in the function's graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ..targets import Target
from .base import BreakFinding
from .keras_graph import safe_gradient, walk_layers, wrapped_calls

ROOT = "(root)"
_DETACH = {"StopGradient", "PreventGradient"}
_NUMPY = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
_NON_DIFF = {"ArgMax", "ArgMin", "Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "Round",
             "Floor", "Ceil", "Sign", "Rint", "TopKV2", "OneHot", "LogicalAnd", "LogicalOr", "LogicalNot",
             "FloorDiv", "FloorMod", "Bucketize"}
_WHY = {
    "detach": "tf.stop_gradient cuts the path",
    "numpy": "the tensor goes through NumPy (tf.numpy_function/py_function/.numpy()) and comes back without history",
    "non-differentiable": "the op has no useful gradient (integer cast, comparison, argmax or rounding)",
    "custom-backward": "a tf.custom_gradient defines its own backward, and finite differences disagree with it",
    "unknown": "no gradient flows back through it",
}


def _is_float(t) -> bool:
    return tf.is_tensor(t) and (t.dtype.is_floating or t.dtype.is_complex)


def _flat(value) -> list:
    return [t for t in tf.nest.flatten(value) if tf.is_tensor(t)]


class _Call:
    def __init__(self, name, layer, args, kwargs, original, inputs, outputs, depth):
        self.name, self.layer, self.args, self.kwargs = name, layer, args, kwargs
        self.original, self.inputs, self.outputs, self.depth = original, inputs, outputs, depth


def _record(backend, xt):
    """One eager pass under a persistent tape, recording every layer and op call."""
    found = list(walk_layers(backend.model, with_ops=True))
    by_layer = {}
    for name, layer in found:
        by_layer.setdefault(id(layer), (layer, []))[1].append(name)
    calls: list[_Call] = []

    def on_call(names, layer, args, kwargs, original):
        out = original(*args, **kwargs)
        calls.append(_Call(names[0], layer, args, kwargs, original, _flat((args, kwargs)), _flat(out),
                           names[0].count("/")))
        return out

    tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
    with wrapped_calls(by_layer, on_call), tape:
        tape.watch(xt)
        out = backend._run(xt)
    return tape, out, calls


def _nonzero(g) -> bool:
    return g is not None and bool(tf.reduce_any(tf.not_equal(g, 0)))


def _finite(g) -> bool:
    return g is None or bool(tf.reduce_all(tf.math.is_finite(g)))


def _score_root(tape, out, target: Target):
    if not _is_float(out):
        return None
    with tape:
        if target.framework_fn is not None:
            score = target.framework_fn(out)
            return tf.reduce_sum(score) if _is_float(score) else None
        seed = tf.constant(target.seed(out.numpy()), dtype=out.dtype)
        return tf.reduce_sum(out * seed)


def locate_in_keras(backend, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
    xt = backend.to_tensor(x)
    tape, out, calls = _record(backend, xt)
    try:
        if status == "incorrect":
            return _custom_gradient(calls) or _partial_cut(tape, xt, calls)
        root = _score_root(tape, out, target)
        if root is not None:
            found = _cut_by_score(tape, root, xt, calls, status)
            if found is not None:
                return found
        if status in ("missing", "zero"):
            found = _cut_by_input(tape, xt, calls)
            if found is not None:
                return found
        found = _whole_model(backend, xt, status)
        if found is not None and found.after is None:
            found.after = _last_live(tape, xt, calls)
            if found.after:
                found.detail += f" (the last layer still carrying the input is '{found.after}')"
        return found
    finally:
        del tape


def _cut_by_score(tape, root, xt, calls, status) -> BreakFinding | None:
    """A call whose output gets a gradient from the score while its inputs get none (or zeros)."""
    tensors, seen = [], set()
    for c in calls:
        for t in c.inputs + c.outputs:
            if _is_float(t) and id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
    if not tensors:
        return None
    grads = dict(zip((id(t) for t in tensors), safe_gradient(tape, root, tensors), strict=True))
    candidates = []
    for i, c in enumerate(calls):
        ins = [t for t in c.inputs if _is_float(t)]
        outs = [t for t in c.outputs if _is_float(t)]
        if not ins or not outs:
            continue
        g_in = [grads[id(t)] for t in ins]
        g_out = [grads[id(t)] for t in outs]
        if status == "non-finite":
            if all(_finite(g) for g in g_out) and not all(_finite(g) for g in g_in):
                candidates.append((i, c))
            continue
        if any(_nonzero(g) and _finite(g) for g in g_out) and not any(_nonzero(g) for g in g_in):
            if any(_depends(tape, t, xt) for t in ins):
                candidates.append((i, c))
    if not candidates:
        return None
    if status == "non-finite":  # backward runs last-to-first: the last such call turns it non-finite
        i, c = max(candidates, key=lambda ic: (ic[0], ic[1].depth))
        return BreakFinding(location=c.name, cause="unknown", op="backward",
                            detail=f"the backward of '{c.name}' turns a finite gradient into NaN/inf "
                                   "(e.g. sqrt or log at 0, division by zero)")
    i, c = max(candidates, key=lambda ic: (ic[1].depth, -ic[0]))  # innermost, then earliest
    return _finding(c, calls[:i])


def _depends(tape, t, xt) -> bool:
    if not _is_float(t):
        return False
    return _nonzero(safe_gradient(tape, t, [xt])[0])


def _cut_by_input(tape, xt, calls) -> BreakFinding | None:
    """The first call (in completion order, so the innermost) whose input depends on the model input
    and whose outputs do not."""
    depends: dict[int, bool] = {}

    def dep(t) -> bool:
        if id(t) not in depends:
            depends[id(t)] = _depends(tape, t, xt)
        return depends[id(t)]

    for i, c in enumerate(calls):
        ins = [t for t in c.inputs if _is_float(t)]
        if ins and c.outputs and any(dep(t) for t in ins) and not any(dep(t) for t in c.outputs):
            return _finding(c, calls[:i])
    return None


def _finding(call: _Call, before: list[_Call]) -> BreakFinding:
    cause, op = layer_cause(call)
    producers = {id(t): c.name for c in before for t in c.outputs}
    after = next((producers[id(t)] for t in call.inputs if id(t) in producers), None)
    kind = type(call.layer).__name__
    where = f"in '{call.name}' ({kind})"
    after_text = f", right after '{after}'" if after and after != call.name else ""
    return BreakFinding(location=call.name, cause=cause, op=op, after=after,
                        detail=f"{op or kind} {where}{after_text}: {_WHY[cause]}")


def _trace(call: _Call):
    """The call traced as a graph, with the tensors it received as specs."""
    def spec(v):
        return tf.TensorSpec(v.shape, v.dtype) if tf.is_tensor(v) else v

    args = tf.nest.map_structure(spec, call.args)
    kwargs = tf.nest.map_structure(spec, call.kwargs)
    return tf.function(call.original, autograph=False).get_concrete_function(*args, **kwargs)


def layer_cause(call: _Call) -> tuple[str, str]:
    """(cause, op type) from the call traced as a graph; a ``.numpy()`` inside fails to trace."""
    try:
        fn = _trace(call)
    except (AttributeError, NotImplementedError) as exc:
        if "numpy" in str(exc):
            return "numpy", "numpy()"
        return "unknown", ""
    except (TypeError, ValueError, tf.errors.OpError):
        return "unknown", ""
    return classify_ops(_graph_ops(fn.graph.as_graph_def()))


def _graph_ops(graph_def) -> list:
    """Nodes of a GraphDef and of every function in its library, in definition order."""
    nodes = list(graph_def.node)
    for fn in graph_def.library.function:
        nodes.extend(fn.node_def)
    return nodes


def _cast_cuts(node) -> bool:
    src = tf.as_dtype(node.attr["SrcT"].type) if "SrcT" in node.attr else None
    dst = tf.as_dtype(node.attr["DstT"].type) if "DstT" in node.attr else None
    return bool(src and dst and src.is_floating and not (dst.is_floating or dst.is_complex))


def classify_ops(nodes) -> tuple[str, str]:
    for cause, ops in (("detach", _DETACH), ("numpy", _NUMPY)):
        for node in nodes:
            if node.op in ops:
                return cause, node.op
    for node in nodes:
        if node.op in _NON_DIFF or (node.op == "Cast" and _cast_cuts(node)):
            return "non-differentiable", node.op
    return "unknown", ""


def _custom_gradient(calls) -> BreakFinding | None:
    """The first layer whose traced graph holds a tf.custom_gradient (IdentityN with a gradient type)."""
    for c in calls:
        try:
            fn = _trace(c)
        except (AttributeError, NotImplementedError, TypeError, ValueError, tf.errors.OpError):
            continue
        for op in fn.graph.get_operations():
            try:
                kind = op.get_attr("_gradient_op_type")
            except ValueError:
                continue
            if kind:
                return BreakFinding(location=c.name, cause="custom-backward", op="tf.custom_gradient",
                                    detail=f"tf.custom_gradient in '{c.name}' defines its own backward, and "
                                           "finite differences disagree with it")
    return None


def _last_live(tape, xt, calls) -> str | None:
    """The last call to finish whose output still depends on the model input."""
    for c in reversed(calls):
        if any(_depends(tape, t, xt) for t in c.outputs):
            return c.name
    return None


def _partial_cut(tape, xt, calls) -> BreakFinding | None:
    """A cut on one of several paths (e.g. ``h + stop_gradient(h)``): the value still depends on the
    input through the cut branch, so finite differences see what autograd does not."""
    for i, c in enumerate(calls):
        if not any(_depends(tape, t, xt) for t in c.inputs if _is_float(t)):
            continue
        cause, op = layer_cause(c)
        if cause in ("detach", "numpy", "non-differentiable"):
            found = _finding(c, calls[:i])
            found.detail += "; another path carries the gradient, so autograd misses this branch's share"
            return found
    return None


def _whole_model(backend, xt, status) -> BreakFinding | None:
    """No layer is to blame: the cut is in the model's own call; name its op if tracing finds one."""
    try:
        fn = tf.function(lambda t: backend._run(t), autograph=False).get_concrete_function(
            tf.TensorSpec(xt.shape, xt.dtype))
    except (AttributeError, NotImplementedError) as exc:
        if "numpy" in str(exc):
            return BreakFinding(location=ROOT, cause="numpy", op="numpy()",
                                detail=f"numpy() in the top-level call: {_WHY['numpy']}")
        return None
    except (TypeError, ValueError, tf.errors.OpError):
        return None
    cause, op = classify_ops(_graph_ops(fn.graph.as_graph_def()))
    if cause == "unknown":
        return None
    return BreakFinding(location=ROOT, cause=cause, op=op, detail=f"{op} in the top-level call: {_WHY[cause]}")


# ---- compiled functions ----------------------------------------------------------------------------------------
def locate_in_graph(backend, status: str) -> BreakFinding | None:
    graph_def = backend.graph_def
    if status in ("missing", "zero"):
        found = _without_gradient(backend)
        if found is not None:
            return found
    if graph_def is None or status == "non-finite":
        return None
    nodes = _graph_ops(graph_def)
    if status == "incorrect":
        return None
    cause, op = classify_ops(nodes)
    if cause == "unknown":
        return BreakFinding(location=ROOT, cause="unknown", op="",
                            detail="the compiled graph holds no op known to cut gradients")
    node = next(n for n in nodes if n.op == op)
    return BreakFinding(location=node.name, cause=cause, op=op,
                        detail=f"{op} node '{node.name}' in the compiled graph: {_WHY[cause]}")


def _without_gradient(backend) -> BreakFinding | None:
    """An op on the path of the imported graph with no registered gradient (see formats.tf_graph)."""
    find = getattr(backend.splits, "without_gradient", None)
    op = find() if find is not None else None
    if op is None:
        return None
    return BreakFinding(location=op.name, cause="non-differentiable", op=op.type,
                        detail=f"{op.type} node '{op.name}' in the compiled graph: TensorFlow has no gradient "
                               f"registered for {op.type}, so no gradient flows back through it")


def count_graph_ops(graph_def, names: dict[str, str]) -> dict[str, int]:
    """How many nodes of each op type in ``names`` the graph (and its functions) hold."""
    counts: dict[str, int] = {}
    if graph_def is None:
        return counts
    for node in _graph_ops(graph_def):
        if node.op in names:
            counts[names[node.op]] = counts.get(names[node.op], 0) + 1
    return counts

"""One-node (or few-node) ONNX graphs for each op real exports use, with an input to run them on.

Each case is (id, model builder); the builder returns (ModelProto, input array). Shared by the op tests
and the corpus (no __init__.py here, see onnx_helpers)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _rng(seed=0):
    return np.random.default_rng(seed)


def one_node(op, x_shape, *, opset, inits=(), extra_inputs=(), out_shape=None, nodes=None, **attrs):
    """A graph X -> op(X, *extra_inputs) -> Y; ``inits`` are (name, array) initializers."""
    initializers = [numpy_helper.from_array(np.asarray(a), n) for n, a in inits]
    graph_nodes = nodes or [helper.make_node(op, ["X", *extra_inputs], ["Y"], **attrs)]
    graph = helper.make_graph(graph_nodes, op.lower(), [helper.make_tensor_value_info("X", F, x_shape)],
                              [helper.make_tensor_value_info("Y", F, out_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    x = _rng(1).standard_normal([d if isinstance(d, int) else 2 for d in x_shape]).astype(np.float32)
    return model, x


def _resize(opset, mode, coord="half_pixel", nearest="round_prefer_floor", *, by="scales", cubic=-0.75,
            antialias=None, exclude=0):
    attrs = {"mode": mode}
    if opset >= 11:
        attrs.update(coordinate_transformation_mode=coord, nearest_mode=nearest, cubic_coeff_a=cubic,
                     exclude_outside=exclude)
    if antialias is not None:
        attrs["antialias"] = antialias
    scales = np.array([1, 1, 2, 1.5], dtype=np.float32)
    if opset == 10:
        return one_node("Resize", [1, 2, 4, 6], opset=10, inits=[("s", scales)], extra_inputs=["s"], **attrs)
    if by == "scales":
        inits, extra = [("s", scales)], (["", "s"] if opset >= 13 else ["roi", "s"])
    else:
        inits, extra = [("z", np.array([1, 2, 7, 9], dtype=np.int64))], (["", "", "z"] if opset >= 13
                                                                          else ["roi", "scl", "z"])
    if opset == 11:
        inits = inits + [("roi", np.zeros(0, np.float32)), ("scl", np.zeros(0, np.float32))]
    return one_node("Resize", [1, 2, 4, 6], opset=opset, inits=inits, extra_inputs=extra, **attrs)


def _where_expand_range():
    """Dynamic-shape logic: Range over a Shape-derived length, Expand to a computed shape, Where mask."""
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Gather", ["shape", "i1"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=F),
        helper.make_node("Less", ["rf", "half"], ["m1"]),
        helper.make_node("Unsqueeze", ["m1", "ax0"], ["m2"]),
        helper.make_node("Expand", ["m2", "shape"], ["mask"]),
        helper.make_node("Mul", ["X", "two"], ["x2"]),
        helper.make_node("Where", ["mask", "X", "x2"], ["Y"]),
    ]
    inits = [("i1", np.array(1, np.int64)), ("zero", np.array(0, np.int64)), ("one", np.array(1, np.int64)),
             ("half", np.array(2.5, np.float32)), ("ax0", np.array([0], np.int64)), ("two", np.array(2, np.float32))]
    return one_node("Where", ["N", "L"], opset=13, inits=inits, nodes=nodes)


def cases() -> list[tuple[str, object]]:
    r = _rng(0)
    out: list[tuple[str, object]] = []
    for opset in (10, 11, 13, 18, 19):
        modes = ["nearest", "linear"] + (["cubic"] if opset >= 11 else [])
        for mode in modes:
            out.append((f"Resize-{opset}-{mode}", lambda o=opset, m=mode: _resize(o, m)))
        if opset >= 11:
            for coord in ("align_corners", "asymmetric", "pytorch_half_pixel"):
                out.append((f"Resize-{opset}-linear-{coord}", lambda o=opset, c=coord: _resize(o, "linear", c)))
            for nearest in ("floor", "ceil", "round_prefer_ceil"):
                out.append((f"Resize-{opset}-nearest-{nearest}-asym",
                            lambda o=opset, n=nearest: _resize(o, "nearest", "asymmetric", n)))
            out.append((f"Resize-{opset}-nearest-sizes", lambda o=opset: _resize(o, "nearest", by="sizes")))
            out.append((f"Resize-{opset}-linear-sizes", lambda o=opset: _resize(o, "linear", by="sizes")))
    out.append(("Upsample-9-nearest", lambda: one_node("Upsample", [1, 2, 3, 4], opset=9, mode="nearest",
                inits=[("s", np.array([1, 1, 2, 2], np.float32))], extra_inputs=["s"])))
    out.append(("Upsample-9-linear", lambda: one_node("Upsample", [1, 2, 3, 4], opset=9, mode="linear",
                inits=[("s", np.array([1, 1, 2, 3], np.float32))], extra_inputs=["s"])))
    out.append(("Upsample-7-nearest", lambda: one_node("Upsample", [1, 2, 3, 4], opset=7, mode="nearest",
                                                       scales=[1.0, 1.0, 2.0, 2.0])))
    out.append(("HardSigmoid", lambda: one_node("HardSigmoid", [2, 5], opset=13, alpha=0.3, beta=0.4)))
    out.append(("HardSigmoid-default", lambda: one_node("HardSigmoid", [2, 5], opset=13)))
    out.append(("HardSwish", lambda: one_node("HardSwish", [2, 5], opset=14)))
    w = r.standard_normal((2, 3, 3, 3)).astype(np.float32)
    out.append(("ConvTranspose-output_padding", lambda: one_node(
        "ConvTranspose", [1, 2, 5, 5], opset=13, inits=[("w", w), ("b", np.ones(3, np.float32))],
        extra_inputs=["w", "b"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])))
    out.append(("ConvTranspose-output_shape", lambda: one_node(
        "ConvTranspose", [1, 2, 5, 5], opset=13, inits=[("w", w)], extra_inputs=["w"], strides=[2, 2],
        output_shape=[10, 10])))
    wg = r.standard_normal((4, 1, 3, 3)).astype(np.float32)
    out.append(("ConvTranspose-group-dilation", lambda: one_node(
        "ConvTranspose", [1, 4, 5, 5], opset=13, inits=[("w", wg)], extra_inputs=["w"], group=4,
        dilations=[2, 2], strides=[2, 2], output_padding=[1, 1])))
    out.append(("ConvTranspose-auto_pad", lambda: one_node(
        "ConvTranspose", [1, 2, 5, 5], opset=13, inits=[("w", w)], extra_inputs=["w"], strides=[2, 2],
        auto_pad="SAME_UPPER")))
    e = r.standard_normal((6, 4)).astype(np.float32)
    out.append(("Einsum-matmul", lambda: one_node("Einsum", [2, 3, 6], opset=12, inits=[("e", e)],
                                                  extra_inputs=["e"], equation="bij,jk->bik")))
    out.append(("Einsum-attention", lambda: one_node(
        "Einsum", [2, 3, 5, 4], opset=12, nodes=[helper.make_node("Einsum", ["X", "X"], ["Y"],
                                                                  equation="bhqd,bhkd->bhqk")])))
    out.append(("Einsum-implicit", lambda: one_node("Einsum", [3, 6], opset=12, inits=[("e", e)],
                                                    extra_inputs=["e"], equation="ij,jk")))
    g, b = r.standard_normal(6).astype(np.float32), r.standard_normal(6).astype(np.float32)
    out.append(("LayerNormalization", lambda: one_node(
        "LayerNormalization", [2, 3, 6], opset=17, inits=[("g", g), ("b", b)], extra_inputs=["g", "b"],
        epsilon=1e-5)))
    g2 = r.standard_normal((3, 6)).astype(np.float32)
    out.append(("LayerNormalization-axis-2", lambda: one_node(
        "LayerNormalization", [2, 3, 6], opset=17, inits=[("g", g2)], extra_inputs=["g"], axis=-2)))
    out.append(("LayerNormalization-no-bias", lambda: one_node(
        "LayerNormalization", [2, 3, 6], opset=17, inits=[("g", g)], extra_inputs=["g"])))
    gi, bi = r.standard_normal(3).astype(np.float32), r.standard_normal(3).astype(np.float32)
    out.append(("InstanceNormalization", lambda: one_node(
        "InstanceNormalization", [2, 3, 4, 5], opset=6, inits=[("g", gi), ("b", bi)], extra_inputs=["g", "b"],
        epsilon=1e-3)))
    out.append(("InstanceNormalization-1d", lambda: one_node(
        "InstanceNormalization", [2, 3, 7], opset=6, inits=[("g", gi), ("b", bi)], extra_inputs=["g", "b"])))
    for mode in ("DCR", "CRD"):
        out.append((f"DepthToSpace-{mode}", lambda m=mode: one_node("DepthToSpace", [1, 8, 3, 4], opset=13,
                                                                   blocksize=2, mode=m)))
    out.append(("SpaceToDepth", lambda: one_node("SpaceToDepth", [1, 2, 4, 6], opset=13, blocksize=2)))
    out.append(("Where-Expand-Range-dynamic", _where_expand_range))
    out.append(("GlobalAveragePool", lambda: one_node("GlobalAveragePool", [2, 3, 4, 5], opset=13)))
    out.append(("GlobalMaxPool", lambda: one_node("GlobalMaxPool", [2, 3, 4, 5], opset=13)))
    out.append(("GlobalAveragePool-1d", lambda: one_node("GlobalAveragePool", [2, 3, 7], opset=13)))
    return out

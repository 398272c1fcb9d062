"""Canonical passes before conversion, and graphs whose batch size is fixed.

Each canonical pass is tested on a hand-built graph that needs it: onnx2torch alone fails on it, the
pass changes what it should, the canonical graph computes what the original does on ONNX Runtime, and
the loaded model is converted and verified, with the passes listed in the conversion check.
"""

import numpy as np
import onnx
import onnx2torch
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx_helpers import export, random_input

import xaiready as xr
from xaiready.convert import canonical
from xaiready.convert.passes import prepare
from xaiready.readiness.checks import run_check

RNG = np.random.default_rng(0)


def _f32(*shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _graph(nodes, initializers, out_shape, in_shape=(1, 3, 8, 8), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _head(features: str):
    """features (1, 4, 8, 8) -> y (1, 5): pool, flatten, Gemm."""
    nodes = [helper.make_node("GlobalAveragePool", [features], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["y"], transB=1)]
    return nodes, {"head_w": _f32(5, 4), "head_b": _f32(5)}


def _constant(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def conv_with_constant_weights():
    """paddle2onnx style: the Conv's weight and bias are Constant nodes, not initializers."""
    head, inits = _head("features")
    nodes = [_constant("conv1_weights", _f32(4, 3, 3, 3)), _constant("conv1_bias", _f32(4)),
             helper.make_node("Conv", ["x", "conv1_weights", "conv1_bias"], ["features"], pads=[1, 1, 1, 1]),
             *head]
    return _graph(nodes, inits, (1, 5))


def convs_sharing_a_weight_through_identity():
    """The legacy exporter's deduplication: the second Conv reads the first one's weight through
    Identity, the third through two."""
    head, inits = _head("c")
    nodes = [helper.make_node("Identity", ["w"], ["w_alias"]), helper.make_node("Identity", ["w_alias"], ["w_alias2"]),
             helper.make_node("Conv", ["x", "w", "b"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["a1"]),
             helper.make_node("Conv", ["a1", "w_alias", "b"], ["b2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b2"], ["b3"]),
             helper.make_node("Conv", ["b3", "w_alias2", "b"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c0", "w4", "b4"], ["c"], pads=[1, 1, 1, 1]), *head]
    return _graph(nodes, {"w": _f32(3, 3, 3, 3), "b": _f32(3), "w4": _f32(4, 3, 3, 3), "b4": _f32(4), **inits},
                  (1, 5))


def conv_with_a_computed_weight():
    """The Conv weight is a Reshape of a flat constant, its shape a Concat of two Constant nodes."""
    head, inits = _head("features")
    nodes = [helper.make_node("Constant", [], ["s1"], value_ints=[4, 3]),
             helper.make_node("Constant", [], ["s2"], value_ints=[3, 3]),
             helper.make_node("Concat", ["s1", "s2"], ["shape"], axis=0),
             helper.make_node("Reshape", ["w_flat", "shape"], ["w"]),
             helper.make_node("Conv", ["x", "w", "b"], ["features"], pads=[1, 1, 1, 1]), *head]
    return _graph(nodes, {"w_flat": _f32(108), "b": _f32(4), **inits}, (1, 5))


def layer_norm_after_a_computed_reshape():
    """LayerNormalization's converter reads the normalised size off the input's inferred shape, which
    only shape inference with data propagation knows: the Reshape target is built from Shape(x)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("LayerNormalization", ["flat", "scale", "bias"], ["normed"], axis=-1),
             helper.make_node("Gemm", ["normed", "w", "c"], ["y"], transB=1)]
    inits = {"zero": np.array(0, np.int64), "axis0": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
             "scale": 1 + _f32(192), "bias": _f32(192), "w": _f32(5, 192), "c": _f32(5)}
    return _graph(nodes, inits, (1, 5))


def _ort(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _records(model) -> dict[str, canonical.PassRecord]:
    return {r.name: r for r in prepare(model)[2]}


def _load(model, tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    handle = xr.load(path)
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    return handle, conversion


CASES = {
    # name: (graph, the pass it needs, its count, the other counts that must show)
    "constant-weights": (conv_with_constant_weights, "constants-to-initializers", 2, {}),
    "identity-aliases": (convs_sharing_a_weight_through_identity, "identity-aliases", 2, {}),
    "constant-subgraph": (conv_with_a_computed_weight, "constant-folding", 2,
                          {"constants-to-initializers": 2, "unused-initializers": 4}),
    "shape-inference": (layer_norm_after_a_computed_reshape, "shape-inference", 6, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_each_pass_makes_the_graph_it_needs_convertible(case, tmp_path, monkeypatch):
    from onnx2torch.node_converters import registry

    from xaiready.convert import gapfill

    build, needed, count, others = CASES[case]
    model = build()
    gapfill.install()
    for key, original in gapfill.REPLACED.items():  # onnx2torch alone, its own converters
        monkeypatch.setitem(registry._CONVERTER_REGISTRY, key, original)
    with pytest.raises((KeyError, RuntimeError)):  # onnx2torch alone: a missing weight, or a wrong shape
        module = onnx2torch.convert(model)
        module(torch.from_numpy(random_input((1, 3, 8, 8))))
    monkeypatch.undo()
    records = _records(model)
    assert records[needed].changed == count, records
    for name, expected in others.items():
        assert records[name].changed == expected, records
    prepared = prepare(model)[0]
    x = random_input((1, 3, 8, 8), seed=1)
    np.testing.assert_allclose(_ort(prepared, x), _ort(model, x), rtol=1e-6, atol=1e-6)
    handle, conversion = _load(model, tmp_path)
    assert conversion.status == "pass", conversion.detail
    assert f"{needed} {count}" in conversion.detail
    assert "finite differences" in conversion.detail  # verification still decides
    np.testing.assert_allclose(handle.forward(x), _ort(model, x), rtol=1e-4, atol=1e-5)


def test_check_lists_the_passes_that_ran(tmp_path):
    handle, _ = _load(conv_with_constant_weights(), tmp_path)
    report = run_check(handle, random_input((1, 3, 8, 8))).to_dict()
    conversion = next(c for c in report["checks"] if c["name"] == "conversion")
    assert ("canonical passes: constants-to-initializers 2, identity-aliases 0, constant-folding 0, "
            "unused-initializers 0, shape-inference") in conversion["detail"]
    assert report["model"]["converted_from"] == "onnx"


def test_passes_leave_the_original_proto_alone():
    model = conv_with_constant_weights()
    before = model.SerializeToString()
    prepare(model)
    assert model.SerializeToString() == before


def test_constant_folding_is_bounded_and_skips_random_ops():
    """A ConstantOfShape far larger than its input stays a node, so does a random op; the small
    constant Add next to them folds."""
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("RandomNormalLike", ["x"], ["noise"]),
             helper.make_node("Add", ["c1", "c2"], ["c"]),
             helper.make_node("Add", ["x", "zeros"], ["x1"]),
             helper.make_node("Add", ["x1", "c"], ["x2"]),
             helper.make_node("Mul", ["noise", "zero"], ["n0"]),
             helper.make_node("Add", ["x2", "n0"], ["y"])]
    inits = {"big_shape": np.array([1, 3, 256, 256], np.int64), "c1": _f32(1), "c2": _f32(1),
             "zero": np.zeros(1, np.float32)}
    model = _graph(nodes, inits, (1, 3, 256, 256), in_shape=(1, 3, 256, 256))
    folded, remark = canonical.fold_constant_subgraphs(model)
    assert folded == 1 and not remark
    assert [n.op_type for n in model.graph.node] == ["ConstantOfShape", "RandomNormalLike", "Add", "Add", "Mul", "Add"]


def test_identity_read_inside_a_subgraph_is_kept():
    then_out = helper.make_tensor_value_info("t", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("Identity", ["w_alias"], ["t"])], "then", [], [then_out])
    nodes = [helper.make_node("Identity", ["w"], ["w_alias"]), helper.make_node("Identity", ["w"], ["w_other"]),
             helper.make_node("If", ["cond"], ["picked"], then_branch=branch, else_branch=branch),
             helper.make_node("Add", ["x", "picked"], ["x1"]), helper.make_node("Add", ["x1", "w_other"], ["y"])]
    model = _graph(nodes, {"w": _f32(1), "cond": np.array(True)}, (1, 3, 8, 8))
    assert canonical.resolve_identity_aliases(model.graph) == 1  # w_other only
    assert [n.output[0] for n in model.graph.node if n.op_type == "Identity"] == ["w_alias"]


# ---- fixed batch sizes -------------------------------------------------------------------------------------
class FlatNet(torch.nn.Module):
    """Conv-ReLU-flatten-linear: the flatten bakes the export's batch size into a Reshape."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def fixed_exports(tmp_path_factory):
    """FlatNet exported with the batch fixed at 1 (legacy) and at 3 (dynamo, static shapes)."""
    out = {}
    for batch, exporter in ((1, "legacy17"), (3, "dynamo")):
        folder = tmp_path_factory.mktemp(f"batch{batch}")
        out[batch] = export(FlatNet().eval(), folder / "model.onnx", exporter, shape=(batch, 3, 16, 16))
    return out


def _per_sample(fn, x):
    return np.concatenate([fn(x[i:i + 1]) for i in range(len(x))])


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_runs_any_number_of_samples(fixed_exports, batch):
    handle = xr.load(fixed_exports[batch], convert=False)
    assert handle.backend.input.fixed_batch == batch
    x = random_input((5, 3, 16, 16), seed=2)
    out = handle.forward(x)
    assert out.shape == (5, 5)
    np.testing.assert_allclose(out, _per_sample(handle.forward, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, FlatNet().eval()(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    ours = xr.explain(handle, x, "occlusion")  # black-box chunks of any size reach the graph
    reference = xr.explain(FlatNet().eval(), x, "occlusion")
    assert ours.values.shape == x.shape
    np.testing.assert_allclose(ours.values, reference.values, rtol=1e-4, atol=1e-5)
    assert "padded" in " ".join(handle.notes) if batch > 1 else True


@pytest.mark.parametrize("batch", [1, 3])
def test_converted_fixed_batch_graph_runs_any_number_of_samples(fixed_exports, batch):
    handle = xr.load(fixed_exports[batch])
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert handle.framework == "torch" and conversion.status == "pass", conversion.detail
    assert handle.backend.fixed_batch == batch
    onnxruntime_handle = handle.reference  # run_check lets go of it once equivalence is checked
    x = random_input((5, 3, 16, 16), seed=3)
    out = handle.forward(x)
    np.testing.assert_allclose(out, _per_sample(handle.forward, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, onnxruntime_handle.forward(x), rtol=1e-4, atol=1e-5)
    target = handle.resolve(xr.targets.Class(2), x)
    layer = run_check(handle, x[:1]).cam["default_layer"]
    whole = handle.vjp(x, target, layers=[layer])
    plain = handle.vjp(x, target)
    xt = torch.from_numpy(x).requires_grad_(True)
    FlatNet().eval()(xt)[:, 2].sum().backward()
    np.testing.assert_allclose(plain.input_grad, xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(whole.input_grad, xt.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert whole.activations[layer].shape[0] == 5 and whole.layer_grads[layer].shape[0] == 5
    for i in range(5):
        one = handle.vjp(x[i:i + 1], target.take(np.array([i])), layers=[layer])
        np.testing.assert_allclose(plain.input_grad[i], one.input_grad[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(whole.activations[layer][i], one.activations[layer][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(whole.layer_grads[layer][i], one.layer_grads[layer][0], rtol=1e-5, atol=1e-7)
    ours = xr.explain(handle, x, "occlusion", xr.targets.Class(2), window=4, stride=4)
    np.testing.assert_allclose(ours.values, xr.explain(onnxruntime_handle, x, "occlusion", xr.targets.Class(2),
                                                       window=4, stride=4).values, rtol=1e-4, atol=1e-5)

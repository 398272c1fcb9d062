"""`xaiready verify-conversion ORIGINAL CONVERTED`: outputs, gradients, one attribution map, a verdict."""

import json

import numpy as np
import torch
from onnx_helpers import random_input, small_net

from xaiready.cli import main


def _input(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, random_input((1, 3, 16, 16), seed=11))
    return str(path)


def test_onnx_against_its_own_conversion(exports, tmp_path, capsys):
    path = str(exports["legacy17"])
    code = main(["verify-conversion", path, path, "--convert", "--input", _input(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["converted"]["converted_from"] == "onnx" and out["original"]["framework"] == "onnxruntime"
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["outputs"]["status"] == "pass" and checks["attribution"]["status"] == "pass"
    assert checks["gradients"]["status"] == "skip" and "no gradients" in checks["gradients"]["detail"]
    assert out["verdict"] == "outputs-equivalent"


def test_torch_original_against_onnx_conversion_compares_gradients(exports, tmp_path, capsys):
    original = tmp_path / "model.pt"
    torch.save(small_net(), original)
    code = main(["verify-conversion", str(original), str(exports["dynamo"]), "--convert", "--trust",
                 "--input", _input(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["gradients"]["status"] == "pass"
    assert out["verdict"] == "equivalent"


def test_different_models_are_not_equivalent(exports, tmp_path, capsys):
    other = tmp_path / "other.pt"
    torch.save(small_net(seed=1), other)
    code = main(["verify-conversion", str(other), str(exports["legacy17"]), "--convert", "--trust",
                 "--input", _input(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "verdict: not-equivalent" in captured.out
    assert captured.err.startswith("error:") and "not equivalent" in captured.err


class _Leaky(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.leaky_relu(x, 0.05)


def test_rejected_conversion_names_the_first_diverging_node(exports, tmp_path, capsys, monkeypatch):
    from onnx2torch.node_converters import registry
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    def wrong(node, graph):
        return OperationConverterResult(torch_module=_Leaky(), onnx_mapping=onnx_mapping_from_node(node))

    monkeypatch.setitem(registry._CONVERTER_REGISTRY, registry.OperationDescription("", "Relu", 14), wrong)
    path = str(exports["legacy17"])
    main(["verify-conversion", path, path, "--convert", "--input", _input(tmp_path), "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["conversion"]["status"] == "warn"
    assert "first divergence at node '/Relu' (Relu)" in checks["conversion"]["detail"]


def test_divergence_on_the_users_input_is_located(exports):
    """A converted model that goes wrong after loading (here: one node swapped) is located on the input."""
    import onnx

    import xaiready as xr
    from xaiready.convert.divergence import locate

    handle = xr.load(exports["legacy17"])
    x = random_input((1, 3, 16, 16), seed=2)
    assert locate(handle, x) is None
    second = [n for n in onnx.load(str(exports["legacy17"])).graph.node if n.op_type == "Relu"][1]
    module = handle.backend.module
    target = next(n.target for n in module.graph.nodes if n.op == "call_module"
                  and second.output[0] in module.get_submodule(n.target).onnx_mapping.outputs)
    wrong = _Leaky()
    wrong.onnx_mapping = module.get_submodule(target).onnx_mapping  # as every converted node has
    setattr(module, target, wrong)
    assert f"first divergence at node '{second.name}' (Relu)" in locate(handle, x)

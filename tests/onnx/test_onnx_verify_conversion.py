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

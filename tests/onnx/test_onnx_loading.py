"""Loading ONNX files: validation, exit codes, external data confinement, batch handling, no-convert."""

import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import pytest
from onnx_helpers import export, random_input, small_net

import xaiready as xr
from xaiready.cli import main
from xaiready.errors import CorruptError, UnsafePathError
from xaiready.readiness.checks import run_check


def test_no_convert_is_inference_only_with_the_reason(exports):
    handle = xr.load(exports["legacy17"], convert=False)
    assert handle.framework == "onnxruntime" and handle.source.format == "onnx"
    report = run_check(handle, random_input((1, 3, 16, 16)))
    assert report.verdict == "inference-only"
    assert report.gradient["break"]["cause"] == "non-differentiable"
    assert "ONNX Runtime computes no gradients" in report.gradient["break"]["detail"]
    checks = {c.name: c for c in report.checks}
    assert checks["gradient-backend"].status == "fail"
    assert checks["conversion"].status == "skip"
    assert report.cam["status"] == "unavailable"


def test_cli_check_no_convert_json(exports, capsys):
    code = main(["check", str(exports["dynamo"]), "--no-convert", "--json", "--input-shape", "1,3,16,16"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["verdict"] == "inference-only"
    assert out["model"]["format"] == "onnx" and out["model"]["converted_from"] is None


def test_cli_check_converts_by_default(exports, capsys):
    code = main(["check", str(exports["dynamo"]), "--json", "--require", "full"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["model"]["converted_from"] == "onnx"
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["conversion-equivalence"]["status"] == "pass"
    assert "max abs difference" in checks["conversion-equivalence"]["detail"]


def test_input_and_output_spec_read_from_graph(exports):
    handle = xr.load(exports["legacy13"], convert=False)
    backend = handle.backend
    assert backend.input.shape == (1, 3, 16, 16) and backend.input.fixed_batch == 1
    assert backend.example_shape() == (1, 3, 16, 16)
    assert handle.layout == "NCHW"
    assert len(backend.outputs) == 1


def test_dynamic_batch_axis(tmp_path):
    import torch

    path = tmp_path / "dyn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(small_net(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    handle = xr.load(path, convert=False)
    assert handle.backend.input.fixed_batch is None
    assert handle.backend.example_shape() == (1, 3, 16, 16)
    x = random_input((4, 3, 16, 16))
    assert handle.forward(x).shape == (4, 5)
    assert xr.load(path, output="logits").backend.output is None  # a single output needs no choice


@pytest.mark.parametrize("convert", [False, True], ids=["onnxruntime", "converted"])
def test_fixed_batch_runs_in_chunks(exports, convert):
    handle = xr.load(exports["dynamo"], convert=convert)
    assert (handle.framework == "torch") == convert
    x = random_input((3, 3, 16, 16), seed=1)
    batched = handle.forward(x)
    single = np.concatenate([handle.forward(x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_dynamo_export_keeps_weights_beside_the_graph(exports):
    folder = exports["dynamo"].parent
    proto = onnx.load(str(exports["dynamo"]), load_external_data=False)
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"} and (folder / "model.onnx.data").is_file()
    assert xr.load(exports["dynamo"]).source.converted_from == "onnx"


# ---- invalid files: exit 3 --------------------------------------------------------------------------------
def _corrupt_variants(src, folder):
    data = src.read_bytes()
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (folder / "garbage.onnx").write_bytes(b"\x08\x07\x12\x04abcd" + os.urandom(64))
    bad = onnx.load(str(src))
    bad.graph.node[0].input[0] = "nowhere"  # a node reading an undefined tensor: the checker refuses
    onnx.save(bad, str(folder / "invalid.onnx"))
    return ["empty.onnx", "truncated.onnx", "garbage.onnx", "invalid.onnx"]


def test_corrupt_empty_truncated_invalid_exit_3(exports, tmp_path, capsys):
    for name in _corrupt_variants(exports["legacy17"], tmp_path):
        code = main(["check", str(tmp_path / name)])
        err = capsys.readouterr().err.strip()
        assert code == 3, (name, err)
        assert err.startswith("error:") and "\n" not in err and name in err


def test_checker_finding_is_a_corrupt_error(exports, tmp_path):
    _corrupt_variants(exports["legacy17"], tmp_path)
    with pytest.raises(CorruptError, match="checker"):
        xr.load(tmp_path / "invalid.onnx")


# ---- external data must stay in the model's folder: exit 4, nothing outside opened --------------------------
_OPENED: list[str] = []
_RECORDING = [False]


def _audit(event, args):
    if _RECORDING[0] and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _RECORDING is set


def _external_model(tmp_path, location_for):
    """A model whose weights live in external data, then re-pointed by ``location_for(folder, outside)``."""
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    proto = onnx.load(str(export(small_net(), tmp_path / "plain.onnx", "legacy17")))
    onnx.save_model(proto, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    shutil.move(str(folder / "weights.bin"), str(outside / "weights.bin"))
    location = location_for(folder, outside)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(folder / "model.onnx"))
    return folder / "model.onnx", outside


def _symlink(folder, outside):
    os.symlink(outside / "weights.bin", folder / "weights.bin")
    return "weights.bin"


def _hardlink(folder, outside):
    os.link(outside / "weights.bin", folder / "weights.bin")
    return "weights.bin"


def _symlinked_dir(folder, outside):
    os.symlink(outside, folder / "sub")
    return "sub/weights.bin"


ESCAPES = {
    "dotdot": lambda folder, outside: "../outside/weights.bin",
    "absolute": lambda folder, outside: str(outside / "weights.bin"),
    "symlink": _symlink,
    "symlinked-dir": _symlinked_dir,
    "hardlink": _hardlink,
}


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_external_data_escape_refused_before_anything_opens_it(tmp_path, escape, capsys):
    model, outside = _external_model(tmp_path, ESCAPES[escape])
    _OPENED.clear()
    _RECORDING[0] = True
    try:
        with pytest.raises(UnsafePathError) as info:
            xr.load(model)
        code = main(["check", str(model)])
    finally:
        _RECORDING[0] = False
    assert info.value.exit_code == 4 and code == 4
    assert "weights.bin" in capsys.readouterr().err
    leaked = [p for p in _OPENED if p.startswith(os.path.realpath(outside))]
    assert not leaked, leaked
    assert any(p == os.path.realpath(model) for p in _OPENED)  # the hook does see our opens


def test_external_data_inside_folder_loads(tmp_path):
    model, outside = _external_model(tmp_path, lambda folder, out: "weights.bin")
    shutil.move(str(outside / "weights.bin"), str(model.parent / "weights.bin"))
    handle = xr.load(model)
    assert handle.source.converted_from == "onnx"


def test_missing_external_data_is_corrupt(tmp_path):
    model, _ = _external_model(tmp_path, lambda folder, out: "weights.bin")
    with pytest.raises(CorruptError, match="missing"):
        xr.load(model)


def test_fixed_batch_layer_capture_covers_every_sample(exports):
    handle = xr.load(exports["dynamo"])
    layer = run_check(handle, random_input((1, 3, 16, 16))).cam["default_layer"]
    x = random_input((2, 3, 16, 16), seed=2)
    target = handle.resolve(xr.targets.Class(1), x)
    both = handle.vjp(x, target, layers=[layer])
    for i in range(2):
        one = handle.vjp(x[i:i + 1], target.take(np.array([i])), layers=[layer])
        np.testing.assert_allclose(both.activations[layer][i], one.activations[layer][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(both.layer_grads[layer][i], one.layer_grads[layer][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(both.input_grad[i], one.input_grad[0], rtol=1e-5, atol=1e-6)


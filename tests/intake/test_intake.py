"""Intake: bad, hostile and oversized files are refused from bytes and headers, before any
framework parses them, with one line, the documented exit code, and nothing executed or opened
outside the model's folder."""

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import xaiready as xr
from payloads import Payload
from xaiready import errors, limits
from xaiready.inputs import read_input
from xaiready.testing import zoo

ZOO = "xaiready.testing.zoo"


# ---- archives: bombs and escaping members ----------------------------------------------------------------------
def _state_dict_zip(path: Path) -> Path:
    torch.save(zoo.build("HealthyCNN").state_dict(), path)
    return path


def _add_member(path: Path, name: str, data: bytes, compress=zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """Add a member; 'archive/' stands for the torch archive's own top folder."""
    with zipfile.ZipFile(path) as zf:
        top = zf.namelist()[0].split("/")[0]
    name = name.replace("archive/", f"{top}/", 1) if name.startswith("archive/") else name
    with zipfile.ZipFile(path, "a", compression=compress) as zf:
        zf.writestr(name, data)
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo(name)


def test_zip_bomb_in_torch_archive_refused_before_loading(tmp_path):
    path = _state_dict_zip(tmp_path / "bomb.pt")
    info = _add_member(path, "archive/extra", bytes(20 * 1024 * 1024))
    ratio = info.file_size / info.compress_size
    assert ratio > limits.current().max_ratio
    with pytest.raises(errors.ResourceError) as exc:
        xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert exc.value.exit_code == 5 and "inflates" in exc.value.one_line()


def test_keras_config_bomb_refused(tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", b"{" + b" " * (16 * 1024 * 1024) + b"}")
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(errors.ResourceError):
        xr.load(path)


@pytest.mark.parametrize("delta,refused", [(-1, True), (0, False), (1, False)])
def test_compression_ratio_limit_boundaries(tmp_path, delta, refused):
    path = _state_dict_zip(tmp_path / "m.pt")
    info = _add_member(path, "archive/extra", bytes(2 * 1024 * 1024))
    ratio = info.file_size / info.compress_size
    with limits.override(max_ratio=ratio + delta * 1e-6 * ratio):
        if refused:
            with pytest.raises(errors.ResourceError):
                xr.load(path, arch=f"{ZOO}:HealthyCNN")
        else:
            assert xr.load(path, arch=f"{ZOO}:HealthyCNN").source.format == "pytorch-state-dict"


@pytest.mark.parametrize("delta,refused", [(-1, True), (0, False), (1, False)])
def test_unpacked_size_limit_boundaries(tmp_path, delta, refused):
    path = _state_dict_zip(tmp_path / "m.pt")
    with zipfile.ZipFile(path) as zf:
        total = sum(i.file_size for i in zf.infolist())
    with limits.override(max_unpacked_bytes=total + delta):
        if refused:
            with pytest.raises(errors.ResourceError, match="unpacked"):
                xr.load(path, arch=f"{ZOO}:HealthyCNN")
        else:
            xr.load(path, arch=f"{ZOO}:HealthyCNN")


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil", "archive/../../evil"])
def test_zip_slip_member_refused(tmp_path, member):
    path = _state_dict_zip(tmp_path / "m.pt")
    _add_member(path, member, b"x", compress=zipfile.ZIP_STORED)
    with pytest.raises(errors.UnsafePathError) as exc:
        xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert exc.value.exit_code == 4


def test_bomb_refusal_keeps_memory_small_and_never_imports_torch(tmp_path):
    path = _state_dict_zip(tmp_path / "bomb.pt")
    _add_member(path, "archive/extra", bytes(64 * 1024 * 1024))
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's high-water mark across exec.
    code = ("import re, sys; from xaiready.cli import main; rc = main(['check', sys.argv[1]]); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(rc, 'torch' in sys.modules, hwm // 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    rc, torch_loaded, peak_mb = out.stdout.split()
    assert rc == "5" and torch_loaded == "False"
    assert int(peak_mb) < 150, f"peak RSS {peak_mb} MB"
    assert out.stderr.count("\n") == 1 and "inflates" in out.stderr


# ---- TorchScript side effects -------------------------------------------------------------------------------------
_SCRIPTED_PAYLOAD = """
import sys, torch, warnings
warnings.filterwarnings("ignore")

class SideEffect(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(2, 2))

    def forward(self, x):
        return x @ self.weight

    @torch.jit.export
    def __getstate__(self):
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        self.weight = state[0]
        self.training = state[1]
        print("PAYLOAD-RAN")  # scripted code running inside torch.jit.load

torch.jit.save(torch.jit.script(SideEffect()), sys.argv[1])
"""


def test_torchscript_setstate_side_effect_never_runs_without_trust(tmp_path):
    path = tmp_path / "scripted.pt"
    maker = tmp_path / "make_payload.py"  # TorchScript needs the source in a file
    maker.write_text(_SCRIPTED_PAYLOAD)
    subprocess.run([sys.executable, str(maker), str(path)], check=True)
    loader = "import sys; from xaiready.cli import main; sys.exit(main(['check', sys.argv[1], '--input-shape', '1,2'] + sys.argv[2:]))"
    refused = subprocess.run([sys.executable, "-c", loader, str(path)], capture_output=True, text=True)
    assert refused.returncode == 4 and "PAYLOAD-RAN" not in refused.stdout + refused.stderr
    trusted = subprocess.run([sys.executable, "-c", loader, str(path), "--trust"], capture_output=True, text=True)
    assert "PAYLOAD-RAN" in trusted.stdout, "the control must prove the payload is live"


# ---- truncated, empty, random files for every format ------------------------------------------------------------
def _valid(kind: str, folder: Path) -> Path:
    if kind == "pt":
        return _state_dict_zip(folder / "m.pt")
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file(zoo.build("HealthyCNN").state_dict(), folder / "m.safetensors")
        return folder / "m.safetensors"
    if kind == "onnx":
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
        (folder / "m.onnx").write_bytes(helper.make_model(g).SerializeToString())
        return folder / "m.onnx"
    if kind == "keras":
        with zipfile.ZipFile(folder / "m.keras", "w") as zf:
            zf.writestr("metadata.json", "{}")
            zf.writestr("config.json", "{}")
            zf.writestr("model.weights.h5", b"")
        return folder / "m.keras"
    if kind == "npy":
        np.save(folder / "x.npy", zoo.example_input())
        return folder / "x.npy"
    if kind == "png":
        from PIL import Image

        Image.new("RGB", (32, 32)).save(folder / "x.png")
        return folder / "x.png"
    raise ValueError(kind)


def _open(path: Path):
    if path.suffix in (".npy", ".png"):
        return read_input(path)
    return xr.load(path, arch=f"{ZOO}:HealthyCNN")


@pytest.mark.parametrize("kind", ["pt", "safetensors", "onnx", "keras", "npy", "png"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_damaged_files_exit_3_with_one_line(tmp_path, kind, damage):
    path = _valid(kind, tmp_path)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: max(1, len(data) // 3)],
                      "random": np.random.default_rng(1).bytes(len(data))}[damage])
    with pytest.raises(errors.XaiReadyError) as exc:
        _open(path)
    assert exc.value.exit_code == 3, exc.value.one_line()
    assert "\n" not in exc.value.one_line() and str(path) in exc.value.one_line()


def test_valid_controls_still_load(tmp_path):
    assert xr.load(_valid("pt", tmp_path), arch=f"{ZOO}:HealthyCNN").source.format == "pytorch-state-dict"
    assert xr.load(_valid("safetensors", tmp_path), arch=f"{ZOO}:HealthyCNN").source.format == "pytorch-state-dict"
    assert read_input(_valid("npy", tmp_path)).shape == (1, 3, 32, 32)
    assert read_input(_valid("png", tmp_path)).shape == (1, 3, 32, 32)


def test_pickle_named_onnx_is_reported_as_a_contradiction(tmp_path):
    import pickle

    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(errors.CorruptError, match="content is Python pickle, extension says ONNX"):
        xr.load(path)


def test_object_npy_refused_without_unpickling(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(errors.CorruptError, match="Python objects"):
        read_input(path)


# ---- images and declared inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("delta,refused", [(-1, True), (0, False), (1, False)])
def test_image_pixel_limit_boundaries(tmp_path, delta, refused):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30)).save(path)
    with limits.override(max_image_pixels=1200 + delta):
        if refused:
            with pytest.raises(errors.ResourceError, match="pixels"):
                read_input(path)
        else:
            assert read_input(path).shape == (1, 3, 30, 40)


def test_image_bomb_refused_from_header(tmp_path):
    """A PNG declaring 100k x 100k pixels in a few kilobytes is refused before decoding."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(errors.ResourceError) as exc:
        read_input(path)
    assert exc.value.exit_code == 5


@pytest.mark.parametrize("delta,refused", [(-1, True), (0, False), (1, False)])
def test_declared_input_limit_boundaries(tmp_path, delta, refused):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 3, 8, 8), np.float32))
    per_sample = 3 * 8 * 8 * 4
    with limits.override(max_input_bytes=per_sample + delta):
        if refused:
            with pytest.raises(errors.ResourceError):
                read_input(path)
        else:
            assert read_input(path).shape == (2, 3, 8, 8)
        if refused:
            with pytest.raises(errors.ResourceError):
                limits.check_declared_input((1, 3, 8, 8))
        else:
            limits.check_declared_input((1, 3, 8, 8))


def test_trust_never_lifts_limits(tmp_path):
    path = _state_dict_zip(tmp_path / "bomb.pt")
    _add_member(path, "archive/extra", bytes(20 * 1024 * 1024))
    with pytest.raises(errors.ResourceError):
        xr.load(path, trust=True, arch=f"{ZOO}:HealthyCNN")


# ---- nothing outside the model folder is opened -----------------------------------------------------------------
_OPENED: list[str] = []
_RECORDING = [False]


def _audit(event, args):
    if _RECORDING[0] and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def _outside(folder: Path) -> list[str]:
    allowed = (str(folder), sys.prefix, sys.base_prefix, str(Path(xr.__file__).parent), "/dev/", "/proc/", "/sys/")
    return [p for p in _OPENED if not p.startswith(allowed) and not p.endswith((".py", ".pyc", ".so"))]


def test_loading_and_checking_open_nothing_outside_the_folder(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    path = _state_dict_zip(folder / "m.pt")
    xr.load(path, arch=f"{ZOO}:HealthyCNN")  # warm imports first
    _OPENED.clear()
    _RECORDING[0] = True
    try:
        handle = xr.load(path, arch=f"{ZOO}:HealthyCNN")
        xr.check(handle, zoo.example_input())
    finally:
        _RECORDING[0] = False
    assert any(p.startswith(str(folder)) for p in _OPENED), "the audit hook saw no open at all"
    assert _outside(folder) == []


def test_cli_error_line_names_file_format_and_reason(tmp_path, capsys):
    from xaiready.cli import main

    path = _state_dict_zip(tmp_path / "bomb.pt")
    _add_member(path, "archive/extra", bytes(20 * 1024 * 1024))
    assert main(["check", str(path)]) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "[zip]" in err or "[pytorch" in err or "zip" in err
    assert io is not None


# ---- declared input specs of ONNX and Keras models ----------------------------------------------------------
def _onnx_with_input(path: Path, dims) -> Path:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    path.write_bytes(helper.make_model(g).SerializeToString())
    return path


def test_onnx_declaring_a_huge_input_is_refused_before_a_session(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _onnx_with_input(tmp_path / "huge.onnx", [1, 3, 100_000, 100_000])  # 112 GiB per sample
    with pytest.raises(errors.ResourceError) as exc:
        xr.load(path)
    assert exc.value.exit_code == 5 and "declared input" in exc.value.message


@pytest.mark.parametrize("delta,refused", [(-1, True), (0, False), (1, False)])
def test_onnx_declared_input_limit_boundaries(tmp_path, delta, refused):
    pytest.importorskip("onnxruntime")
    path = _onnx_with_input(tmp_path / "m.onnx", ["N", 3, 8, 8])  # dynamic batch: per sample 768 bytes
    with limits.override(max_input_bytes=3 * 8 * 8 * 4 + delta):
        if refused:
            with pytest.raises(errors.ResourceError):
                xr.load(path, convert=False)
        else:
            assert xr.load(path, convert=False).source.format == "onnx"


def test_keras_declaring_a_huge_input_is_refused_from_its_config(tmp_path):
    pytest.importorskip("keras")
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 50_000, 50_000, 3], "name": "x"}}]}}
    path = tmp_path / "huge.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(errors.ResourceError) as exc:
        xr.load(path)
    assert exc.value.exit_code == 5


@pytest.mark.parametrize("trust", [False, True])
def test_keras_vocabulary_path_outside_the_folder_is_refused(tmp_path, trust):
    pytest.importorskip("keras")
    config = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "StringLookup", "config": {"name": "lookup", "vocabulary": "../../etc/passwd"}}]}}
    path = tmp_path / "vocab.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", b"")
    with pytest.raises(errors.UnsafePathError) as exc:
        xr.load(path, trust=trust)
    assert exc.value.exit_code == 4 and "vocabulary" in exc.value.message


# ---- pickles that break, TF graphs with file ops ------------------------------------------------------------
def test_pickle_that_breaks_right_after_its_payload_runs_nothing(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    blob = pickle.dumps(Payload(marker), protocol=4)
    path = tmp_path / "broken.pkl"
    path.write_bytes(blob[:-1] + b"\xff\xff")  # the STOP opcode replaced by garbage
    with pytest.raises(errors.XaiReadyError) as exc:
        xr.load(path, trust=False)
    assert exc.value.exit_code in (3, 4)
    assert not marker.exists()


_TF_WRITER = """
import sys, tensorflow as tf
marker, out, kind = sys.argv[1], sys.argv[2], sys.argv[3]

class Writer(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.ones((3, 2)))

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def __call__(self, x):
        tf.io.write_file(marker, "payload ran")
        return x @ self.w

module = Writer()
if kind == "savedmodel":
    tf.saved_model.save(module, out)
else:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    frozen = convert_variables_to_constants_v2(module.__call__.get_concrete_function())
    with open(out, "wb") as fh:
        fh.write(frozen.graph.as_graph_def().SerializeToString())
"""


@pytest.mark.parametrize("kind", ["savedmodel", "graphdef"])
def test_tf_graph_with_write_file_refused_before_tensorflow_loads(tmp_path, kind):
    pytest.importorskip("tensorflow")
    marker = tmp_path / "marker"
    out = tmp_path / ("sm" if kind == "savedmodel" else "frozen.pb")
    maker = tmp_path / "make.py"
    maker.write_text(_TF_WRITER)
    made = subprocess.run([sys.executable, str(maker), str(marker), str(out), kind], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-500:]
    marker.unlink(missing_ok=True)
    code = ("import sys; from xaiready.cli import main; rc = main(['check', sys.argv[1], '--input-shape', '1,3']); "
            "print(rc, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    rc, tf_loaded = result.stdout.split()[-2:]
    assert rc == "4" and tf_loaded == "False", result.stderr
    assert "WriteFile" in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()


_KERAS_LAMBDA = """
import sys, keras
marker, folder = sys.argv[1], sys.argv[2]

def touch(t, marker=marker):
    open(marker, "w").close()  # the payload: runs wherever the Lambda runs
    return t

inputs = keras.Input((4,))
outputs = keras.layers.Dense(2)(keras.layers.Lambda(touch)(inputs))
model = keras.Model(inputs, outputs)
model.save(folder + "/lambda.keras")
model.save(folder + "/lambda.h5")
"""


def test_keras_lambda_payload_never_runs_without_trust(tmp_path):
    pytest.importorskip("keras")
    marker = tmp_path / "marker"
    maker = tmp_path / "make.py"
    maker.write_text(_KERAS_LAMBDA)
    made = subprocess.run([sys.executable, str(maker), str(marker), str(tmp_path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-500:]
    for name in ("lambda.keras", "lambda.h5"):
        marker.unlink(missing_ok=True)
        with pytest.raises(errors.UntrustedError):
            xr.load(tmp_path / name)
        assert not marker.exists(), name

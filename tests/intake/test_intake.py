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
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    line = lines[0]
    assert line.startswith(f"error: {path} [zip]: "), line  # the file, then the detected format in brackets
    limit = f"over the limit of {limits.current().max_ratio:g}x"  # the reason: which limit, and by how much
    assert "archive member" in line and "/extra' inflates" in line and limit in line, line
    assert "Traceback" not in err


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



# ---- legacy (pre-zip) torch.save files ------------------------------------------------------------------------
def _cli(capsys, *args) -> tuple[int, str, str]:
    from xaiready.cli import main

    with limits.override():  # the CLI's --max-* options configure the process: keep them to this call
        rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _legacy_save(obj, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


def _pickle_spans(blob: bytes, count: int) -> list[tuple[int, int]]:
    """(start, end) of the first ``count`` pickles of a legacy file, read with pickletools."""
    import pickletools

    stream, spans = io.BytesIO(blob), []
    for _ in range(count):
        start = stream.tell()
        for _op in pickletools.genops(stream):
            pass
        spans.append((start, stream.tell()))
    return spans


@pytest.mark.parametrize("name", ["HealthyCNN", "resnet18"])
def test_legacy_state_dict_loads_with_arch_and_no_trust(tmp_path, name):
    if name == "resnet18":
        models = pytest.importorskip("torchvision.models")
        torch.manual_seed(0)
        model, arch, kwargs = models.resnet18(num_classes=10), "torchvision.models:resnet18", {"num_classes": 10}
        x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    else:
        model, arch, kwargs = zoo.build(name), f"{ZOO}:{name}", None
        x = zoo.example_input(n=2)
    path = _legacy_save(model.state_dict(), tmp_path / "legacy.pth")
    assert not zipfile.is_zipfile(path) and path.read_bytes()[:2] == b"\x80\x02"
    handle = xr.load(path, arch=arch, arch_kwargs=kwargs)
    assert handle.source.format == "pytorch-state-dict"
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.asarray(handle.forward(x)), expected)


def test_legacy_state_dict_checks_from_the_cli_like_the_original(tmp_path, capsys):
    model = zoo.build("HealthyCNN")
    path = _legacy_save(model.state_dict(), tmp_path / "legacy.pt")
    rc, out, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "1,3,32,32", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["model"]["format"] == "pytorch-state-dict"
    original = xr.check(model, input_shape=(1, 3, 32, 32)).to_dict()
    assert report["verdict"] == original["verdict"] == "full"
    assert report["gradient"]["input_grad_norm"] == original["gradient"]["input_grad_norm"]


def _legacy_with_hostile_sys_info(path: Path, marker: Path) -> Path:
    """A real legacy state dict whose third pickle (sys info) is swapped for a payload."""
    import pickle

    blob = _legacy_save(zoo.build("HealthyCNN").state_dict(), path).read_bytes()
    (_, _), (_, sys_start), (_, sys_end), *_ = _pickle_spans(blob, 5)
    path.write_bytes(blob[:sys_start] + pickle.dumps(Payload(marker), protocol=2) + blob[sys_end:])
    return path


@pytest.mark.parametrize("where", ["main pickle", "sys info pickle"])
def test_legacy_file_with_a_hostile_global_is_refused_and_runs_nothing(tmp_path, capsys, where):
    marker = tmp_path / "marker"
    path = tmp_path / "legacy.pt"
    if where == "main pickle":
        _legacy_save({"features.0.weight": torch.zeros(2), "hook": Payload(marker)}, path)
    else:
        _legacy_with_hostile_sys_info(path, marker)
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN")
    assert rc == 4, err
    assert err.count("\n") == 1 and str(path) in err and "posix.system" in err and "legacy" in err, err
    with pytest.raises(errors.UntrustedError):
        xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert not marker.exists()
    if where == "main pickle":  # the control: the payload is live once the user trusts the file
        with pytest.raises(errors.XaiReadyError):
            xr.load(path, arch=f"{ZOO}:HealthyCNN", trust=True)
        assert marker.exists()


@pytest.mark.parametrize("payload", ["benign", "hostile"])
def test_legacy_tar_checkpoint_is_still_refused_with_arch(tmp_path, capsys, payload):
    import pickle
    import tarfile
    from collections import OrderedDict

    marker = tmp_path / "marker"
    path = tmp_path / "old.pt"
    obj = OrderedDict() if payload == "benign" else Payload(marker)
    with tarfile.open(path, "w") as tf:
        for name, blob in (("sys_info", pickle.dumps({})), ("pickle", pickle.dumps(obj, protocol=2)),
                           ("storages", pickle.dumps(0)), ("tensors", pickle.dumps(0))):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN")
    assert rc == 4 and err.count("\n") == 1 and "[pytorch-legacy-tar]" in err and str(path) in err, err
    assert not marker.exists()


# ---- pickles of every protocol, recognised by content ---------------------------------------------------------
def _hostile_pickle(kind: str, marker: Path) -> bytes:
    import pickle

    if kind == "handwritten":  # protocol 0 by hand: text opcodes only
        return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    if kind == "4 without header":  # the unpickler needs no PROTO opcode, whatever opcodes follow
        blob = pickle.dumps(Payload(marker), protocol=4)
        assert blob[:2] == b"\x80\x04"
        return blob[2:]
    return pickle.dumps(Payload(marker), protocol=int(kind))


@pytest.mark.parametrize("suffix", [".pkl", ".onnx"])
@pytest.mark.parametrize("kind", ["0", "1", "2", "4", "5", "handwritten", "4 without header"])
def test_pickle_of_every_protocol_is_refused_as_untrusted(tmp_path, capsys, kind, suffix):
    marker = tmp_path / "marker"
    path = tmp_path / f"model{suffix}"
    path.write_bytes(_hostile_pickle(kind, marker))
    global_ = "os.system" if kind == "handwritten" else "posix.system"
    rc, _, err = _cli(capsys, "check", path)
    assert rc == 4, err
    assert err.count("\n") == 1 and err.startswith(f"error: {path} [pickle]: ") and global_ in err, err
    if suffix == ".onnx":
        assert "content is Python pickle, extension says ONNX" in err, err
    with pytest.raises(errors.UntrustedError):
        xr.load(path)
    assert not marker.exists()


def test_protocol_0_pickle_without_code_named_onnx_is_a_contradiction(tmp_path):
    import pickle

    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps({"a": [1, 2.5, "x"]}, protocol=0))
    with pytest.raises(errors.CorruptError, match="content is Python pickle, extension says ONNX"):
        xr.load(path)


def test_random_bytes_and_truncated_onnx_are_still_not_pickles(tmp_path, capsys):
    from xaiready.formats.sniff import sniff

    for seed in range(200):  # random content of every first byte: never taken for a pickle
        data = np.random.default_rng(seed).bytes(64 + seed)
        path = tmp_path / f"r{seed}.bin"
        path.write_bytes(data)
        try:
            fmt = sniff(path).format
        except errors.LoadError:
            continue
        assert fmt not in ("pickle", "pytorch-pickle", "pytorch-state-dict"), (seed, data[:8])
    onnx_path = _valid("onnx", tmp_path)
    good = onnx_path.read_bytes()
    for name, data in (("random.pkl", np.random.default_rng(7).bytes(4096)), ("random.onnx", np.random.default_rng(8).bytes(4096)),
                       ("truncated.onnx", good[: len(good) // 2])):
        (tmp_path / name).write_bytes(data)
        rc, _, err = _cli(capsys, "check", tmp_path / name)
        assert rc == 3 and err.count("\n") == 1 and str(tmp_path / name) in err, err
        assert "pickle" not in err, err


# ---- every input xaiready builds stays under --max-input-mb -------------------------------------------------
def _assert_input_refused(rc: int, err: str, path: Path, shape: tuple, fmt: str, itemsize: int = 4):
    import math

    assert rc == 5, err
    assert err.count("\n") == 1 and err.startswith(f"error: {path} [{fmt}]: "), err
    assert str(shape) in err and f"{itemsize * math.prod(shape)} bytes" in err and "--max-input-mb" in err, err


def test_onnx_huge_declared_batch_is_refused_not_allocated(tmp_path, capsys):
    # Per sample (4M floats, 16 MB) is under the limit; the whole input is 16 TB.
    path = _onnx_with_input(tmp_path / "wide.onnx", [1_000_000, 4_000_000])
    rc, _, err = _cli(capsys, "check", path)
    _assert_input_refused(rc, err, path, (1_000_000, 4_000_000), "onnx")
    rc, _, err = _cli(capsys, "check", path, "--no-convert")
    _assert_input_refused(rc, err, path, (1_000_000, 4_000_000), "onnx")


@pytest.mark.parametrize("convert", [True, False])
def test_onnx_symbolic_dims_filled_by_defaults_are_checked(tmp_path, capsys, convert):
    # Declared ['N', 3, 'H', 'W']: nothing to check per sample; the guess (1, 3, 224, 224) is 602112 bytes.
    path = _onnx_with_input(tmp_path / "dyn.onnx", ["N", 3, "H", "W"])
    flags = [] if convert else ["--no-convert"]
    rc, _, err = _cli(capsys, "check", path, *flags, "--max-input-mb", "0.5")
    _assert_input_refused(rc, err, path, (1, 3, 224, 224), "onnx")


def test_onnx_fixed_batch_with_a_small_sample_is_checked_whole(tmp_path, capsys):
    path = _onnx_with_input(tmp_path / "batch.onnx", [1000, 3, 8, 8])  # 768 bytes a sample, 3 MB in all
    rc, _, err = _cli(capsys, "check", path, "--no-convert", "--max-input-mb", "0.5")
    _assert_input_refused(rc, err, path, (1000, 3, 8, 8), "onnx")


@pytest.mark.parametrize("shape", ["4,3,8,8", "65536,65536,65536,65536,65536", "1000000,3,224,224"])
def test_onnx_input_shape_flag_is_checked(tmp_path, capsys, shape):
    # 4x3x8x8 is 768 bytes a sample but 3072 in all; five dims of 65536 overflow int64 to 0.
    path = _onnx_with_input(tmp_path / "m.onnx", ["N", 3, 8, 8])
    dims = tuple(int(v) for v in shape.split(","))
    rc, _, err = _cli(capsys, "check", path, "--no-convert", "--input-shape", shape, "--max-input-mb", "0.002")
    _assert_input_refused(rc, err, path, dims, "onnx")


def test_state_dict_guessed_input_is_checked(tmp_path, capsys):
    path = _state_dict_zip(tmp_path / "m.pt")  # HealthyCNN: guessed (1, 3, 224, 224), 602112 bytes
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN", "--max-input-mb", "0.5")
    _assert_input_refused(rc, err, path, (1, 3, 224, 224), "pytorch-state-dict")
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN", "--max-input-mb", "0.6")
    assert rc == 0, err  # the control: just over the guess, it runs


@pytest.mark.parametrize("shape", ["4,3,32,32", "65536,65536,65536,65536,65536", "1000000,3,224,224"])
def test_state_dict_input_shape_flag_is_checked(tmp_path, capsys, shape):
    path = _state_dict_zip(tmp_path / "m.pt")
    dims = tuple(int(v) for v in shape.split(","))
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN", "--input-shape", shape,
                      "--max-input-mb", "0.04")  # 41943 bytes: 1x3x32x32 (12288) fits, 4x3x32x32 does not
    _assert_input_refused(rc, err, path, dims, "pytorch-state-dict")


def test_random_input_itself_refuses_an_oversized_shape():
    from xaiready.inputs import random_input

    with pytest.raises(errors.ResourceError) as exc:
        random_input((1_000_000, 4_000_000))
    assert "(1000000, 4000000)" in exc.value.one_line() and "--max-input-mb" in exc.value.one_line()
    with limits.override(max_input_bytes=4 * 12):
        assert random_input((1, 12)).shape == (1, 12)
        with pytest.raises(errors.ResourceError):
            random_input((1, 13))


def test_legacy_state_dict_torch_cannot_read_safely_is_refused_with_its_reason(tmp_path, capsys):
    # torch 2.14's weights-only unpickler lacks FRAME (protocol 4): refused by torch's own gate, exit 4,
    # with torch's reason rather than its generic advice to load the file unsafely.
    path = tmp_path / "legacy4.pt"
    torch.save(zoo.build("HealthyCNN").state_dict(), path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    rc, _, err = _cli(capsys, "check", path, "--arch", f"{ZOO}:HealthyCNN")
    assert rc == 4 and err.count("\n") == 1 and "[pytorch-state-dict]" in err, err
    assert "WeightsUnpickler error: Unsupported operand" in err and "will likely succeed" not in err, err

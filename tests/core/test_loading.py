"""Loading the PyTorch family by content: trust policy, user code, state dicts, TorchScript, bad files."""

import subprocess
import sys
import tarfile
import textwrap
import warnings

import numpy as np
import pytest
import torch

import xaiready as xr
from payloads import Payload
from xaiready import errors
from xaiready.testing import zoo

ZOO = "xaiready.testing.zoo"




def test_pickled_module_refused_without_trust_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save({"model": zoo.build("HealthyCNN"), "hook": Payload(marker)}, path)
    with pytest.raises(errors.UntrustedError) as info:
        xr.load(path)
    assert info.value.exit_code == 4 and "--trust" in info.value.one_line()
    assert not marker.exists()


def test_raw_pickle_payload_refused(tmp_path):
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(errors.UntrustedError):
        xr.load(path)
    assert not marker.exists()


def test_legacy_tar_checkpoint_refused(tmp_path):
    import io
    import pickle

    marker = tmp_path / "marker"
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as tf:
        for name, blob in (("sys_info", pickle.dumps({})), ("pickle", pickle.dumps(Payload(marker))),
                           ("storages", b""), ("tensors", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    with pytest.raises(errors.UntrustedError):
        xr.load(path)
    assert not marker.exists()


def test_pickled_module_loads_with_trust(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(zoo.build("HealthyCNN"), path)
    handle = xr.load(path, trust=True)
    assert handle.source.format == "pytorch-eager"
    assert xr.check(handle, zoo.example_input()).verdict == "full"


def test_safe_switch_not_weakened_by_environment(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pt"
    torch.save({"hook": Payload(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(errors.UntrustedError):
        xr.load(path)
    assert not marker.exists()


def test_missing_class_names_module_and_import_fixes_it(tmp_path):
    code = tmp_path / "teammodels.py"
    code.write_text(textwrap.dedent("""
        import torch.nn as nn
        class TeamNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
                self.fc = nn.Linear(4, 2)
            def forward(self, x):
                return self.fc(self.conv(x).relu().mean((2, 3)))
    """))
    script = f"import sys, torch; sys.path.insert(0, {str(tmp_path)!r}); import teammodels; " \
             f"torch.save(teammodels.TeamNet(), {str(tmp_path / 'team.pt')!r})"
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(errors.MissingCodeError) as info:
        xr.load(tmp_path / "team.pt", trust=True)
    assert "teammodels" in info.value.one_line() and "--import" in info.value.one_line()
    handle = xr.load(tmp_path / "team.pt", trust=True, imports=[str(code)])
    assert xr.check(handle, zoo.example_input()).verdict == "full"


def test_class_pickled_from_main_resolves_through_import(tmp_path):
    code = tmp_path / "defs_main.py"
    body = textwrap.dedent("""
        import torch.nn as nn
        class ScriptNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)
            def forward(self, x):
                return self.conv(x).mean((2, 3))
    """)
    code.write_text(body)
    subprocess.run([sys.executable, "-c", body + f"\nimport torch; torch.save(ScriptNet(), {str(tmp_path / 'm.pt')!r})"],
                   check=True)
    with pytest.raises(errors.MissingCodeError, match="__main__"):
        xr.load(tmp_path / "m.pt", trust=True)
    handle = xr.load(tmp_path / "m.pt", trust=True, imports=[str(code)])
    assert handle.forward(zoo.example_input()).shape == (1, 4)


def test_state_dict_needs_arch_and_loads_with_it(tmp_path):
    path = tmp_path / "weights.pth"
    model = zoo.build("HealthyCNN")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    with pytest.raises(errors.MissingCodeError) as info:
        xr.load(path)
    assert "--arch" in info.value.one_line()
    handle = xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert handle.source.format == "pytorch-state-dict"
    np.testing.assert_allclose(handle.forward(zoo.example_input()),
                               model(torch.from_numpy(zoo.example_input())).detach().numpy(), rtol=1e-6)


def test_arch_from_file_with_kwargs(tmp_path):
    code = tmp_path / "archs.py"
    code.write_text("from xaiready.testing.zoo import HealthyCNN as Net\n")
    path = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(zoo.HealthyCNN(num_classes=3).state_dict(), path)
    handle = xr.load(path, arch=f"{code}:Net", arch_kwargs='{"num_classes": 3}')
    assert handle.forward(zoo.example_input()).shape == (1, 3)


def test_state_dict_mismatch_lists_keys_and_shapes(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(zoo.build("HealthyCNN").state_dict(), path)
    with pytest.raises(errors.ArchMismatchError) as info:
        xr.load(path, arch=f"{ZOO}:HealthyCNN", arch_kwargs={"num_classes": 7})
    assert "head.weight (5, 8) vs (7, 8)" in info.value.message and info.value.exit_code == 3
    with pytest.raises(errors.ArchMismatchError) as info:
        xr.load(path, arch=f"{ZOO}:DetachBetweenBlocks")
    msg = info.value.message
    assert "missing: block1.0.weight" in msg and "unexpected: features.0.weight" in msg


def test_dataparallel_prefix_is_stripped(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({f"module.{k}": v for k, v in zoo.build("HealthyCNN").state_dict().items()}, path)
    handle = xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert any("module." in n for n in handle.notes)


def test_safetensors_with_arch(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(zoo.build("HealthyCNN").state_dict(), path)
    handle = xr.load(path, arch=f"{ZOO}:HealthyCNN")
    assert xr.check(handle, zoo.example_input()).verdict == "full"


def _torchscript(tmp_path, name="HealthyCNN", kind="trace"):
    model = zoo.build(name)
    path = tmp_path / f"{name}-{kind}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sm = torch.jit.trace(model, torch.from_numpy(zoo.example_input())) if kind == "trace" else torch.jit.script(model)
    torch.jit.save(sm, path)
    return path


def test_torchscript_needs_trust(tmp_path):
    path = _torchscript(tmp_path)
    with pytest.raises(errors.UntrustedError, match="TorchScript"):
        xr.load(path)
    assert xr.load(path, trust=True).source.format == "torchscript"


def test_torchscript_with_arch_is_converted_and_verified(tmp_path):
    path = _torchscript(tmp_path)
    handle = xr.load(path, trust=True, arch=f"{ZOO}:HealthyCNN")
    d = xr.check(handle, zoo.example_input()).to_dict()
    assert d["model"]["converted_from"] == "torchscript" and d["model"]["format"] == "pytorch-eager"
    assert d["verdict"] == "full"
    eq = next(c for c in d["checks"] if c["name"] == "conversion-equivalence")
    assert eq["status"] == "pass"


def test_torchscript_with_wrong_arch_is_rejected_and_reported_as_source(tmp_path):
    path = _torchscript(tmp_path)
    code = tmp_path / "lookalike.py"  # same weights as HealthyCNN, different forward
    code.write_text("from xaiready.testing.zoo import HealthyCNN\n"
                    "class Doubled(HealthyCNN):\n    def forward(self, x):\n        return 2 * super().forward(x)\n")
    handle = xr.load(path, trust=True, arch=f"{code}:Doubled")
    d = xr.check(handle, zoo.example_input()).to_dict()
    assert d["model"]["format"] == "torchscript" and d["model"]["converted_from"] is None
    eq = next(c for c in d["checks"] if c["name"] == "conversion-equivalence")
    assert eq["status"] == "fail" and "differ" in eq["detail"]
    assert d["verdict"] == "gradient-only"


def _onnx_bytes():
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph).SerializeToString()


@pytest.mark.parametrize("case", ["empty", "truncated-zip", "random", "text", "onnx-named-pt", "image-as-model"])
def test_bad_files_get_one_line_exit_3(tmp_path, case):
    path = tmp_path / "model.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "truncated-zip":
        torch.save(zoo.build("HealthyCNN").state_dict(), path)
        path.write_bytes(path.read_bytes()[:700])
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "text":
        path.write_text("this is not a model\n")
    elif case == "onnx-named-pt":
        pytest.importorskip("onnx")
        path.write_bytes(_onnx_bytes())
    elif case == "image-as-model":
        from PIL import Image

        path = tmp_path / "x.png"
        Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(errors.LoadError) as info:
        xr.load(path, arch=f"{ZOO}:HealthyCNN")
    line = info.value.one_line()
    assert info.value.exit_code == 3 and "\n" not in line and str(path) in line
    if case == "onnx-named-pt":
        assert "content is ONNX, extension says PyTorch" in line
    if case == "empty":
        assert "empty" in line

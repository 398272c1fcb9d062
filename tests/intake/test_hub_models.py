"""Hugging Face folders and hub factories: transformers save_pretrained folders load by content, timm and
transformers models build from --arch factories, what the model carries about its preprocessing is
recorded, remote code (auto_map) needs --trust, and nothing outside the model folder is read.

Every model is built at random weights from a small config; nothing is downloaded."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it

import numpy as np
import pytest
import torch

import xaiready as xr
from xaiready import errors

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64, num_labels=5)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _vit():
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(transformers.ViTConfig(**VIT)).eval()


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    model = _vit()
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                   image_std=[0.2, 0.25, 0.3], resample=3).save_pretrained(folder)
    return folder, model


def _x(n=2, size=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def _logits(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return (out.logits if hasattr(out, "logits") else out).numpy()


def _cli(capsys, *args):
    from xaiready import limits
    from xaiready.cli import main

    with limits.override():
        rc = main([str(a) for a in args])
    return rc, *capsys.readouterr()


# ---- transformers save_pretrained folders -------------------------------------------------------------------
def test_hf_folder_loads_by_content_with_same_logits(vit_folder):
    folder, model = vit_folder
    handle = xr.load(folder)
    assert handle.source.format == "huggingface" and handle.source.framework == "torch"
    x = _x()
    np.testing.assert_allclose(handle.forward(x), _logits(model, x), atol=1e-5)
    assert handle.backend.example_shape() == (1, 3, 32, 32)  # from the carried size, not the 224 guess
    assert handle.preprocessing == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "input_size": [3, 32, 32],
                                    "interpolation": "bicubic", "source": "preprocessor_config.json"}
    assert any("preprocessing carried by the model: mean [0.4, 0.5, 0.6]" in n for n in handle.notes)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_a_file_of_the_folder_names_the_folder(vit_folder, name):
    folder, model = vit_folder
    handle = xr.load(folder / name)
    assert handle.source.format == "huggingface" and handle.source.path == str(folder)
    x = _x(1)
    np.testing.assert_allclose(handle.forward(x), _logits(model, x), atol=1e-5)


def test_check_and_explain_use_the_logits_of_the_model_output(vit_folder):
    folder, model = vit_folder
    handle = xr.load(folder)
    report = xr.check(handle)  # no input: the carried 32x32 size makes the guessed input fit
    assert report.context["output_shape"] == [1, 5] and report.context["input_shape"] == [1, 3, 32, 32]
    assert report.verdict == "full", report.to_dict()
    assert any("'logits' entry is explained" in n for n in report.context["notes"])
    x = _x(1, seed=3)
    attr = xr.explain(handle, x, "gradient", sanity="off")
    xt = torch.from_numpy(x).requires_grad_(True)
    logits = model(xt).logits
    logits[0, int(logits.argmax())].backward()
    np.testing.assert_allclose(attr.values, xt.grad.numpy(), atol=1e-6)


def test_base_model_without_head_needs_output_choice(tmp_path):
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**VIT)).eval().save_pretrained(tmp_path)
    with pytest.raises(errors.UsageError, match="several outputs"):
        xr.load(tmp_path).forward(_x(1))
    assert xr.load(tmp_path, output="pooler_output").forward(_x(1)).shape == (1, 32)


def test_weights_of_another_head_are_refused_not_left_random(tmp_path):
    torch.manual_seed(0)
    transformers.ViTModel(transformers.ViTConfig(**VIT)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["ViTForImageClassification"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(errors.ArchMismatchError, match="missing: classifier"):
        xr.load(tmp_path)


def test_sharded_folder_loads_and_an_escaping_shard_is_refused(tmp_path):
    model = _vit()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    x = _x(1)
    np.testing.assert_allclose(xr.load(tmp_path).forward(x), _logits(model, x), atol=1e-5)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = "../outside.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(errors.UnsafePathError, match="not a file of the folder"):
        xr.load(tmp_path)


def test_a_link_out_of_the_folder_is_refused(tmp_path, vit_folder):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes((vit_folder[0] / "config.json").read_bytes())
    (folder / "model.safetensors").symlink_to(vit_folder[0] / "model.safetensors")
    with pytest.raises(errors.UnsafePathError, match="outside the model's folder"):
        xr.load(folder)


def test_pytorch_model_bin_goes_through_the_safe_path(tmp_path, vit_folder):
    model = vit_folder[1]
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    x = _x(1)
    np.testing.assert_allclose(xr.load(tmp_path).forward(x), _logits(model, x), atol=1e-5)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.zeros(1), "p": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(errors.UntrustedError, match="unpickles Python objects"):
        xr.load(tmp_path)
    assert not marker.exists()


# ---- remote code (auto_map) ---------------------------------------------------------------------------------
_REMOTE = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput
open({marker!r}, "w").write("ran")


class TinyConfig(PretrainedConfig):
    model_type = "tiny-remote"


class TinyForImageClassification(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4, 5)
        self.post_init()

    def forward(self, pixel_values):
        return ImageClassifierOutput(logits=self.head(self.conv(pixel_values).mean((2, 3))))
'''


def _remote_folder(tmp_path, model_ref="modeling_tiny.TinyForImageClassification"):
    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "modeling_tiny.py").write_text(_REMOTE.format(marker=str(marker)))
    torch.manual_seed(0)
    conv, head = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 5)
    save_file({"conv.weight": conv.weight.detach(), "conv.bias": conv.bias.detach(),
               "head.weight": head.weight.detach(), "head.bias": head.bias.detach()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tiny-remote", "architectures": ["TinyForImageClassification"],
        "auto_map": {"AutoConfig": "modeling_tiny.TinyConfig", "AutoModelForImageClassification": model_ref}}))
    x = _x(1)
    expected = head(conv(torch.from_numpy(x)).mean((2, 3))).detach().numpy()
    return folder, marker, x, expected


def test_auto_map_needs_trust_and_runs_nothing_without_it(tmp_path, monkeypatch, capsys):
    folder, marker, x, expected = _remote_folder(tmp_path)
    with pytest.raises(errors.UntrustedError) as exc:
        xr.load(folder)
    line = exc.value.one_line()
    assert "auto_map" in line and "modeling_tiny" in line and "--trust" in line
    rc, out, err = _cli(capsys, "check", folder)
    assert rc == 4 and err.count("\n") == 1 and "auto_map" in err
    assert not marker.exists()
    # with --trust the folder's own code builds the model (copied to a module cache kept in tmp_path)
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    handle = xr.load(folder, trust=True)
    assert marker.exists()
    np.testing.assert_allclose(handle.forward(x), expected, atol=1e-5)


def test_auto_map_cli_is_one_line_without_traceback(tmp_path):
    folder, marker, *_ = _remote_folder(tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "xaiready.cli", "check", str(folder)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "auto_map" in result.stderr and "--trust" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_auto_map_naming_another_repository_is_refused_even_with_trust(tmp_path):
    folder, marker, *_ = _remote_folder(tmp_path, model_ref="someone/repo--modeling_tiny.TinyForImageClassification")
    for trust in (False, True):
        with pytest.raises(errors.UnsafePathError, match="outside the model's folder"):
            xr.load(folder, trust=trust)
    assert not marker.exists()


# ---- factories: --arch MODULE:CALLABLE ------------------------------------------------------------------------
@pytest.mark.parametrize("saver", ["torch.save", "safetensors"])
def test_timm_factory_loads_a_state_dict(tmp_path, saver):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    path = tmp_path / ("w.pt" if saver == "torch.save" else "w.safetensors")
    if saver == "torch.save":
        torch.save(model.state_dict(), path)
    else:
        save_file(model.state_dict(), path)
    handle = xr.load(path, arch="timm:create_model", arch_kwargs='{"model_name": "resnet18", "num_classes": 5}')
    x = _x(1, size=64)
    np.testing.assert_allclose(handle.forward(x), _logits(model, x), atol=1e-5)
    assert handle.preprocessing == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "input_size": [3, 224, 224], "interpolation": "bicubic",
                                    "source": "timm pretrained_cfg"}
    assert any("(from timm pretrained_cfg)" in n for n in handle.notes)


def test_timm_factory_vit_gets_its_own_input_size(tmp_path, capsys):
    kwargs = {"model_name": "vit_tiny_patch16_224", "img_size": 32, "depth": 1, "num_classes": 3}
    torch.manual_seed(0)
    model = timm.create_model(pretrained=False, **kwargs).eval()
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    handle = xr.load(tmp_path / "vit.pt", arch="timm:create_model", arch_kwargs=kwargs)
    assert handle.backend.example_shape() == (1, 3, 32, 32)  # pretrained_cfg says 224; the model takes 32
    assert handle.preprocessing["input_size"] == [3, 32, 32]
    rc, out, err = _cli(capsys, "check", tmp_path / "vit.pt", "--arch", "timm:create_model",
                        "--arch-kwargs", json.dumps(kwargs), "--json")
    assert rc == 0, err
    assert json.loads(out)["input_shape"] == [1, 3, 32, 32]


def test_timm_hub_folder_loads_without_arch(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=4).eval()
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    handle = xr.load(tmp_path)
    assert handle.source.format == "huggingface"
    x = _x(1, size=64)
    np.testing.assert_allclose(handle.forward(x), _logits(model, x), atol=1e-5)
    assert handle.preprocessing["source"] == "timm pretrained_cfg"
    assert handle.preprocessing["mean"] == [0.485, 0.456, 0.406]


def test_transformers_class_factory_with_a_config(tmp_path, vit_folder):
    model = vit_folder[1]
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    x = _x(1)
    for kwargs in ({"config": VIT}, VIT):  # the config under "config", or its fields directly
        handle = xr.load(tmp_path / "vit.pt", arch="transformers:ViTForImageClassification", arch_kwargs=kwargs)
        np.testing.assert_allclose(handle.forward(x), _logits(model, x), atol=1e-5)
        assert handle.backend.example_shape() == (1, 3, 32, 32)
    auto = xr.load(tmp_path / "vit.pt", arch="transformers:AutoModelForImageClassification",
                   arch_kwargs={"config": dict(VIT, model_type="vit")})
    np.testing.assert_allclose(auto.forward(x), _logits(model, x), atol=1e-5)
    # save_pretrained's checkpoint names differ from the module's (transformers 5): converted the same way
    saved = xr.load(vit_folder[0] / "model.safetensors", arch="transformers:ViTForImageClassification",
                    arch_kwargs={"config": VIT})
    np.testing.assert_allclose(saved.forward(x), _logits(model, x), atol=1e-5)


def test_a_factory_that_returns_no_module_is_refused(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(errors.MissingCodeError, match="not a torch.nn.Module"):
        xr.load(tmp_path / "w.pt", arch="collections:OrderedDict")


def test_an_image_is_preprocessed_as_the_model_carries_it(vit_folder, tmp_path, capsys):
    """An image given without --mean/--std/--resize is normalised and resized with the folder's own
    preprocessor_config.json, and the report says so; an array of raw pixel values is warned about."""
    from PIL import Image

    folder, model = vit_folder
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "img.png")
    rc, out, err = _cli(capsys, "check", folder, "--input", tmp_path / "img.png", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["input_shape"] == [1, 3, 32, 32]
    note = next(n for n in report["notes"] if n.startswith("image preprocessed"))
    assert "[0.4, 0.5, 0.6]" in note and "[0.2, 0.25, 0.3]" in note and "preprocessor_config.json" in note
    np.save(tmp_path / "raw.npy", np.random.default_rng(1).uniform(0, 255, (1, 3, 32, 32)).astype(np.float32))
    rc, out, err = _cli(capsys, "check", folder, "--input", tmp_path / "raw.npy", "--json")
    assert rc == 0, err
    assert any("unnormalised" in n for n in json.loads(out)["notes"])

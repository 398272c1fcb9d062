"""`xaiready explain` end to end: model file in, PNG grid and .npy out, one-line refusals."""

import argparse
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from xaiready.commands import explain as explain_cmd
from xaiready.errors import CapabilityError, XaiReadyError
from xaiready.methods.base import Attribution
from xaiready.render.heatmap import caption, render
from xaiready.testing import zoo

ZOO = "xaiready.testing.zoo"


def _run(*argv):
    """The explain subcommand's own parser and run(), as the CLI wires them."""
    p = argparse.ArgumentParser()
    explain_cmd.add_arguments(p)
    return explain_cmd.run(p.parse_args([str(a) for a in argv]))


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "HealthyCNN.pt"
    torch.save(zoo.build("HealthyCNN").state_dict(), path)
    return path


def test_several_methods_make_one_grid_png_and_npy(tmp_path, model_file, capsys):
    img = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "cat.png")
    out, save = tmp_path / "grid.png", tmp_path / "attr.npy"
    code = _run(model_file, "--arch", f"{ZOO}:HealthyCNN", "--input", tmp_path / "cat.png", "--resize", "32,32",
                "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--method", "gradcam", "--method",
                "integrated-gradients", "--n-steps", "8", "--method", "guided-backprop", "--target", "3",
                "--out", out, "--save", save)
    assert code == 0
    text = capsys.readouterr().out
    assert "gradcam: values (1, 32, 32), class 3" in text and "completeness gap" in text and "relu overridden 2/2" in text
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 3 * png.size[1] // 2  # three panels side by side
    values = np.load(tmp_path / "attr-integrated-gradients.npy")
    meta = json.loads((tmp_path / "attr-integrated-gradients.json").read_text())
    assert values.shape == (1, 3, 32, 32) and meta["schema_version"] == 1 and meta["target"]["k"] == 3
    assert meta["info"]["n_steps"] == 8


def test_refusal_is_one_line_with_exit_6(tmp_path):
    path = tmp_path / "Detach.pt"
    torch.save(zoo.build("DetachBetweenBlocks").state_dict(), path)
    with pytest.raises(CapabilityError) as info:
        _run(path, "--arch", f"{ZOO}:DetachBetweenBlocks", "--input-shape", "1,3,32,32", "--method", "saliency",
             "--out", tmp_path / "x.png")
    assert info.value.exit_code == 6 and "--fallback" in info.value.one_line()


def test_fallback_needs_a_registered_occlusion(tmp_path):
    from xaiready.methods import load_methods

    path = tmp_path / "Detach.pt"
    torch.save(zoo.build("DetachBetweenBlocks").state_dict(), path)
    args = [path, "--arch", f"{ZOO}:DetachBetweenBlocks", "--input-shape", "1,3,32,32", "--method", "gradcam",
            "--fallback", "--out", tmp_path / "x.png"]
    if "occlusion" in load_methods():
        assert _run(*args) == 0  # the black-box engineer's occlusion, labelled in the caption
    else:
        with pytest.raises(CapabilityError, match="needs input gradients"):
            _run(*args)


def test_nothing_to_write_is_a_usage_error(model_file):
    with pytest.raises(XaiReadyError) as info:
        _run(model_file, "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "1,3,32,32", "--method", "saliency")
    assert info.value.exit_code == 2


def test_black_box_results_are_labelled(tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    attr = Attribution(values=np.random.default_rng(2).random((1, 16, 16)), method="occlusion",
                       family="black_box", target={"type": "class", "k": 1}, scores=np.array([2.5]))
    assert "occlusion (black-box)" in caption(attr, "net.pt", 0)
    out = render([attr], x, tmp_path / "bb.png", model="net.pt")
    with Image.open(out) as png:
        assert png.format == "PNG"


def test_through_the_real_cli_main(tmp_path, model_file, capsys):
    from xaiready.cli import main

    out = tmp_path / "one.png"
    assert main(["explain", str(model_file), "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "2,3,32,32",
                 "--method", "hirescam", "--layer", "features.2", "--out", str(out)]) == 0
    assert out.exists() and "layer features.2" in capsys.readouterr().out
    assert main(["explain", str(model_file), "--arch", f"{ZOO}:HealthyCNN", "--input-shape", "2,3,32,32",
                 "--method", "saliency", "--save", str(tmp_path / "s.npy"), "--verbose"]) == 0
    assert re.search(r"saliency: [0-9.]+ s; health checks \(cheap\) [0-9.]+ s more", capsys.readouterr().out)
    detach = tmp_path / "Detach.pt"
    torch.save(zoo.build("DetachBetweenBlocks").state_dict(), detach)
    code = main(["explain", str(detach), "--arch", f"{ZOO}:DetachBetweenBlocks", "--input-shape", "1,3,32,32",
                 "--method", "gradcam", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 6 and err.count("\n") == 1 and err.startswith("error: ") and "Detach.pt" in err
    assert main(["explain", str(model_file), "--arch", f"{ZOO}:HealthyCNN", "--method", "nosuch",
                 "--out", str(out)]) == 2

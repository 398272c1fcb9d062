"""Multi-input models: one input explained, the others held fixed, on PyTorch, Keras and ONNX.

The model is linear in the image, with the metadata entering through a product term:

    logit_k = (1 + m_0) * sum_c W_kc mean_hw(image_c) + sum_j V_kj m_j

so d logit_k / d image[c, h, w] = (1 + m_0) W_kc / (H W) for every pixel: the input gradient depends
on the held metadata only through (1 + m_0), integrated gradients from a zero baseline are
image * gradient, and occluding one value drops the logit by exactly that value's share.
"""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaiready as xr
from xaiready.api import as_handle
from xaiready.cli import main
from xaiready.commands import explain as explain_cmd
from xaiready.errors import InputError, UsageError
from xaiready.targets import Class

from .conftest import assert_close

W = np.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.0]], dtype=np.float32)  # conv 1x1: (classes, channels)
V = np.array([[2.0, -1.0], [0.5, 1.5]], dtype=np.float32)  # metadata weights: (classes, features)
H = 6


class ImageMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.meta_head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(W)[:, :, None, None])
            self.meta_head.weight.copy_(torch.as_tensor(V))

    def forward(self, image, meta):
        return self.conv(image).mean((2, 3)) * (1 + meta[:, :1]) + self.meta_head(meta)


class KeywordMeta(ImageMeta):
    def forward(self, image, *, meta):  # noqa: D102 - the metadata can only be passed by name
        return self.conv(image).mean((2, 3)) * (1 + meta[:, :1]) + self.meta_head(meta)


class Closed(nn.Module):
    """ImageMeta with one sample's metadata closed over: the single-input model it must equal."""

    def __init__(self, meta):
        super().__init__()
        self.inner, self.meta = ImageMeta(), torch.as_tensor(meta)

    def forward(self, image):
        return self.inner(image, self.meta.expand(image.shape[0], -1))


class TwoViews(nn.Module):
    """logit_k = sum_c W_kc (mean(left_c) + 2 mean(right_c)): two image-shaped inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(W)[:, :, None, None])

    def forward(self, left, right):
        return self.conv(left).mean((2, 3)) + 2 * self.conv(right).mean((2, 3))


@pytest.fixture
def image():
    return np.random.default_rng(0).standard_normal((2, 3, H, H)).astype(np.float32)


@pytest.fixture
def meta():
    return np.array([[0.5, -1.0], [-3.0, 2.0]], dtype=np.float32)  # 1 + m_0 = 1.5 and -2: different signs


def hand_gradient(meta, k, shape, layout="NCHW"):
    """d logit_k / d image: (1 + m_0) W_kc / (H W), the same at every pixel."""
    per_channel = (1 + meta[:, :1]) * W[k][None, :] / (H * H)  # (N, C)
    grad = np.broadcast_to(per_channel[:, :, None, None], shape if layout == "NCHW" else
                           (shape[0], shape[3], shape[1], shape[2]))
    return grad if layout == "NCHW" else grad.transpose(0, 2, 3, 1)


def logits(image, meta):
    return (1 + meta[:, :1]) * (image.mean((2, 3)) @ W.T) + meta @ V.T


# ---- PyTorch ---------------------------------------------------------------------------------------------
def test_gradient_and_saliency_equal_the_hand_derivation_with_each_sample_s_own_meta(image, meta):
    model = ImageMeta()
    handle = as_handle(model)
    grad = xr.explain(handle, {"image": image, "meta": meta}, "gradient", target=Class(0), inputs="image")
    assert_close(grad.values, hand_gradient(meta, 0, image.shape))
    sal = xr.explain(handle, {"image": image, "meta": meta}, "saliency", target=Class(0))  # image: the only 4-D one
    assert_close(sal.values, np.abs(hand_gradient(meta, 0, image.shape)))
    assert handle.backend.held is None  # the caller's handle is left single-input


def test_integrated_gradients_are_complete_with_meta_held(image, meta):
    attr = xr.explain(ImageMeta(), {"image": image, "meta": meta}, "integrated-gradients", target=Class([0, 1]),
                      n_steps=8, baseline="zeros")
    k = np.array([0, 1])
    expected = image * np.stack([hand_gradient(meta[i:i + 1], k[i], image[:1].shape)[0] for i in range(2)])
    assert_close(attr.values, expected, rtol=1e-4)
    gap = logits(image, meta) - logits(np.zeros_like(image), meta)  # the meta term cancels: it is held
    sums = attr.values.reshape(2, -1).sum(1)
    assert_close(sums, gap[np.arange(2), k], rtol=1e-4)
    assert attr.target["k"] == [0, 1]


def test_smoothgrad_of_a_constant_gradient_is_that_gradient(image, meta):
    attr = xr.explain(ImageMeta(), {"image": image, "meta": meta}, "smoothgrad", target=Class(1), base="gradient",
                      n_samples=4)
    assert_close(attr.values, hand_gradient(meta, 1, image.shape), rtol=1e-4)


def test_gradcam_reads_the_model_s_own_conv_layer(image, meta):
    attr = xr.explain(ImageMeta(), {"image": image, "meta": meta}, "gradcam", target=Class(0), layer="conv")
    assert attr.layer == "conv"
    acts = np.einsum("kc,nchw->nkhw", W, image)[:, 0]
    expected = np.maximum((1 + meta[:, :1, None]) / (H * H) * acts, 0)  # alpha = (1 + m_0) / HW on channel 0
    assert_close(attr.raw, expected, rtol=1e-4)


def test_occlusion_of_single_values_drops_each_value_s_share(image, meta):
    attr = xr.explain(ImageMeta(), {"image": image, "meta": meta}, "occlusion", target=Class(0),
                      window=(1, 1, 1), stride=(1, 1, 1))
    assert_close(attr.values, image * hand_gradient(meta, 0, image.shape), rtol=1e-4)
    assert attr.black_box
    assert [w for w in attr.warnings if "black-box" in w and not w.startswith("sample")]  # said once, not per sample


def test_a_meta_row_shared_by_every_sample_explains_the_batch_at_once(image, meta):
    shared = np.repeat(meta[:1], 2, axis=0)  # equal rows count as one
    attr = xr.explain(ImageMeta(), {"image": image, "meta": shared}, "gradient", target=Class(0))
    assert_close(attr.values, hand_gradient(shared, 0, image.shape))
    assert "per_sample" not in attr.info  # one explanation of the whole batch, not one per sample


def test_keyword_only_inputs_are_passed_by_name(image, meta):
    attr = xr.explain(KeywordMeta(), {"meta": meta, "image": image}, "gradient", target=Class(0))
    assert_close(attr.values, hand_gradient(meta, 0, image.shape))


def test_keyword_only_inputs_pass_through_torchscript_too(image, meta):
    scripted = torch.jit.script(KeywordMeta().eval())
    attr = xr.explain(scripted, {"meta": meta, "image": image}, "gradient", target=Class(0))
    assert_close(attr.values, hand_gradient(meta, 0, image.shape))


def test_two_views_explain_the_one_named(image):
    x = {"left": image, "right": image[::-1].copy()}
    with pytest.raises(UsageError, match=r"2 image-shaped \(4-D\) inputs among left \(2, 3, 6, 6\), right"):
        xr.explain(TwoViews(), x, "gradient")
    attr = xr.explain(TwoViews(), x, "gradient", target=Class(1), inputs="right")
    assert_close(attr.values, 2 * hand_gradient(np.zeros((2, 2), np.float32), 1, image.shape))
    assert attr.info["inputs"] == {"explained": {"name": "right", "shape": [2, 3, H, H]},
                                   "held": {"left": [2, 3, H, H]}}


class Masked(nn.Module):
    """logit_k = sum_c W_kc mean_hw(image_c * mask): a boolean mask, kept boolean, gates the gradient."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.as_tensor(W)[:, :, None, None])

    def forward(self, image, mask):
        assert mask.dtype == torch.bool  # held inputs keep their dtype
        return self.conv(image * mask).mean((2, 3))


def test_a_boolean_mask_held_beside_the_image_gates_its_gradient(image):
    mask = np.zeros((2, 1, H, H), dtype=bool)
    mask[0, :, :3], mask[1, :, :, 2:] = True, True
    attr = xr.explain(Masked(), {"image": image, "mask": mask}, "gradient", target=Class(0), inputs="image")
    assert_close(attr.values, hand_gradient(np.zeros((2, 2), np.float32), 0, image.shape) * mask)


def test_check_names_the_explained_and_the_held_inputs(image, meta):
    report = xr.check(ImageMeta(), {"image": image[:1], "meta": meta[:1]}, inputs="image")
    assert report.verdict == "full"
    assert report.cam["default_layer"] == "conv"  # the model's own layer names, nothing wrapped around them
    assert report.context["inputs"] == {"explained": {"name": "image", "shape": [1, 3, H, H]},
                                        "held": {"meta": [1, 2]}}
    assert {c.name: c.status for c in report.checks}["gradient-correct"] == "pass"


def test_check_of_a_batch_with_differing_meta_measures_the_first_sample(image, meta):
    report = xr.check(ImageMeta(), {"image": image, "meta": meta})
    assert report.verdict == "full"
    assert report.context["inputs"]["held"] == {"meta": [1, 2]}
    assert any("measured on sample 0" in n for n in report.context["notes"])


def test_evaluate_scores_each_sample_as_its_own_single_input_model(image, meta):
    x = {"image": image, "meta": meta}
    attr = xr.explain(ImageMeta(), x, "input-x-gradient", target=Class(0))
    results = xr.evaluate(ImageMeta(), x, attr, ["deletion", "max-sensitivity"], target=Class(0))
    for metric in ("deletion", "max-sensitivity"):
        alone = [xr.evaluate(Closed(meta[i:i + 1]), image[i:i + 1], attr.values[i:i + 1], [metric],
                             target=Class(0), method="input-x-gradient")[metric].values[0] for i in range(2)]
        assert_close(results[metric].values, alone, rtol=1e-5)


@pytest.mark.parametrize(("given", "inputs", "error", "words"), [
    ({"image": "image", "metadata": "meta"}, None, UsageError, "no input 'metadata'"),
    ({"image": "image"}, None, UsageError, "input 'meta' is missing"),
    ({"image": "image", "meta": "meta"}, "mask", UsageError, "'mask', is not among"),
    ({"image": "image", "meta": "three rows"}, None, InputError, "has 3 rows but 'image' has 2"),
], ids=["unknown-name", "missing-name", "unknown-explained", "held-rows"])
def test_bad_inputs_are_one_readable_error(image, meta, given, inputs, error, words):
    arrays = {"image": image, "meta": meta, "three rows": np.zeros((3, 2), np.float32)}
    with pytest.raises(error, match=words):
        xr.explain(ImageMeta(), {k: arrays[v] for k, v in given.items()}, "gradient", inputs=inputs)


def test_one_array_for_a_two_input_model_is_a_usage_error(image):
    with pytest.raises(UsageError, match=r"takes 2 inputs \(image, meta\)"):
        xr.explain(ImageMeta(), image, "gradient")


# ---- ONNX: kept on ONNX Runtime (black-box) and converted (gradients) ----------------------------------------
@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    path = tmp_path_factory.mktemp("multi") / "image_meta.onnx"
    x = (torch.zeros(1, 3, H, H), torch.zeros(1, 2))
    torch.onnx.export(ImageMeta().eval(), x, str(path), input_names=["image", "meta"], output_names=["logits"],
                      dynamo=False, dynamic_axes={"image": {0: "n"}, "meta": {0: "n"}, "logits": {0: "n"}})
    return path


def test_onnx_on_onnx_runtime_gives_torch_s_occlusion(onnx_file, image, meta):
    handle = xr.load(onnx_file, convert=False)
    assert handle.framework == "onnxruntime"
    x = {"image": image, "meta": meta}
    ours = xr.explain(handle, x, "occlusion", target=Class(0), window=(1, 1, 1), stride=(1, 1, 1))
    theirs = xr.explain(ImageMeta(), x, "occlusion", target=Class(0), window=(1, 1, 1), stride=(1, 1, 1))
    assert_close(ours.values, theirs.values, rtol=1e-4)
    report = xr.check(handle, {"image": image[:1], "meta": meta[:1]})
    assert report.verdict == "inference-only"


def test_onnx_converted_gives_torch_s_gradients(onnx_file, image, meta):
    handle = xr.load(onnx_file)
    assert handle.source.converted_from == "onnx"
    assert {c.name: c.status for c in handle.extra_checks}["conversion"] == "pass"
    x = {"image": image, "meta": meta}
    for method in ("gradient", "integrated-gradients"):
        ours = xr.explain(handle, x, method, target=Class(0))
        theirs = xr.explain(ImageMeta(), x, method, target=Class(0))
        assert_close(ours.values, theirs.values, rtol=1e-4)
    assert_close(xr.explain(handle, x, "gradient", target=Class(0)).values, hand_gradient(meta, 0, image.shape),
                 rtol=1e-4)
    report = xr.check(handle, {"image": image[:1], "meta": meta[:1]})
    assert {c.name: c.status for c in report.checks}["conversion-equivalence"] == "pass"


def test_onnx_with_a_fixed_batch_of_one_explains_a_batch_of_two(tmp_path, image, meta):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(ImageMeta().eval(), (torch.zeros(1, 3, H, H), torch.zeros(1, 2)), str(path),
                      input_names=["image", "meta"], output_names=["logits"], dynamo=False)  # no dynamic axes
    x = {"image": image, "meta": meta}
    for handle in (xr.load(path), xr.load(path, convert=False)):
        method = "gradient" if handle.framework == "torch" else "occlusion"
        attr = xr.explain(handle, x, method, target=Class(0), window=(1, 1, 1), stride=(1, 1, 1)) \
            if method == "occlusion" else xr.explain(handle, x, method, target=Class(0))
        expected = hand_gradient(meta, 0, image.shape) * (image if method == "occlusion" else 1)
        assert_close(attr.values, expected, rtol=1e-4)


def test_onnx_given_one_array_names_the_graph_inputs(onnx_file, image):
    with pytest.raises(UsageError, match=r"takes 2 inputs \(image, meta\)"):
        xr.explain(xr.load(onnx_file, convert=False), image, "occlusion")


# ---- the command line --------------------------------------------------------------------------------------
def _explain(*argv):
    p = argparse.ArgumentParser()
    explain_cmd.add_arguments(p)
    return explain_cmd.run(p.parse_args([str(a) for a in argv]))


def test_cli_explain_with_named_inputs_writes_a_png(onnx_file, tmp_path, image, meta, capsys):
    np.save(tmp_path / "a.npy", image[:1])
    np.save(tmp_path / "m.npy", meta[:1])
    out, save = tmp_path / "map.png", tmp_path / "map.npy"
    code = _explain(onnx_file, "--input", f"image={tmp_path / 'a.npy'}", "--input", f"meta={tmp_path / 'm.npy'}",
                    "--method", "gradient", "--target", "0", "--out", out, "--save", save)
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_close(np.load(save), hand_gradient(meta[:1], 0, image[:1].shape), rtol=1e-4)


def test_cli_check_json_names_the_inputs(onnx_file, tmp_path, image, meta, capsys):
    np.save(tmp_path / "a.npy", image[:1])
    np.save(tmp_path / "m.npy", meta[:1])
    code = main(["check", str(onnx_file), "--input", f"meta={tmp_path / 'm.npy'}", "--input",
                 f"image={tmp_path / 'a.npy'}", "--explain-input", "image", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == {"explained": {"name": "image", "shape": [1, 3, H, H]}, "held": {"meta": [1, 2]}}
    assert main(["check", str(onnx_file), "--input", f"meta={tmp_path / 'm.npy'}", "--input",
                 f"image={tmp_path / 'a.npy'}"]) == 0
    assert "inputs: explained image (1, 3, 6, 6); held fixed: meta (1, 2)" in capsys.readouterr().out


@pytest.mark.parametrize(("inputs", "words"), [
    (["image=a.npy", "metadata=m.npy"], "no input 'metadata'"),
    (["image=a.npy"], "input 'meta' is missing"),
    (["a.npy"], r"takes 2 inputs \(image, meta\)"),
    (["image=a.npy", "meta=m.npy", "--explain-input", "mask"], "'mask', is not among"),
    (["image=a2.npy", "meta=m2.npy"], "held input 'meta' differs between the 2 samples"),
], ids=["unknown-name", "missing-name", "plain-input", "unknown-explain-input", "meta-per-sample"])
def test_cli_bad_inputs_exit_2_with_one_line(onnx_file, tmp_path, image, meta, capsys, monkeypatch, inputs, words):
    monkeypatch.chdir(tmp_path)
    np.save("a.npy", image[:1])
    np.save("m.npy", meta[:1])
    np.save("a2.npy", image)
    np.save("m2.npy", meta)
    argv = ["explain", str(onnx_file), "--method", "gradient", "--out", "o.png"]
    for item in inputs:
        argv += [item] if item.startswith("--") or item == "mask" else ["--input", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert __import__("re").search(words, err), err


# ---- Keras: the same model as a functional model with two named inputs --------------------------------------
@pytest.fixture(scope="module")
def keras_model():
    keras = pytest.importorskip("keras")
    image = keras.Input((H, H, 3), name="image")
    meta = keras.Input((2,), name="meta")
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")
    pooled = keras.layers.GlobalAveragePooling2D()(conv(image))
    scale = keras.layers.Lambda(lambda m: 1 + m[:, :1], name="one_plus_m0")(meta)
    head = keras.layers.Dense(2, use_bias=False, name="meta_head")
    out = keras.layers.Add()([keras.layers.Multiply()([pooled, scale]), head(meta)])
    model = keras.Model([image, meta], out)
    conv.set_weights([W.T[None, None]])  # (1, 1, C, K)
    head.set_weights([V.T])
    return model


def test_keras_gradient_and_gradcam_equal_the_hand_derivation(keras_model, image, meta):
    nhwc = np.ascontiguousarray(image.transpose(0, 2, 3, 1))
    x = {"image": nhwc, "meta": meta}
    grad = xr.explain(keras_model, x, "gradient", target=Class(0))
    assert_close(grad.values, hand_gradient(meta, 0, nhwc.shape, layout="NHWC"), rtol=1e-4)
    cam = xr.explain(keras_model, x, "gradcam", target=Class(0), layer="conv")
    assert cam.layer == "conv"
    acts = np.einsum("kc,nchw->nkhw", W, image)[:, 0]
    assert_close(cam.raw, np.maximum((1 + meta[:, :1, None]) / (H * H) * acts, 0), rtol=1e-4)
    torch_ig = xr.explain(ImageMeta(), {"image": image, "meta": meta}, "integrated-gradients", target=Class(0))
    keras_ig = xr.explain(keras_model, x, "integrated-gradients", target=Class(0))
    assert_close(keras_ig.values, torch_ig.values.transpose(0, 2, 3, 1), rtol=1e-4)


def test_keras_input_of_the_wrong_shape_is_refused_before_any_pass(keras_model, image, meta):
    nhwc = np.ascontiguousarray(image.transpose(0, 2, 3, 1))
    with pytest.raises(InputError, match=r"input 'meta' has shape \(2, 3\) but the model takes \(\?, 2\)"):
        xr.explain(keras_model, {"image": nhwc, "meta": np.zeros((2, 3), np.float32)}, "gradient")

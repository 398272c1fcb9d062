"""Conversion ONNX -> PyTorch: accepted only when verified, refused with the reason otherwise."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from onnx_helpers import EXPORTERS, export, random_input, small_net

import xaiready as xr
from xaiready.readiness.checks import run_check

BENCH = Path(__file__).resolve().parents[2] / "bench" / "onnx_corpus.py"


def _corpus():
    if "onnx_corpus" not in sys.modules:
        spec = importlib.util.spec_from_file_location("onnx_corpus", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["onnx_corpus"] = module
        spec.loader.exec_module(module)
    return sys.modules["onnx_corpus"]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_good_exports_are_converted_and_verified(exports, exporter):
    handle = xr.load(exports[exporter])
    assert handle.source.converted_from == "onnx" and handle.framework == "torch"
    assert handle.reference is not None and handle.reference.framework == "onnxruntime"
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert conversion.status == "pass" and "finite differences" in conversion.detail
    x = random_input((1, 3, 16, 16), seed=3)
    torch_out = small_net()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(handle.forward(x), torch_out, rtol=1e-4, atol=1e-5)
    report = run_check(handle, x)
    assert report.verdict == "full"
    assert report.model["converted_from"] == "onnx"
    checks = {c.name: c for c in report.checks}
    assert checks["conversion-equivalence"].status == "pass"
    assert checks["gradient-correct"].status == "pass"


def test_cam_layers_are_named_after_onnx_nodes(exports):
    handle = xr.load(exports["legacy17"])
    report = run_check(handle, random_input((1, 3, 16, 16)))
    nodes = {n.name.replace(".", "/").lstrip("/") for n in onnx.load(str(exports["legacy17"])).graph.node}
    assert report.cam["layers"] and set(report.cam["layers"]) <= nodes
    assert report.cam["default_layer"] in nodes


def test_gradients_match_the_original_torch_model(exports):
    handle = xr.load(exports["dynamo"])
    x = random_input((1, 3, 16, 16), seed=4)
    target = handle.resolve(xr.targets.Class(2), x)
    ours = handle.vjp(x, target).input_grad
    xt = torch.from_numpy(x).requires_grad_(True)
    small_net()(xt)[0, 2].backward()
    np.testing.assert_allclose(ours, xt.grad.numpy(), rtol=1e-4, atol=1e-6)


def _with_custom_op(src: Path, dst: Path) -> Path:
    """Replace the first Relu by com.microsoft::Gelu: ONNX Runtime runs it, onnx2torch has no converter."""
    proto = onnx.load(str(src))
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "Gelu", "com.microsoft"
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, str(dst))
    return dst


def test_custom_domain_op_is_refused_with_reason(exports, tmp_path):
    path = _with_custom_op(exports["legacy17"], tmp_path / "custom.onnx")
    handle = xr.load(path)
    assert handle.framework == "onnxruntime"  # still runs, inference-only
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert conversion.status == "fail" and "com.microsoft::Gelu" in conversion.detail
    report = run_check(handle, random_input((1, 3, 16, 16)))
    assert report.verdict == "inference-only"
    assert report.model["converted_from"] is None


def test_a_wrong_converter_is_caught_by_verification(exports, monkeypatch):
    """A converter that gets Relu slightly wrong must be rejected on the random inputs."""
    from onnx2torch.node_converters import registry
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    class LeakyRelu(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.leaky_relu(x, 0.05)

    def wrong(node, graph):
        return OperationConverterResult(torch_module=LeakyRelu(), onnx_mapping=onnx_mapping_from_node(node))

    key = registry.OperationDescription("", "Relu", 14)
    monkeypatch.setitem(registry._CONVERTER_REGISTRY, key, wrong)
    handle = xr.load(exports["legacy17"])
    assert handle.framework == "onnxruntime"
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert conversion.status == "fail" and "outputs differ from ONNX Runtime" in conversion.detail
    relu = next(n for n in onnx.load(str(exports["legacy17"])).graph.node if n.op_type == "Relu")
    assert f"first divergence at node '{relu.name}' (Relu)" in conversion.detail


def test_user_input_mismatch_falls_back_to_onnxruntime(exports):
    """run_check re-verifies on the user's input; a converted model that differs there is dropped."""
    handle = xr.load(exports["legacy17"])
    with torch.no_grad():
        for module in handle.backend.module.modules():
            if isinstance(module, torch.nn.Linear):
                module.bias.add_(1.0)  # sabotage after load-time verification
    report = run_check(handle, random_input((1, 3, 16, 16)))
    checks = {c.name: c for c in report.checks}
    assert checks["conversion-equivalence"].status == "fail"
    assert report.verdict == "inference-only" and report.model["format"] == "onnx"


# ---- torchvision models: 3 x 2 in the default run, the whole corpus behind the slow marker --------------
DEFAULT_MODELS = ["resnet18", "mobilenet_v3_small", "squeezenet1_1"]


@pytest.mark.parametrize("exporter", ["legacy17", "dynamo"])
@pytest.mark.parametrize("name", DEFAULT_MODELS)
def test_torchvision_exports_convert(tmp_path, name, exporter):
    corpus = _corpus()
    row = corpus.run_one(name, exporter, tmp_path)
    assert row.status == "verified", row.reason


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["legacy13", "legacy17", "dynamo"])
@pytest.mark.parametrize("name", [m for m in _corpus().MODELS if m not in DEFAULT_MODELS])
def test_torchvision_corpus(tmp_path, name, exporter):
    corpus = _corpus()
    row = corpus.run_one(name, exporter, tmp_path)
    if row.status == "export-failed":
        pytest.skip(f"the exporter cannot export {name}: {row.reason}")
    assert row.status == "verified", row.reason


class Mixed(torch.nn.Module):
    """Ops whose dynamo exports need xaiready's gap-filling converters: Gelu-20, AveragePool-19,
    Resize-19, ReduceMean-18, Reshape with allowzero=1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.norm = torch.nn.LayerNorm(6)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = torch.nn.functional.gelu(self.conv(x))
        x = torch.nn.functional.avg_pool2d(x, 2)
        x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.norm(x.permute(0, 2, 3, 1)).mean(dim=(1, 2))
        return self.head(x.reshape(x.shape[0], -1))


class TwoOutputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        logits = self.net(x)
        return logits * 2.0, logits.softmax(1)


def test_dynamo_ops_beyond_onnx2torch_are_gap_filled(tmp_path):
    path = export(Mixed().eval(), tmp_path / "mixed.onnx", "dynamo")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Gelu", "AveragePool", "Resize", "ReduceMean"}
    handle = xr.load(path)
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert conversion.status == "pass", conversion.detail
    for op in ("Gelu-20", "AveragePool-19", "Resize-19", "ReduceMean-18"):
        assert op in conversion.detail
    assert run_check(handle, random_input((1, 3, 16, 16))).verdict in ("full", "gradient-only")


def test_multi_output_graph_picks_the_same_output_on_both_sides(tmp_path):
    path = export(TwoOutputs().eval(), tmp_path / "two.onnx", "legacy17")
    x = random_input((1, 3, 16, 16), seed=12)
    first = xr.load(path)
    second = xr.load(path, output=1)
    assert first.source.converted_from == "onnx" and second.source.converted_from == "onnx"
    np.testing.assert_allclose(second.forward(x).sum(1), 1.0, rtol=1e-5)  # the softmax output
    np.testing.assert_allclose(first.forward(x), 2 * small_net()(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    assert any("outputs" in note for note in first.notes)


@pytest.mark.parametrize("method,options", [("saliency", {}), ("integrated-gradients", {"n_steps": 4}),
                                            ("gradcam", {})])
def test_converted_models_explain_as_the_original(exports, method, options):
    """A converted model explains through the same device-native passes and health checks as the
    original module, batch larger than the export's, and gives the same map."""
    handle = xr.load(exports["legacy17"])
    x = np.concatenate([random_input((1, 3, 16, 16), seed=s) for s in (5, 6)])
    ours = xr.explain(handle, x, method, xr.targets.Class(2), **options)
    assert {f["name"]: f["status"] for f in ours.info["health"]}["target-sensitivity"] in ("pass", "warn")
    if method == "gradcam":
        assert ours.values.shape == (2, 16, 16) and np.isfinite(ours.values).all()
        return
    ref = xr.explain(small_net(), x, method, xr.targets.Class(2), **options)
    np.testing.assert_allclose(ours.values, ref.values, rtol=1e-4, atol=1e-6)


def test_a_vit_exported_at_one_size_reads_its_tokens_after_conversion(tmp_path):
    """A timm ViT exported with a fixed input size: the converted model takes that size only, so its
    layouts come from one pass. The attention matrices (B, heads, 17, 17) are refused as maps, the
    default layer is the last block's norm1 node read as 1 + 4x4 tokens, and Grad-CAM there equals
    pytorch-grad-cam's with the tutorial's reshape_transform on the original module."""
    import timm
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5).eval()
    x = random_input((1, 3, 32, 32), seed=2)
    path = tmp_path / "vit.onnx"
    torch.onnx.export(model, torch.from_numpy(x), str(path), opset_version=17, dynamo=False)
    handle = xr.load(path)
    report = xr.check(handle, x).to_dict()
    assert report["verdict"] == "full"
    layer = report["cam"]["default_layer"]
    assert "blocks/1/norm1" in layer, report["cam"]["default_reason"]
    layout = report["cam"]["layouts"][layer]
    assert (layout["kind"], layout["prefix"], layout["grid"]) == ("tokens", 1, [4, 4])
    softmax = [n for n in report["cam"]["layouts"] if n.endswith("Softmax")]
    assert softmax and all(report["cam"]["layouts"][n]["kind"] == "none" for n in softmax)
    k = int(handle.forward(x).argmax())
    ours = xr.explain(handle, x, "gradcam", xr.targets.Class(k), sanity="off")

    def tokens(t):
        return t[:, 1:, :].reshape(t.size(0), 4, 4, t.size(2)).permute(0, 3, 1, 2)

    with GradCAM(model=model, target_layers=[model.blocks[-1].norm1], reshape_transform=tokens) as cam:
        ref = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(k)])
    np.testing.assert_allclose(ours.values, ref, atol=1e-5)

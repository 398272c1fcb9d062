"""NHWC graphs (tf2onnx style: a leading Transpose to NCHW) are detected and said so; --output may name
any internal tensor (the logits before a final Softmax), and check suggests it for saturated outputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx_helpers import export, random_input, small_net
from torch import nn

import xaiready as xr
from xaiready.cli import main
from xaiready.errors import UsageError


class ChannelsLast(nn.Module):
    """Takes (N, H, W, C) and transposes to NCHW first, as graphs from channels-last frameworks do."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x.permute(0, 3, 1, 2))).mean(dim=(2, 3)))


class Saturated(nn.Module):
    """SmallNet with a class-0 bias far above the rest and a final softmax: p(0) = 1.0 for any input."""

    def __init__(self):
        super().__init__()
        self.net = small_net()
        with torch.no_grad():
            self.net.head.bias[0] += 40.0

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


@pytest.mark.parametrize("channels", [3, 5])
def test_leading_transpose_from_nhwc_is_detected(tmp_path, channels):
    """5 channels: the shape alone does not say NHWC, the leading Transpose does."""
    torch.manual_seed(0)
    model = ChannelsLast(channels).eval()
    path = export(model, tmp_path / "nhwc.onnx", "legacy17", shape=(1, 16, 16, channels))
    handle = xr.load(path)
    assert handle.layout == "NHWC" and handle.source.converted_from == "onnx"
    layout = next(c for c in handle.extra_checks if c.name == "input-layout")
    assert layout.detail.startswith("NHWC detected") and ("Transpose" in layout.detail or channels == 3)
    x = random_input((2, 16, 16, channels), seed=1)
    np.testing.assert_allclose(handle.forward(x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    attribution = xr.explain(handle, x, method="saliency")
    assert attribution.values.shape[:3] == (2, 16, 16)  # maps in the input's own NHWC layout


def test_layout_is_in_the_check_report(tmp_path, capsys):
    torch.manual_seed(0)
    path = export(ChannelsLast(5).eval(), tmp_path / "nhwc.onnx", "legacy17", shape=(1, 16, 16, 5))
    main(["check", str(path), "--input-shape", "1,16,16,5", "--json"])
    report = json.loads(capsys.readouterr().out)
    layout = next(c for c in report["checks"] if c["name"] == "input-layout")
    assert "NHWC" in layout["detail"] and "Transpose" in layout["detail"]


def _saturated(tmp_path, exporter="legacy17"):
    return export(Saturated().eval(), tmp_path / "softmax.onnx", exporter)


def test_check_suggests_the_softmax_input_for_a_saturated_probability(tmp_path):
    path = _saturated(tmp_path)
    softmax = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
    handle = xr.load(path)
    assert handle.logits_hint == (softmax.input[0], "Softmax")
    report = xr.check(handle, random_input((1, 3, 16, 16), seed=4))
    saturation = next(c for c in report.checks if c.name == "saturation")
    assert saturation.status == "warn" and f"--output {softmax.input[0]}" in saturation.detail


@pytest.mark.parametrize("exporter", ["legacy17", "dynamo"])
def test_output_may_name_an_internal_tensor(tmp_path, exporter):
    """The dynamo export keeps its weights beside the graph: the exposed graph still finds them."""
    path = _saturated(tmp_path, exporter)
    logits = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax").input[0]
    handle = xr.load(path, output=logits)
    assert handle.source.converted_from == "onnx"
    x = random_input((2, 3, 16, 16), seed=5)
    expected = Saturated().eval().net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(handle.forward(x), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(handle.reference.forward(x), expected, rtol=1e-4, atol=1e-4)
    saturation = next(c for c in xr.check(handle, x[:1]).checks if c.name == "saturation")
    assert saturation.status == "pass" and "logit" in saturation.detail


def test_unknown_output_name_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no output or internal tensor 'nope'"):
        xr.load(_saturated(tmp_path), output="nope")


TF_EXPORT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow as tf, tf2onnx
model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=4, alpha=0.35)
spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)
tf2onnx.convert.from_keras(model, input_signature=spec, opset=13, output_path=sys.argv[1])
"""


@pytest.mark.slow
def test_tf2onnx_keras_export_is_nhwc_and_converted(tmp_path):
    """A keras.applications model through tf2onnx, in its own process (TensorFlow and torch's compiler
    stack do not share a process)."""
    pytest.importorskip("tf2onnx")
    path = tmp_path / "mobilenetv2.onnx"
    subprocess.run([sys.executable, "-c", TF_EXPORT, str(path)], check=True, capture_output=True, timeout=300)
    handle = xr.load(path)
    assert handle.layout == "NHWC" and handle.source.converted_from == "onnx"
    assert "Transpose" in next(c for c in handle.extra_checks if c.name == "input-layout").detail
    assert handle.logits_hint is not None and handle.logits_hint[1] == "Softmax"
    logits = xr.load(path, output=handle.logits_hint[0])
    assert logits.source.converted_from == "onnx"
    assert Path(path).exists()

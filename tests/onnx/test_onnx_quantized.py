"""Integer-quantized graphs (onnxruntime's quantize_dynamic / quantize_static): never converted, the
reason names the ops, and the graph stays on ONNX Runtime where black-box methods still explain it,
also when the graph fixes its batch at 1."""

import warnings

import numpy as np
import onnx
import pytest
from onnx_helpers import export, small_net
from recurrent_cases import crnn

import xaiready as xr
from xaiready.targets.tasks import for_task


class _Calibration:
    def __init__(self, name, shape):
        self.batches = iter([{name: np.random.default_rng(i).standard_normal(shape).astype(np.float32)}
                             for i in range(4)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    folder = tmp_path_factory.mktemp("quantized")
    small = export(small_net(), folder / "small.onnx", "legacy17")  # batch fixed at 1
    ocr = export(crnn("LSTM"), folder / "crnn.onnx", "legacy17", shape=(1, 1, 16, 32))
    name = onnx.load(str(small)).graph.input[0].name
    out = {"dynamic": folder / "dyn.onnx", "qdq": folder / "qdq.onnx", "qoperator": folder / "qop.onnx",
           "ocr-dynamic": folder / "ocr-dyn.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(small), str(out["dynamic"]), weight_type=QuantType.QInt8)
        quantize_dynamic(str(ocr), str(out["ocr-dynamic"]), weight_type=QuantType.QInt8)
        for fmt, key in ((QuantFormat.QDQ, "qdq"), (QuantFormat.QOperator, "qoperator")):
            quantize_static(str(small), str(out[key]), _Calibration(name, (1, 3, 16, 16)), quant_format=fmt)
    return out


@pytest.mark.parametrize("kind,ops", [
    ("dynamic", ["ConvInteger-10", "MatMulInteger-10", "DynamicQuantizeLinear-11"]),
    ("qdq", ["QuantizeLinear-13", "DequantizeLinear-13"]),
    ("qoperator", ["QLinearConv-10", "com.microsoft::QGemm"]),
    ("ocr-dynamic", ["ConvInteger-10", "com.microsoft::DynamicQuantizeLSTM"]),
])
def test_quantized_graph_stays_inference_only_and_names_its_ops(quantized, kind, ops):
    handle = xr.load(quantized[kind])
    assert handle.framework == "onnxruntime" and handle.source.converted_from is None
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert conversion.status == "fail" and "integer-quantized ops" in conversion.detail
    for op in ops:
        assert op in conversion.detail
    x = np.random.default_rng(0).standard_normal(handle.backend.example_shape()).astype(np.float32)
    assert xr.check(handle, x, task="sequence" if kind.startswith("ocr") else None).verdict == "inference-only"


@pytest.mark.parametrize("kind", ["dynamic", "ocr-dynamic"])
def test_occlusion_explains_a_quantized_batch_one_graph(quantized, kind):
    """The graph takes exactly one sample per run; occlusion sends many perturbed copies at once."""
    handle = xr.load(quantized[kind])
    assert handle.backend.input.fixed_batch == 1
    shape = (3,) + handle.backend.example_shape()[1:]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    target = for_task("sequence", None) if kind == "ocr-dynamic" else None
    attribution = xr.explain(handle, x, method="occlusion", target=target, window=4)
    assert attribution.values.shape[0] == 3 and np.isfinite(attribution.values).all()
    assert np.abs(attribution.values).max() > 0
    # each sample's map is the one it gets alone: chunking and padding do not leak between samples
    alone = xr.explain(handle, x[1:2], method="occlusion", target=target, window=4)
    np.testing.assert_allclose(attribution.values[1], alone.values[0], rtol=1e-5, atol=1e-6)


def test_cli_occlusion_on_a_quantized_batch_one_ocr_graph(quantized, tmp_path):
    from xaiready.cli import main

    saved = tmp_path / "map.npy"
    code = main(["explain", str(quantized["ocr-dynamic"]), "--method", "occlusion", "--input-shape", "3,1,16,32",
                 "--task", "sequence", "--batch-size", "8", "--save", str(saved)])
    assert code == 0 and np.load(saved).shape == (3, 1, 16, 32)

"""Real exporters beyond torch.onnx, through the exporter corpus (bench/onnx_corpus_exporters.py):
paddle2onnx stores every weight as a Constant node; the quantized graphs must stay inference-only.
Slow: each export runs its framework in a process of its own."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _corpus():
    if "onnx_corpus_exporters" not in sys.modules:
        sys.path.insert(0, str(BENCH))
        spec = importlib.util.spec_from_file_location("onnx_corpus_exporters", BENCH / "onnx_corpus_exporters.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["onnx_corpus_exporters"] = module
        spec.loader.exec_module(module)
    return sys.modules["onnx_corpus_exporters"]


def _row(family, model, tmp_path):
    corpus = _corpus()
    build = next(b for b in corpus.builds([family]) if b[1] == model)
    return corpus.measure(*build, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lenet", "resnet18", "crnn"])
def test_paddle2onnx_exports_are_converted_and_verified(tmp_path, model):
    pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")
    row = _row("paddle", model, tmp_path)
    assert row.status == "verified", row
    assert "constants-to-initializers" in row.passes  # paddle2onnx's Constant-node weights


@pytest.mark.slow
def test_quantized_exports_stay_inference_only(tmp_path):
    row = _row("quantized", "crnn-lstm", tmp_path)
    assert row.status == "inference-only", row
    assert "DynamicQuantizeLSTM" in row.unsupported and "integer-quantized ops" in row.reason

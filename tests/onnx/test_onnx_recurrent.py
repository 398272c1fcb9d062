"""LSTM, GRU and RNN: converted from hand-built nodes (every direction, sequence lengths, initial states,
peepholes, clip, input_forget, linear_before_reset, activations, layout) and from torch.onnx exports of a
CRNN-like recogniser; outputs equal ONNX Runtime's and gradients agree with its finite differences."""

import numpy as np
import pytest
import torch
from onnx_helpers import EXPORTERS, assert_gradient_matches_ort, export, ort_run
from recurrent_cases import crnn, recurrent_graph

import xaiready as xr
from xaiready.convert.onnx_to_torch import to_torch

VARIANTS = [(op, {"direction": d, "seq": seq, "init": seq}) for op in ("LSTM", "GRU", "RNN")
            for d in ("forward", "reverse", "bidirectional") for seq in (False, True)]
VARIANTS += [("LSTM", {"peep": True}), ("LSTM", {"peep": True, "init": True, "clip": 0.5}),
             ("LSTM", {"input_forget": 1, "seq": True}), ("GRU", {"linear_before_reset": 1}),
             ("GRU", {"linear_before_reset": 1, "direction": "bidirectional", "seq": True}),
             ("RNN", {"activations": ["Relu"]}),
             ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.3, 0.2],
                      "activation_beta": [0.4]}),
             ("LSTM", {"activations": ["Sigmoid", "ScaledTanh", "Tanh"], "activation_alpha": [0.8],
                       "activation_beta": [1.3]})]


def _id(variant):
    op, kw = variant
    return op + "-" + "-".join(f"{k}={v}" for k, v in kw.items() if v)


@pytest.mark.parametrize("op,attrs", VARIANTS, ids=[_id(v) for v in VARIANTS])
def test_recurrent_node_matches_onnxruntime(op, attrs):
    model, x = recurrent_graph(op, **attrs)
    expected = ort_run(model, x)
    module = to_torch(model).module
    got = module(torch.from_numpy(x))
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), theirs, rtol=1e-4, atol=1e-5)
    assert_gradient_matches_ort(model, module, x)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batch_major_layout_is_the_transposed_sequence_major_one(op):
    """layout=1 ([batch, seq, ...]); ONNX Runtime refuses it, so it is checked against layout=0 of the
    same weights, which it does run."""
    seq_major, x = recurrent_graph(op, direction="bidirectional", seq=True, init=True)
    batch_major, _ = recurrent_graph(op, direction="bidirectional", seq=True, init=True, layout=1)
    for name in ("h0", "c0"):  # the same initial states, stored batch-major
        src = next((t for t in seq_major.graph.initializer if t.name == name), None)
        if src is not None:
            from onnx import numpy_helper

            dst = next(t for t in batch_major.graph.initializer if t.name == name)
            dst.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(src).transpose(1, 0, 2).copy(), name))
    expected = ort_run(seq_major, x)
    got = to_torch(batch_major).module(torch.from_numpy(x.transpose(1, 0, 2).copy()))
    np.testing.assert_allclose(got[0].detach().numpy(), expected[0].transpose(2, 0, 1, 3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1].detach().numpy(), expected[1].transpose(1, 0, 2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_crnn_export_is_converted_and_verified(tmp_path, kind, exporter):
    path = export(crnn(kind), tmp_path / "crnn.onnx", exporter, shape=(1, 1, 16, 32))
    handle = xr.load(path)
    conversion = next(c for c in handle.extra_checks if c.name == "conversion")
    assert handle.source.converted_from == "onnx", conversion.detail
    assert "finite differences of ONNX Runtime" in conversion.detail
    assert f"{kind}-" in conversion.detail  # named among xaiready's converters
    x = np.random.default_rng(3).standard_normal((2, 1, 16, 32)).astype(np.float32)
    np.testing.assert_allclose(handle.forward(x), crnn(kind)(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_unknown_activation_is_refused_with_its_name():
    model, _ = recurrent_graph("RNN", activations=["Gelu"])
    from xaiready.convert.onnx_to_torch import ConversionFailed

    with pytest.raises(ConversionFailed, match="activation 'Gelu'"):
        to_torch(model)

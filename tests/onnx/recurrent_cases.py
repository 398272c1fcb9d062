"""Hand-built ONNX LSTM / GRU / RNN nodes for the variants torch.onnx does not emit, and a CRNN-like
recogniser (Conv features read column by column by a bidirectional LSTM) for the exporter tests."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

T, B, FEATURES, H = 5, 3, 4, 6  # steps, batch, input features, hidden size
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_graph(op, *, direction="forward", layout=0, seq=False, init=False, peep=False, seed=0, **attrs):
    """One recurrent node X -> (Y, Y_h[, Y_c]); returns (ModelProto, input array)."""
    rng = np.random.default_rng(seed)
    g, d = GATES[op], 2 if direction == "bidirectional" else 1
    tensors = {"W": rng.standard_normal((d, g * H, FEATURES)), "R": rng.standard_normal((d, g * H, H)),
               "B": rng.standard_normal((d, 2 * g * H))}
    inputs = ["X", "W", "R", "B", "L" if seq else ""]
    state = (B, d, H) if layout else (d, B, H)
    if init:
        tensors["h0"] = rng.standard_normal(state)
        inputs.append("h0")
        if op == "LSTM":
            tensors["c0"] = rng.standard_normal(state)
            inputs.append("c0")
    elif peep:
        inputs += ["", ""]
    if peep:
        tensors["P"] = rng.standard_normal((d, 3 * H))
        inputs.append("P")
    inits = [numpy_helper.from_array((0.5 * v).astype(np.float32), k) for k, v in tensors.items()]
    if seq:
        inits.append(numpy_helper.from_array(np.array([5, 2, 4], dtype=np.int32), "L"))
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, inputs, outputs, hidden_size=H, direction=direction, layout=layout, **attrs)
    x_shape = (B, T, FEATURES) if layout else (T, B, FEATURES)
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model, np.random.default_rng(seed + 1).standard_normal(x_shape).astype(np.float32)


class CRNN(nn.Module):
    """Conv features -> columns as time steps -> recurrent head -> per-step class scores (B, T, K)."""

    def __init__(self, kind: str = "LSTM", classes: int = 7, bidirectional: bool = True):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 2)),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, None)))
        self.rnn = getattr(nn, kind)(8, 12, num_layers=2, bidirectional=bidirectional, batch_first=True)
        self.head = nn.Linear(24 if bidirectional else 12, classes)

    def forward(self, x):
        f = self.conv(x).squeeze(2).transpose(1, 2)  # (B, W/2, 8)
        return self.head(self.rnn(f)[0])


def crnn(kind: str = "LSTM", seed: int = 0, **kwargs) -> CRNN:
    torch.manual_seed(seed)
    return CRNN(kind, **kwargs).eval()

"""Small models and exports shared by the ONNX tests (no __init__.py here: a package named 'onnx'
would shadow the onnx library)."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

EXPORTERS = ("legacy13", "legacy17", "dynamo")


class SmallNet(nn.Module):
    """Conv-ReLU-Conv-ReLU-pool-linear: every op every exporter and onnx2torch know."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def small_net(seed: int = 0) -> SmallNet:
    torch.manual_seed(seed)
    return SmallNet().eval()


def export(model: nn.Module, path: Path, exporter: str, shape=(1, 3, 16, 16)) -> Path:
    """Export with the legacy exporter at opset 13/17, or the default dynamo exporter."""
    x = torch.randn(*shape)
    kwargs = {"dynamo": True} if exporter == "dynamo" else {"dynamo": False,
                                                            "opset_version": int(exporter[-2:])}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **kwargs)
    return path


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

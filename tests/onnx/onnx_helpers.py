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


def ort_run(model, x: np.ndarray, outputs=None):
    """ONNX Runtime's outputs of an in-memory ModelProto on ``x`` (fed to its first input)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    return session.run(outputs, {session.get_inputs()[0].name: x})


def assert_gradient_matches_ort(model, module, x: np.ndarray, *, directions: int = 3, rtol: float = 2e-2):
    """The converted ``module``'s input gradient of a random projection of its first output, against
    central finite differences of ONNX Runtime on the original ``model`` along random directions."""
    rng = np.random.default_rng(5)
    y0 = ort_run(model, x)[0]
    weights = rng.standard_normal(y0.shape).astype(np.float64)
    xt = torch.from_numpy(x).requires_grad_(True)
    out = module(xt)
    out = out[0] if isinstance(out, (tuple, list)) else out
    (out.double() * torch.from_numpy(weights)).sum().backward()
    grad = xt.grad.numpy().astype(np.float64)
    step = 1e-2 * max(float(np.abs(x).mean()), 1e-3)
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        plus = ort_run(model, (x + step * v).astype(np.float32))[0].astype(np.float64)
        minus = ort_run(model, (x - step * v).astype(np.float32))[0].astype(np.float64)
        fd = float(((plus - minus) * weights).sum() / (2 * step))
        ad = float((grad * v).sum())
        # float32 differences carry noise of a fixed size: a floor relative to the whole gradient
        assert abs(fd - ad) <= rtol * max(abs(fd), abs(ad)) + 2e-3 * np.linalg.norm(grad), (fd, ad)

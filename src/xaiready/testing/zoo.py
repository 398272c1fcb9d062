"""A zoo of small PyTorch models: healthy ones, and one per way a gradient path breaks.

Every model takes (N, 3, 32, 32) images unless its docstring says otherwise. Broken models are
ordinary code patterns seen in real projects; each documents where it breaks and why, and
``EXPECTED`` records what the readiness check must find.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def _features(c_in: int = 3, width: int = 8) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU())


class HealthyCNN(nn.Module):
    """conv-relu-conv-relu, global pooling, linear: the control."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class FunctionalReluCNN(nn.Module):
    """Activations as F.relu and torch.relu calls, not modules."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv2(F.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class SegmentationNet(nn.Module):
    """Per-pixel class scores (N, K, H, W)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.features = _features()
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.features(x))


class RegressionNet(nn.Module):
    """Two raw regression outputs per image."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class DictOutputNet(nn.Module):
    """Returns {'logits': ..., 'embedding': ...}."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        emb = self.features(x).mean((2, 3))
        return {"embedding": emb, "logits": self.head(emb)}


class SoftmaxCNN(HealthyCNN):
    """Ends in softmax with large logits: a saturated probability."""

    def forward(self, x):
        return torch.softmax(40.0 * super().forward(x), dim=1)


# ---- broken ones ---------------------------------------------------------------------------------------------
class DetachBetweenBlocks(nn.Module):
    """``.detach()`` between two blocks in the top-level forward."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.block1 = _features()
        self.block2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.block2(self.block1(x).detach()).mean((2, 3)))


class NumpyHead(nn.Module):
    """Pools features in NumPy and builds a new tensor: a NumPy round trip."""

    def forward(self, x):
        pooled = x.detach().cpu().numpy().mean(axis=(2, 3))
        return torch.from_numpy(np.ascontiguousarray(pooled))


class NumpyRoundTrip(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.pool = NumpyHead()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


class NoGradHead(nn.Module):
    """The classifier head runs under torch.no_grad() inside forward."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        feats = self.features(x).mean((2, 3))
        with torch.no_grad():
            return self.head(feats)


class ItemScale(nn.Module):
    def forward(self, x):
        # normalisation through a Python float: still connected, but the gradient ignores the scale's
        # dependence on x (here harmless: ItemHead's torch.tensor copy cuts the path first)
        return x / x.abs().max().item()


class ItemHead(nn.Module):
    """Builds its scores from Python floats via ``.item()``."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.scale = ItemScale()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        logits = self.head(self.scale(self.features(x)).mean((2, 3)))
        return torch.tensor([[v.item() for v in row] for row in logits])


class RoundedOutput(nn.Module):
    """Rounds its logits: the gradient exists but is exactly zero."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return torch.round(self.head(self.features(x).mean((2, 3))))


class HardGate(nn.Module):
    """A hard threshold ``(x > t).float()``: comparisons carry no gradient."""

    def forward(self, x):
        return (x > 0.1).float()


class HardThresholdNet(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.gate = HardGate()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.gate(self.features(x)).mean((2, 3)))


class SqrtNorm(nn.Module):
    """sqrt of a sum of squares that is exactly zero for padded positions: NaN gradient."""

    def forward(self, x):
        return torch.sqrt((x * 0).sum(1, keepdim=True)) + x


class NonFiniteGrad(nn.Module):
    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.norm = SqrtNorm()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x)).mean((2, 3)))


class _DoubleGradient(torch.autograd.Function):
    """Identity forward whose backward claims twice the true gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0


class LyingBlock(nn.Module):
    def forward(self, x):
        return _DoubleGradient.apply(x)


class LyingBackward(nn.Module):
    """A custom autograd.Function whose backward disagrees with its forward."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.features = _features()
        self.lie = LyingBlock()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.lie(self.features(x)).mean((2, 3)))


# What the readiness check must find for each model: (verdict, gradient status, break cause, break location)
EXPECTED = {
    "HealthyCNN": ("full", "ok", None, None),
    "FunctionalReluCNN": ("full", "ok", None, None),
    "SegmentationNet": ("full", "ok", None, None),
    "RegressionNet": ("full", "ok", None, None),
    "DictOutputNet": ("full", "ok", None, None),
    "DetachBetweenBlocks": ("inference-only", "missing", "detach", "(root)"),
    "NumpyRoundTrip": ("inference-only", "missing", "numpy", "pool"),
    "NoGradHead": ("inference-only", "missing", "no_grad", "head"),
    "ItemHead": ("inference-only", "missing", "item", "(root)"),
    "RoundedOutput": ("inference-only", "zero", "non-differentiable", "(root)"),
    "HardThresholdNet": ("inference-only", "missing", "non-differentiable", "gate"),
    "NonFiniteGrad": ("inference-only", "non-finite", "non-differentiable", "norm"),
    "LyingBackward": ("inference-only", "incorrect", "custom-backward", "lie"),
}

HEALTHY = ["HealthyCNN", "FunctionalReluCNN", "SegmentationNet", "RegressionNet", "DictOutputNet"]
BROKEN = [name for name in EXPECTED if name not in HEALTHY]


def build(name: str, seed: int = 0) -> nn.Module:
    """A zoo model with deterministic random weights."""
    torch.manual_seed(seed)
    return globals()[name]().eval()


def example_input(seed: int = 0, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)

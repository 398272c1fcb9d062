"""Small real models and helpers for the explain tests (no mocks: real torch, real anchors)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaiready.api import as_handle
from xaiready.testing import zoo


def assert_close(ours, ref, rtol=1e-5):
    """Agreement relative to the reference's scale: max |ours - ref| <= rtol * max |ref|.

    Element-wise relative error is meaningless where a value is ~0 and float32 sums differ in order.
    """
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    assert scale > 0, "reference is all zero: the comparison would prove nothing"
    err = np.abs(ours - ref).max()
    assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol:g} x scale {scale:.3g}"


class DownsamplingCNN(nn.Module):
    """conv-relu-pool twice: an 8x8 last feature map for 32x32 inputs, so CAMs must upsample."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.relu3(self.conv3(self.block2(self.block1(x)))).mean((2, 3)))


class SiLUCNN(nn.Module):
    """One ReLU and one SiLU: guided backprop can override only the first."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(F.silu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))


def build(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(**kw).eval()


@pytest.fixture
def x(rng):
    return rng.standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def healthy():
    return build(zoo.HealthyCNN)


@pytest.fixture
def down():
    return build(DownsamplingCNN)


def snapshot(model):
    return as_handle(model).backend.state_snapshot()

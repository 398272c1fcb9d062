"""Chunk loops make no copy between host and device: the number of copies an explanation makes does not
grow with its number of chunks. Copies are counted where torch performs them (a TorchFunctionMode sees
every ``.numpy()``, ``.cpu()``, ``.tolist()``, ``.item()``, ``float(t)``, ``bool(t)``, ``np.asarray(tensor)`` and
``torch.as_tensor``/``torch.tensor`` call), on CPU as on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch.overrides import TorchFunctionMode

import xaiready as xr
from xaiready.targets import Class

TO_HOST = {"numpy", "cpu", "tolist", "item", "__array__", "__float__", "__int__", "__bool__"}
TO_DEVICE = {"as_tensor", "tensor"}


class CopyCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.to_host = self.to_device = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        self.to_host += name in TO_HOST
        self.to_device += name in TO_DEVICE
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=5).eval()


def copies(model, method, **options):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with CopyCounter() as counter:
        xr.explain(model, x, method, Class(1), verify=False, sanity="off", batch_size=2, **options)
    return counter.to_host, counter.to_device


@pytest.mark.parametrize("method,size,few,many", [
    ("integrated-gradients", "n_steps", 4, 24),
    ("smoothgrad", "n_samples", 3, 18),
    ("vargrad", "n_samples", 3, 18),
])
def test_copies_do_not_grow_with_the_number_of_chunks(model, method, size, few, many):
    small, large = copies(model, method, **{size: few}), copies(model, method, **{size: many})
    assert small[0] > 0 and small[1] > 0, "the counter saw no copy at all: it would prove nothing"
    assert small == large, f"{few} -> {many} {size} (x6 chunks): copies to host, to device {small} -> {large}"


def test_a_wrapped_integrated_gradients_copies_per_explanation_only(model):
    small = copies(model, "smoothgrad", base="integrated-gradients", n_samples=2, n_steps=4)
    large = copies(model, "smoothgrad", base="integrated-gradients", n_samples=2, n_steps=16)
    assert small == large

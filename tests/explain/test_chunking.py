"""Chunked passes: results do not depend on the chunk size, and passes never exceed it."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaiready as xr
from xaiready.methods._chunking import MIN_ROWS, TARGET_ELEMENTS, auto_batch_size
from xaiready.targets import Class, Regression
from xaiready.testing import zoo

from .conftest import assert_close, build


class Recording(nn.Module):
    """HealthyCNN that records the batch size of every forward (a real model, not a mock)."""

    def __init__(self):
        super().__init__()
        self.inner = zoo.HealthyCNN()
        self.seen = []

    def forward(self, t):
        self.seen.append(t.shape[0])
        return self.inner(t)


@pytest.mark.parametrize("method", ["integrated-gradients", "smoothgrad", "vargrad"])
def test_chunked_equals_unchunked(x, method):
    model = build(zoo.HealthyCNN)
    opts = {"n_steps": 12} if method == "integrated-gradients" else {"n_samples": 5, "base": "gradient"}
    one = xr.explain(model, x, method, Class(1), batch_size=1, **opts).values
    for size in (3, 7, 1000):
        assert_close(xr.explain(model, x, method, Class(1), batch_size=size, **opts).values, one, rtol=1e-6)


def test_passes_never_exceed_the_chunk(x):
    model = build(Recording)
    # sanity="off": the health checks' own passes are not the method's
    xr.explain(model, x, "integrated-gradients", Class(0), n_steps=50, batch_size=6, verify=False, sanity="off")
    # the first forward resolves the target, the last one scores the baseline for the completeness delta
    ig_passes = model.seen[1:-1]
    assert max(ig_passes) == 6 and sum(ig_passes) == 2 * 50
    model.seen.clear()
    xr.explain(model, x, "integrated-gradients", Class(0), n_steps=200, verify=False, sanity="off")
    auto = auto_batch_size(x)
    per_row = int(np.prod(x.shape[1:]))
    assert auto == max(len(x), MIN_ROWS, TARGET_ELEMENTS // per_row)
    assert max(model.seen[1:]) == min(auto, len(x) * 200)  # the same chunk at 50 or 200 steps


def test_auto_batch_size_is_bounded_by_input_size():
    assert auto_batch_size(np.zeros((2, 3, 224, 224))) == MIN_ROWS
    assert auto_batch_size(np.zeros((2, 3, 32, 32))) == TARGET_ELEMENTS // 3072  # small rows: ~1M values a pass
    assert auto_batch_size(np.zeros((16, 3, 224, 224))) == 16
    assert auto_batch_size(np.zeros((1, 3, 1024, 1024))) == 2  # 32 MiB of inputs per chunk at most
    assert auto_batch_size(np.zeros((1, 3, 4096, 4096))) == 1
    assert auto_batch_size(np.zeros((1, 3, 8, 8)), 5) == 5
    gpu = SimpleNamespace(backend=SimpleNamespace(on_accelerator=True))  # what a GPU backend reports
    assert auto_batch_size(np.zeros((2, 3, 224, 224)), handle=gpu) == 32
    from xaiready.api import as_handle

    assert auto_batch_size(np.zeros((2, 3, 224, 224)), handle=as_handle(build(zoo.HealthyCNN))) == MIN_ROWS


def test_smoothgrad_noise_level_is_a_fraction_of_the_input_range(rng):
    """On f(x) = sum(x^2) the gradient is 2(x + n), so VarGrad = 4 sigma^2 with sigma = level * range."""

    class Square(nn.Module):
        def forward(self, t):
            return (t * t).flatten(1).sum(1, keepdim=True)

    x = rng.uniform(-1, 3, (1, 1, 16, 16)).astype(np.float32)
    level = 0.1
    sigma = level * (x.max() - x.min())
    var = xr.explain(Square(), x, "vargrad", Regression(0), base="gradient", n_samples=400, noise_level=level,
                     verify=False).values
    # the mean of 256 per-pixel variance estimates from 400 samples: relative std ~ sqrt(2/399/256) < 0.5%
    assert var.mean() == pytest.approx(4 * sigma**2, rel=0.03)
    again = xr.explain(Square(), x, "vargrad", Regression(0), base="gradient", n_samples=400, noise_level=level,
                       verify=False).values
    np.testing.assert_array_equal(var, again)  # seeded


class _FitsThreeRows(torch.nn.Module):
    """Raises torch's own out-of-memory error for batches over 3 rows, as a full device would."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 4))

    def forward(self, x):
        if x.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_a_chunk_that_runs_out_of_memory_is_retried_smaller():
    import xaiready as xr

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    model = _FitsThreeRows().eval()
    backed_off = xr.explain(model, x, "integrated-gradients", Class(1), n_steps=8, batch_size=16, sanity="off",
                            verify=False)
    small = xr.explain(model, x, "integrated-gradients", Class(1), n_steps=8, batch_size=2, sanity="off",
                       verify=False)
    np.testing.assert_allclose(backed_off.values, small.values, rtol=1e-6)
    with pytest.raises(xr.errors.DeviceMemoryError):  # one row that does not fit is the user's to solve
        xr.explain(model, np.repeat(x, 2, axis=0), "saliency", Class(1), sanity="off", verify=False)


def test_activation_memory_per_row_is_measured():
    """A linear layer keeps its input row for the weight gradient: 4 bytes per input value and row."""
    from xaiready.api import as_handle
    handle = as_handle(torch.nn.Sequential(torch.nn.Linear(100, 10)))
    assert handle.backend.activation_bytes(np.zeros((1, 100), np.float32)) == 400
    from xaiready.methods._chunking import MEMORY_SHARE

    x = np.zeros((4, 100), np.float32)
    by_memory = int(MEMORY_SHARE * handle.backend.free_memory()) // 400
    assert auto_batch_size(x, handle=handle) == min(TARGET_ELEMENTS // 100, by_memory)

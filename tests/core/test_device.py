"""``--device`` and ``xr.load(device=)``: every backend takes the same spelling; a GPU that is not there
is a usage error (exit 2) in one line, never a silent fall-back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import xaiready as xr
from xaiready.devices import parse_device
from xaiready.errors import UsageError


@pytest.mark.parametrize("spec,parsed", [("cpu", ("cpu", None)), ("cuda", ("cuda", None)), ("cuda:1", ("cuda", 1)),
                                         ("AUTO", ("auto", None))])
def test_device_specs(spec, parsed):
    assert parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cpu:0", "cuda:x", ""])
def test_bad_device_specs(spec):
    with pytest.raises(UsageError, match="unknown device"):
        parse_device(spec)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(model), path)
    return path, model


def test_load_on_cpu_and_auto(saved):
    path, model = saved
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for spec in ("cpu", "auto"):
        handle = xr.load(path, trust=True, device=spec)
        expected = "cuda:0" if spec == "auto" and torch.cuda.is_available() else "cpu"
        assert f"device: {expected}" in handle.notes
        assert next(handle.backend.module.parameters()).device == torch.device(expected)
        np.testing.assert_allclose(handle.forward(x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        ig = xr.explain(handle, x, "integrated-gradients", n_steps=4)
        assert ig.values.shape == x.shape and np.isfinite(ig.values).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_a_missing_gpu_is_a_usage_error_in_one_line(saved):
    path, _ = saved
    with pytest.raises(UsageError, match="sees no GPU"):
        xr.load(path, trust=True, device="cuda")
    run = subprocess.run([sys.executable, "-m", "xaiready", "check", str(path), "--input-shape", "1,3,8,8",
                          "--device", "cuda:0", "--trust"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "sees no GPU" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explanations_on_cuda_equal_cpu(saved):
    path, _ = saved
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    cpu, gpu = xr.load(path, device="cpu"), xr.load(path, trust=True, device="cuda")
    for method, options in (("saliency", {}), ("integrated-gradients", {"n_steps": 8}),
                            ("smoothgrad", {"noise": np.zeros((2, 4, 3, 8, 8), np.float32), "n_samples": 4})):
        a = xr.explain(cpu, x, method, xr.targets.Class(1), **options)
        b = xr.explain(gpu, x, method, xr.targets.Class(1), **options)
        np.testing.assert_allclose(b.values, a.values, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec,gpus,index", [("cpu", 2, None), ("auto", 0, None), ("auto", 2, 0), ("cuda", 1, 0),
                                             ("cuda:1", 2, 1), ("cuda:3", None, 3)])
def test_the_gpu_a_spec_asks_for(spec, gpus, index):
    from xaiready.devices import gpu_index

    assert gpu_index(spec, "PyTorch", gpus) == index


@pytest.mark.parametrize("spec,gpus", [("cuda", 0), ("cuda:1", 1), ("cuda:0", 0)])
def test_a_gpu_that_is_not_there(spec, gpus):
    from xaiready.devices import gpu_index

    with pytest.raises(UsageError, match="PyTorch sees"):
        gpu_index(spec, "PyTorch", gpus)

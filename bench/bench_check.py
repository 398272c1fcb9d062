"""Time of `check` (excluding load) divided by one plain forward+backward.

torchvision resnet50, random weights, batch 1, 224x224, default settings. Runs are interleaved
(baseline, check, baseline, check, ...) and medians are compared, so background load hits both.

    python bench/bench_check.py [--model resnet50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torchvision

import xaiready as xr
from xaiready.readiness.checks import run_check


def plain_forward_backward(model, x):
    xt = torch.from_numpy(x).requires_grad_(True)
    out = model(xt)
    k = int(out.argmax())
    (grad,) = torch.autograd.grad(out[0, k], xt)
    return grad


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    handle = xr.as_handle(model)
    plain_forward_backward(model, x)  # warm-up
    run_check(handle, x)
    base, ours = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        plain_forward_backward(model, x)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        report = run_check(handle, x)
        ours.append(time.perf_counter() - t)
    b, o = statistics.median(base), statistics.median(ours)
    print(f"model={args.model} batch=1 size={args.size} threads={torch.get_num_threads()}")
    print(f"plain forward+backward: {b * 1000:.1f} ms")
    print(f"check (excluding load): {o * 1000:.1f} ms   verdict={report.verdict}")
    print(f"ratio check / forward+backward: {o / b:.2f}  (target <= 4)")
    _profile(handle, x, model)


def _profile(handle, x, model):
    """Where the time goes: one of each phase, timed alone."""
    target = handle.resolve(xr.targets.Class(None), x)
    layers = handle.layers().names
    with handle.session():
        t = time.perf_counter()
        handle.forward(x)
        fwd = time.perf_counter() - t
        t = time.perf_counter()
        res = handle.vjp(x, target, layers=layers)
        vjp_layers = time.perf_counter() - t
        from xaiready.readiness.probes import finite_difference_check

        t = time.perf_counter()
        finite_difference_check(handle, x, target, res.input_grad, n_random=1)
        fd = time.perf_counter() - t
    print(f"phases: forward {fwd * 1000:.0f} ms, vjp with {len(layers)} layers captured {vjp_layers * 1000:.0f} ms, "
          f"finite differences (4 forwards, one batch) {fd * 1000:.0f} ms")


if __name__ == "__main__":
    main()

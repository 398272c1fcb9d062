"""Multi-input models: what explaining sample by sample (held rows that differ) costs against one
batched run (a held row shared by every sample), and against the same model as a single-input one.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_multi_input.py
"""

import time

import numpy as np
import torch
import torch.nn as nn

import xaiready as xr
from xaiready.targets import Class


class ImageMeta(nn.Module):
    """A small CNN whose head also reads a metadata vector."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32 + 4, 10)

    def forward(self, image, meta):
        return self.head(torch.cat([self.features(image).mean((2, 3)), meta], 1))


class Closed(nn.Module):
    """The same model with its metadata closed over: a plain single-input model."""

    def __init__(self, inner, meta):
        super().__init__()
        self.inner, self.meta = inner, torch.as_tensor(meta)

    def forward(self, image):
        return self.inner(image, self.meta.expand(image.shape[0], -1))


def best(model, x, method, run, repeat=3):
    """The fastest of ``repeat`` explanations, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        xr.explain(model, x, method, **run)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    torch.manual_seed(0)
    model = ImageMeta().eval()
    rng = np.random.default_rng(0)
    n = 8
    image = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    differ = rng.standard_normal((n, 4)).astype(np.float32)
    shared = np.repeat(differ[:1], n, axis=0)
    closed = Closed(model, differ[:1]).eval()
    methods = {"saliency": {}, "integrated-gradients": {"n_steps": 32}, "gradcam": {}, "occlusion": {"window": 8}}
    print(f"N={n} images 3x32x32 + meta (4,), CPU, best of 3, seconds (sanity off)")
    print(f"{'method':22s} {'single-input':>12s} {'held, shared':>12s} {'held, per sample':>16s} {'ratio':>6s}")
    for method, opts in methods.items():
        run = dict(target=Class(0), sanity="off", **opts)
        xr.explain(model, {"image": image, "meta": differ}, method, **run)  # warm: gating measured once
        t_single = best(closed, image, method, run)
        t_shared = best(model, {"image": image, "meta": shared}, method, run)
        t_each = best(model, {"image": image, "meta": differ}, method, run)
        print(f"{method:22s} {t_single:12.3f} {t_shared:12.3f} {t_each:16.3f} {t_each / t_shared:6.2f}")


if __name__ == "__main__":
    main()

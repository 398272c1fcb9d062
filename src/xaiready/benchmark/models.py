"""Small CNNs for the benchmark, trained deterministically on CPU in well under a minute.

``train("classification")`` reaches >= 95 % held-out accuracy (asserted by the tests); the
segmentation net predicts background or the object's class per pixel, the regression net the
object's area. Results are cached per process, so tests and ``benchmark`` train each once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import CLASSES, Dataset, make_dataset

CAM_LAYER = "features.8"  # the last conv block's ReLU (8 x 8): Grad-CAM's layer


def _features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 0-2: 16 x 16
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 3-5: 8 x 8
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),                      # 6-7
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())                      # 8-9 (8 is the conv)


class BenchmarkCNN(nn.Module):
    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.head(self.features(x).amax((2, 3)))


class BenchmarkSegNet(nn.Module):
    def __init__(self, num_classes: int = len(CLASSES) + 1):
        super().__init__()
        self.features = _features()
        self.classifier = nn.Conv2d(32, num_classes, 1)

    def forward(self, x):
        return F.interpolate(self.classifier(self.features(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


class BenchmarkRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = _features()
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@dataclass(frozen=True)
class Trained:
    model: nn.Module
    test: Dataset
    score: float  # accuracy (classification, segmentation pixels) or R^2 (regression)
    task: str


_MODELS = {"classification": BenchmarkCNN, "segmentation": BenchmarkSegNet, "regression": BenchmarkRegressor}


def _loss(task, out, ds: Dataset, idx):
    if task == "classification":
        return F.cross_entropy(out, torch.as_tensor(ds.y[idx]))
    if task == "segmentation":
        return F.cross_entropy(out, torch.as_tensor(ds.seg[idx]))
    return F.mse_loss(out[:, 0], torch.as_tensor(ds.area[idx] * 10))


def _score(task, model, ds: Dataset) -> float:
    with torch.no_grad():
        out = torch.cat([model(torch.as_tensor(ds.x[i:i + 256])) for i in range(0, len(ds), 256)])
    if task == "classification":
        return float((out.argmax(1).numpy() == ds.y).mean())
    if task == "segmentation":
        return float((out.argmax(1).numpy() == ds.seg).mean())
    pred, true = out[:, 0].numpy() / 10, ds.area
    return float(1 - ((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum())


@functools.cache
def train(task: str = "classification", n_train: int = 2400, epochs: int = 8, seed: int = 0,
          n_test: int = 300) -> Trained:
    """Train the ``task`` model on ``n_train`` images (seeded, CPU, deterministic); eval mode on return."""
    train_set, test_set = make_dataset(n_train, seed), make_dataset(n_test, seed + 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODELS[task]()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * (n_train // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    x_all = torch.as_tensor(train_set.x)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n_train, generator=gen).numpy()
        for b in range(n_train // 64):
            idx = perm[b * 64:(b + 1) * 64]
            opt.zero_grad()
            _loss(task, model(x_all[idx]), train_set, idx).backward()
            opt.step()
            sched.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return Trained(model, test_set, _score(task, model, test_set), task)


def handle_for(trained: Trained):
    """A ModelHandle of a trained benchmark model."""
    from ..backends.torch import TorchBackend
    from ..model import ModelHandle, Source

    return ModelHandle(TorchBackend(trained.model), Source(None, "pytorch-eager", "torch"))


def test_batch(trained: Trained, n: int, *, correct_only: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, mask) of ``n`` test images, the model's correct predictions only by default."""
    ds = trained.test
    idx = np.arange(len(ds))
    if correct_only and trained.task == "classification":
        with torch.no_grad():
            pred = trained.model(torch.as_tensor(ds.x)).argmax(1).numpy()
        idx = idx[pred == ds.y]
    idx = idx[:n]
    return ds.x[idx], ds.y[idx], ds.mask[idx]

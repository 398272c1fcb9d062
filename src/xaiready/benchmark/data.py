"""Procedural shapes on textured, cluttered backgrounds, with per-pixel object masks. No downloads.

Every image holds one object (a filled circle, square or triangle: the class), placed anywhere, on a
background of random colour gratings and noise, with distractors (thin lines and small rings) that
are not any class's shape. ``mask`` marks the object's pixels, so localization has ground truth and
a centre prior does not score well. Everything follows from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("circle", "square", "triangle")
SIZE = 32


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # (N, 3, H, W) float32, roughly zero-mean
    y: np.ndarray  # (N,) class index
    mask: np.ndarray  # (N, H, W) bool: the object's pixels
    seg: np.ndarray  # (N, H, W) int64: 0 background, 1 + class on the object
    area: np.ndarray  # (N,) float32: object area as a fraction of the image (the regression target)

    def __len__(self) -> int:
        return len(self.y)


def _shape_mask(kind: int, cy: float, cx: float, r: float, yy, xx) -> np.ndarray:
    if kind == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 1:
        s = r * 0.85
        return (np.abs(yy - cy) <= s) & (np.abs(xx - cx) <= s)
    # upward triangle: apex at the top, base at the bottom
    top, bottom = cy - r, cy + r * 0.8
    half = (yy - top) / (bottom - top) * r * 1.05
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def _background(rng, yy, xx) -> np.ndarray:
    img = np.zeros((3, SIZE, SIZE))
    for _ in range(2):  # two colour gratings of random frequency and orientation
        f, th, ph = rng.uniform(0.15, 0.6), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        wave = np.sin(f * (np.cos(th) * xx + np.sin(th) * yy) + ph)
        img += rng.uniform(-0.35, 0.35, 3)[:, None, None] * wave
    return img + rng.normal(0, 0.12, img.shape)


def _distractors(rng, img, yy, xx) -> None:
    for _ in range(rng.integers(2, 5)):
        color = rng.uniform(-1, 1, 3)[:, None]
        if rng.random() < 0.5:  # a thin line
            y0, x0, th, length = rng.uniform(0, SIZE, 2).tolist() + [rng.uniform(0, np.pi), rng.uniform(6, 14)]
            d = np.abs((yy - y0) * np.cos(th) - (xx - x0) * np.sin(th))
            along = (yy - y0) * np.sin(th) + (xx - x0) * np.cos(th)
            sel = (d < 0.6) & (np.abs(along) < length / 2)
        else:  # a small ring
            cy, cx, r = rng.uniform(3, SIZE - 3, 2).tolist() + [rng.uniform(1.5, 3)]
            dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            sel = np.abs(dist - r) < 0.6
        img[:, sel] = color


def make_dataset(n: int, seed: int = 0) -> Dataset:
    """``n`` images; balanced classes in random order."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    xs = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    masks = np.empty((n, SIZE, SIZE), dtype=bool)
    ys = rng.permutation(np.arange(n) % len(CLASSES))
    for i, kind in enumerate(ys):
        img = _background(rng, yy, xx)
        _distractors(rng, img, yy, xx)
        r = rng.uniform(4.5, 8)
        cy, cx = rng.uniform(r + 1, SIZE - r - 1, 2)
        m = _shape_mask(int(kind), cy, cx, r, yy, xx)
        color = rng.uniform(0.5, 1.0, 3) * rng.choice([-1, 1], 3)
        img[:, m] = color[:, None] + rng.normal(0, 0.05, (3, int(m.sum())))
        xs[i], masks[i] = img, m
    seg = np.where(masks, ys[:, None, None] + 1, 0).astype(np.int64)
    area = masks.reshape(n, -1).mean(1).astype(np.float32)
    return Dataset(xs, ys.astype(np.int64), masks, seg, area)

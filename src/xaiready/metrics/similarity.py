"""Row-wise similarity of maps: Pearson, Spearman (average ranks on ties, as SciPy) and SSIM.

SSIM follows ``skimage.metrics.structural_similarity`` defaults on 2-D maps (7x7 uniform window,
sample covariance, K1=0.01, K2=0.03, mean over windows fully inside the image), with the data range
taken over both maps as Quantus does; NumPy only, so the metrics need no extra dependency.
"""

from __future__ import annotations

import numpy as np


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per row of (N, F) arrays; NaN where a row is constant."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), np.nan)


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along the last axis of a 2-D array, ties sharing their mean rank."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    for i, row in enumerate(a):
        order = np.argsort(row, kind="stable")
        sorted_row = row[order]
        starts = np.r_[True, sorted_row[1:] != sorted_row[:-1]]
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        counts = np.diff(np.r_[first, len(row)])
        avg = first + (counts + 1) / 2.0
        out[i, order] = avg[group]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    return pearson(rankdata(a), rankdata(b))


def _box_mean(img: np.ndarray, w: int) -> np.ndarray:
    """Mean over every w x w window fully inside ``img`` (N, H, W) -> (N, H-w+1, W-w+1)."""
    c = np.cumsum(np.cumsum(img, axis=1), axis=2)
    c = np.pad(c, ((0, 0), (1, 0), (1, 0)))
    s = c[:, w:, w:] - c[:, :-w, w:] - c[:, w:, :-w] + c[:, :-w, :-w]
    return s / (w * w)


def ssim(a: np.ndarray, b: np.ndarray, win_size: int = 7) -> np.ndarray:
    """Mean SSIM per pair of (N, H, W) maps."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or min(a.shape[1:]) < win_size:
        raise ValueError(f"SSIM needs (N, H, W) maps of at least {win_size}x{win_size}, got {a.shape}")
    n = len(a)
    flat = np.concatenate([a.reshape(n, -1), b.reshape(n, -1)], axis=1)
    data_range = (flat.max(1) - flat.min(1))[:, None, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ux, uy = _box_mean(a, win_size), _box_mean(b, win_size)
    cov = win_size * win_size / (win_size * win_size - 1.0)
    vx = cov * (_box_mean(a * a, win_size) - ux * ux)
    vy = cov * (_box_mean(b * b, win_size) - uy * uy)
    vxy = cov * (_box_mean(a * b, win_size) - ux * uy)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    # skimage averages over the image cropped by (win-1)//2, i.e. exactly the windows fully inside it
    return s.reshape(n, -1).mean(1)


SIMILARITIES = {"pearson": pearson, "spearman": spearman, "ssim": ssim}


def similarity(name: str):
    from ..errors import UsageError

    if name not in SIMILARITIES:
        raise UsageError(f"unknown similarity '{name}'", hint=f"use one of {', '.join(SIMILARITIES)}")
    return SIMILARITIES[name]

"""Array helpers for image batches, in NumPy only: where the spatial axes are, resizing, blurring and
per-sample min-max scaling. Methods, metrics, readiness and rendering share these, so each rule has
one definition (and one place that says which reference it matches).

A batch is (N, C, H, W) or (N, H, W, C); ``layout`` is "NCHW" / "NHWC" or the channel axis
(``ModelHandle.channel_axis``: 1 or -1).
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError


# ---- spatial axes --------------------------------------------------------------------------------------
def spatial_axes(x: np.ndarray, layout: str | int, *, batched: bool = True) -> tuple[int, int]:
    """The (H, W) axes of an image batch ``x``; ``batched=False``: of one sample (no batch axis)."""
    ndim = np.ndim(x) + (0 if batched else 1)
    channels_first = layout == "NCHW" if isinstance(layout, str) else layout % ndim == 1
    h, w = (2, 3) if channels_first else (1, 2)
    return (h, w) if batched else (h - 1, w - 1)


def spatial_size(x: np.ndarray, layout: str | int) -> tuple[int, int]:
    """(H, W) of an image batch."""
    h, w = spatial_axes(x, layout)
    return x.shape[h], x.shape[w]


# ---- resizing (matching torch's F.interpolate with align_corners=False) -------------------------------------
def linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from ``n_in`` to ``n_out`` samples with half-pixel centres, edges clamped:
    output ``j`` is ``(1 - frac[j]) * in[i0[j]] + frac[j] * in[i1[j]]``; returns (i0, i1, frac)."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``linear_weights`` as an (n_out, n_in) float32 matrix, for resizing by matrix products."""
    i0, i1, frac = linear_weights(n_in, n_out)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] += 1 - frac
    m[np.arange(n_out), i1] += frac
    return m


def upsample(maps: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize (N, h, w) maps to (N, H, W): ``bilinear`` (half-pixel centres) or ``nearest``."""
    h, w = maps.shape[1:]
    if (h, w) == tuple(size):
        return maps.copy()
    if mode == "nearest":
        rows = np.minimum(np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
        cols = np.minimum(np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
        return maps[:, rows][:, :, cols]
    if mode != "bilinear":
        raise UsageError(f"unknown interpolation '{mode}'", hint="use bilinear or nearest")
    r0, r1, fr = linear_weights(h, size[0])
    c0, c1, fc = linear_weights(w, size[1])
    m = maps.astype(np.float32, copy=False)
    fr, fc = fr.astype(np.float32), fc.astype(np.float32)
    top = m[:, r0] * (1 - fr)[None, :, None] + m[:, r1] * fr[None, :, None]  # (N, H, w): small
    out = top[:, :, c0]
    out *= 1 - fc
    out += top[:, :, c1] * fc
    return out


# ---- blurring --------------------------------------------------------------------------------------------
def gaussian_blur(x: np.ndarray, sigma: float, axes: tuple[int, int]) -> np.ndarray:
    """Separable Gaussian blur over the two spatial axes; edges mirrored with the edge value repeated,
    kernel cut at 3 sigma: ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=3)``."""
    radius = max(1, int(3 * sigma + 0.5))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = x.astype(np.float64)
    for axis in axes:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        out = sum(w * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return out.astype(x.dtype)


def box_blur(x: np.ndarray, axes: tuple[int, int], size: int) -> np.ndarray:
    """Two passes of a separable box filter of ``size`` (about a Gaussian), edge-padded, over the two
    spatial axes: cheaper than ``gaussian_blur`` for the wide blurs of insertion curves."""
    out = np.asarray(x, dtype=np.float64)
    for _ in range(2):
        for ax in axes:
            pad = [(0, 0)] * out.ndim
            pad[ax] = (size // 2 + 1, size // 2)
            c = np.cumsum(np.pad(out, pad, mode="edge"), axis=ax)
            hi = np.take(c, np.arange(size, c.shape[ax]), axis=ax)
            lo = np.take(c, np.arange(0, c.shape[ax] - size), axis=ax)
            out = (hi - lo) / size
    return out.astype(x.dtype)


# ---- scaling ---------------------------------------------------------------------------------------------
def normalize(maps: np.ndarray) -> np.ndarray:
    """Per-sample min-max to [0, 1]; a constant map becomes all zeros rather than NaN."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1), flat.max(1)
    span = np.where(hi > lo, hi - lo, 1).astype(flat.dtype)
    out = flat - lo[:, None]
    out /= span[:, None]
    return out.reshape(maps.shape)

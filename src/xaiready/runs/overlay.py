"""One PNG per (image, method): the input in grey with the map over it, drawn in NumPy and Pillow.

matplotlib's figures (``render.heatmap``) cost a tenth of a second each, more than explaining a small
image; a run draws thousands, so here the colour map is a lookup table and the PNG is encoded by
Pillow. The colours follow ``render.heatmap``: jet for maps of one sign (zero is the coldest colour),
a blue-white-red diverging map centred on zero for signed ones.
"""

from __future__ import annotations

import io

import numpy as np

from ..render.heatmap import display_image, heat_map

MIN_SIDE = 160  # small inputs are enlarged so the overlay can be read
ALPHA = 0.5


def _jet(t: np.ndarray) -> np.ndarray:
    r = np.clip(1.5 - np.abs(4 * t - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * t - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * t - 1), 0, 1)
    return np.stack([r, g, b], -1)


def _diverging(t: np.ndarray) -> np.ndarray:
    """t in [-1, 1]: blue (-1), white (0), red (1)."""
    cold, hot = np.array([0.23, 0.30, 0.75]), np.array([0.71, 0.02, 0.15])
    w = np.abs(t)[..., None]
    end = np.where(t[..., None] < 0, cold, hot)
    return (1 - w) * 1.0 + w * end


def overlay_png(x: np.ndarray, values: np.ndarray, layout: str) -> bytes:
    """PNG bytes of one sample ``x`` (no batch axis) with its attribution ``values`` over it."""
    from PIL import Image

    grey = display_image(x, layout)
    heat, signed = heat_map(np.asarray(values), "", layout)
    heat = np.nan_to_num(heat)
    if signed:
        colours = _diverging(heat / max(float(np.abs(heat).max()), 1e-12))
    else:
        lo, top = min(0.0, float(heat.min())), float(heat.max())
        colours = _jet((heat - lo) / (top - lo) if top > lo else np.zeros_like(heat))
    if colours.shape[:2] != grey.shape:  # a map at another resolution than the input (never for built-ins)
        colours = np.asarray(Image.fromarray((colours * 255).astype(np.uint8)).resize(grey.shape[::-1])) / 255.0
    rgb = (1 - ALPHA) * grey[..., None] + ALPHA * colours
    img = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))
    h, w = grey.shape
    scale = max(1, -(-MIN_SIDE // max(1, min(h, w))))
    if scale > 1:
        img = img.resize((w * scale, h * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # fast; these files are small either way
    return buf.getvalue()

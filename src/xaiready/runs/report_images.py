"""Thumbnails for the report: the input image and its overlay, as PNG data URIs (the page stays one file).

The overlay is the engine's ``overlays/IMAGE__METHOD.png``; when it is missing (a run still in progress,
or overlays turned off) it is drawn here from the attribution map ``attributions/IMAGE__METHOD.npy``
over the input. An image that cannot be read gives ``None``, and the page says so instead of breaking.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

THUMB = 160  # longest side of an embedded thumbnail, in pixels
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
# A perceptually ordered map (dark blue -> teal -> yellow), so "more" reads as brighter on any screen.
_CMAP_STOPS = np.array([[0.0, 0.05, 0.03, 0.35], [0.25, 0.20, 0.25, 0.62], [0.5, 0.13, 0.57, 0.55],
                        [0.75, 0.48, 0.80, 0.30], [1.0, 0.99, 0.91, 0.15]])


def file_stem(image: str) -> str:
    """The file name part of an image id in ``overlays/`` and ``attributions/`` (``/`` becomes ``__``)."""
    return image.replace("/", "__")


def overlay_file(run_dir: Path, image: str, method: str) -> Path:
    return run_dir / "overlays" / f"{file_stem(image)}__{method}.png"


def data_uri(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a PNG data URI, shrunk so its longest side is at most THUMB."""
    from PIL import Image

    img = Image.fromarray(rgb)
    if max(img.size) > THUMB:
        img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(path: Path) -> str | None:
    """A PNG file on disk as a thumbnail data URI; None when it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return data_uri(np.asarray(img.convert("RGB")))
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def resolve_input(run_dir: Path, path: str | None, inputs_root: str | None) -> Path | None:
    """The input file of an ``images`` row: absolute, else under the run's inputs folder or the run."""
    if not path:
        return None
    p = Path(path)
    candidates = [p] if p.is_absolute() else []
    if inputs_root:
        root = Path(inputs_root)
        candidates.append((root if root.is_dir() else root.parent) / p)
    candidates += [run_dir / p, p]
    return next((c for c in candidates if c.is_file()), None)


def read_rgb(path: Path | None) -> np.ndarray | None:
    """An input file as (H, W, 3) uint8 for display: images as they are, arrays min-max scaled."""
    if path is None:
        return None
    try:
        if path.suffix.lower() == ".npy":
            return array_rgb(np.load(path, allow_pickle=False))
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return None
    return None


def array_rgb(a: np.ndarray) -> np.ndarray | None:
    a = np.asarray(a, dtype=np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or not np.isfinite(a).all():
        return None
    a = a[..., :3] if a.shape[-1] >= 3 else np.repeat(a[..., :1], 3, axis=-1)
    lo, hi = a.min(), a.max()
    scaled = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (scaled * 255).round().astype(np.uint8)


def colorize(heat: np.ndarray) -> np.ndarray:
    """An (H, W) map, min-max scaled, through the report's colour map: (H, W, 3) float in [0, 1]."""
    lo, hi = float(heat.min()), float(heat.max())
    t = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    return np.stack([np.interp(t, _CMAP_STOPS[:, 0], _CMAP_STOPS[:, c]) for c in (1, 2, 3)], axis=-1)


def draw_overlay(rgb: np.ndarray | None, attribution: np.ndarray, alpha: float = 0.55) -> np.ndarray | None:
    """The attribution map over a grey copy of the input (or alone without one), as (H, W, 3) uint8."""
    from PIL import Image

    heat = np.asarray(attribution, dtype=np.float64)
    while heat.ndim > 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim == 3:  # an input-shaped map: sum the channel axis (the small one)
        heat = np.abs(heat).sum(0 if heat.shape[0] <= 4 else -1)
    if heat.ndim != 2 or not np.isfinite(heat).all():
        return None
    colour = colorize(heat)
    if rgb is not None:
        h, w = heat.shape
        grey = np.asarray(Image.fromarray(rgb).convert("L").resize((w, h), Image.Resampling.BILINEAR)) / 255.0
        colour = alpha * colour + (1 - alpha) * grey[..., None]
    return (np.clip(colour, 0, 1) * 255).round().astype(np.uint8)


def overlay_uri(run_dir: Path, image: str, method: str, attribution_path: str | None,
                rgb: np.ndarray | None) -> str | None:
    """The overlay thumbnail: the engine's PNG, else drawn from the saved map; None when neither exists."""
    uri = png_uri(overlay_file(run_dir, image, method))
    if uri is not None or not attribution_path:
        return uri
    try:
        values = np.load(run_dir / attribution_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    drawn = draw_overlay(rgb, values)
    return None if drawn is None else data_uri(drawn)

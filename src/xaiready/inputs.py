"""Model inputs from files (.npy, .png, .jpg) or a declared shape, with documented preprocessing.

Images become float32 in [0, 1], optionally resized to ``--resize H,W`` and normalized with
``--mean``/``--std`` per channel, then laid out as the model expects (NCHW or NHWC) with a batch axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptError, InputError, ResourceError, UnsupportedError, UsageError

MAX_IMAGE_PIXELS = 50_000_000  # refuse before decoding; Pillow only warns at ~89M
MAX_INPUT_ELEMENTS = 256 * 1024 * 1024  # one float32 batch of 1 GiB


@dataclass
class ImageOptions:
    resize: tuple[int, int] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--input-shape '{text}' is not a list of integers", hint="e.g. --input-shape 1,3,224,224") from None
    if not shape or any(v <= 0 for v in shape):
        raise UsageError(f"--input-shape '{text}' must be positive integers", hint="e.g. --input-shape 1,3,224,224")
    if int(np.prod(shape, dtype=np.int64)) > MAX_INPUT_ELEMENTS:
        raise ResourceError(f"--input-shape {shape} needs more than {MAX_INPUT_ELEMENTS} values",
                            hint="use a smaller batch or image size")
    return shape


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A seeded standard-normal input (the scale of normalized images)."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def read_input(path: str | Path, *, layout: str = "NCHW", image: ImageOptions | None = None) -> np.ndarray:
    from .formats.sniff import sniff

    path = Path(path)
    sniffed = sniff(path)
    if sniffed.format == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CorruptError(f"the .npy file cannot be read without pickle: {exc}", path=str(path),
                               format="npy", hint="save a plain numeric array") from exc
        if arr.ndim == 3 and arr.shape[0 if layout == "NCHW" else -1] in (1, 3, 4):
            arr = arr[None]  # one image without a batch axis
        return arr
    if sniffed.format in ("png", "jpeg"):
        return _read_image(path, sniffed.format, layout, image or ImageOptions())
    raise UnsupportedError(f"content is {sniffed.name}, not an input array or image", path=str(path),
                           format=sniffed.format, hint="pass a .npy array or a PNG/JPEG image")


def _read_image(path: Path, fmt: str, layout: str, opts: ImageOptions) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise ResourceError(f"the image declares {w}x{h} = {w * h} pixels, over the limit of "
                                    f"{MAX_IMAGE_PIXELS}", path=str(path), format=fmt,
                                    hint="resize the image first")
            img = img.convert("RGB")
            if opts.resize:
                img = img.resize((opts.resize[1], opts.resize[0]), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CorruptError(f"the image cannot be decoded: {exc}", path=str(path), format=fmt) from exc
    if opts.mean is not None:
        arr = arr - np.asarray(opts.mean, dtype=np.float32)
    if opts.std is not None:
        arr = arr / np.asarray(opts.std, dtype=np.float32)
    arr = arr[None]
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2)) if layout == "NCHW" else arr


def check_finite(x: np.ndarray, where: str = "input") -> None:
    if not np.isfinite(x).all():
        raise InputError(f"{where} contains NaN or infinite values", hint="clean the input first")

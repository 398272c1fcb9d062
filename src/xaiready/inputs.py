"""Model inputs from files (.npy, .png, .jpg) or a declared shape, with documented preprocessing.

Images become float32 in [0, 1], optionally resized to ``--resize H,W`` and normalized with
``--mean``/``--std`` per channel, then laid out as the model expects (NCHW or NHWC) with a batch axis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import limits
from .errors import CorruptError, InputError, ResourceError, UnsupportedError, UsageError


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
    # The size is checked where the input is built (``api.prepare_input``), which knows the model's file.
    return shape


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A seeded standard-normal input (the scale of normalized images), never over ``max_input_bytes``."""
    limits.check_built_input(shape, what="a random input of shape")
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def read_input(path: str | Path, *, layout: str = "NCHW", image: ImageOptions | None = None) -> np.ndarray:
    from .formats.sniff import sniff

    path = Path(path)
    sniffed = sniff(path)
    if sniffed.format == "npy":
        _check_npy_header(path)
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


def _check_npy_header(path: Path) -> None:
    """Refuse a .npy whose header declares more than the per-sample input limit, before reading data."""
    with open(path, "rb") as fh:
        try:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
        except ValueError as exc:
            raise CorruptError(f"the .npy header cannot be read: {exc}", path=str(path), format="npy") from exc
    if dtype.hasobject:
        raise CorruptError("the .npy array holds Python objects (a pickle)", path=str(path), format="npy",
                           hint="save a plain numeric array")
    per_sample = dtype.itemsize * math.prod(int(d) for d in shape[1:])  # Python ints: no int64 overflow
    limit = limits.current().max_input_bytes
    if per_sample > limit:
        raise ResourceError(f"the array declares {shape} ({per_sample} bytes per sample), over the limit of "
                            f"{limit} bytes", path=str(path), format="npy", hint="raise --max-input-mb")


def _read_image(path: Path, fmt: str, layout: str, opts: ImageOptions) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ResourceError(f"the image is a decompression bomb ({exc})", path=str(path), format=fmt,
                            hint="resize the image first, or raise --max-image-pixels") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise CorruptError(f"the image cannot be decoded: {exc}", path=str(path), format=fmt) from exc
    try:
        with img:
            w, h = img.size  # from the header; nothing is decoded yet
            limit = limits.current().max_image_pixels
            if w * h > limit:
                raise ResourceError(f"the image declares {w}x{h} = {w * h} pixels, over the limit of "
                                    f"{limit}", path=str(path), format=fmt,
                                    hint="resize the image first, or raise --max-image-pixels")
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

"""A dataset as a list of items: a folder of images (recursive) or a CSV manifest, with labels and masks.

An item names its image by a stable id (the path relative to the folder, or the manifest row's path
as written), so a resumed run and a report find the same image under the same name. Only names are
held in memory; pixels are read a batch at a time (``read_item``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".npy")
_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}


@dataclass(frozen=True)
class Item:
    image: str  # stable id
    path: str  # absolute path of the file
    label: int | None = None
    mask: str | None = None  # absolute path of a mask file
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in the file's pixels


def discover(inputs: str | Path, *, labels: str | Path | None = None, masks: str | Path | None = None) -> list[Item]:
    """The items of a folder (recursive, sorted by id) or a manifest, with ``labels`` and ``masks`` joined."""
    root = Path(inputs)
    if root.is_dir():
        files = sorted((f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda f: f.relative_to(root).as_posix())
        items = [Item(f.relative_to(root).as_posix(), str(f.resolve())) for f in files]
        if not items:
            raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}", path=str(root))
    elif root.is_file() and root.suffix.lower() == ".csv":
        items = _read_manifest(root)
    elif root.is_file():
        raise UsageError(f"--inputs {root} is neither a folder nor a .csv manifest", path=str(root),
                         hint="give a folder of images or a CSV with a 'path' column")
    else:
        raise UsageError(f"--inputs {root} does not exist", path=str(root))
    if labels is not None:
        items = _join_labels(items, Path(labels))
    if masks is not None:
        items = _join_masks(items, Path(masks))
    return items


def digest(items: list[Item]) -> str:
    """A fingerprint of the dataset's names, labels, masks and boxes (not the pixels): resume compares it."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps([item.image, item.label, item.mask, item.box]).encode())
    return h.hexdigest()[:16]


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorruptError(f"the CSV cannot be read: {exc}", path=str(path), format="csv") from exc
    return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in rows]


def _read_manifest(path: Path) -> list[Item]:
    rows = _read_csv(path)
    if not rows or "path" not in rows[0]:
        raise UsageError(f"the manifest {path} has no 'path' column", path=str(path), format="csv",
                         hint="columns: path[,label][,mask][,box]")
    base, items, seen = path.parent, [], set()
    for n, row in enumerate(rows, start=2):
        name = row["path"]
        if not name:
            raise UsageError(f"row {n} of {path} has an empty path", path=str(path), format="csv")
        if name in seen:
            raise UsageError(f"'{name}' is listed twice in {path}", path=str(path), format="csv")
        seen.add(name)
        mask = row.get("mask") or None
        items.append(Item(name, str((base / name).resolve()), _label(row.get("label"), path, n),
                          None if mask is None else str((base / mask).resolve()), _box(row.get("box"), path, n)))
    return items


def _label(text: str | None, path: Path, row: int) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"label '{text}' in row {row} of {path} is not a class index", path=str(path),
                         format="csv", hint="labels are integer class indices") from None


def _box(text: str | None, path: Path, row: int) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        box = tuple(float(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v)
    except ValueError:
        box = ()
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise UsageError(f"box '{text}' in row {row} of {path} is not x0,y0,x1,y1 with x0 < x1, y0 < y1",
                         path=str(path), format="csv")
    return box  # type: ignore[return-value]


def _join_labels(items: list[Item], path: Path) -> list[Item]:
    """Labels by image id, by file name or by stem (the first column that matches), from ``path,label``."""
    rows = _read_csv(path)
    key = next((k for k in ("image", "path", "file", "name") if rows and k in rows[0]), None)
    if key is None or "label" not in rows[0]:
        raise UsageError(f"the labels file {path} needs columns 'path' (or 'image') and 'label'", path=str(path),
                         format="csv")
    table = {row[key]: _label(row["label"], path, n) for n, row in enumerate(rows, start=2)}
    out = []
    for item in items:
        name = Path(item.image)
        found = next((table[k] for k in (item.image, name.name, name.stem) if k in table), item.label)
        out.append(Item(item.image, item.path, found, item.mask, item.box))
    return out


def _join_masks(items: list[Item], folder: Path) -> list[Item]:
    """A mask per item: the file in ``folder`` at the image's relative path, with any image suffix."""
    if not folder.is_dir():
        raise UsageError(f"--masks {folder} is not a folder", path=str(folder))
    out = []
    for item in items:
        stem = folder / Path(item.image).with_suffix("")
        found = next((str(stem.with_suffix(s).resolve()) for s in IMAGE_SUFFIXES if stem.with_suffix(s).is_file()),
                     item.mask)
        out.append(Item(item.image, item.path, item.label, found, item.box))
    return out


# ---- reading one item --------------------------------------------------------------------------------
def read_item(item: Item, *, layout: str, options) -> np.ndarray:
    """One image as a (1, C, H, W) or (1, H, W, C) float32 batch (``options``: ``inputs.ImageOptions``).

    Images are RGB in [0, 1], then resized and normalised by ``options``; a .npy is taken as it is.
    Errors are ``XaiReadyError``s naming the file (the pipeline records them per image)."""
    from ..inputs import _read_image, read_input

    path = Path(item.path)
    if not path.is_file():
        raise CorruptError("the file does not exist", path=item.path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        x = read_input(path, layout=layout)
        if x.ndim != 4 or x.shape[0] != 1:
            raise CorruptError(f"the array has shape {x.shape}, not one image", path=item.path, format="npy",
                               hint="save one (C, H, W) or (1, C, H, W) array per file")
        return x.astype(np.float32, copy=False)
    return _read_image(path, _FORMATS.get(suffix, suffix.lstrip(".")), layout, options)


def original_size(item: Item) -> tuple[int, int] | None:
    """(H, W) of the file before resizing (boxes are given in these pixels); None for arrays."""
    if item.path.lower().endswith(".npy"):
        return None
    from PIL import Image

    with Image.open(item.path) as img:
        return img.size[1], img.size[0]


def read_mask(item: Item, size: tuple[int, int]) -> np.ndarray | None:
    """The item's ground truth as an (H, W) bool mask at the model input's ``size``: its mask file (any
    non-zero pixel), else its box scaled from the file's pixels; None when it has neither."""
    if item.mask is not None:
        path = Path(item.mask)
        if not path.is_file():
            raise CorruptError("the mask file does not exist", path=item.mask)
        if path.suffix.lower() == ".npy":
            m = np.load(path, allow_pickle=False)
            m = m.squeeze() > 0
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as img:
                    m = np.asarray(img.convert("L")) > 0
            except (UnidentifiedImageError, OSError) as exc:
                raise CorruptError(f"the mask cannot be decoded: {exc}", path=item.mask) from exc
        if m.ndim != 2:
            raise CorruptError(f"the mask has shape {m.shape}, not (H, W)", path=item.mask)
        return _resize_nearest(m, size)
    if item.box is not None:
        h0, w0 = original_size(item) or size
        x0, y0, x1, y1 = item.box
        sy, sx = size[0] / h0, size[1] / w0
        yy, xx = np.mgrid[0:size[0], 0:size[1]]
        return (yy + 0.5 >= y0 * sy) & (yy + 0.5 < y1 * sy) & (xx + 0.5 >= x0 * sx) & (xx + 0.5 < x1 * sx)
    return None


def _resize_nearest(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if m.shape == tuple(size):
        return m
    rows = np.minimum((np.arange(size[0]) + 0.5) * m.shape[0] / size[0], m.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(size[1]) + 0.5) * m.shape[1] / size[1], m.shape[1] - 1).astype(int)
    return m[rows][:, cols]


def as_json(items: list[Item]) -> list[dict]:
    """Items as plain dicts (what travels to worker processes and Ray actors)."""
    return [asdict(i) for i in items]


def from_json(rows: list[dict]) -> list[Item]:
    return [Item(r["image"], r["path"], r.get("label"), r.get("mask"),
                 None if r.get("box") is None else tuple(r["box"])) for r in rows]

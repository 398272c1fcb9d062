"""Uploads on disk: streamed under a size limit and hashed, zips unpacked safely, content sniffed.

A model arrives as one file, or as a zip of a folder (a SavedModel, a Hugging Face folder, an ONNX
file with its external data). Its format comes from content sniffing, exactly as ``xaiready check``
reads it; nothing here imports a framework or runs anything from the file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptError, ResourceError, UnsafePathError, UnsupportedError

CHUNK = 1024 * 1024
# Files that can be the model inside an unpacked folder (the rest is its data, config or tokenizer).
_MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".bin", ".ckpt", ".keras", ".h5", ".hdf5", ".pb", ".safetensors",
                   ".pkl", ".pickle")


@dataclass(frozen=True)
class Stored:
    path: Path       # the file or folder to load
    sha256: str      # of the uploaded bytes
    size: int
    format: str
    filename: str


def safe_name(filename: str | None, default: str = "upload") -> str:
    """A file name without folders or odd characters (an upload names itself, it does not place itself)."""
    name = Path((filename or "").replace("\\", "/")).name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")
    return name[:120] or default


def save_stream(source, dest: Path, max_bytes: int) -> tuple[str, int]:
    """Copy a binary file object to ``dest``; returns (sha256, size). Over ``max_bytes``: ResourceError."""
    digest, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                out.close()
                dest.unlink(missing_ok=True)
                raise ResourceError(f"the upload is over the limit of {max_bytes // (1024 * 1024)} MiB",
                                    hint="the server's --max-upload-mb sets it")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        dest.unlink(missing_ok=True)
        raise CorruptError("the uploaded file is empty (0 bytes)", path=dest.name)
    return digest.hexdigest(), size


def store_model(source, filename: str | None, folder: Path, max_bytes: int) -> Stored:
    """Save an uploaded model into ``folder`` (which it creates) and identify it by content."""
    from ..formats.sniff import contradicts_extension, sniff

    name = safe_name(filename, "model")
    upload = folder / "upload" / name
    sha, size = save_stream(source, upload, max_bytes)
    sniffed = sniff(upload)
    contradiction = contradicts_extension(sniffed)
    if contradiction:  # refused at intake, as xaiready check refuses it
        raise CorruptError(contradiction, format=sniffed.format,
                           hint="rename the file to match its content, or re-export it")
    path = upload
    if sniffed.format == "zip":
        path = unpack(upload, folder / "unpacked")
        sniffed = sniff(path)
    return Stored(path=path, sha256=sha, size=size, format=sniffed.format, filename=name)


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a zip under the archive limits (no member may escape ``dest``) and return the model in it:
    the folder itself when it is a model folder, else its one model file."""
    from ..formats.sniff import check_zip_directory

    try:
        with zipfile.ZipFile(archive) as zf:
            check_zip_directory(zf, archive)
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            for info in zf.infolist():
                target = (dest / info.filename).resolve()
                if root not in target.parents and target != root:  # check_zip_directory refuses these first
                    raise UnsafePathError(f"archive member '{info.filename}' escapes the folder", path=archive.name)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as exc:
        raise CorruptError(f"the zip archive is damaged ({exc})", path=archive.name, format="zip") from exc
    return model_in(dest, archive.name)


def model_in(folder: Path, shown: str) -> Path:
    entries = [p for p in folder.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        folder = entries[0]
    if (folder / "saved_model.pb").is_file() or (folder / "config.json").is_file():
        return folder
    candidates = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UnsupportedError("the zip holds no model file and no model folder", path=shown, format="zip",
                               hint="zip a SavedModel or Hugging Face folder, or one model file with its data")
    names = ", ".join(p.name for p in candidates[:4])
    raise UnsupportedError(f"the zip holds several model files ({names}); which one is the model is unclear",
                           path=shown, format="zip", hint="upload one model per zip")

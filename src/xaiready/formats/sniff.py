"""Identify a model or input file by its content, never by its extension alone.

Nothing here imports a framework or executes anything from the file: zip directories are read,
pickles are scanned opcode by opcode (``pickletools``), protobufs are walked at the wire level.
"""

from __future__ import annotations

import io
import json
import mmap
import pickletools
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import limits
from ..errors import CorruptError, ResourceError, UnsafePathError, UnsupportedError, UntrustedError

# Human names of formats, as the report spells them.
NAMES = {
    "pytorch-eager": "PyTorch pickled module", "pytorch-state-dict": "PyTorch state dict",
    "pytorch-pickle": "PyTorch checkpoint with pickled objects", "pytorch-legacy-tar": "legacy PyTorch tar",
    "torchscript": "TorchScript", "safetensors": "safetensors", "onnx": "ONNX", "keras": "Keras v3",
    "keras-h5": "Keras HDF5", "tf-savedmodel": "TF SavedModel", "tf-graphdef": "TF GraphDef",
    "pickle": "Python pickle", "png": "PNG image", "jpeg": "JPEG image", "npy": "NumPy array",
    "zip": "zip archive", "huggingface": "Hugging Face model folder",
}
_EXTENSIONS = {
    ".pt": "PyTorch", ".pth": "PyTorch", ".bin": "PyTorch", ".ckpt": "PyTorch", ".onnx": "ONNX",
    ".keras": "Keras v3", ".h5": "Keras HDF5", ".hdf5": "Keras HDF5", ".pb": "TF GraphDef",
    ".safetensors": "safetensors", ".pkl": "Python pickle", ".pickle": "Python pickle",
    ".png": "PNG image", ".jpg": "JPEG image", ".jpeg": "JPEG image", ".npy": "NumPy array",
}
_EXT_FAMILY = {"PyTorch": {"pytorch-eager", "pytorch-state-dict", "pytorch-pickle", "pytorch-legacy-tar",
                           "torchscript", "pickle", "safetensors"}}

# Globals a plain tensor checkpoint may name: tensor rebuilding, storages, dtypes, containers.
_DATA_GLOBALS_PREFIXES = ("torch._utils._rebuild_", "torch._tensor._rebuild_", "torch.storage.",
                          "torch.serialization._get_layout", "torch._C._nn")
_DATA_GLOBALS = {"collections.OrderedDict", "torch.Size", "torch.device", "torch.nn.parameter.Parameter",
                 "builtins.set", "builtins.frozenset", "builtins.slice", "_codecs.encode",
                 "torch._utils._rebuild_tensor_v2", "torch.serialization._get_layout"}


@dataclass
class Sniffed:
    format: str
    path: Path
    detail: str = ""
    pickle_globals: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return NAMES.get(self.format, self.format)


def extension_says(path: Path) -> str | None:
    return _EXTENSIONS.get(path.suffix.lower())


def contradicts_extension(sniffed: Sniffed) -> str | None:
    """'content is ONNX, extension says PyTorch', or None when they agree or the extension is unknown."""
    said = extension_says(sniffed.path)
    if said is None or sniffed.path.is_dir():
        return None
    family = _EXT_FAMILY.get(said, {k for k, v in NAMES.items() if v == said})
    if sniffed.format in family:
        return None
    return f"content is {sniffed.name}, extension says {said}"


def sniff(path: Path) -> Sniffed:
    return _refuse_disguised_pickle(_sniff(Path(path)))


def _sniff(path: Path) -> Sniffed:
    if not path.exists():
        raise CorruptError("no such file or folder", path=str(path), hint="check the path")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            try:
                metas = [n for n, w, _, _ in proto_fields((path / "saved_model.pb").read_bytes()) if (n, w) == (2, 2)]
            except ValueError:
                metas = []
            if not metas:
                raise CorruptError("saved_model.pb is empty, truncated or holds no meta graph", path=str(path),
                                   format="tf-savedmodel", hint="re-export the SavedModel")
            return Sniffed("tf-savedmodel", path)
        if (path / "config.json").is_file():
            return sniff_hub_folder(path)
        raise UnsupportedError("the folder holds no recognised model (no saved_model.pb, no config.json)",
                               path=str(path), hint="pass a model file, a SavedModel folder or a Hugging Face "
                                                    "save_pretrained folder")
    if path.name == "saved_model.pb":  # the file inside a SavedModel folder names the folder
        return sniff(path.parent)
    if path.name == "config.json" and hub_weight_files(path.parent):  # names its Hugging Face folder
        return sniff(path.parent)
    size = path.stat().st_size
    if size == 0:
        raise CorruptError("the file is empty (0 bytes)", path=str(path), hint="re-export or re-copy the model")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Sniffed("keras-h5", path)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("png", path)
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("jpeg", path)
    if head.startswith(b"\x93NUMPY"):
        return Sniffed("npy", path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # PROTO opcode: protocols 2 to 5 write it
        return _sniff_pickle(path)
    if size >= 262 and _is_tar(path):
        return _sniff_tar(path)
    if _is_safetensors(head, size):
        return Sniffed("safetensors", path)
    proto = _sniff_protobuf(path, size)
    if proto:
        return proto
    if _is_headerless_pickle(path):  # protocols 0 and 1 (text opcodes) have no header
        return _sniff_pickle(path)
    said = extension_says(path)
    if said in ("ONNX", "TF GraphDef", "safetensors"):
        raise CorruptError(f"the file is not a valid {said} file: truncated or damaged (first bytes "
                           f"{head[:8].hex(' ')})", path=str(path), format=said.lower().replace(" ", "-"),
                           hint="re-export or re-copy the model")
    raise UnsupportedError(f"unrecognised content (first bytes {head[:8].hex(' ')})", path=str(path),
                           hint="xaiready reads PyTorch, TorchScript, safetensors, ONNX, Keras and TF files")


# ---- Hugging Face folders: save_pretrained (transformers) and save_for_hf / push_to_hub (timm) ------------
HUB_CONFIG_MAX_BYTES = 16 * 1024 * 1024  # a model config is kilobytes; this only stops a huge file being read
# Weight files in the order transformers prefers them: safetensors first, a pickle only without one.
HUB_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def hub_weight_files(folder: Path) -> list[str]:
    """The weight files of a Hugging Face folder present, by name, best first (none: not such a folder)."""
    return [n for n in HUB_WEIGHTS if (folder / n).is_file()]


def check_inside(folder: Path, path: Path, fmt: str = "huggingface") -> Path:
    """``path`` (a file of ``folder``), refused when a link takes it outside the folder.

    The one exception is the Hugging Face cache's own layout, where each file of
    ``models--org--name/snapshots/REV/`` links to ``models--org--name/blobs/``."""
    real, root = path.resolve(), folder.resolve()
    if real.is_relative_to(root):
        return path
    if folder.parent.name == "snapshots" and real.is_relative_to((folder.parent.parent / "blobs").resolve()):
        return path
    raise UnsafePathError(f"{path.name} links to {real}, outside the model's folder", path=str(folder), format=fmt,
                          hint="copy the files into the folder; links out of it are not followed")


def read_hub_json(path: Path, fmt: str = "huggingface") -> dict:
    """A JSON object from a small config file of a Hugging Face folder; nothing in it is executed."""
    check_inside(path.parent, path, fmt)
    size = path.stat().st_size
    if size > HUB_CONFIG_MAX_BYTES:
        raise ResourceError(f"{path.name} is {size} bytes; a model config is a few kilobytes",
                            path=str(path), format=fmt, hint="the file is damaged or hostile")
    try:
        value = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptError(f"{path.name} is not valid JSON ({exc})", path=str(path), format=fmt,
                           hint="re-save the model with save_pretrained") from exc
    if not isinstance(value, dict):
        raise CorruptError(f"{path.name} holds a JSON {type(value).__name__}, not an object", path=str(path),
                           format=fmt, hint="re-save the model with save_pretrained")
    return value


def hub_library(config: dict) -> str | None:
    """'transformers' or 'timm' from a config.json's keys, or None when it is neither's."""
    if isinstance(config.get("model_type"), str) or isinstance(config.get("architectures"), list):
        return "transformers"
    if isinstance(config.get("architecture"), str):  # timm's save_for_hf / push_to_hf_hub
        return "timm"
    return None


def sniff_hub_folder(path: Path) -> Sniffed:
    config = read_hub_json(path / "config.json")
    library = hub_library(config)
    if library is None:
        raise UnsupportedError("the folder's config.json is neither a transformers config (no model_type or "
                               "architectures) nor a timm one (no architecture)", path=str(path),
                               format="huggingface", hint="pass a model file, or a save_pretrained folder")
    weights = hub_weight_files(path)
    if not weights:
        raise CorruptError(f"the {library} folder has a config.json but no weights (looked for "
                           f"{', '.join(HUB_WEIGHTS)})", path=str(path), format="huggingface",
                           hint="save the model with save_pretrained (safe_serialization) into this folder")
    name = config.get("model_type") if library == "transformers" else config.get("architecture")
    return Sniffed("huggingface", path, detail=f"{library} {name or ''}".strip(), members=weights)


# ---- zip archives: torch.save, TorchScript, Keras v3 -----------------------------------------------------
def check_zip_directory(zf: zipfile.ZipFile, path: Path, fmt: str = "zip") -> None:
    """Refuse archive bombs and escaping member names from the central directory, before reading."""
    lim = limits.current()
    infos = zf.infolist()
    if len(infos) > lim.max_members:
        raise ResourceError(f"the archive has {len(infos)} members, over the limit of {lim.max_members}",
                            path=str(path), format=fmt)
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name.split("/")[0]:
            raise UnsafePathError(f"archive member '{name}' points outside the archive", path=str(path),
                                  format=fmt, hint="the file is malformed or hostile; do not unpack it")
        total += info.file_size
        if info.file_size > lim.ratio_floor_bytes and info.compress_size >= 0:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > lim.max_ratio:
                raise ResourceError(f"archive member '{name}' inflates {ratio:.0f}x ({info.compress_size} -> "
                                    f"{info.file_size} bytes), over the limit of {lim.max_ratio:g}x",
                                    path=str(path), format=fmt, hint="a compression bomb; raise --max-ratio "
                                    "only if you know the file")
    if total > lim.max_unpacked_bytes:
        raise ResourceError(f"the archive declares {total} unpacked bytes, over the limit of "
                            f"{lim.max_unpacked_bytes}", path=str(path), format=fmt,
                            hint="raise it with --max-unpacked-mb if this is intended")


def _sniff_zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            check_zip_directory(zf, path)
            if any(n.endswith("/code/") or "/code/" in n for n in names) or any(
                    n.endswith("constants.pkl") for n in names):
                return Sniffed("torchscript", path, members=names)
            if "config.json" in names and any(n.endswith(".weights.h5") or n == "metadata.json" for n in names):
                return Sniffed("keras", path, members=names)
            data = [n for n in names if n.endswith("data.pkl")]
            if data:
                blob = zf.read(data[0])
                return _classify_torch_pickle(path, blob, names)
    except zipfile.BadZipFile as exc:
        raise CorruptError(f"the zip archive is damaged or truncated ({exc})", path=str(path),
                           hint="re-export or re-copy the model") from exc
    except (EOFError, OSError) as exc:
        raise CorruptError(f"the zip archive cannot be read ({exc})", path=str(path)) from exc
    return Sniffed("zip", path, detail="a zip archive that is neither torch.save, TorchScript nor Keras",
                   members=names)


def _classify_torch_pickle(path: Path, blob: bytes, members: list[str]) -> Sniffed:
    globals_ = scan_pickle(blob, str(path))
    objects = [g for g in globals_ if not _is_data_global(g)]
    if not objects:
        return Sniffed("pytorch-state-dict", path, pickle_globals=globals_, members=members)
    modules = [g for g in objects if ".nn.modules." in g or g.startswith("__main__.")]
    fmt = "pytorch-eager" if modules or _looks_like_module(objects) else "pytorch-pickle"
    return Sniffed(fmt, path, pickle_globals=globals_, members=members,
                   detail=f"the pickle names {', '.join(objects[:4])}{' ...' if len(objects) > 4 else ''}")


def _looks_like_module(objects: list[str]) -> bool:
    return any(g.split(".")[-1][:1].isupper() for g in objects)


def _is_data_global(name: str) -> bool:
    if name in _DATA_GLOBALS or name.startswith(_DATA_GLOBALS_PREFIXES):
        return True
    module, _, attr = name.rpartition(".")
    if module == "torch" and (attr.endswith("Storage") or attr in _TORCH_DTYPES):
        return True
    return False


_TORCH_DTYPES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                 "bool", "complex64", "complex128", "float", "double", "half", "long", "int"}


def scan_pickle(blob: bytes, where: str = "") -> list[str]:
    """Every global a pickle would import, read from its opcodes without executing anything."""
    return _scan_one(io.BytesIO(blob), where).globals


@dataclass
class _Scanned:
    globals: list[str]
    protocol: int  # from the PROTO opcode, else the highest protocol of the opcodes used
    literal: object = None  # the value, when the whole pickle is one int (torch's legacy magic number)
    ops: int = 0


_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}


def _scan_one(stream, where: str = "") -> _Scanned:
    """Scan one pickle from ``stream``'s position to its STOP opcode (the stream is left just after it).

    ``stream`` should be a BytesIO or an mmap: their ``read(n)`` never allocates more than what is
    left, so a hostile length field cannot exhaust memory."""
    globals_: list[str] = []
    strings: list[str] = []
    memo: dict[int, object] = {}
    last: object = None
    protocol = 0
    header: int | None = None
    values: list[object] = []
    ops = 0
    try:
        for op, arg, _pos in pickletools.genops(stream):
            ops += 1
            name = op.name
            protocol = max(protocol, op.proto)
            if name == "PROTO":
                header = int(arg)
                continue
            if name not in ("FRAME", "STOP") and len(values) < 2:
                values.append(arg if name in _INT_OPS else _NOT_INT)
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING",
                        "BINSTRING", "STRING"):
                strings.append(str(arg))
                last = str(arg)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = last
            elif name == "MEMOIZE":
                memo[len(memo)] = last
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                value = memo.get(int(arg))
                last = value
                if isinstance(value, str):
                    strings.append(value)
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                globals_.append(f"{module}.{attr}")
                last = None
            elif name == "STACK_GLOBAL":
                if len(strings) >= 2:
                    globals_.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    globals_.append("<unknown>.<unknown>")
                last = None
            else:
                last = None
    except (ValueError, EOFError, struct.error) as exc:
        raise CorruptError(f"the pickle stream is truncated or damaged ({exc})", path=where or None,
                           hint="re-export or re-copy the model") from exc
    literal = values[0] if len(values) == 1 and values[0] is not _NOT_INT else None
    return _Scanned(list(dict.fromkeys(_py3_name(g) for g in globals_)),
                    header if header is not None else protocol, literal, ops)


_NOT_INT = object()
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}  # as pickle's fix_imports maps them
# Legacy (pre-zip) torch.save: five pickles (this magic number, the protocol version, sys info, the
# object with persistent ids for its storages, the storage keys), then raw storage bytes.
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PICKLES = 5


def _py3_name(name: str) -> str:
    module, _, attr = name.rpartition(".")
    return f"{_PY2_MODULES.get(module, module)}.{attr}"


def _mapped(path: Path):
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _is_headerless_pickle(path: Path) -> bool:
    """A pickle without the PROTO header (protocols 0 and 1 never write it), recognised without running it.

    It counts only when ``pickletools.genops`` parses it cleanly up to a STOP opcode, and the STOP
    ends the file, or the pickle imports a global, or it is torch's legacy magic number. Protobufs,
    safetensors, npy and random bytes fail long before: most bytes are no pickle opcode at all."""
    with _mapped(path) as mm:
        try:
            scanned = _scan_one(mm)
        except CorruptError:
            return False
        rest = len(mm) - mm.tell()
        at_end = rest <= 2 and not mm[mm.tell():].strip(b"\r\n")  # pickle.dump ends at STOP
    return scanned.ops >= 2 and (at_end or bool(scanned.globals) or scanned.literal == _TORCH_LEGACY_MAGIC)


def _sniff_pickle(path: Path) -> Sniffed:
    where = str(path)
    with _mapped(path) as mm:
        first = _scan_one(mm, where)
        if first.literal != _TORCH_LEGACY_MAGIC:
            objects = [g for g in first.globals if not _is_data_global(g)]
            return Sniffed("pickle", path, pickle_globals=first.globals,
                           detail=f"a raw pickle (protocol {first.protocol}) naming "
                                  f"{', '.join(objects[:4]) or 'no globals'}{' ...' if len(objects) > 4 else ''}")
        # torch.load reads every one of these pickles (the rest of the file is raw storage bytes):
        # all of them are scanned, the main object pickle in particular.
        scans = [first]
        for _ in range(_TORCH_LEGACY_PICKLES - 1):
            if mm.tell() >= len(mm):
                raise CorruptError(f"the legacy torch.save file ends after {len(scans)} of its "
                                   f"{_TORCH_LEGACY_PICKLES} pickles", path=where, format="pytorch-pickle",
                                   hint="re-export or re-copy the model")
            scans.append(_scan_one(mm, where))
    globals_ = list(dict.fromkeys(g for scan in scans for g in scan.globals))
    objects = [g for g in globals_ if not _is_data_global(g)]
    if not objects:
        return Sniffed("pytorch-state-dict", path, pickle_globals=globals_, detail="legacy (pre-zip) torch.save file")
    modules = [g for g in objects if ".nn.modules." in g or g.startswith("__main__.")]
    fmt = "pytorch-eager" if modules or _looks_like_module(objects) else "pytorch-pickle"
    return Sniffed(fmt, path, pickle_globals=globals_,
                   detail=f"legacy (pre-zip) torch.save file whose pickle names {', '.join(objects[:4])}"
                          f"{' ...' if len(objects) > 4 else ''}")


def _refuse_disguised_pickle(sniffed: Sniffed) -> Sniffed:
    """A pickle that imports code, under another format's extension, is refused (exit 4), even with --trust.

    A benign pickle (data globals only) under a wrong extension stays a contradiction (exit 3, raised
    by the loader); one that would run code is a policy matter first."""
    if sniffed.format not in ("pickle", "pytorch-pickle", "pytorch-eager"):
        return sniffed
    contradiction = contradicts_extension(sniffed)
    objects = [g for g in sniffed.pickle_globals if not _is_data_global(g)]
    if contradiction and objects:
        raise UntrustedError(f"{contradiction}: the pickle imports {', '.join(objects[:4])}"
                             f"{' ...' if len(objects) > 4 else ''}, which runs code when it is unpickled",
                             path=str(sniffed.path), format=sniffed.format,
                             hint="refused even with --trust while the name disguises it; rename it only if you "
                                  "trust its author")
    return sniffed


def _is_tar(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(257)
        return fh.read(5) == b"ustar"


def _sniff_tar(path: Path) -> Sniffed:
    try:
        with tarfile.open(path) as tf:
            names = tf.getnames()
    except tarfile.TarError as exc:
        raise CorruptError(f"the tar archive is damaged ({exc})", path=str(path)) from exc
    if {"pickle", "storages", "tensors"} & set(names):
        return Sniffed("pytorch-legacy-tar", path, members=names,
                       detail="legacy torch tar checkpoint (its pickle runs code when loaded)")
    raise UnsupportedError("a tar archive that is not a model", path=str(path),
                           hint="unpack it and pass the model file")


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        try:
            return json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptError(f"the safetensors header is not valid JSON ({exc})", path=str(path)) from exc


# ---- protobufs: ONNX ModelProto, TF GraphDef, SavedModel -------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def proto_fields(buf: bytes) -> list[tuple[int, int, int, int]]:
    """Top-level (field number, wire type, start, end) of a protobuf message; raises ValueError."""
    i, out = 0, []
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field 0")
        start = i
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _varint(buf, i)
            start = i
            i += length
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated")
        out.append((number, wire, start, i))
    return out


def _sniff_protobuf(path: Path, size: int) -> Sniffed | None:
    buf = path.read_bytes()
    try:
        fields = proto_fields(buf)
    except ValueError:
        return None
    kinds = {(n, w) for n, w, _, _ in fields}
    if (1, 0) in kinds and ((7, 2) in kinds or (8, 2) in kinds):
        if (7, 2) not in kinds:
            raise CorruptError("the ONNX model has no graph", path=str(path), format="onnx",
                               hint="re-export the model")
        return Sniffed("onnx", path)
    if (1, 2) in kinds and kinds <= {(1, 2), (2, 2), (3, 0), (4, 2)}:
        return Sniffed("tf-graphdef", path)
    if kinds and kinds <= {(2, 2), (3, 0), (4, 2)} and extension_says(path) == "TF GraphDef":
        raise CorruptError("the GraphDef has no nodes", path=str(path), format="tf-graphdef",
                           hint="re-export the frozen graph")
    return None

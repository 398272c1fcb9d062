"""``xr.load``: sniff the content, pick the one loader for it, return a ModelHandle."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import CorruptError, UnsupportedError, XaiReadyError
from ..model import ModelHandle
from ..usercode import import_user_code
from .sniff import Sniffed, contradicts_extension, hub_library, hub_weight_files, read_hub_json, sniff

# format -> module with ``load(sniffed, *, arch, arch_kwargs, trust, output)``; imported lazily.
LOADERS: dict[str, str] = {
    fmt: "xaiready.formats.pytorch"
    for fmt in ("pytorch-eager", "pytorch-state-dict", "pytorch-pickle", "pytorch-legacy-tar", "pickle",
                "torchscript", "safetensors")
}
LOADERS["onnx"] = "xaiready.formats.onnx"
LOADERS["huggingface"] = "xaiready.formats.hub"
LOADERS.update({"keras": "xaiready.formats.keras", "keras-h5": "xaiready.formats.keras",
                "tf-savedmodel": "xaiready.formats.tf_graph", "tf-graphdef": "xaiready.formats.tf_graph"})
_INPUT_FORMATS = {"png", "jpeg", "npy"}


def load(path: str | Path, *, arch: str | None = None, arch_kwargs=None, trust: bool = False,
         imports: Sequence[str] = (), output: str | int | None = None, convert: bool = True, **options) -> ModelHandle:
    """Load a model file or folder by its content. See DESIGN 3.1 for the errors it raises.

    ``options`` go to the format's loader (e.g. ``signature``, ``inputs``, ``outputs`` for TF graphs)."""
    for spec in imports:
        import_user_code(spec)
    sniffed = sniff(Path(path))
    if arch is None and sniffed.format in ("safetensors", "pytorch-state-dict"):
        sniffed = _hub_folder_of(sniffed)
    contradiction = contradicts_extension(sniffed)
    if contradiction:
        raise CorruptError(contradiction, path=str(path), format=sniffed.format,
                           hint="rename the file to match its content, or re-export it")
    return loader_for(sniffed).load(sniffed, arch=arch, arch_kwargs=arch_kwargs, trust=trust, output=output,
                                    convert=convert, **options)


def _hub_folder_of(sniffed: Sniffed) -> Sniffed:
    """A weights file of a Hugging Face folder (model.safetensors, pytorch_model.bin or a shard its index
    names), given without --arch, stands for its folder, whose config.json names the architecture; any
    other weights file stays what it is."""
    folder, name = sniffed.path.parent, sniffed.path.name
    weights = hub_weight_files(folder)
    if not weights or not (folder / "config.json").is_file():
        return sniffed
    try:
        if name not in weights and name not in {s for w in weights if w.endswith(".index.json")
                                                for s in (read_hub_json(folder / w).get("weight_map") or {}).values()}:
            return sniffed
        if not hub_library(read_hub_json(folder / "config.json")):
            return sniffed
    except (XaiReadyError, AttributeError, TypeError):  # a damaged config: the file stays a plain weights file
        return sniffed
    return sniff(folder)


def loader_for(sniffed: Sniffed):
    if sniffed.format in _INPUT_FORMATS:
        raise UnsupportedError(f"this is an input file ({sniffed.name}), not a model", path=str(sniffed.path),
                               format=sniffed.format, hint="pass it with --input")
    module = LOADERS.get(sniffed.format)
    if module is None:
        raise UnsupportedError(f"content is {sniffed.name}, which this version of xaiready cannot load"
                               + (f" ({sniffed.detail})" if sniffed.detail else ""),
                               path=str(sniffed.path), format=sniffed.format,
                               hint="supported here: PyTorch (eager, state dict, safetensors, TorchScript), Hugging Face "
                                    "folders (transformers, timm), ONNX, Keras (.keras, .h5), TF SavedModel and GraphDef")
    return importlib.import_module(module)

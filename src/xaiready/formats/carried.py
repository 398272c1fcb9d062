"""What a loaded PyTorch model carries about its input: preprocessing and the image size it expects.

timm models carry ``pretrained_cfg`` (mean, std, input size, interpolation); Hugging Face folders carry
``preprocessor_config.json`` (image_mean, image_std, size, resample) and a config with ``image_size``.
It is recorded as ``handle.preprocessing`` and as a note, and the input size makes the guessed example
input right (a ViT built for 32x32 refuses the 224x224 a Conv2d-based guess would give it).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..backends.torch import TorchBackend
from ..model import ModelHandle, Source

# PIL's resampling filters by number, as preprocessor_config.json stores them.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class SizedTorchBackend(TorchBackend):
    """The eager backend, with the example input shape the model itself declares."""

    def __init__(self, module, *, output=None, kind: str = "eager", example_shape: tuple[int, ...] | None = None):
        super().__init__(module, output=output, kind=kind)
        self._declared_shape = example_shape

    def example_shape(self) -> tuple[int, ...] | None:
        return self._declared_shape or super().example_shape()


def torch_handle(module, source: Source, *, output=None, notes: Sequence[str] = (),
                 preprocessing: dict | None = None, input_size: Sequence[int] | None = None) -> ModelHandle:
    """A handle for an eager module, with what it carries recorded (``preprocessing`` may be None).

    The preprocessing and input size are read off the module (timm ``pretrained_cfg``, a transformers
    ``config.image_size``) unless given (from a folder's ``preprocessor_config.json``)."""
    preprocessing = preprocessing or timm_preprocessing(module)
    input_size = input_size or (preprocessing or {}).get("input_size") or config_input_size(module)
    shape = (1, *(int(d) for d in input_size)) if input_size and len(input_size) == 3 else None
    backend = SizedTorchBackend(module, output=output, kind="eager", example_shape=shape)
    handle = ModelHandle(backend, source, notes=list(notes))
    handle.preprocessing = preprocessing
    if preprocessing:
        handle.notes.append(describe(preprocessing))
    return handle


def describe(prep: dict) -> str:
    parts = [f"{k} {_fmt(prep[k])}" for k in ("mean", "std", "input_size", "interpolation") if prep.get(k) is not None]
    return f"preprocessing carried by the model: {', '.join(parts)} (from {prep['source']})"


def _fmt(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return str(value)


def timm_preprocessing(module) -> dict | None:
    """mean, std, input size and interpolation from a timm model's ``pretrained_cfg``, or None.

    The input size is the one the model takes now (a ViT built with ``img_size=32`` keeps its source
    checkpoint's 224 in ``pretrained_cfg``), read with timm's own ``get_model_input_config``."""
    cfg = getattr(module, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or cfg.get("mean") is None or cfg.get("std") is None:
        return None
    input_size = cfg.get("input_size")
    try:
        from timm.models import get_model_input_config

        input_size = get_model_input_config(module).get("input_size") or input_size
    except Exception:  # older timm, or not a timm model after all: the declared size is enough
        pass
    return {"mean": [float(v) for v in cfg["mean"]], "std": [float(v) for v in cfg["std"]],
            "input_size": [int(v) for v in input_size] if input_size else None,
            "interpolation": cfg.get("interpolation"), "source": "timm pretrained_cfg"}


def hf_preprocessing(processor: dict, num_channels: int = 3) -> dict | None:
    """The same record from a ``preprocessor_config.json`` (an image processor's saved settings), or None."""
    if not processor:
        return None
    normalize = processor.get("do_normalize", True)
    mean, std = processor.get("image_mean"), processor.get("image_std")
    size = None
    if processor.get("do_center_crop") and processor.get("crop_size"):
        size = _hw(processor["crop_size"])
    if size is None and processor.get("do_resize", True):
        size = _hw(processor.get("size"))
    resample = processor.get("resample")
    prep = {"mean": [float(v) for v in _listed(mean, num_channels)] if normalize and mean is not None else None,
            "std": [float(v) for v in _listed(std, num_channels)] if normalize and std is not None else None,
            "input_size": [int(num_channels), *size] if size else None,
            "interpolation": _PIL_RESAMPLE.get(resample, resample) if resample is not None else None,
            "source": "preprocessor_config.json"}
    if processor.get("do_rescale", True) and processor.get("rescale_factor") not in (None, 1 / 255):
        prep["rescale_factor"] = float(processor["rescale_factor"])
    return prep if any(prep[k] is not None for k in ("mean", "std", "input_size")) else None


def _listed(value, n: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _hw(size) -> list[int] | None:
    """(H, W) from an image processor's size: an int, {height, width}, or {shortest_edge} (square)."""
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return [int(size[0]), int(size[1])]
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return [int(size["height"]), int(size["width"])]
        if "shortest_edge" in size and "longest_edge" not in size:
            return [int(size["shortest_edge"])] * 2
    return None


def config_input_size(module) -> list[int] | None:
    """(C, H, W) from a transformers model's config (``num_channels``, ``image_size``), or None."""
    config = getattr(module, "config", None)
    image_size = getattr(config, "image_size", None) if config is not None else None
    hw = _hw(image_size)
    if hw is None:
        return None
    return [int(getattr(config, "num_channels", 3) or 3), *hw]

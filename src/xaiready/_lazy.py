"""Lazy, optional imports: frameworks load only when a model of theirs does."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import UnsupportedError

_EXTRA_OF = {"torch": "torch", "torchvision": "torch", "safetensors": "torch", "tensorflow": "tf",
             "onnx": "onnx", "onnxruntime": "onnx", "matplotlib": "render"}


def import_optional(name: str) -> ModuleType:
    """Import ``name`` or raise an error that names the extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        extra = _EXTRA_OF.get(top, top)
        raise UnsupportedError(f"this needs the Python package '{top}', which is not installed",
                               hint=f"pip install 'xaiready[{extra}]'") from exc


def safe_isinstance(obj: object, dotted: str) -> bool:
    """isinstance against a class named by dotted path, without importing its module."""
    module_name, _, cls_name = dotted.rpartition(".")
    module = sys.modules.get(module_name)
    cls = getattr(module, cls_name, None) if module is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def is_torch_tensor(obj: object) -> bool:
    return safe_isinstance(obj, "torch.Tensor")

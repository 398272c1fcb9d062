"""xaiready: turn any stored vision model into an XAI-ready one, or say exactly why it cannot.

    import xaiready as xr
    model  = xr.load("model.pt", arch="models.py:Net")
    report = xr.check(model, x)
    print(report.verdict)

Heavy frameworks are imported only when a model of theirs is loaded.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["ModelHandle", "Report", "__version__", "as_handle", "check", "errors", "evaluate", "explain", "load", "targets"]

_LAZY = {
    "load": ("xaiready.api", "load"),
    "check": ("xaiready.api", "check"),
    "explain": ("xaiready.api", "explain"),
    "evaluate": ("xaiready.api", "evaluate"),
    "as_handle": ("xaiready.api", "as_handle"),
    "ModelHandle": ("xaiready.model", "ModelHandle"),
    "Report": ("xaiready.readiness.report", "Report"),
    "targets": ("xaiready.targets", None),
    "errors": ("xaiready.errors", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'xaiready' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)

"""Explanation methods, written once against ModelHandle (never against a framework)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types


def load_methods():
    """Import every method module in this package so each registers itself; returns the registry."""
    from .base import METHODS

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return METHODS


class _CallableModule(types.ModuleType):
    """Importing this package sets ``xaiready.explain`` to the package, shadowing the API function
    ``xr.explain`` of the same name; making the package callable keeps ``xr.explain(...)`` working
    whichever of the two the attribute holds."""

    def __call__(self, *args, **kwargs):
        from ..api import explain

        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

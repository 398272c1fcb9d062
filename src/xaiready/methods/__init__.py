"""Explanation methods, written once against ModelHandle (never against a framework).

The package is ``methods`` (as ``torchcam.methods``, ``captum.attr``) so that ``xaiready.explain``
stays the plain API function.
"""

from __future__ import annotations

import importlib
import pkgutil


def load_methods():
    """Import every method module in this package so each registers itself; returns the registry."""
    from .base import METHODS

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return METHODS

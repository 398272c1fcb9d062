"""The user's own code: ``--import MODULE|FILE.py`` and ``--arch MODULE:CLASS|FILE.py:CLASS``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import MissingCodeError, UsageError

_imported: list[ModuleType] = []


def import_user_code(spec: str) -> ModuleType:
    """Import a module by dotted name or a ``.py`` file (registered under its stem)."""
    if spec.endswith(".py") or "/" in spec or Path(spec).suffix == ".py":
        path = Path(spec)
        if not path.is_file():
            raise MissingCodeError(f"cannot import '{spec}': no such file", hint="check the --import path")
        name = path.stem
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's file failed; say so in one line
            sys.modules.pop(name, None)
            raise MissingCodeError(f"importing '{spec}' failed: {type(exc).__name__}: {exc}",
                                   hint="fix the file so it imports on its own") from exc
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as exc:
            raise MissingCodeError(f"cannot import module '{spec}': {exc}",
                                   hint="install it or add its folder to PYTHONPATH") from exc
    if module not in _imported:
        _imported.append(module)
    return module


def imported_modules() -> list[ModuleType]:
    return list(_imported)


def find_class(module: str, name: str) -> Any | None:
    """A class named by a pickle, looked up without importing anything new; None if unavailable.

    ``__main__.X`` also resolves to ``X`` from modules given with ``--import``: models pickled from a
    script name ``__main__`` as their module.
    """
    mod = sys.modules.get(module)
    if mod is not None and hasattr(mod, name):
        return getattr(mod, name)
    if module == "__main__":
        for user in reversed(_imported):
            if hasattr(user, name):
                return getattr(user, name)
    return None


def build_arch(spec: str, kwargs_json: str | dict | None = None):
    """Instantiate ``MODULE:CLASS`` or ``path/file.py:CLASS`` with keyword arguments."""
    target, sep, cls_name = spec.rpartition(":")
    if not sep or not target or not cls_name:
        raise UsageError(f"--arch '{spec}' is not MODULE:CLASS or FILE.py:CLASS",
                         hint="e.g. --arch mypkg.models:Net or --arch models.py:Net")
    module = import_user_code(target)
    factory = getattr(module, cls_name, None)
    if factory is None:
        raise MissingCodeError(f"'{target}' has no '{cls_name}'",
                               hint=f"names there: {', '.join(n for n in dir(module) if not n.startswith('_'))[:200]}")
    kwargs = kwargs_json or {}
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--arch-kwargs is not valid JSON: {exc}") from exc
    if not isinstance(kwargs, dict):
        raise UsageError("--arch-kwargs must be a JSON object, e.g. '{\"num_classes\": 10}'")
    try:
        return factory(**kwargs)
    except Exception as exc:  # the user's constructor; report it in one line
        raise MissingCodeError(f"building {spec}(**{kwargs}) failed: {type(exc).__name__}: {exc}",
                               hint="check --arch-kwargs") from exc

"""The user's own code: ``--import MODULE|FILE.py`` and ``--arch MODULE:CLASS|FILE.py:CLASS``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import MissingCodeError, UsageError, XaiReadyError

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


def load_function(spec: str, what: str = "--target-fn"):
    """``FILE.py:NAME`` or ``MODULE:NAME``: the named callable of the user's own code (imported, so it
    runs: the user's choice, as with ``--import``)."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not name:
        raise UsageError(f"{what} '{spec}' is not FILE.py:NAME or MODULE:NAME", hint="e.g. scores.py:box_score")
    fn = getattr(import_user_code(module), name, None)
    if not callable(fn):
        raise MissingCodeError(f"{what}: '{module}' has no function '{name}'", hint="check the name after the colon")
    return fn


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
    """Instantiate ``MODULE:CLASS`` or ``path/file.py:CLASS`` with keyword arguments.

    ``CLASS`` may be any callable that returns the model: a class, or a factory of an installed module
    (``timm:create_model`` with ``{"model_name": "resnet18"}``, ``torchvision.models:resnet18``). A
    transformers model class gets its config from the keyword arguments
    (``transformers:ViTForImageClassification`` with ``{"config": {...}}``, or the config's fields
    directly), an Auto class too (``{"config": {"model_type": "vit", ...}}``).

    None of this needs ``--trust``: ``--trust`` guards against code carried by the *model file*. A
    module installed in the environment, or a ``.py`` file the user names, is the user's own code,
    chosen on the command line; the model file only supplies tensors to it."""
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
        hub = _transformers_build(factory, kwargs)
        return hub() if hub is not None else factory(**kwargs)
    except XaiReadyError:
        raise
    except Exception as exc:  # the user's constructor; report it in one line
        raise MissingCodeError(f"building {spec}(**{kwargs}) failed: {type(exc).__name__}: {exc}",
                               hint="check --arch-kwargs") from exc


def _transformers_build(factory, kwargs: dict):
    """How to build a transformers model class or Auto class from JSON keyword arguments, or None.

    ``Cls(config)`` is how transformers builds a model at random weights: the config comes from
    ``kwargs["config"]`` (a dict, or a config object from Python) or, without that key, from all of
    ``kwargs``. An Auto class builds from ``AutoConfig.for_model(model_type, ...)``, never with remote
    code. transformers is looked up, not imported: a factory of its own has imported it already."""
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(factory, type):
        return None
    base = getattr(transformers, "PreTrainedModel", None)
    if "config" in kwargs:
        given, rest = kwargs["config"], {k: v for k, v in kwargs.items() if k != "config"}
    else:
        given, rest = dict(kwargs), {}
    if isinstance(base, type) and issubclass(factory, base):
        if isinstance(given, dict):
            fields = {k: v for k, v in given.items() if k != "model_type"}
            config = factory.config_class(**fields)
        else:
            config = given
        return lambda: factory(config, **rest)
    if hasattr(factory, "from_config") and hasattr(factory, "_model_mapping"):  # AutoModel* classes
        if isinstance(given, dict):
            if not isinstance(given.get("model_type"), str):
                raise UsageError(f"{factory.__name__} needs the config's model_type, e.g. "
                                 '{"config": {"model_type": "vit", ...}}')
            fields = {k: v for k, v in given.items() if k != "model_type"}
            config = transformers.AutoConfig.for_model(given["model_type"], **fields)
        else:
            config = given
        return lambda: factory.from_config(config, trust_remote_code=False, **rest)
    return None

"""Keras loaders: Keras v3 ``.keras`` archives and legacy HDF5 ``.h5`` files.

Policy: the model's config is read first (a JSON member of the zip, an attribute of the HDF5 file)
without Keras. A Lambda layer carries Python code (marshalled bytecode), so a model holding one is
refused unless ``trust=True``; everything else loads with ``safe_mode=True`` passed explicitly, and a
refused load is never retried with ``safe_mode=False``. Custom classes come from the user's code
(``--import``): registered ones resolve by themselves, the others are offered by class name. A class
that resolves nowhere is named in a MissingCodeError before Keras is asked to build anything.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

from .._lazy import import_optional
from ..errors import (
    ArchMismatchError,
    CorruptError,
    MissingCodeError,
    UnsafePathError,
    UnsupportedError,
    UntrustedError,
    first_line,
)
from ..limits import check_declared_input
from ..model import ModelHandle, Source
from ..usercode import build_arch, imported_modules
from .sniff import Sniffed

_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda"}
_SUFFIX = {"keras": ".keras", "keras-h5": ".h5"}
_MISSING_PATTERNS = (re.compile(r"Could not locate (?:class|function) '([^']+)'"),
                     re.compile(r"Unknown (?:layer|object|activation|initializer|regularizer|constraint|loss|"
                                r"metric)[^:]*: '?([\w>.]+)'?"))


def load(sniffed: Sniffed, *, arch: str | None, arch_kwargs, trust: bool, output, **_) -> ModelHandle:
    from ..backends.tf_import import import_tensorflow

    _, keras = import_tensorflow()
    from ..backends.tensorflow import TensorFlowBackend

    path, fmt = sniffed.path, sniffed.format
    if keras.backend.backend() != "tensorflow":  # gradients and layer capture here go through TF's tape
        raise UnsupportedError(f"Keras runs on its '{keras.backend.backend()}' backend here; xaiready explains "
                               "Keras models on TensorFlow", path=str(path), format=fmt,
                               hint="set KERAS_BACKEND=tensorflow before starting")
    config = read_config(path, fmt)
    notes: list[str] = []
    if config is None:
        model = _weights_only(keras, path, fmt, arch, arch_kwargs)
        notes.append("architecture built from --arch, weights loaded from the file")
    else:
        _check_paths(config, path, fmt)
        _gate(config, path, fmt, trust)
        _check_input_specs(config, path, fmt)
        custom = custom_objects(keras)
        _check_classes(keras, config, custom, path, fmt)
        model = _load_model(keras, path, fmt, custom, safe_mode=not trust)
        if trust and _code_layers(config):
            notes.append("loaded with safe_mode=False because --trust was given (the model holds Lambda code)")
    if not isinstance(model, keras.Model):
        raise CorruptError(f"the file holds a {type(model).__name__}, not a Keras model", path=str(path), format=fmt)
    return ModelHandle(TensorFlowBackend(model, kind="keras", output=output),
                       Source(str(path), "keras", "tensorflow"), notes=notes)


def read_config(path: Path, fmt: str) -> dict | None:
    """The model config as JSON, read without Keras; None for a weights-only HDF5 file."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        h5py = import_optional("h5py")
        with h5py.File(path, "r") as fh:
            raw = fh.attrs.get("model_config")
            if raw is None:
                return None
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptError(f"the model config cannot be read: {exc}", path=str(path), format=fmt,
                           hint="re-export the model with model.save()") from exc
    except OSError as exc:
        raise CorruptError(f"the HDF5 file cannot be read: {first_line(exc, 300)}", path=str(path), format=fmt,
                           hint="re-export or re-copy the model") from exc


_PATH_KEYS = {"vocabulary", "vocabulary_path", "idf_weights", "filepath", "path"}


def _check_paths(config, path: Path, fmt: str) -> None:
    """Refuse (exit 4) config strings that make a layer read a file outside the model's folder
    (e.g. a StringLookup/TextVectorization vocabulary given as a path), even with --trust."""
    folder = path.resolve().parent

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _PATH_KEYS and isinstance(value, str) and value:
                    target = (folder / value).resolve()
                    if not target.is_relative_to(folder):
                        raise UnsafePathError(f"config key '{key}' points outside the model's folder: '{value}'",
                                              path=str(path), format=fmt,
                                              hint="the model would read that file at load time; inline it")
                else:
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)


def _check_input_specs(config, path: Path, fmt: str) -> None:
    """Refuse (exit 5) declared input shapes whose one sample would exceed the limit, from the config."""
    for node in _walk(config, into_code=False):
        if node.get("class_name") == "InputLayer":
            spec = node.get("config", {})
            shape = spec.get("batch_shape") or spec.get("batch_input_shape")
            if isinstance(shape, list):
                check_declared_input(shape, 4, path=str(path), fmt=fmt)


def _walk(config, into_code: bool = True):
    """Every dict in a nested config that names a class (``into_code=False``: not inside Lambda code,
    whose closure may hold modules and functions that are not Keras objects)."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
            if not into_code and config["class_name"] == "__lambda__":
                return
        for value in config.values():
            yield from _walk(value, into_code)
    elif isinstance(config, list):
        for value in config:
            yield from _walk(value, into_code)


def _code_layers(config) -> list[str]:
    return [c.get("config", {}).get("name") or c.get("name") or c["class_name"]
            for c in _walk(config) if c.get("class_name") in _CODE_LAYERS]


def _gate(config, path: Path, fmt: str, trust: bool) -> None:
    lambdas = _code_layers(config)
    if lambdas and not trust:
        names = ", ".join(str(n) for n in lambdas[:4]) + (" ..." if len(lambdas) > 4 else "")
        raise UntrustedError(f"the model holds Lambda layer(s) {names}, whose Python code would run on load",
                             path=str(path), format=fmt,
                             hint="pass --trust only if you trust its author, or replace the Lambda with a "
                                  "registered custom layer and pass its code with --import")


def custom_objects(keras) -> dict:
    """Keras classes and functions defined in the user's ``--import`` modules, by name."""
    found = {}
    for module in imported_modules():
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(value) and issubclass(value, (keras.layers.Layer, keras.Model)) or \
                    inspect.isfunction(value):
                found[name] = value
    return found


def _check_classes(keras, config, custom: dict, path: Path, fmt: str) -> None:
    """Name the first custom class that resolves neither in Keras, its registry nor the user's code."""
    for entry in _walk(config, into_code=False):
        name = entry.get("class_name")
        if not isinstance(name, str) or name.startswith("__") or name in _CODE_LAYERS:
            continue
        module = entry.get("module")
        registered = entry.get("registered_name") or name
        if name == "function":  # a function by registered name, e.g. a custom activation
            fn_name = entry.get("config")
            if not isinstance(fn_name, str) or _function_known(keras, fn_name, custom):
                continue
            name = registered = fn_name
        if isinstance(module, str) and module.startswith("keras"):
            continue  # a Keras class; Keras itself reports it if this version lacks it
        if module is None and fmt == "keras-h5" and _keras_builtin(keras, name):
            continue
        if module is None and fmt == "keras" and registered in ("Functional", "Sequential", "Model"):
            continue
        if name in custom or registered in custom:
            continue
        if isinstance(module, str) and module not in ("builtins", "__main__") and _importable(module):
            continue  # Keras imports an installed module by itself
        if keras.saving.get_registered_object(registered) is not None:
            continue
        if entry.get("config") is None and module is None and not entry.get("registered_name"):
            continue  # a plain value tagged with a class name (e.g. a dtype), not an object to build
        raise MissingCodeError(f"the model needs the custom class '{registered}', which is not defined",
                               path=str(path), format=fmt,
                               hint="pass --import MODULE or --import file.py that defines it (decorated with "
                                    "@keras.saving.register_keras_serializable() or named the same)")


def _function_known(keras, name: str, custom: dict) -> bool:
    short = name.split(">")[-1]
    return (keras.saving.get_registered_object(name) is not None or short in custom
            or hasattr(keras.activations, short) or hasattr(keras.losses, short))


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _keras_builtin(keras, name: str) -> bool:
    for space in (keras.layers, keras.models, keras.activations, keras.initializers, keras.regularizers,
                  keras.constraints, keras.losses, keras.metrics, keras.optimizers, keras):
        if hasattr(space, name):
            return True
    return name in ("Functional", "DTypePolicy", "Policy", "__tuple__")


def _load_model(keras, path: Path, fmt: str, custom: dict, *, safe_mode: bool):
    with _named_like(path, _SUFFIX[fmt]) as named:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return keras.saving.load_model(named, custom_objects=custom or None, compile=False,
                                               safe_mode=safe_mode)
        except (TypeError, ValueError, KeyError, AttributeError, OSError, NotImplementedError, NameError,
                RuntimeError) as exc:  # Keras surfaces a bad file or missing code as any of these
            text = str(exc)
            for pattern in _MISSING_PATTERNS:
                match = pattern.search(text)
                if match:
                    raise MissingCodeError(f"the model needs '{match.group(1)}', which is not defined",
                                           path=str(path), format=fmt,
                                           hint="pass --import MODULE or --import file.py that defines it") from exc
            if "safe_mode" in text or "arbitrary code" in text:
                raise UntrustedError("Keras refused to load code from the file in safe mode", path=str(path),
                                     format=fmt, hint="pass --trust only if you trust its author") from exc
            if "Lambda" in text:
                raise CorruptError("a Lambda layer's code fails after loading (Keras restores its bytecode without "
                                   "the module names it used, e.g. tf)", path=str(path), format=fmt,
                                   hint="replace the Lambda with a registered custom layer and pass its code with "
                                        "--import, or rebuild the model in code and load its weights with "
                                        "--arch") from exc
            raise CorruptError(f"Keras could not load the model: {first_line(exc, 300)}", path=str(path), format=fmt,
                               hint="re-export it with model.save(), or pass its custom code with --import") from exc


class _named_like:
    """Keras chooses its reader by file name; give it one when the file's own name differs."""

    def __init__(self, path: Path, suffix: str):
        self.path, self.suffix, self.tmp = path, suffix, None

    def __enter__(self) -> str:
        if str(self.path).endswith(self.suffix) or (self.suffix == ".h5" and str(self.path).endswith(".hdf5")):
            return str(self.path)
        self.tmp = tempfile.TemporaryDirectory(prefix="xaiready-")
        link = os.path.join(self.tmp.name, "model" + self.suffix)
        os.symlink(os.path.abspath(self.path), link)
        return link

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()
        return False


def _weights_only(keras, path: Path, fmt: str, arch, arch_kwargs):
    if arch is None:
        raise MissingCodeError("the file holds weights only, not the architecture", path=str(path), format=fmt,
                               hint="pass --arch MODULE:FUNCTION_OR_CLASS that builds the Keras model")
    model = build_arch(arch, arch_kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as exc:
        raise ArchMismatchError(f"the weights do not fit --arch: {first_line(exc, 300)}", path=str(path),
                                format=fmt, hint="check --arch and --arch-kwargs") from exc
    return model


"""Loaders for the PyTorch family: pickled modules, state dicts, safetensors, TorchScript.

Policy: anything whose loading runs pickle code from the file (pickled modules, checkpoints with
pickled objects, legacy tar checkpoints, TorchScript) needs ``trust=True``. Safe loads always pass
``weights_only=True`` explicitly, and a failed safe load is never retried with an unsafe switch.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

from .._lazy import import_optional
from ..errors import (
    ArchMismatchError,
    CorruptError,
    LoadError,
    MissingCodeError,
    UntrustedError,
    UsageError,
    first_line,
)
from ..model import ModelHandle, Source
from ..usercode import build_arch, find_class
from .sniff import Sniffed, safetensors_header

_RUNS_CODE = {"pytorch-eager", "pytorch-pickle", "pytorch-legacy-tar", "pickle", "torchscript"}


def load(sniffed: Sniffed, *, arch: str | None, arch_kwargs, trust: bool, output, **_) -> ModelHandle:
    torch = import_optional("torch")
    from ..backends.torch import TorchBackend
    from .carried import torch_handle

    path, fmt = sniffed.path, sniffed.format
    refuse_untrusted(sniffed, trust)
    if fmt == "torchscript":
        return _load_torchscript(torch, TorchBackend, path, arch, arch_kwargs, output)
    obj = read_weights(torch, sniffed, trust)
    module = _find_module(torch, obj)
    if module is not None:
        return torch_handle(module, Source(str(path), "pytorch-eager", "torch"), output=output)
    state = _find_state_dict(torch, obj, path, fmt)
    if arch is None:
        raise MissingCodeError("the file holds weights only (a state dict), not the architecture",
                               path=str(path), format="pytorch-state-dict",
                               hint="pass --arch MODULE:CLASS or --arch file.py:CLASS (and --arch-kwargs JSON)")
    module = build_torch_arch(torch, arch, arch_kwargs, path, fmt)
    module, notes = fit_weights(torch, module, state, path, fmt)
    return torch_handle(module, Source(str(path), "pytorch-state-dict", "torch"), output=output,
                        notes=notes + output_notes(module, output))


def refuse_untrusted(sniffed: Sniffed, trust: bool) -> None:
    """Formats whose loading runs code from the file need ``trust``: refused here otherwise (exit 4)."""
    fmt = sniffed.format
    if fmt in _RUNS_CODE and not trust:
        what = ("runs the archive's scripted code (e.g. __setstate__) at load time" if fmt == "torchscript"
                else "unpickles Python objects, which can run any code")
        raise UntrustedError(f"loading this {sniffed.name} {what}"
                             + (f"; {sniffed.detail}" if sniffed.detail and fmt != "torchscript" else ""),
                             path=str(sniffed.path), format=fmt,
                             hint="pass --trust only if you trust its author; a state dict or safetensors "
                                  "file with --arch loads without trust")


def read_weights(torch, sniffed: Sniffed, trust: bool):
    """What a weights file holds: safetensors and plain state dicts safely, pickles only with ``trust``.

    Returns the loaded object (a tensor dict, a checkpoint dict or a pickled module); TorchScript is
    not read here."""
    refuse_untrusted(sniffed, trust)
    if sniffed.format == "safetensors":
        return _load_safetensors(sniffed.path)
    if sniffed.format == "pytorch-state-dict":
        return _safe_torch_load(torch, sniffed.path, sniffed.format)
    if sniffed.format in _RUNS_CODE - {"torchscript"}:
        return _trusted_torch_load(torch, sniffed)
    raise CorruptError(f"content is {sniffed.name}, not weights (safetensors or a torch state dict)",
                       path=str(sniffed.path), format=sniffed.format, hint="re-save the weights")


def build_torch_arch(torch, arch: str, arch_kwargs, path, fmt: str):
    """``--arch`` built (a class, or any factory returning a module), checked to be a torch.nn.Module."""
    module = build_arch(arch, arch_kwargs)
    if not isinstance(module, torch.nn.Module):
        raise MissingCodeError(f"--arch {arch} returned a {type(module).__name__}, not a torch.nn.Module",
                               path=str(path), format=fmt,
                               hint="name a class or factory that builds the PyTorch model")
    return module


def fit_weights(torch, module, state: dict, path, fmt: str):
    """``state`` loaded into ``module``: strictly by key, or, for a transformers model whose checkpoint
    keys differ from its module names (transformers 5 renames them on save), through transformers' own
    key conversion. Returns the module (a new one in the second case) and notes."""
    pretrained = _transformers_model_class(module)
    if pretrained is None or _same_keys(module, state):
        return module, load_weights(torch, module, state, path, fmt)
    from .hf_build import from_state_dict

    rebuilt, notes = from_state_dict(type(module), module.config, state, path=path, fmt=fmt)
    return rebuilt, ["checkpoint names differ from the module's: weights placed by transformers' own key "
                     "conversion (as from_pretrained does)"] + notes


def _transformers_model_class(module):
    import sys

    transformers = sys.modules.get("transformers")  # only a transformers model can be one: never import it
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    return base if isinstance(base, type) and isinstance(module, base) else None


def _same_keys(module, state: dict) -> bool:
    keys = {k.removeprefix("module.") for k in state}
    return keys == set(module.state_dict())


def output_notes(module, output) -> list[str]:
    """How the output of a transformers model (a ModelOutput, dict-like) is chosen, for the report."""
    if output is not None or _transformers_model_class(module) is None:
        return []
    name = type(module).__name__
    if "For" in name:
        return [f"{name} returns a transformers ModelOutput: its 'logits' entry is explained "
                "(--output NAME picks another)"]
    return [f"{name} is a base model without a task head: its outputs (e.g. last_hidden_state, pooler_output) "
            "need --output NAME"]


def _safe_torch_load(torch, path: Path, fmt: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedError(f"the safe (weights-only) load refused this file: {_weights_only_reason(exc)}",
                             path=str(path), format=fmt, hint="pass --trust only if you trust its author") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CorruptError(f"torch could not read the file: {first_line(exc)}", path=str(path), format=fmt,
                           hint="re-export or re-copy the model") from exc


def _weights_only_reason(exc: Exception) -> str:
    """The reason inside torch's weights-only message, not its first line (generic advice to load unsafely)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    for i, line in enumerate(lines):
        if marker in line:
            reason = line.split(marker, 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            if reason:
                return f"{marker} {reason}"
    return lines[0] if lines else type(exc).__name__


def _trusted_torch_load(torch, sniffed: Sniffed):
    missing = [g for g in sniffed.pickle_globals if _missing_global(g)]
    if missing:
        module = missing[0].rpartition(".")[0]
        raise MissingCodeError(f"the pickle needs {missing[0]}, which cannot be imported (module '{module}')",
                               path=str(sniffed.path), format=sniffed.format,
                               hint="pass --import MODULE or --import file.py with the class definitions")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(sniffed.path, map_location="cpu", weights_only=False,
                              pickle_module=_USER_AWARE_PICKLE)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise MissingCodeError(f"the pickle names code that cannot be imported: {first_line(exc)}",
                               path=str(sniffed.path), format=sniffed.format,
                               hint="pass --import MODULE or --import file.py with the class definitions") from exc
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise CorruptError(f"torch could not read the file: {first_line(exc)}", path=str(sniffed.path),
                           format=sniffed.format, hint="re-export or re-copy the model") from exc


def _missing_global(name: str) -> bool:
    import importlib.util
    import sys

    module, _, attr = name.rpartition(".")
    if not module or module == "<unknown>":
        return False
    if find_class(module, attr) is not None:
        return False
    if module == "__main__":
        return not hasattr(sys.modules.get("__main__"), attr)
    try:
        return importlib.util.find_spec(module.split(".")[0]) is None
    except (ImportError, ValueError):
        return True


class _UserAwareUnpickler(pickle.Unpickler):
    """Resolves ``__main__.X`` to classes the user imported with ``--import``."""

    def find_class(self, module, name):
        found = find_class(module, name)
        return found if found is not None else super().find_class(module, name)


_USER_AWARE_PICKLE = SimpleNamespace(Unpickler=_UserAwareUnpickler, load=lambda f, **kw: _UserAwareUnpickler(f, **kw).load(),
                                     __name__="pickle")


def _load_safetensors(path: Path):
    import_optional("safetensors")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptError(f"the safetensors file cannot be read: {first_line(exc)}", path=str(path),
                           format="safetensors") from exc


def _find_module(torch, obj):
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        modules = [v for v in obj.values() if isinstance(v, torch.nn.Module)]
        if len(modules) == 1:
            return modules[0]
    return None


def _find_state_dict(torch, obj, path: Path, fmt: str) -> dict:
    """The tensor dict inside a checkpoint: the dict itself, or its 'state_dict'/'model' entry."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            value = obj.get(key)
            if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                return value
    raise CorruptError(f"no tensor dictionary found (top level is {type(obj).__name__})", path=str(path),
                       format=fmt, hint="save model.state_dict(), or the whole module with --trust")


def load_weights(torch, module, state: dict, path, fmt: str) -> list[str]:
    """Load ``state`` into ``module`` strictly; every mismatch is listed in one error."""
    notes = []
    expected = module.state_dict()
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys) and not any(k.startswith("module.") for k in expected):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        notes.append("stripped the 'module.' prefix that DataParallel adds")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''} ({len(items)})")
        raise ArchMismatchError("the weights do not fit the architecture; " + "; ".join(parts), path=str(path),
                                format=fmt, hint="check --arch and --arch-kwargs")
    module.load_state_dict(state, strict=True)
    return notes


def _load_torchscript(torch, TorchBackend, path: Path, arch, arch_kwargs, output) -> ModelHandle:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CorruptError(f"TorchScript could not load the archive: {first_line(exc)}", path=str(path),
                           format="torchscript", hint="re-export the model") from exc
    reference = ModelHandle(TorchBackend(scripted, output=output, kind="torchscript"),
                            Source(str(path), "torchscript", "torch"))
    if arch is None:
        return reference
    module = build_torch_arch(torch, arch, arch_kwargs, path, "torchscript")
    try:
        notes = load_weights(torch, module, scripted.state_dict(), path, "torchscript")
    except ArchMismatchError:
        raise
    except (RuntimeError, LoadError, UsageError) as exc:
        raise ArchMismatchError(f"the TorchScript weights do not fit --arch: {first_line(exc)}", path=str(path),
                                format="torchscript") from exc
    handle = ModelHandle(TorchBackend(module, output=output, kind="eager"),
                         Source(str(path), "pytorch-eager", "torch", converted_from="torchscript"),
                         notes=notes + ["eager model rebuilt from the TorchScript weights with --arch; "
                                        "accepted only if outputs match"])
    handle.reference = reference
    return handle


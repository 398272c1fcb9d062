"""Hugging Face transformers models built from a config and tensors already in memory.

Shared by the folder loader (``formats.hub``) and ``--arch transformers:Class`` with a weights file
(``formats.pytorch``); it reads nothing from disk itself.
"""

from __future__ import annotations

import contextlib
import warnings

from .._lazy import import_optional
from ..errors import ArchMismatchError, UnsupportedError, first_line

FMT = "huggingface"


def from_state_dict(cls, config, state: dict, *, path, fmt: str = FMT):
    """``cls`` built from ``config`` with ``state``'s weights, through transformers' own key conversion.

    Nothing is read from disk: from_pretrained gets no path, only the config and the tensors. Missing or
    mis-shaped weights are refused (a head left at random would make every explanation meaningless)."""
    transformers = import_hub_library("transformers")
    try:
        with quiet(transformers):
            model, info = cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True)
    except ImportError as exc:
        raise UnsupportedError(f"transformers could not build {cls.__name__}: {first_line(exc)}", path=str(path),
                               format=fmt, hint="install what the model needs") from exc
    except (ValueError, RuntimeError, KeyError, TypeError, OSError, AttributeError) as exc:
        raise ArchMismatchError(f"the weights do not fit {cls.__name__}: {first_line(exc)}", path=str(path),
                                format=fmt, hint="check --arch / config.json") from exc
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [f"{k[0]} {tuple(k[1])} vs {tuple(k[2])}" if isinstance(k, tuple) and len(k) == 3 else str(k)
                  for k in info.get("mismatched_keys") or []]
    if missing or mismatched:
        parts = [f"{label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''} ({len(items)})"
                 for label, items in (("missing", missing), ("shape mismatch", mismatched)) if items]
        raise ArchMismatchError(f"the weights do not fit {cls.__name__}; " + "; ".join(parts), path=str(path),
                                format=fmt, hint="the checkpoint was saved from another architecture or head")
    notes = []
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        notes.append(f"{len(unexpected)} checkpoint tensors {cls.__name__} does not use were ignored "
                     f"({', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''})")
    model.eval()
    return model, notes


@contextlib.contextmanager
def quiet(transformers):
    """transformers' progress bars and warnings off (stderr carries one line on error), restored after."""
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def import_hub_library(name: str):
    try:
        return import_optional(name)
    except UnsupportedError as exc:
        raise UnsupportedError(f"a Hugging Face {name} folder needs the Python package '{name}', which is not "
                               "installed", format=FMT, hint=f"pip install {name}") from exc

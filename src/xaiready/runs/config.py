"""A run's configuration: what it computes, its hash, and what changed when a resume is refused.

The hash covers what decides the results (model file, dataset, methods, metrics, targets,
preprocessing, batching, seed, device), not how the work is spread: ``engine``, ``workers`` and
``ray_address`` may change between a run and its resume, since every engine writes the same rows.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError

HOW_KEYS = ("engine", "workers", "ray_address")  # left out of the hash: they do not change results


def config_hash(config: dict[str, Any]) -> str:
    what = {k: v for k, v in config.items() if k not in HOW_KEYS}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old -> new`` for every result-deciding key that differs."""
    keys = sorted((set(old) | set(new)) - set(HOW_KEYS))
    return [f"{k} {json.dumps(old.get(k), default=str)} -> {json.dumps(new.get(k), default=str)}"
            for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


def refuse_changed(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    changed = differences(old, new)
    if changed:
        raise UsageError(f"cannot resume: the configuration changed: {'; '.join(changed)}", path=str(run_dir),
                         hint="resume with the same options, or start a new run with another --out")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a model file, or of every file in a model folder (names and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def versions(engine: str) -> dict[str, str]:
    """Versions of what computed the results (frameworks only if this process loaded them)."""
    import numpy

    from .. import __version__

    out = {"xaiready": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "platform": platform.platform()}
    for name in ("torch", "tensorflow", "onnxruntime"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    if engine == "ray":
        import ray

        out["ray"] = ray.__version__
    return out

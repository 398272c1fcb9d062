"""Method metadata, the Attribution result, and the method registry.

A method is a small class with class-level metadata (``name``, ``family``, ``requires``) and one
entry point ``__call__(handle, x, target, **options) -> Attribution``. Methods register by name;
the registry rejects duplicates and suggests close names for typos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._registry import Registry
from ..errors import UsageError

SCHEMA_VERSION = 1
FAMILIES = ("gradient", "cam", "black_box")


@dataclass(frozen=True)
class Contrast:
    """The runner-up class's map, computed in the explanation's own passes for the class check.

    ``measured_on`` says in which terms: ``"map"`` (the method's own map for the runner-up, compared
    with ``values``) or ``"input gradient at x"`` (methods that integrate many passes; ``explained``
    then holds the explained class's gradient in the same terms)."""

    other: np.ndarray
    target: dict[str, Any]
    measured_on: str = "map"
    explained: np.ndarray | None = None


@dataclass(frozen=True)
class Attribution:
    """One explanation. ``values`` is shaped like the input (gradient, black-box methods) or like its
    spatial dims (CAM: (N, H, W)); ``raw`` keeps a CAM's map before normalization."""

    values: np.ndarray
    method: str
    family: str
    target: dict[str, Any]
    layer: str | None = None
    raw: np.ndarray | None = None
    scores: np.ndarray | None = None  # the explained scores, one per sample
    input_shape: tuple[int, ...] = ()
    layout: str = "NCHW"
    provenance: dict[str, Any] = field(default_factory=dict)  # model source, options, versions
    info: dict[str, Any] = field(default_factory=dict)  # method findings (e.g. ReLU override counts, delta)
    warnings: tuple[str, ...] = ()
    # Kept for the health checks, never saved: the model's output on x, and the runner-up's map.
    output: np.ndarray | None = field(default=None, repr=False, compare=False)
    contrast: Contrast | None = field(default=None, repr=False, compare=False)

    @property
    def black_box(self) -> bool:
        return self.family == "black_box"

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-ready."""
        return {"schema_version": SCHEMA_VERSION, "method": self.method, "family": self.family,
                "black_box": self.black_box, "target": self.target, "layer": self.layer,
                "input_shape": list(self.input_shape), "values_shape": list(self.values.shape),
                "layout": self.layout,
                "scores": None if self.scores is None else np.asarray(self.scores).tolist(),
                "provenance": self.provenance, "info": self.info, "warnings": list(self.warnings)}

    def save(self, path: str | Path) -> Path:
        """Write ``values`` as .npy and the metadata beside it as ``<name>.json``."""
        path = Path(path)
        if path.suffix != ".npy":
            path = path.with_suffix(".npy")
        np.save(path, self.values)
        path.with_suffix(".json").write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path


class Method:
    """Base of every explanation method; subclasses set the metadata and implement ``explain``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()  # subset of {"forward", "gradient", "layers", "attention"}
    task: ClassVar[str | None] = None  # the one task a method explains (drise: detection); None: any
    defaults: ClassVar[dict[str, Any]] = {}  # every option the method takes, with its default

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` updated by ``given``; an unknown option is a usage error, not silently ignored."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise UsageError(f"{self.name} has no option {', '.join(unknown)}", hint=f"its options: {known}")
        return {**self.defaults, **given}

    def __call__(self, handle, x: np.ndarray, target, **options) -> Attribution:
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under its ``name``."""
    if cls.family not in FAMILIES:
        raise ValueError(f"{cls.__name__}.family must be one of {FAMILIES}")
    METHODS.register(cls.name, cls)
    return cls

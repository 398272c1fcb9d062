"""Capability gating: refuse a method the model cannot serve, quoting what readiness measured.

The measurement is the readiness check itself, made cheap: one sample, one finite-difference
direction, and (when a layer is named) only that layer captured. Its findings are cached per handle,
input shape, target type and layer, so many explanations of the same model pay for it once.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from ..errors import CapabilityError
from ..targets import Target
from .base import METHODS

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Findings:
    """The parts of a readiness report a method needs."""

    verdict: str
    gradient_status: str
    gradient_break: dict | None
    cam_status: str
    cam_reason: str | None
    default_layer: str | None
    layers: tuple[str, ...]
    layouts: tuple[tuple[str, dict], ...] = ()  # measured layout of each layer, as the report has it

    def layout(self, layer: str) -> dict | None:
        return dict(self.layouts).get(layer)


def measure(handle, x: np.ndarray, target: Target, layer: str | None = None) -> Findings:
    """Readiness findings for ``handle`` on inputs shaped like ``x`` (cached)."""
    from ..readiness.checks import run_check

    key = (tuple(x.shape[1:]), type(target).__name__, layer, getattr(handle.backend, "output", None),
           handle.layout)
    # Keyed by the model object where the backend exposes one, so xr.explain(module, ...) called again
    # with the same in-memory model (a new handle each time) reuses the measurement.
    model = getattr(handle.backend, "module", None)  # never `or`: an nn.Sequential has a length
    per_handle = _CACHE.setdefault(handle if model is None else model, {})
    if key not in per_handle:
        # Measured on one sample: resolve first, so per-sample choices (Class([3, 5])) can be narrowed.
        one = (target if target.resolved else handle.resolve(target, x)).take(np.array([0]))
        report = run_check(handle, x[:1], target=one, layer=layer, fd_directions=1)
        per_handle[key] = Findings(
            verdict=report.verdict, gradient_status=report.gradient["status"],
            gradient_break=report.gradient.get("break"), cam_status=report.cam["status"],
            cam_reason=report.cam.get("reason"), default_layer=report.cam.get("default_layer"),
            layers=tuple(report.cam.get("layers") or ()),
            layouts=tuple((report.cam.get("layouts") or {}).items()))
    return per_handle[key]


def _others(family: str) -> list[str]:
    return [n for n in METHODS.names() if METHODS.get(n).family == family]


def _instead(families: tuple[str, ...]) -> str:
    parts = []
    for family in families:
        names = _others(family)
        if names:
            label = {"gradient": "gradient methods", "black_box": "black-box methods (use --fallback)"}[family]
            parts.append(f"{label} work: {', '.join(names)}")
    return "; ".join(parts)


def require(handle, x: np.ndarray, target: Target, method, layer: str | None = None) -> Findings:
    """Raise CapabilityError unless the model gives what ``method.requires``; return the findings."""
    needs = set(method.requires)
    if not needs & {"gradient", "layers"}:
        return Findings("", "", None, "", None, None, ())
    found = measure(handle, x, target, layer)
    if found.gradient_status != "ok":
        where = found.gradient_break or {}
        cause = f": {where.get('cause')} at '{where.get('location')}'" if where.get("cause") else ""
        instead = _instead(("black_box",))
        raise CapabilityError(
            f"{method.name} needs input gradients, but readiness measured the gradient as "
            f"'{found.gradient_status}'{cause} (verdict {found.verdict})",
            path=handle.source.path, format=handle.source.format,
            hint=instead or "fix the gradient path that `xaiready check` names")
    if "layers" in needs and found.cam_status != "ok":
        instead = _instead(("gradient", "black_box"))
        raise CapabilityError(
            f"{method.name} needs a hookable internal layer, but readiness found none: {found.cam_reason}",
            path=handle.source.path, format=handle.source.format,
            hint=instead or "rebuild an eager model with --arch")
    return found

"""Compare two models on one input: outputs, input gradients (when both have them), one attribution map.

This is the seed's advice "treat a converted model as inference-only unless gradients are explicitly
verified" made into a measurement. The attribution compared is occlusion, because it needs only forward
passes and so exists for every pair of models, differentiable or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import XaiReadyError
from ..readiness.conversion import output_difference

GRAD_RTOL = 1e-3  # relative L2 error allowed between the two input gradients
MAP_RTOL = 1e-3  # occlusion maps are score differences: float noise of the outputs, relative to the map


@dataclass
class Comparison:
    """Verdicts: equivalent | outputs-equivalent (one side has no gradients to compare) |
    outputs-equal-gradients-differ | not-equivalent."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (aspect, pass|fail|skip, detail)

    def add(self, aspect: str, status: str, detail: str) -> None:
        self.rows.append((aspect, status, detail))

    @property
    def verdict(self) -> str:
        status = {a: s for a, s, _ in self.rows}
        if status.get("outputs") != "pass":
            return "not-equivalent"
        if status.get("gradients") == "fail":
            return "outputs-equal-gradients-differ"
        if "fail" in status.values():
            return "not-equivalent"
        return "outputs-equivalent" if status.get("gradients") == "skip" else "equivalent"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "checks": [{"name": a, "status": s, "detail": d} for a, s, d in self.rows]}


def compare(original, converted, x: np.ndarray, target=None, *, window: int | None = None) -> Comparison:
    from ..targets import for_task, infer_task

    result = Comparison()
    with original.session(), converted.session():
        try:
            a, b = original.forward(x), converted.forward(x)
        except XaiReadyError as exc:
            result.add("outputs", "fail", exc.message)
            return result
        if a.shape != b.shape:
            result.add("outputs", "fail", f"output shapes differ: {a.shape} vs {b.shape}")
            return result
        diff, tol = output_difference(b, a)
        result.add("outputs", "pass" if diff <= tol else "fail",
                   f"max abs difference {diff:.3g} (tolerance {tol:.3g})")
        target = original.resolve(target or for_task(infer_task(a.shape), None), x)
        _gradients(result, original, converted, x, target)
        _attribution(result, original, converted, x, target, window)
    return result


def _gradients(result: Comparison, original, converted, x, target) -> None:
    grads = []
    for handle in (original, converted):
        try:
            g = handle.vjp(x, target).input_grad
        except XaiReadyError as exc:
            result.add("gradients", "skip", f"{handle.source.format}: {exc.message}")
            return
        if g is None:
            why = ("ONNX Runtime computes no gradients" if handle.framework == "onnxruntime"
                   else "no gradient reaches the input")
            result.add("gradients", "skip", f"{handle.source.format} ({handle.framework}): {why}")
            return
        grads.append(g.astype(np.float64))
    ga, gb = grads
    rel = float(np.linalg.norm(gb - ga) / max(np.linalg.norm(ga), 1e-30))
    result.add("gradients", "pass" if rel <= GRAD_RTOL else "fail",
               f"relative L2 difference of the input gradients {rel:.3g} (tolerance {GRAD_RTOL:g})")


def _attribution(result: Comparison, original, converted, x, target, window) -> None:
    from ..methods.blackbox import Occlusion

    if window is None and x.ndim == 4:
        h, w = (2, 3) if original.layout == "NCHW" else (1, 2)
        window = max(1, min(x.shape[h], x.shape[w]) // 8)
    options = {} if window is None else {"window": window}
    maps = [Occlusion()(handle, x, target, **options).values.astype(np.float64) for handle in (original, converted)]
    diff = float(np.max(np.abs(maps[1] - maps[0])))
    tol = 1e-5 + MAP_RTOL * float(np.max(np.abs(maps[0])))
    corr = float(np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1]) if maps[0].std() and maps[1].std() else 1.0
    result.add("attribution", "pass" if diff <= tol else "fail",
               f"occlusion maps: max abs difference {diff:.3g} (tolerance {tol:.3g}), correlation {corr:.4f}")

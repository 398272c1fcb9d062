"""Wrap a converted ONNX graph as a PyTorch ModelHandle, accepted only after verification."""

from __future__ import annotations

import time

import numpy as np

from ..errors import XaiReadyError
from ..inputs import random_input
from ..model import ModelHandle, Source
from ..readiness.conversion import output_difference
from ..readiness.report import CheckResult

N_RANDOM = 2  # random inputs compared with ONNX Runtime at load time (the user's input comes at check)
SCALE_RTOL = 1e-3  # the load-time difference must also be this small relative to the output's scale


def convert_onnx_handle(reference: ModelHandle, proto, *, n_random: int = N_RANDOM) -> ModelHandle:
    """The converted handle (``reference`` attached), or ``reference`` itself with the reason."""
    import importlib.util

    started = time.perf_counter()
    missing = [m for m in ("torch", "onnx2torch") if importlib.util.find_spec(m) is None]
    if missing:
        return _rejected(reference, f"conversion needs the Python package '{missing[0]}' "
                         "(pip install 'xaiready[torch,onnx]')", status="skip")
    from .canonical import summary
    from .onnx_to_torch import ConversionFailed, to_torch

    try:
        converted = to_torch(proto)
    except ConversionFailed as exc:
        return _rejected(reference, str(exc), passes=exc.passes)
    handle = _wrap(converted, reference)
    try:
        equal = _compare_outputs(handle, reference, n_random)
        grad = _gradient_ok(handle, random_input(reference.backend.example_shape(), seed=7))
    except _Rejected as exc:
        return _rejected(reference, str(exc), passes=converted.passes)
    tools = "onnx2torch" + (f" + xaiready converters for {', '.join(converted.gap_filled)}"
                            if converted.gap_filled else "")
    canonical = f"; {summary(converted.passes)}" if converted.passes else ""
    handle.extra_checks.append(CheckResult(
        "conversion", "pass", f"converted to PyTorch with {tools}{canonical}; {equal}; {grad} "
        f"({time.perf_counter() - started:.1f} s)"))
    handle.notes.extend(converted.notes)
    handle.reference = reference
    return handle


class _Rejected(Exception):
    pass


def _wrap(converted, reference: ModelHandle) -> ModelHandle:
    from .torch_backend import ConvertedTorchBackend

    ort = reference.backend
    backend = ConvertedTorchBackend(converted.module, output=ort.output_index if len(ort.outputs) > 1 else None,
                                    fixed_batch=ort.input.fixed_batch, example_shape=ort.example_shape())
    notes = list(reference.notes) + ["layers are named after the ONNX nodes ('.' becomes '/')"]
    handle = ModelHandle(backend, Source(reference.source.path, "pytorch-eager", "torch", converted_from="onnx"),
                         layout=reference.layout, notes=notes)
    handle.extra_checks = [c for c in reference.extra_checks if c.name != "gradient-backend"]
    return handle


def _compare_outputs(handle: ModelHandle, reference: ModelHandle, n_random: int) -> str:
    shape = reference.backend.example_shape()
    if shape is None:
        raise _Rejected("no input shape can be read off the graph to verify the conversion")
    worst = 0.0
    for seed in range(n_random):
        x = random_input(shape, seed=200 + seed)
        try:
            ours, theirs = handle.forward(x), reference.forward(x)
        except XaiReadyError as exc:
            raise _Rejected(f"verification on a random {shape} input failed: {exc.message}") from exc
        if ours.shape != theirs.shape:
            raise _Rejected(f"output shapes differ from ONNX Runtime: {ours.shape} vs {theirs.shape}")
        diff, tol = output_difference(ours, theirs)
        # Relative too: random-weight models can have outputs (~1e-10) far below the absolute tolerance.
        tol = min(tol, SCALE_RTOL * float(np.max(np.abs(theirs))) + 1e-30)
        if not diff <= tol:
            raise _Rejected(f"outputs differ from ONNX Runtime by {diff:.3g} (tolerance {tol:.3g}) on a "
                            f"random {shape} input")
        worst = max(worst, diff)
    return f"outputs equal ONNX Runtime's on {n_random} random inputs (max abs difference {worst:.3g})"


def _gradient_ok(handle: ModelHandle, x: np.ndarray) -> str:
    from ..readiness.probes import finite_difference_check
    from ..targets import for_task, infer_task

    with handle.session():
        out = handle.forward(x)
        # Any differentiable score proves the gradient path; an output whose task the shape does not say
        # (a (B, T, K) sequence head) is checked on its first raw value, as a regression target.
        target = handle.resolve(for_task(infer_task(out.shape, fallback="regression"), None), x)
        res = handle.vjp(x, target)
        grad = res.input_grad
        if grad is None:
            raise _Rejected("the converted model gives no input gradient")
        if not np.isfinite(grad).all():
            raise _Rejected("the converted model's input gradient is not finite")
        if not np.any(grad):
            other = handle.forward(x + np.float32(1.0))
            why = ("; its output does not change with the input, so the model itself (e.g. a zero-initialised "
                   "head) has no gradient to give" if np.array_equal(other, out) else "")
            raise _Rejected(f"the converted model's input gradient is exactly zero{why}")
        fd = finite_difference_check(handle, x, target, grad, n_random=1)
    if not fd.ok:
        raise _Rejected(f"the converted model's gradient is incorrect: {fd.detail}")
    return "input gradients " + ("agree with finite differences" if fd.conclusive else
                                 "exist (finite differences inconclusive)")


def _rejected(reference: ModelHandle, reason: str, *, status: str = "fail", passes=()) -> ModelHandle:
    from .canonical import summary

    canonical = f" ({summary(passes)})" if passes else ""
    reference.extra_checks.append(CheckResult("conversion", status, f"not converted: {reason}; the model "
                                              f"stays inference-only (ONNX Runtime){canonical}"))
    reference.notes.append(f"conversion to PyTorch rejected: {reason}")
    return reference

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
    from ..held_inputs import held_at_random

    # A graph with several inputs is verified with the others held at seeded random values.
    ours, theirs = held_at_random(handle, reference)
    try:
        equal = _compare_outputs(ours, theirs, n_random, converted)
        grad = _gradient_ok(ours, theirs, random_input(theirs.backend.example_shape(), seed=7))
    except _Rejected as exc:
        return _rejected(reference, str(exc), passes=converted.passes)
    finally:
        converted.graph = None  # the prepared graph's weights are not needed any longer
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
    handle.logits_hint = getattr(reference, "logits_hint", None)
    return handle


def _compare_outputs(handle: ModelHandle, reference: ModelHandle, n_random: int, converted=None) -> str:
    shape = reference.backend.example_shape()
    if shape is None:
        raise _Rejected("no input shape can be read off the graph to verify the conversion")
    worst = 0.0
    for seed in range(n_random):
        x = random_input(shape, seed=200 + seed)
        try:
            ours, theirs = handle.forward(x), reference.forward(x)
        except XaiReadyError as exc:
            where = _divergence(converted, x, reference.backend.input.fixed_batch)
            raise _Rejected(f"verification on a random {shape} input failed: {exc.message}"
                            + (f"; {where}" if where else "")) from exc
        if ours.shape != theirs.shape:
            raise _Rejected(f"output shapes differ from ONNX Runtime: {ours.shape} vs {theirs.shape}")
        diff, tol = output_difference(ours, theirs)
        # Relative too: random-weight models can have outputs (~1e-10) far below the absolute tolerance.
        tol = min(tol, SCALE_RTOL * float(np.max(np.abs(theirs))) + 1e-30)
        if not diff <= tol:
            where = _divergence(converted, x, reference.backend.input.fixed_batch)
            raise _Rejected(f"outputs differ from ONNX Runtime by {diff:.3g} (tolerance {tol:.3g}) on a "
                            f"random {shape} input" + (f"; {where}" if where else ""))
        worst = max(worst, diff)
    return f"outputs equal ONNX Runtime's on {n_random} random inputs (max abs difference {worst:.3g})"


def _divergence(converted, x: np.ndarray, fixed_batch: int | None) -> str | None:
    """The first node whose output differs from ONNX Runtime's on ``x`` (see ``divergence``), if found."""
    from .divergence import first_divergence

    if converted is None or converted.graph is None:
        return None
    if fixed_batch and x.shape[0] != fixed_batch:
        x = np.repeat(x[:1], fixed_batch, axis=0)
    try:
        return first_divergence(converted.graph, converted.module, x)
    except Exception:  # noqa: BLE001 - localising is a courtesy; the rejection stands without it
        return None


def _gradient_ok(handle: ModelHandle, reference: ModelHandle, x: np.ndarray) -> str:
    """The converted model's input gradient, checked against central finite differences of ONNX Runtime
    on the original graph: a converter bug that is consistent with itself (a wrong op whose backward
    matches its wrong forward) still fails here."""
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
        fd = finite_difference_check(reference, x, target, grad, n_random=1)
        if fd.ok and fd.conclusive:
            return "input gradients agree with finite differences of ONNX Runtime"
        # ONNX Runtime computes in float32 only: its differences are noisy at small steps and cross ReLU
        # kinks at large ones. Then the gradient is checked on the converted model's float64 twin, and
        # that model is shown to be ONNX Runtime's function along the same directions: equal differences.
        from ..readiness.probes import gradient_correctness

        own, _ = gradient_correctness(handle, x, target, grad, n_random=1)
        same = _same_differences(handle, reference, x, target, grad)
    if own.ok and own.conclusive and same is None:
        return ("input gradients agree with finite differences of the converted model's float64 twin, whose "
                "differences equal ONNX Runtime's along the gradient and 2 random directions (ONNX Runtime's "
                f"float32 differences alone: {fd.detail})")
    if same is not None:
        raise _Rejected(f"the converted model's finite differences differ from ONNX Runtime's: {same}")
    if not own.ok:
        raise _Rejected(f"the converted model's gradient is incorrect: {own.detail}")
    if not fd.ok:
        raise _Rejected(f"the converted model's gradient disagrees with finite differences of ONNX Runtime: "
                        f"{fd.detail}")
    return "input gradients exist (finite differences of ONNX Runtime inconclusive)"


SAME_RTOL = 0.02  # finite differences of the two models along one direction may differ by this much


def _same_differences(handle: ModelHandle, reference: ModelHandle, x: np.ndarray, target, grad: np.ndarray,
                      *, n_random: int = 2, seed: int = 3) -> str | None:
    """None if the central differences of the converted model and of ONNX Runtime agree, at the same
    points, along the gradient and ``n_random`` random directions; else where they differ. A converter
    bug that is consistent with itself changes the converted model's function, so it shows here."""
    from .._batching import scores_of

    rng = np.random.default_rng(seed)
    g = grad.reshape(x.shape[0], -1).astype(np.float64)
    directions = [g / max(float(np.linalg.norm(g)), 1e-300)]
    directions += [r / np.linalg.norm(r) for r in (rng.standard_normal(g.shape) for _ in range(n_random))]
    step = 1e-2 * max(float(np.linalg.norm(x.reshape(x.shape[0], -1), axis=1).min()), 1e-3)
    s0 = np.abs(scores_of(reference, x, target)).max()
    for i, d in enumerate(directions):
        v = d.reshape(x.shape)
        plus, minus = (x + step * v).astype(x.dtype), (x - step * v).astype(x.dtype)
        ours = (scores_of(handle, plus, target) - scores_of(handle, minus, target)) / (2 * step)
        theirs = (scores_of(reference, plus, target) - scores_of(reference, minus, target)) / (2 * step)
        noise = 4e-6 * (s0 + 1) / step  # float32 rounding of the four scores
        bad = np.abs(ours - theirs) > SAME_RTOL * np.maximum(np.abs(ours), np.abs(theirs)) + noise
        if bad.any():
            k = int(np.argmax(bad))
            return (f"along direction {i} ({'the gradient' if i == 0 else 'random'}) of sample {k}: "
                    f"{ours[k]:.4g} vs ONNX Runtime's {theirs[k]:.4g} (step {step:.3g})")
    return None


def _rejected(reference: ModelHandle, reason: str, *, status: str = "fail", passes=()) -> ModelHandle:
    from .canonical import summary

    canonical = f" ({summary(passes)})" if passes else ""
    reference.extra_checks.append(CheckResult("conversion", status, f"not converted: {reason}; the model "
                                              f"stays inference-only (ONNX Runtime){canonical}"))
    reference.notes.append(f"conversion to PyTorch rejected: {reason}")
    return reference

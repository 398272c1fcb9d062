"""The readiness check: one small step per measurement, combined into a Report (DESIGN 3.2)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..errors import DetectionOutputError, UsageError, XaiReadyError
from ..model import ModelHandle
from ..targets import SATURATION, Class, Detection, SegmentationRegion, Target, for_task, infer_task, task_of
from ..targets.base import softmax
from .conversion import verify_conversion
from .layers import default_layer, measure_layers
from .layouts import measure_layouts, to_maps
from .probes import gradient_correctness
from .report import Report


def run_check(handle: ModelHandle, x: np.ndarray, *, target: Target | None = None, task: str | None = None,
              layer: str | None = None, fd_directions: int = 3) -> Report:
    """Measure readiness on ``x``. Problems of the model become findings; usage errors raise."""
    started = time.perf_counter()
    report = Report(model=handle.source.to_dict())
    report.checks.extend(handle.extra_checks)
    snapshot = _snapshot(handle)
    with handle.session():
        if getattr(handle, "reference", None) is not None:
            result = verify_conversion(handle, x)
            report.checks.append(result)
            report.model = handle.source.to_dict()
        try:
            out, target, task, task_from = _first_pass(handle, x, target, task)
        except XaiReadyError as exc:
            report.add("forward", "fail", exc.one_line().removeprefix("error: "))
            report.error = exc.to_dict()
            raise
        report.add("forward", "pass", f"input {tuple(x.shape)} -> output {_describe(out)}")
        report.context.update({"task": task, "task_from": task_from, "target": target.describe(),
                               "input_shape": list(x.shape),
                               "output_shape": list(out.shape) if hasattr(out, "shape") else None,
                               "notes": handle.notes})
        _gradient_checks(handle, x, target, out, report, layer, fd_directions)
    _unchanged_check(handle, snapshot, report)
    report.context["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _first_pass(handle, x, target, task):
    """The output on ``x`` and the target resolved on it, with the task and how it was chosen. A model
    returning detections (no tensor) is a detection task; a raw-output target is resolved by the
    backend's own pass, since its output may be no tensor."""
    if task == "detection" and target is None:
        target = for_task(task, None)
    if target is None or not getattr(target, "raw_output", False):
        try:
            out = handle.forward(x)
        except DetectionOutputError:  # without a task or target: the detector's top-scoring box
            if target is not None or task is not None:
                raise
            target = Detection()
            task, task_from = "detection", "the model returns detections"
        else:
            task, task_from = _task(task, target, out.shape)
            target = target or for_task(task, None)
            if target.framework_fn is None and not target.resolved:
                target = target.resolve(out, channel_axis=handle.channel_axis)  # reuse this forward
            return out, target, task, task_from
    else:
        task, task_from = _task(task, target, None)
    res = handle.vjp(x, target, input_grad=False)
    return res.output, res.target or target, task, task_from


def _describe(out) -> str:
    if hasattr(out, "shape"):
        return str(tuple(out.shape))
    if isinstance(out, dict) and "pred_boxes" in out:
        return f"DETR-style queries {tuple(out['pred_boxes'].shape)}"
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], dict) and "boxes" in out[0]:
        return f"{len(out)} detection dict(s), " + ", ".join(str(len(d["boxes"])) for d in out) + " box(es) kept"
    return type(out).__name__


def _task(task, target, shape) -> tuple[str, str]:
    """The task and how it was chosen. A shape that does not say (a 3-D (B, T, K) output) is a usage
    error unless the task or a target is given; a Custom target on such an output explains "custom"."""
    if task:
        return task, "given"
    if target is not None:
        of = task_of(target)
        if of is not None:
            return of, "from the target"
        if shape is None:  # a raw-output target: the model's output is no single tensor
            return "custom", "a custom target on the model's raw output"
        inferred = infer_task(shape, fallback="custom")
        return inferred, (f"a custom target on an output of shape {tuple(shape)}" if inferred == "custom" else
                          f"inferred from the output shape {tuple(shape)}")
    return infer_task(shape), f"inferred from the output shape {tuple(shape)}"


def _gradient_checks(handle, x, target, out, report, layer, fd_directions):
    access = handle.layers()
    requested = [layer] if layer else access.names
    if layer and access.reason:
        raise UsageError(f"layer '{layer}' cannot be captured: {access.reason}")
    res = handle.vjp(x, target, layers=requested)
    grad = res.input_grad
    report.add("score-in-graph", "pass" if res.score_in_graph else "fail",
               "the score is a tensor inside the autograd graph" if res.score_in_graph else
               "the score does not require grad: no autograd graph reaches the output")

    if res.grad_mode_error:
        report.add("forward-with-gradients", "fail", "the forward runs without gradients but raises with "
                   f"them: {res.grad_mode_error}")
    status = _gradient_status(report, grad)
    if status == "ok":
        fd, precision = gradient_correctness(handle, x, target, grad, n_random=max(0, fd_directions - 1))
        if precision is not None:
            report.checks.append(precision)
        report.add("gradient-correct", "fail" if not fd.ok else "pass" if fd.conclusive else "warn", fd.detail)
        if not fd.ok:
            status = "incorrect"
    else:
        report.add("gradient-correct", "skip", "needs a finite, non-zero gradient first")
    report.gradient = {"status": status,
                       "input_grad_norm": None if grad is None else float(np.linalg.norm(grad)),
                       "break": _locate(handle, x, target, status, report)}
    _saturation_check(report, target, res.output, grad, lambda: _logits_hint(handle, x))

    if status != "ok":
        report.cam = {"status": "unavailable", "layers": [], "default_layer": None,
                      "reason": f"input gradient is {status}, so layer gradients cannot be trusted"}
        report.add("cam-layers", "skip", report.cam["reason"])
        return
    if access.reason and not layer:
        report.cam = {"status": "unavailable", "layers": [], "default_layer": None, "reason": access.reason}
        report.add("cam-layers", "fail", access.reason)
        return
    task = report.context["task"]
    classes = out.shape[handle.channel_axis] if task in ("segmentation", "classification") and out.ndim > 1 else None
    layouts = measure_layouts(handle, x, target, res, requested)
    if layer and layouts.get(layer) is not None and layouts[layer].evidence.startswith("ambiguous") and access.names:
        # One layer alone can fit several token grids; the others (a patch embedding's map) settle it.
        every = handle.vjp(x, target, layers=access.names, input_grad=False)
        layouts[layer] = measure_layouts(handle, x, target, every, access.names).get(layer, layouts[layer])
    kinds = handle.backend.layer_kinds() if hasattr(handle.backend, "layer_kinds") else {}
    found = measure_layers(res, requested, layouts, classes, kinds)
    if isinstance(target, Detection) and found.verified and not layer:
        _shared_by_boxes(handle, x, target, out, found, res, layouts, kinds)
    default = layer if layer in found.verified else found.default
    reason = f"chosen with --layer ({layouts[layer].evidence})" if layer in found.verified else found.default_reason
    measured = {n: lay.to_dict() for n, lay in layouts.items()}  # every candidate, with its evidence
    # Modules run more than once per forward: a hook reads the last call unless --layer name#k says.
    repeated = {n: c for n, c in sorted(res.calls.items()) if c > 1}
    if found.verified:
        report.cam = {"status": "ok", "layers": found.verified, "default_layer": default, "reason": None,
                      "default_reason": reason, "layouts": measured, "repeated": repeated}
        report.add("cam-layers", "pass", f"{len(found.verified)} layer(s) with an established layout give "
                   f"activation and non-zero gradient; default '{default}': {reason}")
    else:
        reason = found.reason
        if layer and layer in found.rejected:
            reason = f"layer '{layer}': {found.rejected[layer]}"
        elif requested and any(res.calls.get(n) for n in requested) is False and handle.framework == "torch":
            reason = "layer hooks registered but never fired"
        report.cam = {"status": "unavailable", "layers": [], "default_layer": None, "reason": reason,
                      "layouts": measured, "repeated": repeated}
        report.add("cam-layers", "fail", reason)


def _shared_by_boxes(handle, x, target, out, found, res, layouts, kinds) -> None:
    """A detector's default CAM layer: the deepest map that boxes from every part of the output depend
    on (a backbone or neck map), never one pyramid level's head, nor a map with the head's own channel
    count (its prediction map, where each box reads a single cell)."""
    boxes = target.representatives(out)
    passes = [handle.vjp(x, t, layers=found.verified, input_grad=False) for t in boxes]
    shared = [n for n in found.verified
              if all(p.layer_grads.get(n) is not None and np.any(to_maps(p.layer_grads[n], layouts[n]))
                     for p in passes)]
    if not shared:
        return
    default, why = default_layer(replace(found, verified=shared), res, target.head_features(out), kinds)
    if default is not None:
        found.default = default
        found.default_reason = (f"{why}; every one of {len(boxes)} boxes spread over the output (top-scoring, "
                                "largest, smallest, ...) depends on it")


def _gradient_status(report: Report, grad) -> str:
    if grad is None:
        report.add("gradient-exists", "fail", "no gradient reaches the input")
        report.add("gradient-finite", "skip", "no gradient")
        report.add("gradient-nonzero", "skip", "no gradient")
        return "missing"
    report.add("gradient-exists", "pass", f"input gradient of shape {tuple(grad.shape)}")
    finite = np.isfinite(grad)
    if not finite.all():
        report.add("gradient-finite", "fail", f"{int((~finite).sum())} of {grad.size} values are NaN or inf")
        report.add("gradient-nonzero", "skip", "gradient is not finite")
        return "non-finite"
    report.add("gradient-finite", "pass", "all values finite")
    nonzero = np.count_nonzero(grad)
    if nonzero == 0:
        report.add("gradient-nonzero", "fail", "every value of the input gradient is exactly zero")
        return "zero"
    report.add("gradient-nonzero", "pass", f"{nonzero} of {grad.size} values non-zero, "
               f"norm {np.linalg.norm(grad):.3g}")
    return "ok"


def _locate(handle, x, target, status, report):
    if status == "ok":
        return None
    finding = handle.backend.locate_break(x, target, status)
    if finding is None:
        report.add("break-location", "warn", "the cause could not be located")
        return {"location": None, "cause": "unknown"}
    report.add("break-location", "fail", f"{finding.cause} at '{finding.location}': {finding.detail}")
    return finding.to_dict()


def _logits_hint(handle, x):
    """(tensor or module, activation) naming the logits when the output is a final Softmax/Sigmoid's: an
    ONNX graph's (found at load), an eager module's (measured on ``x``); None otherwise."""
    hint = getattr(handle, "logits_hint", None)
    source = getattr(handle.backend, "logits_source", None)
    return hint if hint is not None or source is None else source(x)


def _saturation_check(report: Report, target: Target, output, grad, logits=lambda: None) -> None:
    """Probability scores whose gradients vanish: a classifier's softmax (or probability target), or a
    segmentation region read off probabilities (a sigmoid map, or softmax channels). ``logits()`` names
    the pre-activation tensor to explain instead, where one can be named with --output."""
    p, kind = _probabilities(target, output)
    if p is None:
        report.add("saturation", "skip" if kind is None else "pass", kind or "not a probability score")
        return
    saturated = (p > SATURATION) | (p < 1 - SATURATION)
    gnorm = 0.0 if grad is None else float(np.linalg.norm(grad))
    share = float(saturated.mean()) if p.size else 0.0
    # One saturated class score is enough; a region is saturated when most of its pixels are.
    if (saturated.any() and isinstance(target, Class)) or (not isinstance(target, Class) and share > 0.5):
        hint = logits()
        where = f"{float(p.max()):.4f}" if isinstance(target, Class) else f"{share:.0%} of the region's pixels"
        report.add("saturation", "warn", f"{kind} saturated ({where}); gradients of a saturated probability are "
                   f"tiny (norm {gnorm:.2g}) and noisy: explain the logits instead "
                   + (f"(--output {hint[0]}, the input of the final {hint[1]})" if hint else
                      "(remove the final softmax/sigmoid, or --output the logits)"))
    else:
        report.add("saturation", "pass", f"{kind} at {float(p.max()):.3f}, not saturated")


def _probabilities(target, output):
    """(the explained probabilities, what they are), (None, why it passes) for logits, (None, None) when
    the score is no probability at all."""
    if isinstance(target, SegmentationRegion) and hasattr(output, "ndim") and output.ndim == 4 and target.resolved:
        out = np.asarray(output, dtype=np.float64)
        axis, region = target._axis, np.asarray(target._mask) > 0
        if out.shape[axis] == 1:
            probs = np.squeeze(out, axis)
            if not ((probs >= 0).all() and (probs <= 1).all()):
                return None, "the map is a logit (not saturating)"
            return probs[region], "the one-channel map is a sigmoid probability"
        if not _is_distribution(out, axis):
            return None, "the map holds logits (not saturating)"
        return np.take(out, int(target._k), axis=axis)[region], "the map is a softmax probability"
    if not isinstance(target, Class) or not hasattr(output, "ndim") or output.ndim != 2 or output.shape[1] < 2:
        return None, None
    rows, k = np.arange(output.shape[0]), target._k
    if _is_distribution(output, 1):
        return output[rows, k], "the output is a softmax probability"
    if target.score == "probability":
        return softmax(output, 1)[rows, k], "the target is a probability"
    return None, "the score is a logit (not saturating)"


def _is_distribution(out: np.ndarray, axis: int) -> bool:
    """Non-negative and summing to 1 along ``axis``: a softmax already applied."""
    return bool((out >= 0).all() and np.allclose(out.sum(axis), 1, atol=1e-3))


def _snapshot(handle):
    snap = getattr(handle.backend, "state_snapshot", None)
    return (handle.backend, snap()) if snap else None  # the backend too: a rejected conversion swaps it


def _unchanged_check(handle, before, report):
    if before is None:
        return
    backend, before = before
    after = backend.state_snapshot()
    changed = [k for k in before if before[k] != after[k]]
    report.add("model-unchanged", "fail" if changed else "pass",
               f"changed: {', '.join(changed)}" if changed else
               "training flags, requires_grad, parameter .grad and hooks are as before")

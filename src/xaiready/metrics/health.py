"""Health checks that run with every explanation: cheap by default, extended with ``level="full"``.

Each returns a ``CheckResult(name, status, detail)``; ``warn`` means the map should not be trusted
as it is. Thresholds (module constants) are justified by measurements on the built-in benchmark
(see ``bench/bench_metrics.py --health`` and the notes beside each constant).

cheap: ``map-values`` (all-zero, constant or non-finite map *before* normalization),
       ``saturated-output``, ``guided-override`` (guided backprop equal to plain gradients),
       ``target-sensitivity`` (map nearly identical for another class; one extra explanation,
       skipped for black-box methods at this level).
full:  adds ``model-randomization`` (map nearly identical after randomizing the top layers).
"""

from __future__ import annotations

import numpy as np

from ..readiness.report import CheckResult
from ..targets import Class
from ._engine import spatial
from .similarity import spearman

# Softmax probability of the top class above which d p / d logit = p (1 - p) < 1e-4: gradients of a
# probability score vanish into float noise. Benchmark CNN (32 test inputs): 31 % exceed it (median
# top p 0.9994), so it warns only when a probability score is explained; logits are unaffected.
SATURATION = 1 - 1e-4
# Spearman similarity of the maps of the top and the second class above which the map is taken as
# class-blind. Benchmark CNN, 32 inputs, median / max: Grad-CAM 0.54 / 0.84, Grad-CAM++ 0.18 / 0.66,
# saliency 0.92 / 0.965, input x gradient 0.935 / 0.973, integrated gradients 0.90 / 0.93, guided
# backprop 0.93 / 0.96 (gradient maps are known to be weakly class-specific); a class-blind map: 1.0.
TARGET_SIMILARITY = 0.99
# Spearman similarity to the map after randomizing the top two parameterized layers (cascading)
# above which the map is taken as model-blind. Benchmark CNN, 32 inputs, median / max: Grad-CAM
# 0.04 / 0.32, saliency 0.79 / 0.93, input x gradient 0.80 / 0.94, integrated gradients 0.82 / 0.88,
# guided backprop 0.83 / 0.95; a model-blind map: 1.0.
RANDOMIZATION_SIMILARITY = 0.98
RANDOMIZED_LAYERS = 2
# Guided backprop whose values match plain gradients this closely had no ReLU rule applied.
OVERRIDE_RTOL = 1e-6


def run_health_checks(handle, x, attribution, target=None, level: str = "cheap", *,
                      explainer=None, options: dict | None = None) -> list[CheckResult]:
    """Findings about ``attribution`` (an Attribution, or its values with ``explainer`` given).

    ``explainer(x, target) -> values`` re-explains for the class and randomization checks; by default
    it is rebuilt from the attribution's method and layer, with the method's ``options``.
    """
    if level not in ("cheap", "full"):
        raise ValueError("level must be 'cheap' or 'full'")
    from .evaluate import default_target, explainer_for

    x = handle.as_input(x)
    method = getattr(attribution, "method", None)
    values = np.asarray(getattr(attribution, "values", attribution))
    raw = getattr(attribution, "raw", None)
    target = default_target(handle, x, target)
    if explainer is None and method is not None:
        explainer = explainer_for(handle, method, layer=getattr(attribution, "layer", None), **(options or {}))
    out = [check_map_values(values if raw is None else np.asarray(raw)),
           check_saturation(handle, x, target)]
    if method == "guided-backprop":
        out.append(check_guided_override(handle, x, target, attribution))
    black_box = getattr(attribution, "family", "") == "black_box"
    if explainer is None:
        out.append(CheckResult("target-sensitivity", "skip", "no explainer to re-explain another class"))
    elif level == "full" or not black_box:
        out.append(check_target_sensitivity(handle, x, values, target, explainer))
    else:
        out.append(CheckResult("target-sensitivity", "skip", "black-box method: only with --sanity full"))
    if level == "full":
        out.append(check_model_randomization(handle, x, values, target, explainer))
    return out


def check_map_values(raw: np.ndarray) -> CheckResult:
    """All-zero, constant or non-finite maps, per sample, before any normalization hides them."""
    raw = np.asarray(raw, dtype=np.float64)
    flat = raw.reshape(len(raw), -1) if raw.ndim > 1 else raw.reshape(1, -1)
    problems = []
    for i, row in enumerate(flat):
        bad = int((~np.isfinite(row)).sum())
        if bad:
            problems.append(f"sample {i}: {bad} non-finite values")
        elif not row.any():
            problems.append(f"sample {i}: all zero")
        elif row.max() - row.min() <= 1e-12 * max(1.0, float(np.abs(row).max())):
            problems.append(f"sample {i}: constant ({row[0]:.3g})")
    if problems:
        return CheckResult("map-values", "warn", "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else "")
                           + " (the map carries no information; check the target and the gradient path)")
    return CheckResult("map-values", "pass", "finite and not constant")


def check_saturation(handle, x, target) -> CheckResult:
    """A saturated softmax: probability scores then have vanishing gradients."""
    if not isinstance(target, Class):
        return CheckResult("saturated-output", "skip", "only classification outputs saturate a softmax")
    out = np.asarray(handle.forward(x), dtype=np.float64)
    if not np.isfinite(out).all():
        return CheckResult("saturated-output", "warn", "the model output has non-finite values")
    z = out - out.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    top = p.max(1)
    hot = np.flatnonzero(top > SATURATION)
    if hot.size and target.score != "logit":
        return CheckResult("saturated-output", "warn",
                           f"{hot.size}/{len(x)} inputs have top-class probability > {SATURATION}; gradients of "
                           f"the {target.score} score vanish there (explain the logit instead)")
    note = f"; {hot.size} saturated inputs, harmless for logit scores" if hot.size else ""
    return CheckResult("saturated-output", "pass", f"max top-class probability {top.max():.6f}{note}")


def check_guided_override(handle, x, target, attribution) -> CheckResult:
    """Guided backprop equal to the plain input gradient: the ReLU rule never took effect."""
    values = np.asarray(attribution.values, dtype=np.float64)
    grad = handle.vjp(x, target).input_grad
    if grad is None or grad.shape != values.shape:
        return CheckResult("guided-override", "skip", "no comparable plain gradient")
    grad = np.asarray(grad, dtype=np.float64)
    scale = max(np.abs(grad).max(), 1e-30)
    if np.abs(values - grad).max() <= OVERRIDE_RTOL * scale:
        return CheckResult("guided-override", "warn", "guided backprop equals the plain gradient: the ReLU "
                           "override did not take effect (activations the override cannot intercept?)")
    return CheckResult("guided-override", "pass", "differs from the plain gradient")


def _worst(sim: np.ndarray) -> float:
    """The highest similarity; NaN (a constant map on both sides) when no sample has a defined one."""
    return float(np.nanmax(sim)) if np.isfinite(sim).any() else float("nan")


def _other_class(handle, x, target) -> Class | None:
    out = np.asarray(handle.forward(x))
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    order = np.argsort(-out, axis=1)
    k = target._k
    other = np.where(order[:, 0] == k, order[:, 1], order[:, 0])
    return Class(other.tolist(), score=target.score).resolve(out)


def check_target_sensitivity(handle, x, values, target, explainer) -> CheckResult:
    """The map for another class (the runner-up) nearly identical: the map ignores the class."""
    if not isinstance(target, Class):
        return CheckResult("target-sensitivity", "skip", "only class targets have another class")
    other = _other_class(handle, x, target)
    if other is None:
        return CheckResult("target-sensitivity", "skip", "a single output: no other class")
    axis = handle.channel_axis
    worst = _worst(spearman(spatial(values, x, axis), spatial(explainer(x, other), x, axis)))
    if not np.isfinite(worst) or worst > TARGET_SIMILARITY:
        return CheckResult("target-sensitivity", "warn",
                           f"map for the runner-up class has rank correlation {worst:.3f} > {TARGET_SIMILARITY} "
                           "with the explained class's map: it hardly depends on the class")
    return CheckResult("target-sensitivity", "pass", f"max rank correlation with runner-up class {worst:.3f}")


def check_model_randomization(handle, x, values, target, explainer) -> CheckResult:
    """The map after randomizing the top layers nearly identical: the map ignores the model."""
    backend = handle.backend
    if explainer is None or not hasattr(backend, "randomized"):
        return CheckResult("model-randomization", "skip", "needs an explainer and a backend that can randomize layers")
    layers = list(reversed(backend.randomizable_layers()))[:RANDOMIZED_LAYERS]
    with backend.randomized(layers, seed=0):
        other = explainer(x, target)
    axis = handle.channel_axis
    worst = _worst(spearman(spatial(values, x, axis), spatial(other, x, axis)))
    if not np.isfinite(worst) or worst > RANDOMIZATION_SIMILARITY:
        return CheckResult("model-randomization", "warn",
                           f"map after randomizing {', '.join(layers)} has rank correlation {worst:.3f} > "
                           f"{RANDOMIZATION_SIMILARITY}: it hardly depends on the model's weights")
    return CheckResult("model-randomization", "pass",
                       f"rank correlation {worst:.3f} after randomizing {', '.join(layers)}")


def with_health(handle, x, attribution, target=None, level: str = "cheap", options: dict | None = None):
    """The attribution with its health findings in ``info["health"]`` and warnings appended.

    Called by ``xr.explain`` and ``xaiready explain`` after the method ran (not inside a method: the
    checks re-explain, which would recurse). ``level="off"`` returns the attribution unchanged.
    """
    import dataclasses

    if level == "off":
        return attribution
    found = run_health_checks(handle, x, attribution, target, level=level, options=options)
    warnings = tuple(f"{f.name}: {f.detail}" for f in found if f.status == "warn")
    return dataclasses.replace(attribution, warnings=attribution.warnings + warnings,
                               info={**attribution.info, "health": [dataclasses.asdict(f) for f in found]})

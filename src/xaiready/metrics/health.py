"""Health checks that run with every explanation: cheap by default, extended with ``level="full"``.

Each returns a ``CheckResult(name, status, detail)``; ``warn`` means the map should not be trusted
as it is. Thresholds (module constants) are justified by measurements, noted beside each constant:
the saturation one (``targets.SATURATION``, shared with ``xaiready check``) on the built-in
benchmark (``bench/bench_metrics.py --health``), the class-blind and model-blind ones on trained
real architectures (``bench/calibrate_health.py``, ``make calibrate-health``).

cheap: ``map-values`` (all-zero, constant or non-finite map *before* normalization),
       ``saturated-output``, ``guided-override`` (guided backprop equal to plain gradients),
       ``target-sensitivity`` (map nearly identical for another class: read from the runner-up map
       the method computed in its own passes where it can, else one extra explanation; skipped for
       black-box methods at this level).
full:  adds ``model-randomization`` (map nearly identical after randomizing the top layers).
"""

from __future__ import annotations

import numpy as np

from ..readiness.report import CheckResult
from ..targets import SATURATION, Class, runner_up
from ..targets.base import softmax
from ._engine import spatial
from .similarity import spearman

# Class-blind and model-blind thresholds: Spearman similarity of the map with the map for the
# runner-up class (TARGET_) or with the map after randomizing the top RANDOMIZED_LAYERS parameterized
# layers (RANDOMIZATION_), above which the map is taken as not depending on the class / the weights.
# A batch warns when its median sample is above, so one ambiguous sample does not condemn a batch; a
# single input is judged on its own value. Two constant maps count as 1, a constant and a varying
# one as 0 (``map_similarity``): an all-zero runner-up CAM is no sign of blindness.
#
# Measured by bench/calibrate_health.py (2 training seeds x 9 models x 32 held-out inputs, 576 per
# method): torchvision resnet18, mobilenet_v3_small (x2 datasets), efficientnet_b0, timm
# convnext_atto, vit_tiny, test_resnet, test_efficientnet (random init, 32 x 32 inputs) and the
# benchmark CNN, trained 4-96 s each to held-out accuracy 0.81-0.996 (chance 0.10 / 0.33) on
# scikit-learn's digits and the benchmark shapes. Healthy, median / p95 / max:
#   class          Grad-CAM -0.08 / 0.846 / 1 - 3.0e-6   saliency 0.62 / 0.974 / 0.99980
#                  input x gradient 0.75 / 0.976 / 0.99978   integrated gradients 0.73 / 0.933 / 0.99834
#                  guided backprop 0.75 / 0.993 / 0.99765
#   randomization  Grad-CAM 0.00 / 0.924 / 1 - 4.4e-7   saliency 0.60 / 0.980 / 0.99964
#                  input x gradient 0.74 / 0.984 / 0.99961   integrated gradients 0.74 / 0.915 / 0.99901
#                  guided backprop 0.75 / 0.998 / 0.99987
# Gradient maps of trained models are weakly class- and weight-specific (mobilenet_v3_small on the
# shapes: saliency batch median 0.986; guided backprop on resnet18: randomization median 0.998), and
# Grad-CAM on a 2 x 2 layer (every CNN here at 32 x 32) can rank its 4 cells alike for two classes.
# The old 0.99 / 0.98 with the batch maximum (set on one toy CNN) flagged 3.1 % / 5.7 % of healthy
# inputs and 13 / 18 of 90 healthy batches. Broken maps (a dropped or class-free target, a head
# whose logits share one score, a zeroed head, a frozen copy explained, input-only maps |x| and an
# edge detector; 8 inputs x 9 models x 5 methods x 2 seeds) are all exactly 1.0. At the values
# below: 0 / 2880 healthy inputs and 0 / 90 batches flagged by either check; broken: 4304 / 4304
# class-blind and 2160 / 2160 model-blind inputs flagged (538 / 538 and 270 / 270 batches). Gradient
# maps keep 1e-5 of headroom for float noise in a blind map; CAMs need 1e-7. An unmeasured family
# (black-box, attention) gets the gradient value.
TARGET_SIMILARITY = 1 - 1e-5
RANDOMIZATION_SIMILARITY = 1 - 1e-5
TARGET_SIMILARITY_BY_FAMILY: dict[str, float] = {"cam": 1 - 1e-7}
RANDOMIZATION_SIMILARITY_BY_FAMILY: dict[str, float] = {"cam": 1 - 1e-7}
RANDOMIZED_LAYERS = 2
# Guided backprop whose values match plain gradients this closely had no ReLU rule applied.
OVERRIDE_RTOL = 1e-6


def target_threshold(family: str | None = None) -> float:
    """The class-blind threshold for a method family: the measured one, else the default."""
    return TARGET_SIMILARITY_BY_FAMILY.get(family, TARGET_SIMILARITY)


def randomization_threshold(family: str | None = None) -> float:
    """The model-blind threshold for a method family: the measured one, else the default."""
    return RANDOMIZATION_SIMILARITY_BY_FAMILY.get(family, RANDOMIZATION_SIMILARITY)


def run_health_checks(handle, x, attribution, target, level: str = "cheap", *,
                      explainer=None) -> list[CheckResult]:
    """Findings about ``attribution`` (an Attribution, or its values) for a resolved ``target``.

    The class check reads the runner-up class's map from ``attribution.contrast`` when the method
    computed it in its own passes; otherwise, and for ``level="full"``, ``explainer(x, target) ->
    values`` re-explains. Without either the check is skipped. The caller (``xaiready.api``) builds the
    explainer: metrics never import the method registry.
    """
    if level not in ("cheap", "full"):
        raise ValueError("level must be 'cheap' or 'full'")
    method = getattr(attribution, "method", None)
    family = getattr(attribution, "family", None)
    values = np.asarray(getattr(attribution, "values", attribution))
    raw = getattr(attribution, "raw", None)
    contrast = getattr(attribution, "contrast", None)
    out = [check_map_values(values if raw is None else np.asarray(raw)),
           check_saturation(handle, x, target, output=getattr(attribution, "output", None))]
    if method == "guided-backprop":
        out.append(check_guided_override(handle, x, target, attribution, measure=level == "full"))
    threshold = target_threshold(family)
    if contrast is not None and level == "cheap":
        out.append(check_contrast(contrast, values, x, handle.channel_axis, threshold=threshold))
    elif explainer is None:
        out.append(CheckResult("target-sensitivity", "skip", "no explainer to re-explain another class"))
    elif level == "full" or family != "black_box":
        out.append(check_target_sensitivity(handle, x, values, target, explainer, threshold=threshold))
    else:
        out.append(CheckResult("target-sensitivity", "skip", "black-box method: only with --sanity full"))
    if level == "full":
        out.append(check_model_randomization(handle, x, values, target, explainer,
                                             threshold=randomization_threshold(family)))
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


def check_saturation(handle, x, target, *, output=None) -> CheckResult:
    """A saturated softmax: probability scores then have vanishing gradients. ``output`` is the model's
    output on ``x`` when the explanation kept it (no forward of its own then)."""
    if not isinstance(target, Class):
        return CheckResult("saturated-output", "skip", "only classification outputs saturate a softmax")
    out = np.asarray(handle.forward(x) if output is None else output, dtype=np.float64)
    if not np.isfinite(out).all():
        return CheckResult("saturated-output", "warn", "the model output has non-finite values")
    top = softmax(out, 1).max(1)
    hot = np.flatnonzero(top > SATURATION)
    if hot.size and target.score != "logit":
        return CheckResult("saturated-output", "warn",
                           f"{hot.size}/{len(x)} inputs have top-class probability > {SATURATION}; gradients of "
                           f"the {target.score} score vanish there (explain the logit instead)")
    note = f"; {hot.size} saturated inputs, harmless for logit scores" if hot.size else ""
    return CheckResult("saturated-output", "pass", f"max top-class probability {top.max():.6f}{note}")


def check_guided_override(handle, x, target, attribution, *, measure: bool = True) -> CheckResult:
    """Guided backprop equal to the plain input gradient: the ReLU rule never took effect.

    ``measure=False`` (the cheap level) reads the counts the override recorded during the method's own
    pass instead of running a plain gradient to compare with; attributions without counts are measured."""
    counts = getattr(attribution, "info", {}).get("relu_override")
    if not measure and counts is not None:
        if counts["overridden"] == 0:
            return CheckResult("guided-override", "warn", f"no ReLU backward was overridden ({counts['relu_calls']} "
                               "ReLU call(s) ran): guided backprop is the plain gradient")
        return CheckResult("guided-override", "pass", f"the override replaced {counts['overridden']} of "
                           f"{counts['relu_calls']} ReLU backward passes (compared with the plain gradient at "
                           "--sanity full)")
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


def map_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman similarity per sample of two (N, H, W) map batches, defined for constant maps too: two
    constant maps rank alike (1.0); a constant and a varying one do not (0.0): a runner-up class with
    no evidence (an all-zero CAM) or a CAM emptied by randomization is a changed map, not a blind one."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    sim = spearman(a, b)
    flat_a, flat_b = np.ptp(a, axis=1) == 0, np.ptp(b, axis=1) == 0
    return np.where(flat_a & flat_b, 1.0, np.where(flat_a | flat_b, 0.0, sim))


def _typical(sim: np.ndarray) -> tuple[float, float]:
    """(median, max) similarity over the samples that have one; NaN, NaN when none has (non-finite maps)."""
    sim = np.asarray(sim, dtype=np.float64)
    if not np.isfinite(sim).any():
        return float("nan"), float("nan")
    return float(np.nanmedian(sim)), float(np.nanmax(sim))


def _blind(sim: np.ndarray, threshold: float) -> tuple[bool, str]:
    """Whether the batch reads as blind (median above ``threshold`` or nothing defined), and the numbers."""
    med, top = _typical(sim)
    if not np.isfinite(med):
        return True, "undefined (non-finite maps)"
    above = int((np.asarray(sim) > threshold).sum())
    return med > threshold, f"median {med:.7g}, max {top:.7g}, {above}/{len(sim)} samples above {threshold:.7g}"


def check_target_sensitivity(handle, x, values, target, explainer, *, threshold: float | None = None) -> CheckResult:
    """The map for another class (the runner-up) nearly identical: the map ignores the class.

    ``threshold`` defaults to ``TARGET_SIMILARITY`` (``target_threshold(method)`` gives a method's own).
    """
    threshold = TARGET_SIMILARITY if threshold is None else threshold
    if not isinstance(target, Class):
        return CheckResult("target-sensitivity", "skip", "only class targets have another class")
    other = runner_up(target, handle.forward(x))
    if other is None:
        return CheckResult("target-sensitivity", "skip", "a single output: no other class")
    axis = handle.channel_axis
    blind, numbers = _blind(map_similarity(spatial(values, x, axis), spatial(explainer(x, other), x, axis)),
                            threshold)
    return _class_finding(blind, numbers, "map")


def check_contrast(contrast, values, x, channel_axis: int, *, threshold: float | None = None) -> CheckResult:
    """The class check on the runner-up class's map that the method computed in its own passes
    (``Attribution.contrast``): no re-explanation. ``contrast.explained`` is the explained class's map
    in the same terms when they are not the method's own values (the input gradient at x for methods
    that integrate many passes)."""
    threshold = TARGET_SIMILARITY if threshold is None else threshold
    mine = values if contrast.explained is None else contrast.explained
    blind, numbers = _blind(map_similarity(spatial(mine, x, channel_axis), spatial(contrast.other, x, channel_axis)),
                            threshold)
    return _class_finding(blind, numbers, contrast.measured_on)


def _class_finding(blind: bool, numbers: str, measured_on: str) -> CheckResult:
    what = "map" if measured_on == "map" else measured_on
    if blind:
        return CheckResult("target-sensitivity", "warn",
                           f"the runner-up class's {what} ranks the pixels as the explained class's does "
                           f"(rank correlation {numbers}): it does not depend on the class")
    return CheckResult("target-sensitivity", "pass", f"rank correlation with the runner-up class's {what}: {numbers}")


def check_model_randomization(handle, x, values, target, explainer, *,
                              threshold: float | None = None) -> CheckResult:
    """The map after randomizing the top layers nearly identical: the map ignores the model.

    ``threshold`` defaults to ``RANDOMIZATION_SIMILARITY`` (``randomization_threshold(method)``).
    """
    threshold = RANDOMIZATION_SIMILARITY if threshold is None else threshold
    backend = handle.backend
    if explainer is None or not hasattr(backend, "randomized"):
        return CheckResult("model-randomization", "skip", "needs an explainer and a backend that can randomize layers")
    layers = list(reversed(backend.randomizable_layers()))[:RANDOMIZED_LAYERS]
    with backend.randomized(layers, seed=0):
        other = explainer(x, target)
    axis = handle.channel_axis
    blind, numbers = _blind(map_similarity(spatial(values, x, axis), spatial(other, x, axis)), threshold)
    if blind:
        return CheckResult("model-randomization", "warn",
                           f"the map after randomizing {', '.join(layers)} ranks the pixels as before (rank "
                           f"correlation {numbers}): it does not depend on the model's weights")
    return CheckResult("model-randomization", "pass",
                       f"rank correlation after randomizing {', '.join(layers)}: {numbers}")

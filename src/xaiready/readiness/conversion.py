"""Conversion equivalence: a converted model is used only after it matches its source.

The converted model's outputs must equal the original's on the user's input and on random inputs
of the same shape; otherwise the handle falls back to the original model and says why.
"""

from __future__ import annotations

import numpy as np

from ..errors import XaiReadyError
from ..inputs import random_input
from .report import CheckResult

RTOL, ATOL = 1e-4, 1e-5


def output_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max absolute difference, tolerance for it) between two outputs."""
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
    return diff, ATOL + RTOL * float(np.max(np.abs(b))) if b.size else ATOL


def verify_conversion(handle, x: np.ndarray, n_random: int = 2) -> CheckResult:
    reference = handle.reference
    worst, failure = 0.0, None
    # A perturbed copy too: near the user's input, where the explanation probes the model.
    noise = 0.05 * float(np.std(x) or 1.0) * np.random.default_rng(99).standard_normal(x.shape)
    inputs = [("the input", x), ("a perturbed copy of the input", (x + noise).astype(x.dtype))] + \
        [(f"random input {i + 1}", random_input(x.shape, seed=100 + i)) for i in range(n_random)]
    for label, sample in inputs:
        try:
            ours, theirs = handle.forward(sample), reference.forward(sample)
        except XaiReadyError as exc:
            failure = f"{label}: {exc.message}"
            break
        if ours.shape != theirs.shape:
            failure = f"{label}: output shapes differ {ours.shape} vs {theirs.shape}"
            break
        diff, tol = output_difference(ours, theirs)
        worst = max(worst, diff)
        if not diff <= tol:
            failure = f"{label}: outputs differ by {diff:.3g} (tolerance {tol:.3g})"
            break
    source = reference.source.format
    if failure is None:
        handle.reference = None
        return CheckResult("conversion-equivalence", "pass",
                           f"outputs equal the {source} original on {len(inputs)} inputs "
                           f"(max abs difference {worst:.3g})")
    handle.backend, handle.source, handle.layout = reference.backend, reference.source, reference.layout
    handle.notes.append(f"conversion from {source} rejected; using the original")
    handle.reference = None
    return CheckResult("conversion-equivalence", "fail", f"conversion rejected, {failure}; "
                       f"reporting the {source} model as it is")

"""Shared machinery: batched, chunk-bounded scoring and re-explaining of perturbed rows, and map shapes.

Metrics describe their perturbed inputs as *rows*: ``make(lo, hi)`` builds rows ``lo..hi-1`` and
``sample_of[r]`` names the original sample of row ``r``. Rows are built a chunk at a time, so memory
stays bounded by ``chunk_size`` rows whatever the number of steps or runs, and chunks cross sample
boundaries, so each model call is as large as allowed (the cheapest way to reach the call floor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..errors import UsageError
from ..targets import Class
from .base import Progress, Settings

RowMaker = Callable[[int, int], np.ndarray]


class Counter:
    """Model evaluations (rows), re-explanations (rows) and batched calls made by one metric run."""

    def __init__(self):
        self.evaluations = self.explanations = self.calls = 0

    def as_kwargs(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "explanations": self.explanations, "calls": self.calls}


def scores_of(handle, target, xs: np.ndarray, counter: Counter | None = None) -> np.ndarray:
    """One forward of ``xs`` (already a chunk) and the target's score per row."""
    if counter is not None:
        counter.evaluations += len(xs)
        counter.calls += 1
    if target.framework_fn is not None:  # Custom: only the backend can evaluate it
        return np.asarray(handle.vjp(xs, target, input_grad=False).scores, dtype=np.float64)
    return np.asarray(target.scores(handle.forward(xs)), dtype=np.float64)


def score_rows(handle, target, n_rows: int, make: RowMaker, sample_of: np.ndarray, settings: Settings,
               counter: Counter, label: str) -> np.ndarray:
    """Scores of ``n_rows`` perturbed rows, each against its own sample's resolved target."""
    out = np.empty(n_rows, dtype=np.float64)
    progress = Progress(label, n_rows, settings)
    with handle.session():
        for lo in range(0, n_rows, settings.chunk_size):
            hi = min(n_rows, lo + settings.chunk_size)
            out[lo:hi] = scores_of(handle, target.take(sample_of[lo:hi]), make(lo, hi), counter)
            progress.advance(hi - lo)
    return out


def score_with_clean(handle, target, x: np.ndarray, n_rows: int, make: RowMaker, sample_of: np.ndarray,
                     settings: Settings, counter: Counter, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(clean scores (N,), perturbed scores (n_rows,)): the N clean rows lead the same row stream, so
    they share model calls with the perturbed rows instead of costing a call of their own."""
    n = len(x)

    def both(lo, hi):
        parts = []
        if lo < n:
            parts.append(x[lo:min(hi, n)])
        if hi > n:
            parts.append(make(max(lo, n) - n, hi - n))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    scores = score_rows(handle, target, n + n_rows, both, np.concatenate([np.arange(n), sample_of]), settings,
                        counter, label)
    return scores[:n], scores[n:]


def explain_rows(explainer, target, n_rows: int, make: RowMaker, sample_of: np.ndarray,
                 settings: Settings, counter: Counter, label: str) -> np.ndarray:
    """Attributions of ``n_rows`` rows, explained in chunks against each row's sample target."""
    parts = []
    progress = Progress(label, n_rows, settings)
    for lo in range(0, n_rows, settings.chunk_size):
        hi = min(n_rows, lo + settings.chunk_size)
        parts.append(np.asarray(explainer(make(lo, hi), target.take(sample_of[lo:hi])), dtype=np.float64))
        counter.explanations += hi - lo
        counter.calls += 1
        progress.advance(hi - lo)
    return np.concatenate(parts) if parts else np.empty((0,))


def probability(target):
    """Petsiuk et al. score deletion/insertion curves on class probabilities, not logits."""
    if isinstance(target, Class) and target.score == "logit":
        return replace(target, score="probability")
    return target


def need(what: str, value, metric: str, hint: str):
    if value is None:
        raise UsageError(f"metric '{metric}' needs {what}", hint=hint)
    return value


# ---- map shapes ---------------------------------------------------------------------------------------
def spatial_axes(x: np.ndarray, channel_axis: int) -> tuple[int, int]:
    """The (H, W) axes of an image batch."""
    return (2, 3) if channel_axis % x.ndim == 1 else (1, 2)


def spatial(a: np.ndarray, x: np.ndarray, channel_axis: int) -> np.ndarray:
    """(N, H, W) map: CAM maps as they are; input-shaped maps reduced by summing |a| over channels."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == x.ndim:
        return np.abs(a).sum(axis=channel_axis % x.ndim)
    if a.ndim == x.ndim - 1:
        return a
    raise UsageError(f"attribution of shape {a.shape} does not fit an input of shape {x.shape}",
                     hint="pass values shaped like the input or like its spatial dims")


def per_feature(a: np.ndarray, x: np.ndarray, channel_axis: int) -> np.ndarray:
    """Input-shaped map: spatial (CAM) maps are shared by every channel of their pixel."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape == x.shape:
        return a
    if a.ndim == x.ndim - 1:
        return np.broadcast_to(np.expand_dims(a, channel_axis % x.ndim), x.shape)
    raise UsageError(f"attribution of shape {a.shape} does not fit an input of shape {x.shape}",
                     hint="pass values shaped like the input or like its spatial dims")


def pixel_mask(m: np.ndarray, x: np.ndarray, channel_axis: int) -> np.ndarray:
    """Broadcast a (N, H, W) pixel selection to the input's shape."""
    return np.broadcast_to(np.expand_dims(m, channel_axis % x.ndim), x.shape)

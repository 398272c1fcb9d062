"""Shared machinery: batched, chunk-bounded scoring and re-explaining of perturbed rows, and map shapes.

Metrics describe their perturbed inputs as *rows*: ``make(lo, hi)`` builds rows ``lo..hi-1`` and
``sample_of[r]`` names the original sample of row ``r``. Rows are built a chunk at a time, so memory
stays bounded by ``chunk_size`` rows whatever the number of steps or runs, and chunks cross sample
boundaries, so each model call is as large as allowed (the cheapest way to reach the call floor).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import _batching
from .._batching import Progress, RowMaker, iter_chunks
from ..errors import UsageError
from ..targets import Class
from .base import Settings


class Counter:
    """Model evaluations (rows), re-explanations (rows) and batched calls made by one metric run."""

    def __init__(self):
        self.evaluations = self.explanations = self.calls = 0

    def as_kwargs(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "explanations": self.explanations, "calls": self.calls}


def _progress(label: str, total: int, settings: Settings) -> Progress:
    return Progress(label, total, show=settings.progress, long_run=settings.long_run)


def score_rows(handle, target, n_rows: int, make: RowMaker, sample_of: np.ndarray, settings: Settings,
               counter: Counter, label: str) -> np.ndarray:
    """Scores of ``n_rows`` perturbed rows, each against its own sample's resolved target."""
    def counted(lo, hi):
        counter.evaluations += hi - lo
        counter.calls += 1
        return make(lo, hi)

    with handle.session():
        return _batching.score_rows(handle, target, n_rows, counted, sample_of, settings.chunk_size,
                                    progress=_progress(label, n_rows, settings))


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
    progress = _progress(label, n_rows, settings)
    for sl in iter_chunks(n_rows, settings.chunk_size):
        parts.append(np.asarray(explainer(make(sl.start, sl.stop), target.take(sample_of[sl])), dtype=np.float64))
        counter.explanations += sl.stop - sl.start
        counter.calls += 1
        progress.advance(sl.stop - sl.start)
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

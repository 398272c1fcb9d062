"""Rows in chunks: the chunk iterator, the stderr progress line, and target scores of a batch and of
rows built a chunk at a time. Shared by the black-box methods, the metrics and the readiness probes,
so memory stays bounded by the chunk size wherever many perturbed copies are scored.

``handle`` is a ``ModelHandle`` (anything with ``forward`` and ``vjp``); nothing here imports a framework.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

RowMaker = Callable[[int, int], np.ndarray]  # make(lo, hi) -> rows lo..hi-1


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in chunks of at most ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Progress:
    """A single self-overwriting stderr line ``label: done/total[ unit]``, ended when done.

    ``show``: True or False, or None for only when ``total`` reaches ``long_run`` and stderr is a
    terminal. ``interval``: seconds between refreshes (0: at every ``advance``; the last always shows).
    """

    def __init__(self, label: str, total: int, *, show: bool | None = None, long_run: int = 0, unit: str = "",
                 interval: float = 0.0):
        self.label, self.total, self.done = label, total, 0
        self.on = total > 0 and bool(show if show is not None else total >= long_run and sys.stderr.isatty())
        self.unit, self.interval, self._last = f" {unit}" if unit else "", interval, 0.0

    def advance(self, k: int) -> None:
        self.done += k
        if not self.on:
            return
        finished = self.done >= self.total
        if self.interval:
            now = time.monotonic()
            if now - self._last <= self.interval and not finished:
                return
            self._last = now
        print(f"\r{self.label}: {self.done}/{self.total}{self.unit}", end="\n" if finished else "",
              file=sys.stderr, flush=True)


def scores_of(handle, x, target, *, dtype=np.float64) -> np.ndarray:
    """The target's score per row of ``x``: one forward (through the backend's ``vjp`` for a
    framework-level target). ``dtype=None`` keeps the model's own precision."""
    if target.framework_fn is not None:  # Custom: only the backend can evaluate it
        return np.asarray(handle.vjp(x, target, input_grad=False).scores, dtype=dtype)
    return np.asarray(target.scores(handle.forward(x)), dtype=dtype)


def score_rows(handle, target, n_rows: int, make: RowMaker, sample_of: np.ndarray, chunk_size: int, *,
               progress: Progress | None = None, dtype=np.float64) -> np.ndarray:
    """Scores of ``n_rows`` rows built ``chunk_size`` at a time by ``make(lo, hi)``, each row against
    the resolved target of its own sample (``sample_of[r]``)."""
    parts = []
    for sl in iter_chunks(n_rows, chunk_size):
        parts.append(scores_of(handle, make(sl.start, sl.stop), target.take(sample_of[sl]), dtype=dtype))
        if progress is not None:
            progress.advance(sl.stop - sl.start)
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

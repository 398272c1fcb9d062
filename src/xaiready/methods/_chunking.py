"""Chunked passes over replicated samples (integration paths, noisy copies) with bounded memory.

A method that needs many passes per sample (IG's path points, SmoothGrad's noisy copies) lays them out
as ``rows``: row ``r`` belongs to sample ``r // per_sample`` (sample-major). Rows are built chunk by chunk
and their results are reduced into per-sample accumulators at once, so peak memory depends on the
chunk size only, never on ``n_steps`` or the sample count. Rows, gradients and accumulators live in
the backend's arrays (``handle.ops``: tensors on the model's device for PyTorch), so a chunk makes no
copy between host and device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device as array_device

from ..errors import UsageError

# The automatic chunk: the caller's own batch (one ordinary pass of it is known to fit, since the
# target was resolved on it), raised to MIN_ROWS for tiny batches so per-pass overhead is amortized,
# and capped so a chunk's inputs stay under ELEMENT_BUDGET values. On CPU, larger chunks are not
# faster per image (measured: Captum's internal_batch_size 50 is 1.3x slower than 8 on resnet18), so
# there is no reason to go higher; on a GPU, 32 rows were fastest in bench/bench_explain.py.
MIN_ROWS = 8
MIN_ROWS_ACCELERATOR = 32
ELEMENT_BUDGET = 1 << 23  # 32 MiB of float32 inputs per chunk
ELEMENT_BUDGET_ACCELERATOR = 1 << 24


def auto_batch_size(x: np.ndarray, batch_size: int | None = None, *, handle=None) -> int:
    """Rows per pass: ``batch_size`` if given, else the automatic default described above.

    ``handle`` (optional) lets a backend that runs on an accelerator (``backend.on_accelerator``) get
    larger chunks.
    """
    if batch_size is not None:
        if int(batch_size) < 1:
            raise UsageError(f"batch size {batch_size} must be at least 1", hint="e.g. --batch-size 8")
        return int(batch_size)
    fast = bool(getattr(getattr(handle, "backend", None), "on_accelerator", False))
    rows, budget = (MIN_ROWS_ACCELERATOR, ELEMENT_BUDGET_ACCELERATOR) if fast else (MIN_ROWS, ELEMENT_BUDGET)
    per_row = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    return int(max(1, min(max(x.shape[0], rows), budget // per_row)))


@dataclass(frozen=True)
class Chunk:
    """Rows ``start..stop-1`` of one pass: each row's sample and replica as index arrays where the
    model runs (``ops.arange``: no copy from the host), and the bounds as plain ints for slicing."""

    start: int
    stop: int
    index: Any  # start..stop-1
    sample: Any  # index // per_sample
    k: Any  # index % per_sample


def run_rows(ops, n_samples: int, per_sample: int, size: int,
             make_rows: Callable[[Chunk], Any], attribute: Callable[[Any, Any], Any],
             reduce: Callable[[Chunk, Any], None]) -> None:
    """Drive the chunks: build each chunk's inputs, attribute them, reduce into the accumulators.

    ``make_rows(chunk)`` builds the chunk's inputs; ``attribute(rows_x, sample)`` returns one
    attribution per row; ``reduce(chunk, values)`` folds them into the caller's accumulators. All
    arrays stay in ``ops``'s arrays (on the model's device).
    """
    for start in range(0, n_samples * per_sample, size):
        stop = min(n_samples * per_sample, start + size)
        index = ops.arange(start, stop)
        chunk = Chunk(start, stop, index, index // per_sample, index % per_sample)
        reduce(chunk, attribute(make_rows(chunk), chunk.sample))


def accumulator(xp, x):
    """float64 zeros shaped like ``x``, where ``x`` is. Sums stay exact enough for VarGrad's
    E[a^2] - E[a]^2 and for half-precision rows; adding into them costs a fraction of a model pass."""
    return xp.zeros(x.shape, dtype=xp.float64, device=array_device(x))


def accumulate(xp, total, chunk: Chunk, per_sample: int, values, weights=None) -> None:
    """``total[i] += sum over the chunk's rows r of sample i of weights[r] * values[r]`` (in place).

    Rows are sample-major, so each sample's rows in a chunk are one slice whose bounds follow from the
    chunk's ints: no index is read back from the device, and there is one sum per sample, not per row.
    """
    values = xp.astype(values, total.dtype)
    if weights is not None:
        values = values * xp.reshape(xp.astype(weights, total.dtype), (-1,) + (1,) * (values.ndim - 1))
    for i in range(chunk.start // per_sample, (chunk.stop - 1) // per_sample + 1):
        lo = max(chunk.start, i * per_sample) - chunk.start
        hi = min(chunk.stop, (i + 1) * per_sample) - chunk.start
        total[i, ...] += xp.sum(values[lo:hi, ...], axis=0)

"""Chunked passes over replicated samples (integration paths, noisy copies) with bounded memory.

A method that needs many passes per sample (IG's path points, SmoothGrad's noisy copies) lays them out
as ``rows``: row ``r`` belongs to sample ``r // per_sample`` (sample-major). Rows are built chunk by chunk
and their results are reduced into per-sample accumulators at once, so peak memory depends on the
chunk size only, never on ``n_steps`` or the sample count. Rows, gradients and accumulators live in
the backend's arrays (``handle.ops``: tensors on the model's device for PyTorch), so a chunk makes no
copy between host and device.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device as array_device

from ..errors import DeviceMemoryError, UsageError

# The automatic chunk: the caller's own batch (one ordinary pass of it is known to fit, since the
# target was resolved on it), raised to MIN_ROWS rows and to TARGET_ELEMENTS input values for small
# batches so per-pass overhead is amortized (measured on resnet18, CPU: Captum's fastest
# internal_batch_size is 8 rows at 224 x 224 and 32 at 112 x 112, about 1.2M input values either
# way), and capped twice: a chunk's inputs stay under ELEMENT_BUDGET values, and what its forward keeps for
# the backward (measured per row by the backend) stays under MEMORY_SHARE of the device's free
# memory. On CPU, larger chunks are not faster per image (measured: Captum's internal_batch_size 50 is
# 1.3x slower than 8 on resnet18), so there is no reason to go higher; on a GPU, 32 rows were fastest
# in bench/bench_explain.py. A chunk that still runs out of device memory is retried at half the rows.
MIN_ROWS = 8
MIN_ROWS_ACCELERATOR = 32
TARGET_ELEMENTS = 1 << 20
TARGET_ELEMENTS_ACCELERATOR = 1 << 22
ELEMENT_BUDGET = 1 << 23  # 32 MiB of float32 inputs per chunk
ELEMENT_BUDGET_ACCELERATOR = 1 << 24
MEMORY_SHARE = 0.5
_ROW_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # backend -> {row shape: bytes}


def auto_batch_size(x, batch_size: int | None = None, *, handle=None) -> int:
    """Rows per pass: ``batch_size`` if given, else the automatic default described above.

    ``handle`` (optional) lets the backend's measured memory per row (``activation_bytes``,
    ``free_memory``) bound the chunk, and a backend on an accelerator (``on_accelerator``) get larger ones.
    """
    if batch_size is not None:
        if int(batch_size) < 1:
            raise UsageError(f"batch size {batch_size} must be at least 1", hint="e.g. --batch-size 8")
        return int(batch_size)
    backend = getattr(handle, "backend", None)
    fast = bool(getattr(backend, "on_accelerator", False))
    rows, target, budget = ((MIN_ROWS_ACCELERATOR, TARGET_ELEMENTS_ACCELERATOR, ELEMENT_BUDGET_ACCELERATOR) if fast
                            else (MIN_ROWS, TARGET_ELEMENTS, ELEMENT_BUDGET))
    per_row = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    size = int(max(1, min(max(x.shape[0], rows, target // per_row), budget // per_row)))
    row_bytes = _row_bytes(backend, tuple(x.shape[1:]))
    if row_bytes:
        size = max(1, min(size, int(MEMORY_SHARE * backend.free_memory()) // row_bytes))
    return size


def _row_bytes(backend, row_shape: tuple[int, ...]) -> int | None:
    """The backend's measured bytes per row for inputs of ``row_shape`` (cached), or None."""
    if backend is None or not hasattr(backend, "activation_bytes"):
        return None
    known = _ROW_BYTES.setdefault(backend, {})
    if row_shape not in known:  # a zero row: what a pass keeps depends on the shape, not the values
        known[row_shape] = backend.activation_bytes(np.zeros((1, *row_shape), dtype=np.float32))
    return known[row_shape]


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
    arrays stay in ``ops``'s arrays (on the model's device). A chunk that runs out of device memory is
    retried with half the rows.
    """
    start, n_rows = 0, n_samples * per_sample
    while start < n_rows:
        stop = min(n_rows, start + size)
        index = ops.arange(start, stop)
        chunk = Chunk(start, stop, index, index // per_sample, index % per_sample)
        try:
            values = attribute(make_rows(chunk), chunk.sample)
        except DeviceMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)  # nothing of this chunk was reduced yet: retry it smaller
            continue
        reduce(chunk, values)
        start = stop


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

"""Chunked passes over replicated samples (integration paths, noisy copies) with bounded memory.

A method that needs many passes per sample (IG's path points, SmoothGrad's noisy copies) lays them out
as ``rows``: row ``r`` belongs to sample ``r // per_sample`` (sample-major). Rows are built chunk by chunk
and their results are reduced into per-sample accumulators at once, so peak memory depends on the
chunk size only, never on ``n_steps`` or the sample count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

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


def row_chunks(n_rows: int, size: int) -> Iterator[np.ndarray]:
    """Row indices in consecutive chunks of at most ``size``."""
    for start in range(0, n_rows, size):
        yield np.arange(start, min(n_rows, start + size))


def accumulate(total: np.ndarray, sample_of_row: np.ndarray, weights: np.ndarray, values: np.ndarray) -> None:
    """``total[i] += sum over rows r of sample i of weights[r] * values[r]`` (in place).

    A plain loop over the chunk's rows with element-wise ufuncs: no BLAS call, whose worker threads
    would otherwise keep spinning and compete with the framework's own threads between passes.
    """
    for r, (i, w) in enumerate(zip(sample_of_row.tolist(), np.broadcast_to(weights, len(sample_of_row)).tolist(),
                                   strict=True)):
        if w == 1.0:
            total[i] += values[r]
        else:
            total[i] += values[r] * np.asarray(w, dtype=values.dtype)


def run_rows(n_samples: int, per_sample: int, size: int,
             make_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
             attribute: Callable[[np.ndarray, np.ndarray], np.ndarray],
             reduce: Callable[[np.ndarray, np.ndarray, np.ndarray], None]) -> None:
    """Drive the chunks: build each chunk's inputs, attribute them, reduce into the accumulators.

    ``make_rows(sample, k)`` builds inputs for rows of sample ``sample`` and replica ``k``;
    ``attribute(rows_x, sample)`` returns one attribution per row; ``reduce(sample, k, values)`` folds
    them into the caller's accumulators.
    """
    for rows in row_chunks(n_samples * per_sample, size):
        sample, k = rows // per_sample, rows % per_sample
        values = attribute(make_rows(sample, k), sample)
        reduce(sample, k, values)

"""Where a backend keeps arrays while a method runs, and the few operations methods need on them.

Methods run their chunk loops on ``handle.ops``: PyTorch keeps every row, seed, gradient and
accumulator as a tensor on the model's device (``TorchOps`` in ``backends.torch``), so a loop makes no
copy between host and device; backends that convert per call (TensorFlow, ONNX Runtime) keep NumPy
(``NumpyOps``). ``ops.xp`` is the array-API namespace of those arrays (array-api-compat), for
arithmetic that reads the same on both; the methods below are what the standard lacks or leaves to
the library: moving in and out, seeded noise. The public API stays NumPy in, NumPy out: a method
moves its input in once and its result out once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from array_api_compat import numpy as np_xp


class NumpyOps:
    """Arrays stay NumPy; the backend converts on each call."""

    xp = np_xp
    native = False

    def asarray(self, x, dtype: str | None = None) -> np.ndarray:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def arange(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop, dtype=np.int64)

    def normal(self, shape: tuple[int, ...], keys: Sequence[Sequence[int]], dtype=np.float32) -> np.ndarray:
        """(len(keys),) + shape standard normal draws; row r from a generator seeded by ``keys[r]``, so a
        row's noise depends on its key alone (never on the chunk it falls in)."""
        out = np.empty((len(keys), *shape), dtype=np.float32)
        for r, key in enumerate(keys):
            np.random.default_rng(list(key)).standard_normal(out=out[r], dtype=np.float32)
        return out.astype(dtype, copy=False)


NUMPY_OPS = NumpyOps()


def seed_of(key: Sequence[int]) -> int:
    """A 63-bit seed mixing every entry of ``key`` (NumPy's SeedSequence), for framework generators."""
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)

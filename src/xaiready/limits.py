"""Resource limits, checked from headers and directories *before* anything is allocated.

Every limit is explicit and configurable: from Python with ``limits.override(...)`` (a context
manager) or ``limits.configure(...)``, from the CLI with the ``--max-*`` options. ``--trust`` never
changes them. Defaults and why:

* ``max_unpacked_bytes`` = 8 GiB: the declared uncompressed size of all members of a zip archive
  (torch.save, TorchScript, .keras). Real vision models stay far below (ViT-H is 2.5 GB).
* ``max_ratio`` = 100: compression ratio of a member larger than ``ratio_floor_bytes`` (1 MiB).
  Weights barely compress (torch stores them uncompressed); a 100x member is a bomb, not a model.
  Small members (configs) may compress well and are exempt below the floor.
* ``max_members`` = 100_000 archive members.
* ``max_image_pixels`` = 50 M pixels: refused from the image header, well below Pillow's own
  warning (89 M) and error (179 M) thresholds; 50 M is 7000 x 7000, larger than any model input.
* ``max_input_bytes`` = 1 GiB for one sample of a declared input spec (ONNX / Keras input shapes):
  float32 1 x 3 x 16384 x 16384 is 3 GiB and no vision model takes it. An input xaiready builds
  itself (a random input of a shape guessed from the model, with symbolic dims filled by defaults,
  or given with ``--input-shape``) is allocated at once, so it is held to the same limit as a whole,
  batch included (``check_built_input``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from .errors import ResourceError, UsageError

GiB = 1024 ** 3
MiB = 1024 ** 2


@dataclass(frozen=True)
class Limits:
    max_unpacked_bytes: int = 8 * GiB
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1 * MiB
    max_members: int = 100_000
    max_image_pixels: int = 50_000_000
    max_input_bytes: int = 1 * GiB


_current = Limits()


def current() -> Limits:
    return _current


def configure(**changes) -> Limits:
    """Set limits for the rest of the process; unknown names are a usage error."""
    global _current
    known = {f.name for f in fields(Limits)}
    unknown = set(changes) - known
    if unknown:
        raise UsageError(f"unknown limit {sorted(unknown)[0]}", hint=f"limits are {', '.join(sorted(known))}")
    _current = replace(_current, **{k: v for k, v in changes.items() if v is not None})
    return _current


@contextmanager
def override(**changes):
    global _current
    saved = _current
    try:
        yield configure(**changes)
    finally:
        _current = saved


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f} MiB" if n >= 10 * MiB else f"{n / MiB:.2f} MiB"


def check_declared_input(shape, itemsize: int = 4, *, path: str | None = None, fmt: str | None = None) -> None:
    """Refuse an input spec whose single sample would exceed ``max_input_bytes``."""
    dims = [int(d) for d in shape[1:] if d is not None and int(d) > 0] if len(shape) > 1 else []
    size = itemsize * math.prod(dims)  # Python ints: no overflow, however many dims
    limit = _current.max_input_bytes
    if size > limit:
        raise ResourceError(f"the declared input {tuple(shape)} needs {size} bytes ({_mib(size)}) per sample, "
                            f"over the limit of {limit} bytes ({_mib(limit)})", path=path, format=fmt,
                            hint="raise it with --max-input-mb if this is intended")


def check_built_input(shape, itemsize: int = 4, *, what: str = "the input", path: str | None = None,
                      fmt: str | None = None) -> None:
    """Refuse to build an array of ``shape`` (batch included) larger than ``max_input_bytes``.

    Called before xaiready allocates an input itself: a random input of a guessed shape or of
    ``--input-shape``. The whole array counts, since it is allocated at once."""
    dims = tuple(int(d) for d in shape)
    size = itemsize * math.prod(dims)
    limit = _current.max_input_bytes
    if size > limit:
        raise ResourceError(f"{what} {dims} needs {size} bytes ({_mib(size)}), over the input limit of {limit} "
                            f"bytes ({_mib(limit)})", path=path, format=fmt,
                            hint="use a smaller shape, or raise the limit with --max-input-mb")


def available_memory() -> int:
    """The host's available memory in bytes (Linux MemAvailable; else free pages; 4 GiB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30

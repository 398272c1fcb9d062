"""``--device cpu|cuda|cuda:N|auto``: the one spelling every command and ``xr.load(device=)`` accept.

Each backend maps it onto its framework (``to_device``): PyTorch modules (eager, TorchScript and
converted ONNX models) move to it, ONNX Runtime switches to its CUDA provider, TensorFlow places its
ops on the visible GPU. ``auto`` takes the first GPU the framework sees, else the CPU; naming a GPU
that is not there is a usage error, never a silent fall-back.
"""

from __future__ import annotations

import re

from .errors import UsageError

_SPEC = re.compile(r"^(cpu|auto|cuda)(?::(\d+))?$")


def parse_device(spec: str) -> tuple[str, int | None]:
    """(kind, index) of a device spec: ("cuda", 1) for ``cuda:1``, ("cpu", None) for ``cpu``."""
    match = _SPEC.match(str(spec).strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"unknown device '{spec}'", hint="use cpu, cuda, cuda:N or auto")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def no_gpu(spec: str, framework: str, seen: int) -> UsageError:
    """The error for a GPU that the framework does not see."""
    what = "no GPU" if seen == 0 else f"only {seen} GPU(s)"
    return UsageError(f"--device {spec}: {framework} sees {what}", hint="use --device cpu, or auto to take a GPU "
                      "when there is one")


def gpu_index(spec: str, framework: str, gpus: int | None) -> int | None:
    """The GPU ``spec`` asks for, or None for the CPU, given the GPUs ``framework`` sees (``gpus``;
    None where it has GPU support but does not count devices). ``auto`` takes GPU 0 when there is one."""
    kind, index = parse_device(spec)
    if kind == "cpu" or (kind == "auto" and gpus == 0):
        return None
    index = index or 0
    if gpus == 0 or (gpus is not None and index >= gpus):
        raise no_gpu(spec, framework, gpus or 0)
    return index

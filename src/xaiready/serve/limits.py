"""The limits a job runs under, applied inside its own process: address space (setrlimit) and CPU time.

The wall-clock limit is enforced from outside, by the worker that started the job (worker.py): a job
that sleeps or waits on a lock uses no CPU time.
"""

from __future__ import annotations

import resource

MiB = 1024 ** 2


def current_address_space() -> int:
    """This process's virtual size in bytes (VmSize): what it mapped before the job started."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def for_job(timeout_s: float, memory_mb: int, params: dict) -> tuple[float, int]:
    """The job's (time, memory) limits: the server's, or tighter ones the job asked for, never looser.
    A server memory limit of 0 means none (CUDA reserves far more address space than it uses)."""
    timeout = min(float(timeout_s), float(params.get("timeout_s") or timeout_s))
    asked = int(params.get("memory_mb") or 0)
    memory = int(memory_mb)
    if asked > 0:
        memory = asked if memory <= 0 else min(memory, asked)
    return timeout, memory


def apply(memory_mb: int, timeout_s: float) -> None:
    """Let the job map ``memory_mb`` more than the process already holds (a forked worker has its
    frameworks imported already), and no more CPU seconds than its wall-clock limit allows."""
    if memory_mb > 0:
        limit = current_address_space() + int(memory_mb) * MiB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cpu = int(timeout_s) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or a framework's allocator failing because the limit refused its mapping."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("can't allocate memory", "cannot allocate memory", "out of memory",
                                   "bad_alloc", "std::bad_alloc", "failed to allocate"))

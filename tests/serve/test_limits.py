"""A job's limits: the server's, or tighter ones the job asks for, never looser."""

import pytest

from xaiready.serve.limits import for_job, is_out_of_memory


@pytest.mark.parametrize("server, asked, expected", [
    ((600, 8192), {}, (600, 8192)),
    ((600, 8192), {"timeout_s": 3, "memory_mb": 256}, (3, 256)),
    ((600, 8192), {"timeout_s": 6000, "memory_mb": 99999}, (600, 8192)),
    ((600, 0), {"memory_mb": 256}, (600, 256)),
    ((600, 0), {}, (600, 0)),
], ids=["server", "tighter", "looser-refused", "no-server-memory-limit", "none"])
def test_limits_for_a_job(server, asked, expected):
    assert for_job(*server, asked) == expected


def test_allocator_failures_count_as_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))

"""Import TensorFlow and Keras for a TF model, without their C++ chatter on stderr.

TensorFlow's C++ runtime prints log lines while it loads (oneDNN, CPU features, absl) and when Grappler
runs (freezing a graph), before or beside any logging setting, and the CLI promises one stderr line per
error. ``quiet_stderr`` points the process's stderr descriptor at /dev/null for the duration of such a
step only and restores it in ``finally``; Python exceptions still propagate as usual.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from types import ModuleType

from .._lazy import import_optional


@contextmanager
def quiet_stderr():
    saved = None
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stderr descriptor (e.g. some notebooks)
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow() -> tuple[ModuleType, ModuleType]:
    """(tensorflow, keras), imported once."""
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"], sys.modules["keras"]
    _torch_compiler_first()
    with quiet_stderr():
        tf = import_optional("tensorflow")
        keras = import_optional("keras")
    return tf, keras


def _torch_compiler_first() -> None:
    """Import torch's compiler stack (torch._dynamo, which loads triton) before TensorFlow.

    Measured with torch 2.14 and tensorflow-cpu 2.21: importing triton after TensorFlow segfaults the
    process (torchvision imports it on first use), while the other order works. Only done where torch
    is installed; a TensorFlow-only environment pays nothing.
    """
    import importlib.util

    if "torch._dynamo" in sys.modules or importlib.util.find_spec("torch") is None:
        return
    with quiet_stderr():
        import torch._dynamo  # noqa: F401

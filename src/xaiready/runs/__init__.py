"""Runs over datasets: batched, resumable runs written to a run directory, and their HTML report.

``run_dataset(model, inputs, out=..., methods=[...], metrics=[...], progress=callback)`` is the Python
entry point of ``xaiready run`` (see ``runner.run_dataset``); it is imported on first use.
"""

from __future__ import annotations

__all__ = ["run_dataset"]


def __getattr__(name: str):
    if name == "run_dataset":
        from .runner import run_dataset

        return run_dataset
    raise AttributeError(f"module 'xaiready.runs' has no attribute {name!r}")

"""Plain JSON-ready data from values holding NumPy scalars and arrays: one converter for the method
provenance of an Attribution (arrays summarised) and for the readiness report's JSON (arrays in full).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _name(value: Any) -> str:
    return getattr(value, "name", None) or type(value).__name__


def jsonable(value: Any, *, arrays: str = "shape", other: Callable[[Any], Any] = _name) -> Any:
    """``value`` as JSON-ready Python data: NumPy scalars become Python numbers, dicts (keys as str),
    lists and tuples are converted item by item, arrays become ``"array(2, 3)"`` (``arrays="shape"``)
    or their values (``arrays="list"``), and anything else ``other(value)``: by default its ``name``,
    else its type's name."""
    if isinstance(value, np.ndarray):
        return value.tolist() if arrays == "list" else f"array{tuple(value.shape)}"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v, arrays=arrays, other=other) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, arrays=arrays, other=other) for v in value]
    return other(value)


def json_default(value: Any) -> Any:
    """``json.dumps(default=json_default)``: NumPy scalars and arrays by value, other objects as str."""
    return jsonable(value, arrays="list", other=str)

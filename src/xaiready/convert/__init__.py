"""Conversion of inference-only models into differentiable ones, accepted only when verified.

``convert_onnx_handle`` turns an ONNX Runtime handle into a PyTorch handle whose ``reference`` is the
ONNX Runtime one, so readiness checks equivalence on the user's own input as well. Before that, the
conversion must already match ONNX Runtime on random inputs and give correct input gradients;
otherwise the ONNX Runtime handle comes back with a failed ``conversion`` check naming the reason.
"""

from __future__ import annotations

from .handle import convert_onnx_handle

__all__ = ["convert_onnx_handle"]

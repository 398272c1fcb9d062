"""Where a conversion goes wrong: the first node whose output differs from ONNX Runtime's.

ONNX Runtime runs the converted (prepared) graph with every node output made a graph output; the
converted module runs under a ``torch.fx.Interpreter`` that records each node's outputs (onnx2torch
names every module's ONNX outputs in its ``onnx_mapping``). Both are compared in graph order.
"""

from __future__ import annotations

import numpy as np

RTOL, ATOL = 1e-4, 1e-5


def first_divergence(model, module, x: np.ndarray) -> str | None:
    """'node NAME (Op) output 'T' differs ...' for the first diverging node on ``x``, or None when every
    compared tensor agrees (or nothing could be compared)."""
    import torch

    theirs = _onnxruntime_values(model, x)
    if theirs is None:
        return None
    ours, failed = _torch_values(module, torch.from_numpy(np.ascontiguousarray(x)))
    producers = {o: n for n in model.graph.node for o in n.output if o}
    def label(name):
        node = producers.get(name)
        return f"node '{node.name or name}' ({node.op_type})" if node is not None else f"tensor '{name}'"

    for name, value in ours:
        ref = theirs.get(name)
        if ref is None:
            continue
        if value.shape != ref.shape and value.size != ref.size:  # (a scalar kept as [1] is no divergence)
            return (f"first divergence at {label(name)}: its output '{name}' has shape {tuple(value.shape)}, "
                    f"ONNX Runtime's {tuple(ref.shape)}")
        if not np.issubdtype(ref.dtype, np.floating) or not np.issubdtype(value.dtype, np.floating):
            if value.size == ref.size and not np.array_equal(value.reshape(-1), ref.reshape(-1)):
                return f"first divergence at {label(name)}: its output '{name}' (integer) differs"
            continue
        diff = float(np.max(np.abs(value.reshape(ref.shape).astype(np.float64) - ref))) if ref.size else 0.0
        tol = ATOL + RTOL * float(np.max(np.abs(ref))) if ref.size else ATOL
        if not diff <= tol:
            return (f"first divergence at {label(name)}: its output '{name}' differs by {diff:.3g} "
                    f"(tolerance {tol:.3g})")
    if failed is not None:  # every output before it agreed: the failing node is where it goes wrong
        mapping, error = failed
        node = producers.get(mapping[0]) if mapping else None
        label = f"node '{node.name or mapping[0]}' ({node.op_type})" if node is not None else "a node"
        return f"first divergence at {label}: it fails on inputs that agree with ONNX Runtime's ({error})"
    return None


def _onnxruntime_values(model, x: np.ndarray) -> dict[str, np.ndarray] | None:
    import onnx
    import onnxruntime as ort
    from onnx import ValueInfoProto

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in listed:
                probe.graph.output.append(ValueInfoProto(name=name))
                listed.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(probe.SerializeToString(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, {session.get_inputs()[0].name: x})
    except Exception:  # noqa: BLE001 - ORT's own errors; then there is nothing to localise with
        return None
    return {n: np.asarray(v).astype(np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating)
            else np.asarray(v) for n, v in zip(names, values, strict=True)}


def _torch_values(module, xt):
    """(ONNX tensor name, value) of every module output in execution order, and (the ONNX outputs of
    the module that raised, its error) if one did."""
    import torch
    from torch import fx

    from ..errors import first_line

    recorded: list[tuple[str, np.ndarray]] = []
    failed = None

    class Recorder(fx.Interpreter):
        def call_module(self, target, args, kwargs):
            nonlocal failed
            mapping = getattr(self.fetch_attr(target), "onnx_mapping", None)
            try:
                result = super().call_module(target, args, kwargs)
            except Exception as exc:
                failed = (tuple(mapping.outputs) if mapping is not None else (), first_line(exc)[:160])
                raise
            if mapping is not None:
                values = result if isinstance(result, (tuple, list)) else (result,)
                for name, value in zip(mapping.outputs, values, strict=False):
                    if name and isinstance(value, torch.Tensor):
                        recorded.append((name, value.detach().numpy()))
            return result

    with torch.no_grad():
        try:
            Recorder(module).run(xt)
        except Exception:  # noqa: BLE001 - the failing node is what is being looked for
            if failed is None:
                raise
    return recorded, failed


def locate(handle, x: np.ndarray) -> str | None:
    """For a handle converted from an ONNX file: the first diverging node on ``x`` (None if none is
    found). The file's graph is prepared again exactly as for the conversion, so the names match."""
    import onnx

    from .onnx_to_torch import unsupported_ops
    from .passes import prepare

    module = getattr(handle.backend, "module", None)
    if module is None or handle.source.converted_from != "onnx":
        return None
    proto = onnx.load_model(handle.source.path)  # external data: checked when the handle was loaded
    model, _, _ = prepare(proto, unsupported_ops)
    fixed = getattr(handle.backend, "fixed_batch", None)
    if fixed and x.shape[0] != fixed:
        x = np.repeat(x[:1], fixed, axis=0)
    return first_divergence(model, module, np.asarray(x, dtype=np.float32))

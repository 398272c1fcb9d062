"""ONNX Runtime backend: forward passes only.

ONNX Runtime's inference sessions compute no gradients, so this backend answers ``vjp`` with the
output and the target's scores but no input gradient, lists no capturable layers, and names itself
as the place where the gradient path ends. Readiness then reports ``inference-only`` with that reason,
and black-box methods (which need only ``forward``) still work.

Exports often fix the batch size (the legacy exporter without ``dynamic_axes``, the dynamo exporter
without ``dynamic_shapes``); any other number of samples then runs in chunks of exactly the fixed size,
the last partial chunk padded by repeating its last row and the padded rows dropped from the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, UsageError
from ..targets import Target
from .base import BreakFinding, GradResult, LayerAccess, OverrideStats

NO_GRADIENTS = "ONNX Runtime computes no gradients"

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
                "tensor(int8)": np.int8, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: its name, dtype and shape (None or a name for a dynamic axis)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    @property
    def fixed_batch(self) -> int | None:
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) and first > 0 else None

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype.removeprefix('tensor(').rstrip(')')}"


class OnnxRuntimeBackend:
    framework = "onnxruntime"
    held = None  # a multi-input graph's other inputs, fed beside the explained one (``held_inputs``)

    def __init__(self, session, *, output: str | int | None = None, layout: str | None = None):
        self.sess = session
        self.inputs = [_spec(a) for a in session.get_inputs()]
        self.outputs = [_spec(a) for a in session.get_outputs()]
        if not self.inputs:
            raise InputError("the graph has no inputs", hint="export the model with its image input")
        self.input = self.inputs[0]  # several inputs: the explained one is chosen with the held ones
        self.output_index = self._output_index(output)
        self.layout = layout or guess_layout(self.input.shape)
        self.output_choice_note = "" if len(self.outputs) == 1 or output is not None else (
            f"the graph has {len(self.outputs)} outputs; explaining the first, '{self.outputs[0].name}' "
            "(choose with --output)")

    def _output_index(self, output: str | int | None) -> int:
        names = [s.name for s in self.outputs]
        if output is None:
            return 0
        if isinstance(output, int) or (isinstance(output, str) and output.isdigit() and output not in names):
            index = int(output)
            if not 0 <= index < len(names):
                raise UsageError(f"the graph has {len(names)} outputs; '{output}' is not one",
                                 hint=f"use --output 0..{len(names) - 1} or a name: {', '.join(names)}")
            return index
        if output not in names:
            raise UsageError(f"the graph has no output '{output}'", hint=f"outputs are {', '.join(names)}")
        return names.index(output)

    # ---- protocol ------------------------------------------------------------------------------------
    def session(self):
        return nullcontext(self)

    def to_device(self, spec: str) -> str:
        """ONNX Runtime's CUDA provider for a GPU (where this onnxruntime build has it), else the CPU's."""
        import onnxruntime as ort

        from ..devices import gpu_index

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        # ONNX Runtime does not count devices; a device_id it lacks is reported by the provider itself.
        index = gpu_index(spec, "ONNX Runtime (this build has no CUDA provider)", None if has_cuda else 0)
        if index is None:
            self.sess.set_providers(["CPUExecutionProvider"])
            return "cpu"
        self.sess.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], [{"device_id": index}, {}])
        return f"cuda:{index}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=_NUMPY_TYPES.get(self.input.dtype, np.float32))
        fixed = self.input.fixed_batch
        if fixed is None or x.ndim == 0 or x.shape[0] in (0, fixed):
            return self._run(x)
        parts = []
        for start, stop in batch_chunks(x.shape[0], fixed):
            chunk, rows = x[start:stop], stop - start
            if rows < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - rows, axis=0)])
            out = self._run(chunk)
            parts.append(out[:rows] if rows < fixed and out.ndim and out.shape[0] == fixed else out)
        return np.concatenate(parts)

    def _run(self, x: np.ndarray) -> np.ndarray:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

        name = self.outputs[self.output_index].name
        if self.held is None and len(self.inputs) > 1:
            raise UsageError(f"the graph has {len(self.inputs)} inputs ({', '.join(s.name for s in self.inputs)})",
                             hint="give each by name: --input NAME=FILE, or a dict {name: array}")
        feeds = {} if self.held is None else self.held.onnx_feeds(x.shape[0])
        try:
            return self.sess.run([name], {self.input.name: x, **feeds})[0]
        except (InvalidArgument, Fail, RuntimeException) as exc:
            first = " ".join(str(exc).split())[:240] or type(exc).__name__  # ORT puts the indices on line 2
            raise InputError(f"ONNX Runtime could not run on an input of shape {tuple(x.shape)}: {first}",
                             hint=f"the graph expects {self.input.describe()}; check --input-shape / --layout"
                             ) from exc

    def output_names(self, x: np.ndarray) -> list[str]:
        return [s.name for s in self.outputs]

    def vjp(self, x: np.ndarray, target: Target, *, layers: Sequence[str] = (),
            input_grad: bool = True) -> GradResult:
        if layers:
            raise UsageError(f"layer '{layers[0]}' cannot be captured: {NO_GRADIENTS} and exposes no "
                             "layers", hint="convert the model (the default without --no-convert)")
        out = self.forward(x)
        if not target.resolved:
            target = target.resolve(out, channel_axis=1 if self.layout == "NCHW" else -1)
        if target.framework_fn is not None:
            scores = np.asarray(target.framework_fn(out), dtype=np.float64).reshape(-1)
        else:
            scores = target.scores(out)
        return GradResult(output=out, scores=scores, input_grad=None, score_in_graph=False, target=target)

    def layers(self) -> LayerAccess:
        return LayerAccess([], f"{NO_GRADIENTS} and runs the graph as a whole, so no layer can be "
                               "captured; convert the model to PyTorch for CAM methods")

    @contextmanager
    def relu_override(self, mode: str):
        yield OverrideStats(mode=mode, note=f"{NO_GRADIENTS}, so there is no ReLU gradient to override")

    def locate_break(self, x: np.ndarray, target: Target, status: str) -> BreakFinding | None:
        return BreakFinding(location="onnxruntime.InferenceSession", cause="non-differentiable",
                            op="InferenceSession.run",
                            detail=f"{NO_GRADIENTS}: it is an inference engine; a verified conversion to "
                                   "PyTorch gives gradients (on by default; see the conversion check)")

    def example_shape(self) -> tuple[int, ...] | None:
        return example_shape(self.input.shape, self.layout)


def batch_chunks(n: int, fixed: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of ``n`` rows for a graph whose batch is fixed at ``fixed``: all of
    ``fixed`` rows but the last, which the caller pads up to ``fixed``."""
    return [(start, min(start + fixed, n)) for start in range(0, n, fixed)]


def _spec(arg) -> TensorSpec:
    shape = arg.shape if isinstance(arg.shape, (list, tuple)) else ()
    dims = tuple(d if isinstance(d, int) else (d or None) for d in shape)
    return TensorSpec(arg.name, arg.type, dims)


def guess_layout(shape: Sequence[int | str | None]) -> str:
    """NCHW unless the last axis, not the second, looks like colour channels."""
    if len(shape) == 4:
        second, last = shape[1], shape[3]
        if isinstance(last, int) and last in (1, 3, 4) and not (isinstance(second, int) and second in (1, 3, 4)):
            return "NHWC"
    return "NCHW"


def example_shape(shape: Sequence[int | str | None], layout: str) -> tuple[int, ...] | None:
    """The declared input shape with dynamic axes filled: batch 1, spatial 224, channels 3."""
    if not shape:
        return None
    dims = list(shape)
    spatial = {2, 3} if layout == "NCHW" else {1, 2}
    channel = 1 if layout == "NCHW" else len(dims) - 1
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            continue
        if i == 0:
            dims[i] = 1
        elif len(dims) == 4 and i in spatial:
            dims[i] = 224
        elif len(dims) == 4 and i == channel:
            dims[i] = 3
        else:
            return None
    return tuple(int(d) for d in dims)

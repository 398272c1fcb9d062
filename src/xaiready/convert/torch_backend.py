"""The PyTorch backend of a converted graph: the same as eager torch, plus the graph's fixed batch."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..backends.base import GradResult
from ..backends.onnxruntime import batch_chunks
from ..backends.torch import TorchBackend


class ConvertedTorchBackend(TorchBackend):
    """Runs any number of samples through a graph whose batch size is fixed.

    Exports without dynamic axes bake the batch into ops like Reshape. A batch of another size runs
    in chunks of exactly the fixed size; a last, partial chunk is padded by repeating its last row, and
    the padded rows' outputs (and layer captures) are dropped, so they reach neither the scores nor the
    gradients. This keeps the converted model exactly as general as the ONNX Runtime session it must
    match (``OnnxRuntimeBackend.forward`` does the same).
    """

    def __init__(self, module, *, output=None, fixed_batch: int | None = None,
                 example_shape: tuple[int, ...] | None = None):
        super().__init__(module, output=output, kind="eager")
        self.fixed_batch = fixed_batch
        self._example_shape = example_shape

    def _chunked(self, n: int) -> bool:
        return bool(self.fixed_batch) and n not in (0, self.fixed_batch)

    def _run(self, xt: torch.Tensor, raw: bool = False) -> torch.Tensor:
        run = super()._run
        with warnings.catch_warnings():  # onnx2torch's modules warn about torch deprecations on every call
            warnings.simplefilter("ignore", UserWarning)
            if not self._chunked(xt.shape[0]):
                return run(xt, raw=raw)
            # Chunks are joined as tensors, so a chunked graph gives its selected output even when asked
            # for the raw one (an exported detector's head is one tensor).
            fixed = self.fixed_batch
            parts = []
            for start, stop in batch_chunks(xt.shape[0], fixed):
                chunk, rows = xt[start:stop], stop - start
                if rows < fixed:
                    chunk = torch.cat([chunk, chunk[-1:].expand(fixed - rows, *chunk.shape[1:])])
                parts.append(_unpad(run(chunk), rows, fixed))
            return torch.cat(parts)

    def vjp(self, x, target, *, layers=(), input_grad=True, contrast=False):
        """Layer captures keep only a module's last call, so with layers each chunk is its own pass (and
        gives no contrast: the class check then re-explains)."""
        fixed = self.fixed_batch
        if not layers or not self._chunked(x.shape[0]):
            return super().vjp(x, target, layers=layers, input_grad=input_grad, contrast=contrast)
        if not target.resolved and target.framework_fn is None:
            target = target.resolve(self.forward(x), channel_axis=1)
        vjp = super().vjp
        parts = [_trim(vjp(x[start:stop], target.take(np.arange(start, stop)), layers=layers,
                           input_grad=input_grad), stop - start, fixed)
                 for start, stop in batch_chunks(x.shape[0], fixed)]
        return _merge(parts, target)

    def observe(self, x, layers):
        if not self._chunked(x.shape[0]):
            return super().observe(x, layers)
        observe, fixed = super().observe, self.fixed_batch
        parts = [{k: _unpad(v, stop - start, fixed) for k, v in observe(x[start:stop], layers).items()}
                 for start, stop in batch_chunks(x.shape[0], fixed)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def output_names(self, x):
        fixed = self.fixed_batch
        return super().output_names(np.repeat(np.asarray(x[:1]), fixed, axis=0) if fixed else x)

    def example_shape(self):
        return self._example_shape  # read off the ONNX graph's input, not guessed from the first Conv


def _unpad(value, rows: int, fixed: int):
    """The first ``rows`` rows of a padded chunk's tensor or array (batch-major ones only)."""
    if rows < fixed and value is not None and value.ndim and value.shape[0] == fixed:
        return value[:rows]
    return value


def _trim(part: GradResult, rows: int, fixed: int) -> GradResult:
    """A chunk's result without its padded rows (the output and scores already have ``rows`` rows)."""
    if rows < fixed:
        part.activations = {k: _unpad(v, rows, fixed) for k, v in part.activations.items()}
        part.layer_grads = {k: _unpad(v, rows, fixed) for k, v in part.layer_grads.items()}
    return part


def _merge(parts: list[GradResult], target) -> GradResult:
    def cat(values):
        if any(v is None for v in values):
            return None
        return torch.cat(values) if isinstance(values[0], torch.Tensor) else np.concatenate(values)

    first = parts[0]
    return GradResult(
        output=cat([p.output for p in parts]), scores=cat([p.scores for p in parts]),
        input_grad=cat([p.input_grad for p in parts]), score_in_graph=all(p.score_in_graph for p in parts),
        activations={k: cat([p.activations.get(k) for p in parts]) for k in first.activations},
        layer_grads={k: cat([p.layer_grads.get(k) for p in parts]) for k in first.layer_grads},
        calls={k: sum(p.calls.get(k, 0) for p in parts) for k in first.calls}, target=target)

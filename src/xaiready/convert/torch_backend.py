"""The PyTorch backend of a converted graph: the same as eager torch, plus the graph's fixed batch."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..backends.base import GradResult
from ..backends.torch import TorchBackend


class ConvertedTorchBackend(TorchBackend):
    """Runs batches larger than the ONNX graph's fixed batch size in chunks of that size.

    Exports without dynamic axes bake the batch into ops like Reshape; chunking keeps the converted
    model exactly as general as the ONNX Runtime session it must match.
    """

    def __init__(self, module, *, output=None, fixed_batch: int | None = None,
                 example_shape: tuple[int, ...] | None = None):
        super().__init__(module, output=output, kind="eager")
        self.fixed_batch = fixed_batch
        self._example_shape = example_shape

    def _run(self, xt: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # onnx2torch's modules warn about torch deprecations on every call
            warnings.simplefilter("ignore", UserWarning)
            fixed = self.fixed_batch
            if fixed and xt.shape[0] != fixed and xt.shape[0] % fixed == 0:
                return torch.cat([super(ConvertedTorchBackend, self)._run(c) for c in xt.split(fixed)])
            return super()._run(xt)

    def vjp(self, x, target, *, layers=(), input_grad=True, contrast=False):
        """Layer captures keep only a module's last call, so with layers each chunk is its own pass (and
        gives no contrast: the class check then re-explains)."""
        fixed = self.fixed_batch
        if not layers or not fixed or x.shape[0] <= fixed or x.shape[0] % fixed:
            return super().vjp(x, target, layers=layers, input_grad=input_grad, contrast=contrast)
        if not target.resolved and target.framework_fn is None:
            target = target.resolve(self.forward(x), channel_axis=1)
        parts = [super(ConvertedTorchBackend, self).vjp(x[i:i + fixed], target.take(np.arange(i, i + fixed)),
                                                        layers=layers, input_grad=input_grad)
                 for i in range(0, x.shape[0], fixed)]
        return _merge(parts, target)

    def example_shape(self):
        return self._example_shape  # read off the ONNX graph's input, not guessed from the first Conv


def _merge(parts: list[GradResult], target) -> GradResult:
    def cat(values):
        return None if any(v is None for v in values) else np.concatenate(values)

    first = parts[0]
    return GradResult(
        output=np.concatenate([p.output for p in parts]), scores=np.concatenate([p.scores for p in parts]),
        input_grad=cat([p.input_grad for p in parts]), score_in_graph=all(p.score_in_graph for p in parts),
        activations={k: cat([p.activations.get(k) for p in parts]) for k in first.activations},
        layer_grads={k: cat([p.layer_grads.get(k) for p in parts]) for k in first.layer_grads},
        calls={k: sum(p.calls.get(k, 0) for p in parts) for k in first.calls}, target=target)

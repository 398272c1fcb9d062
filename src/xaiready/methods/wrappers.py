"""SmoothGrad, SmoothGrad-squared and VarGrad: a wrapper around any gradient method.

For each sample, ``n_samples`` noisy copies x + N(0, sigma^2) are explained by the wrapped method and
the attributions are reduced to their mean (SmoothGrad, Smilkov et al. 2017,
https://arxiv.org/abs/1706.03825), mean of squares (SmoothGrad-squared) or variance (VarGrad,
Adebayo et al. 2018, https://arxiv.org/abs/1810.03307). ``sigma = noise_level * (max(x) - min(x))``
per sample, as the SmoothGrad paper defines the noise level. The copies run in chunks and are reduced
on the fly, on the model's device; each copy's noise comes from its own generator seeded by (seed,
sample, copy), so neither the chunk size nor the rest of the batch can change it. The generator is the
framework's (PyTorch's on its device, NumPy's elsewhere), so the same seed draws different noise in
different frameworks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import UsageError
from ._chunking import accumulate, accumulator, auto_batch_size, run_rows
from .base import METHODS, register
from .gradient import GradientMethod


class NoiseTunnel(GradientMethod):
    """Base of the three wrappers; subclasses pick the reduction in ``reduce``."""

    defaults: ClassVar[dict[str, Any]] = {"base": "saliency", "n_samples": 25, "noise_level": 0.15, "seed": 0,
                                          "noise": None, "batch_size": None}

    def __init__(self, base: GradientMethod | str | None = None):
        self.base = base

    def options(self, given):
        base = _base_method(given.get("base", self.base or self.defaults["base"]))
        own = {k: v for k, v in given.items() if k in self.defaults}
        rest = {k: v for k, v in given.items() if k not in self.defaults}
        # Chunk size and seed mean the same thing to the wrapped method (e.g. IG's path chunks).
        rest.update({k: given[k] for k in ("batch_size", "seed") if k in given and k in base.defaults})
        opts = {**self.defaults, **own, "base": base}
        opts["base_options"] = base.options(rest)
        if int(opts["n_samples"]) < 1:
            raise UsageError(f"n_samples={opts['n_samples']} must be at least 1")
        return opts

    # The wrapped method's context (e.g. the ReLU override) covers every noisy pass, once.
    def pass_context(self, handle, opts):
        return opts["base"].pass_context(handle, opts["base_options"])

    def summarize(self, state, opts):
        info, warnings = opts["base"].summarize(state, opts["base_options"])
        return {**info, "base": opts["base"].name, "n_samples": int(opts["n_samples"])}, warnings

    def attribute(self, handle, x, target, sample, opts):
        ops = handle.ops
        xp = ops.xp
        base, n = opts["base"], int(opts["n_samples"])
        noise = self._noise(ops, x, sample, opts)
        total, total_sq = accumulator(xp, x), accumulator(xp, x)

        def reduce(c, a):
            accumulate(xp, total, c, n, a)
            a = xp.astype(a, total.dtype)
            accumulate(xp, total_sq, c, n, a * a)

        run_rows(ops, x.shape[0], n, auto_batch_size(x, opts["batch_size"], handle=handle),
                 make_rows=lambda c: xp.take(x, c.sample, axis=0) + noise(c),
                 attribute=lambda rows, s: base.attribute(handle, rows, target.take(s), xp.take(sample, s, axis=0),
                                                          opts["base_options"]),
                 reduce=reduce)
        return self.reduce(total / n, total_sq / n)

    def _noise(self, ops, x, sample, opts):
        """``noise(chunk)``: the chunk's noise rows, drawn where the model runs. Each copy's noise comes
        from a generator seeded by (seed, sample, copy), so neither the chunk size nor the rest of the
        batch changes it; the sample ids are read once per call, before the loop."""
        xp = ops.xp
        given = opts["noise"]
        n = int(opts["n_samples"])
        if given is not None:
            given = np.asarray(given)
            if given.shape != (x.shape[0], n) + tuple(x.shape[1:]):
                raise UsageError(f"noise of shape {given.shape} must be (N, n_samples, ...) = "
                                 f"{(x.shape[0], n) + tuple(x.shape[1:])}")
            flat = ops.asarray(given.reshape((-1,) + given.shape[2:]))
            return lambda c: xp.take(flat, c.index, axis=0)
        rows = xp.reshape(x, (x.shape[0], -1))
        sigma = float(opts["noise_level"]) * (xp.max(rows, axis=1) - xp.min(rows, axis=1))
        ids = ops.to_numpy(sample).tolist()
        seed = int(opts["seed"])
        per_row = (-1,) + (1,) * (x.ndim - 1)

        def draw(c):
            keys = [(seed, int(ids[r // n]), r % n) for r in range(c.start, c.stop)]
            return ops.normal(tuple(x.shape[1:]), keys, dtype=x.dtype) * xp.reshape(xp.take(sigma, c.sample), per_row)

        return draw

    def reduce(self, mean: np.ndarray, mean_sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _base_method(base) -> GradientMethod:
    if isinstance(base, str):
        base = METHODS.get(base)()
    if not isinstance(base, GradientMethod) or isinstance(base, NoiseTunnel):
        raise UsageError(f"cannot smooth '{getattr(base, 'name', base)}'",
                         hint="the base must be a gradient method such as saliency or integrated-gradients")
    return base


@register
class SmoothGrad(NoiseTunnel):
    name = "smoothgrad"

    def reduce(self, mean, mean_sq):
        return mean


@register
class SmoothGradSquared(NoiseTunnel):
    name = "smoothgrad-sq"

    def reduce(self, mean, mean_sq):
        return mean_sq


@register
class VarGrad(NoiseTunnel):
    name = "vargrad"

    def reduce(self, mean, mean_sq):
        return mean_sq - mean * mean

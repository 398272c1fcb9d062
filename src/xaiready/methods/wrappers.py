"""SmoothGrad, SmoothGrad-squared and VarGrad: a wrapper around any gradient method.

For each sample, ``n_samples`` noisy copies x + N(0, sigma^2) are explained by the wrapped method and
the attributions are reduced to their mean (SmoothGrad, Smilkov et al. 2017,
https://arxiv.org/abs/1706.03825), mean of squares (SmoothGrad-squared) or variance (VarGrad,
Adebayo et al. 2018, https://arxiv.org/abs/1810.03307). ``sigma = noise_level * (max(x) - min(x))``
per sample, as the SmoothGrad paper defines the noise level. The copies run in chunks and are reduced
on the fly; each copy's noise comes from its own generator seeded by (seed, sample, copy), so neither
the chunk size nor the rest of the batch can change it.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from ..errors import UsageError
from ._chunking import accumulate, auto_batch_size, run_rows
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
        base, n = opts["base"], int(opts["n_samples"])
        noise = self._noise(x, sample, opts)
        total = np.zeros(x.shape, dtype=np.float64)
        total_sq = np.zeros(x.shape, dtype=np.float64)

        def reduce(s, k, a):
            accumulate(total, s, 1.0, a)
            accumulate(total_sq, s, 1.0, np.square(a, dtype=np.float64))

        run_rows(len(x), n, auto_batch_size(x, opts["batch_size"], handle=handle),
                 make_rows=lambda s, k: np.add(noise(s, k), x[s], dtype=x.dtype),
                 attribute=lambda rows, s: base.attribute(handle, rows, target.take(s), sample[s],
                                                          opts["base_options"]),
                 reduce=reduce)
        return self.reduce(total / n, total_sq / n).astype(x.dtype)

    def _noise(self, x, sample, opts):
        given = opts["noise"]
        n = int(opts["n_samples"])
        if given is not None:
            given = np.asarray(given, dtype=x.dtype)
            if given.shape != (len(x), n) + x.shape[1:]:
                raise UsageError(f"noise of shape {given.shape} must be (N, n_samples, ...) = "
                                 f"{(len(x), n) + x.shape[1:]}")
            return lambda s, k: given[s, k]
        flat = x.reshape(len(x), -1)
        sigma = (float(opts["noise_level"]) * (flat.max(1) - flat.min(1))).astype(np.float32)
        seed = int(opts["seed"])
        shape = x.shape[1:]

        # One generator per (sample, copy), seeded by both: the noise cannot depend on the chunking or
        # on the rest of the batch, and rows fill in parallel (NumPy releases the GIL while filling).
        def draw(s, k):
            noise = np.empty((len(s),) + shape, dtype=np.float32)

            def fill(r):
                rng = np.random.default_rng([seed, int(sample[s[r]]), int(k[r])])
                rng.standard_normal(out=noise[r], dtype=np.float32)
                noise[r] *= sigma[s[r]]

            list(_pool().map(fill, range(len(s))))
            return noise

        return draw

    def reduce(self, mean: np.ndarray, mean_sq: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="xaiready-noise")


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

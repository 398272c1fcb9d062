"""Complexity of the (N, H, W) map, on |map|.

* ``sparseness``: Gini index (Chalasani et al. 2020), 1 = all mass on one pixel, 0 = uniform; a
  1e-7 offset keeps all-zero maps defined, as Quantus does.
* ``complexity``: Shannon entropy of |map| / sum |map| (Bhatt et al. 2020), lower = simpler.
"""

from __future__ import annotations

import numpy as np

from ._engine import spatial
from .base import Metric, register


class _Complexity(Metric):
    category = "complexity"

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        s = np.abs(spatial(attribution, x, handle.channel_axis)).reshape(len(x), -1)
        return self.result(self.score(s))


@register
class Sparseness(_Complexity):
    name = "sparseness"
    direction = "higher"

    @staticmethod
    def score(s):
        s = np.sort(s + 1e-7, axis=1)
        k = np.arange(1, s.shape[1] + 1)[None]
        return ((2 * k - s.shape[1] - 1) * s).sum(1) / (s.shape[1] * s.sum(1))


@register
class Complexity(_Complexity):
    name = "complexity"
    direction = "lower"

    @staticmethod
    def score(s):
        p = s / s.sum(1, keepdims=True)
        return -(p * np.log(p + 1e-12)).sum(1)

"""Localization against per-pixel ground truth masks (N, H, W), on the (N, H, W) map.

* ``pointing-game`` (Zhang et al. 2016): 1 if a maximum of the map lies inside the mask (no
  tolerance radius, as Quantus);
* ``relevance-mass`` (Arras et al. 2022, https://arxiv.org/abs/2003.07258): share of the map's sum
  inside the mask;
* ``relevance-rank``: share of the mask's K pixels among the map's top K pixels.

A sample whose mask is empty scores NaN and is left out of the mean.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ._engine import need, spatial
from .base import Metric, register


def _prepare(metric, x, attribution, mask, channel_axis):
    need("ground-truth masks", mask, metric, "pass mask= to evaluate, or --masks DIR on the CLI")
    s = spatial(attribution, x, channel_axis)
    m = np.asarray(mask)
    if m.ndim == s.ndim + 1:  # (N, 1, H, W) or (N, H, W, 1)
        m = m.squeeze(axis=1 if m.shape[1] == 1 else -1)
    if m.shape != s.shape:
        raise UsageError(f"masks of shape {np.shape(mask)} do not fit maps of shape {s.shape}",
                         hint="give one (H, W) mask per input")
    n = len(s)
    return s.reshape(n, -1), m.astype(bool).reshape(n, -1)


class _Localization(Metric):
    category = "localization"
    direction = "higher"
    needs = frozenset({"attribution", "mask"})

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        s, m = _prepare(self.name, x, attribution, mask, handle.channel_axis)
        values = self.score(s, m).astype(np.float64)
        values[m.sum(1) == 0] = np.nan
        return self.result(values)


@register
class PointingGame(_Localization):
    name = "pointing-game"

    def score(self, s, m):
        return (m & (s == s.max(1, keepdims=True))).any(1)


@register
class RelevanceMass(_Localization):
    name = "relevance-mass"

    def score(self, s, m):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (s * m).sum(1) / s.sum(1)


@register
class RelevanceRank(_Localization):
    name = "relevance-rank"

    def score(self, s, m):
        k = m.sum(1)
        order = np.argsort(-s, axis=1)
        hits = np.take_along_axis(m, order, axis=1)
        top = np.arange(s.shape[1])[None] < k[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (hits & top).sum(1) / k

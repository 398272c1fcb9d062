"""Faithfulness: does removing what the map calls important change the score the most?

* ``deletion`` / ``insertion`` (Petsiuk et al. 2018, RISE, https://arxiv.org/abs/1806.07421): pixels
  in the map's order are replaced by a baseline (deletion) or revealed on a blurred copy (insertion);
  the value is the area under the class-probability curve over the fraction of pixels changed.
* ``faithfulness-correlation`` (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631): Pearson
  correlation, over random feature subsets, between the attribution sum of a subset and the score
  drop when it is replaced by the baseline.
* ``pixel-flipping`` (Bach et al. 2015): features flipped to the baseline in the map's order,
  cumulative; the value is the mean-normalized area under the probability curve (lower is better).
* ``infidelity`` (Yeh et al. 2019, https://arxiv.org/abs/1901.09392): E[(I.a - (f(x) - f(x - I)))^2]
  over perturbations I (random square removal by default, or Gaussian noise), with the optimal scale
  of ``a`` (``normalize``, default: CAM maps have no input scale).
"""

from __future__ import annotations

import numpy as np

from .._image_ops import box_blur, spatial_axes, spatial_size
from ._engine import (
    Counter,
    per_feature,
    pixel_mask,
    probability,
    score_rows,
    score_with_clean,
    spatial,
)
from .base import Metric, register
from .similarity import pearson


def pixel_ranks(s: np.ndarray) -> np.ndarray:
    """(N, H*W) rank of every pixel, 0 = most important."""
    flat = s.reshape(len(s), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(s), 0), axis=1)
    return ranks


class _PixelCurve(Metric):
    category = "faithfulness"
    insert: bool = False

    def __init__(self, steps: int = 50, baseline: float = 0.0, blur: int | None = None):
        self.steps, self.baseline, self.blur = int(steps), float(baseline), blur

    def plan(self, n, x_shape):
        return {"evaluations": n * (self.steps + 1), "explanations": 0}

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        axis = handle.channel_axis
        s = spatial(attribution, x, axis)
        n, hw = len(x), s[0].size
        ranks = pixel_ranks(s)
        ks = np.round(np.arange(self.steps + 1) * hw / self.steps).astype(np.int64)
        removed = np.full_like(x, self.baseline)
        if self.insert:
            h, w = spatial_size(x, axis)
            size = self.blur or max(3, (min(h, w) // 8) | 1)
            start, end = box_blur(x, spatial_axes(x, axis), size), x
        else:
            start, end = x, removed
        rows = n * (self.steps + 1)
        sample_of = np.arange(rows) // (self.steps + 1)

        def make(lo, hi):
            i, step = sample_of[lo:hi], np.arange(lo, hi) % (self.steps + 1)
            changed = (ranks[i] < ks[step][:, None]).reshape((hi - lo,) + s.shape[1:])
            return np.where(pixel_mask(changed, x[i], axis), end[i], start[i])

        counter = Counter()
        curves = score_rows(handle, probability(target), rows, make, sample_of, settings, counter,
                            self.name).reshape(n, self.steps + 1)
        auc = np.trapezoid(curves, dx=1.0 / self.steps, axis=1)
        return self.result(auc, curves=curves, info={"steps": self.steps, "fractions": (ks / hw).tolist()},
                           **counter.as_kwargs())


@register
class Deletion(_PixelCurve):
    name = "deletion"
    direction = "lower"


@register
class Insertion(_PixelCurve):
    name = "insertion"
    direction = "higher"
    insert = True


@register
class FaithfulnessCorrelation(Metric):
    name = "faithfulness-correlation"
    direction = "higher"
    category = "faithfulness"

    def __init__(self, nr_runs: int = 100, subset_size: int = 224, baseline: float = 0.0):
        self.nr_runs, self.subset_size, self.baseline = int(nr_runs), int(subset_size), float(baseline)

    def plan(self, n, x_shape):
        return {"evaluations": n * (self.nr_runs + 1), "explanations": 0}

    def subsets(self, n: int, features: int, seed: int) -> np.ndarray:
        """(runs, N, subset) feature indices, drawn in Quantus's order from a seeded legacy generator."""
        rs = np.random.RandomState(seed)
        size = min(self.subset_size, features)
        return np.stack([np.stack([rs.choice(features, size, replace=False) for _ in range(n)])
                         for _ in range(self.nr_runs)])

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        n = len(x)
        a = per_feature(attribution, x, handle.channel_axis).reshape(n, -1)
        flat = x.reshape(n, -1)
        idx = self.subsets(n, flat.shape[1], settings.seed)
        rows = self.nr_runs * n
        sample_of = np.arange(rows) % n

        def make(lo, hi):
            r, i = np.arange(lo, hi) // n, sample_of[lo:hi]
            xs = flat[i].copy()
            xs[np.arange(hi - lo)[:, None], idx[r, i]] = self.baseline
            return xs.reshape((hi - lo,) + x.shape[1:])

        counter = Counter()
        y, perturbed = score_with_clean(handle, target, x, rows, make, sample_of, settings, counter, self.name)
        deltas = (y[None, :] - perturbed.reshape(self.nr_runs, n)).T
        att_sums = a[np.arange(n)[None, :, None], idx].sum(-1).T  # (N, runs), without an (R, N, F) copy
        return self.result(pearson(att_sums, deltas), **counter.as_kwargs())


@register
class PixelFlipping(Metric):
    name = "pixel-flipping"
    direction = "lower"
    category = "faithfulness"

    def __init__(self, steps: int = 64, features_in_step: int | None = None, baseline: float = 0.0):
        self.steps, self.features_in_step, self.baseline = int(steps), features_in_step, float(baseline)

    def _step(self, features: int) -> int:
        return int(self.features_in_step or -(-features // self.steps))

    def plan(self, n, x_shape):
        features = int(np.prod(x_shape[1:]))
        return {"evaluations": n * -(-features // self._step(features)), "explanations": 0}

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        n = len(x)
        a = per_feature(attribution, x, handle.channel_axis).reshape(n, -1)
        flat = x.reshape(n, -1)
        features = flat.shape[1]
        step = self._step(features)
        n_steps = -(-features // step)
        ranks = np.empty(a.shape, dtype=np.int64)
        # argsort(-a) as Quantus does (same kind, same dtype), so tied features flip in the same order
        np.put_along_axis(ranks, np.argsort(-a, axis=1), np.arange(features)[None].repeat(n, 0), axis=1)
        rows = n * n_steps
        sample_of = np.arange(rows) // n_steps

        def make(lo, hi):
            i, k = sample_of[lo:hi], (np.arange(lo, hi) % n_steps + 1) * step
            return np.where(ranks[i] < k[:, None], self.baseline, flat[i]).astype(x.dtype).reshape(
                (hi - lo,) + x.shape[1:])

        counter = Counter()
        curves = score_rows(handle, probability(target), rows, make, sample_of, settings, counter,
                            self.name).reshape(n, n_steps)
        auc = np.trapezoid(curves, dx=1.0, axis=1) / max(1, n_steps - 1) if n_steps > 1 else curves[:, 0]
        return self.result(auc, curves=curves, info={"features_in_step": step}, **counter.as_kwargs())


def gaussian_perturbations(seed: int, sample: int, count: int, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """The first ``count`` perturbations I of ``sample``: one seeded stream per sample, so a row's noise
    does not depend on chunking or on how many rows are drawn (reproducible in tests)."""
    draw = np.random.default_rng([seed, sample]).standard_normal((count,) + tuple(shape))
    return (draw * sigma).astype(np.float32)


def square_perturbations(seed: int, sample: int, count: int, x: np.ndarray, channel_axis: int,
                         size: int) -> np.ndarray:
    """I = x on a random ``size`` x ``size`` square (all channels), 0 elsewhere: x - I removes the square
    (Yeh et al.'s square removal). One seeded stream per sample, as ``gaussian_perturbations``."""
    hw_axes = spatial_axes(x, channel_axis, batched=False)
    h, w = x.shape[hw_axes[0]], x.shape[hw_axes[1]]
    corners = np.random.default_rng([seed, sample]).integers(0, [h - size + 1, w - size + 1], size=(count, 2))
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    top, left = corners[:, 0, None, None], corners[:, 1, None, None]
    square = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (count, H, W)
    square = np.expand_dims(square, 1 if hw_axes[0] == 1 else x.ndim)  # the channel axis, after the draw axis
    return (x[None] * square).astype(np.float32)


@register
class Infidelity(Metric):
    """``perturbation="square"`` (default) removes random squares of side ``size`` (default H/4);
    ``"gaussian"`` draws I ~ N(0, sigma^2) per feature (Captum's usual example)."""

    name = "infidelity"
    direction = "lower"
    category = "faithfulness"

    def __init__(self, n_perturb: int = 32, perturbation: str = "square", sigma: float = 0.1,
                 size: int | None = None, normalize: bool = True):
        if perturbation not in ("square", "gaussian"):
            from ..errors import UsageError

            raise UsageError(f"unknown infidelity perturbation '{perturbation}'", hint="use square or gaussian")
        self.n_perturb, self.perturbation, self.sigma = int(n_perturb), perturbation, float(sigma)
        self.size, self.normalize = size, bool(normalize)

    def perturbations(self, seed: int, sample: int, x: np.ndarray, channel_axis: int) -> np.ndarray:
        """The ``n_perturb`` perturbations I of one sample ``x`` (shaped like one input)."""
        if self.perturbation == "gaussian":
            return gaussian_perturbations(seed, sample, self.n_perturb, x.shape, self.sigma)
        h = x.shape[spatial_axes(x, channel_axis, batched=False)[0]]
        return square_perturbations(seed, sample, self.n_perturb, x, channel_axis, self.size or max(1, h // 4))

    def plan(self, n, x_shape):
        return {"evaluations": n * (self.n_perturb + 1), "explanations": 0}

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        n, p = len(x), self.n_perturb
        a = per_feature(attribution, x, handle.channel_axis)
        rows = n * p
        sample_of = np.arange(rows) // p  # sample-major, as Captum's repeat_interleave
        attr_sums = np.empty(rows)
        block = {"i": -1, "noise": None}  # one sample's P draws at a time: memory P x input, not N x P

        def make(lo, hi):
            out = np.empty((hi - lo,) + x.shape[1:], dtype=x.dtype)
            for i in np.unique(sample_of[lo:hi]):
                if block["i"] != i:
                    block["i"], block["noise"] = i, self.perturbations(settings.seed, i, x[i], handle.channel_axis)
                r = np.arange(max(lo, i * p), min(hi, (i + 1) * p))
                noise = block["noise"][r - i * p]
                attr_sums[r] = (noise.reshape(len(r), -1).astype(np.float64) @ a[i].reshape(-1))
                out[r - lo] = x[i] - noise
            return out

        counter = Counter()
        y, perturbed = score_with_clean(handle, target, x, rows, make, sample_of, settings, counter, self.name)
        diff = (y[sample_of] - perturbed).reshape(n, p)
        att = attr_sums.reshape(n, p)
        if self.normalize:  # the scale of a that fits best (Yeh et al., sec. 3; Captum normalize=True)
            saa, sad, sdd = (att * att).sum(1), (att * diff).sum(1), (diff * diff).sum(1)
            beta = np.divide(sad, saa, out=np.zeros_like(sad), where=saa != 0)
            values = (beta * beta * saa - 2 * beta * sad + sdd) / p
        else:
            values = ((att - diff) ** 2).mean(1)
        return self.result(values, **counter.as_kwargs())

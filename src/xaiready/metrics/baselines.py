"""Reference maps that ignore the model, so a method's score means something.

* ``random``: uniform noise seeded by the input's bytes: a fixed function of the input alone, so it
  is identical after model randomization or a class change (as a model-blind map must be) and
  changes under any input perturbation.
* ``center``: a Gaussian bump at the image centre (the centre prior of object-centric datasets).
"""

from __future__ import annotations

import zlib

import numpy as np

from .._image_ops import spatial_size

BASELINES = ("random", "center")


def random_map(x: np.ndarray, channel_axis: int) -> np.ndarray:
    h, w = spatial_size(x, channel_axis)
    seeds = [zlib.crc32(np.ascontiguousarray(xi).tobytes()) for xi in x]
    return np.stack([np.random.default_rng(s).random((h, w)) for s in seeds])


def center_map(x: np.ndarray, channel_axis: int) -> np.ndarray:
    h, w = spatial_size(x, channel_axis)
    yy, xx = np.mgrid[0:h, 0:w]
    sigma = min(h, w) / 4
    bump = np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma * sigma)))
    return np.repeat(bump[None], len(x), axis=0)


def baseline_explainer(name: str, channel_axis: int):
    fn = {"random": random_map, "center": center_map}[name]
    return lambda xs, target: fn(np.asarray(xs), channel_axis)

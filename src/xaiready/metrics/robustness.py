"""Robustness: ``max-sensitivity`` (Yeh et al. 2019, https://arxiv.org/abs/1901.09392).

max over perturbations d ~ U[-r, r]^F of ||a(x + d) - a(x)||_F / ||a(x)||_F, the map re-explained
for the same (resolved) target. Noise is drawn in Quantus's order (one (N, F) draw per perturbation
from a seeded legacy generator), so the same seed gives Quantus's perturbations; re-explanations are
batched over perturbations and samples together, in chunks.
"""

from __future__ import annotations

import numpy as np

from ._engine import Counter, explain_rows, need
from .base import Metric, register


def uniform_noise(seed: int, n: int, n_samples: int, features: int, radius: float):
    """Yield the (N, F) noise of each perturbation in turn, as ``np.random.seed(seed)`` + Quantus would."""
    rs = np.random.RandomState(seed)
    for _ in range(n_samples):
        yield rs.uniform(low=-radius, high=radius, size=(n, features))


@register
class MaxSensitivity(Metric):
    name = "max-sensitivity"
    direction = "lower"
    category = "robustness"
    needs = frozenset({"attribution", "explainer"})

    def __init__(self, n_samples: int = 10, radius: float = 0.2):
        self.n_samples, self.radius = int(n_samples), float(radius)

    def plan(self, n, x_shape):
        return {"evaluations": 0, "explanations": n * self.n_samples}

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        need("an explainer", explainer, self.name, "pass method= to evaluate, or --method on the CLI")
        n = len(x)
        flat = x.reshape(n, -1).astype(np.float64)
        noise = uniform_noise(settings.seed, n, self.n_samples, flat.shape[1], self.radius)
        current = {"p": -1, "d": None}
        rows = n * self.n_samples
        sample_of = np.arange(rows) % n  # perturbation-major, the order the noise is drawn in

        def make(lo, hi):
            out = np.empty((hi - lo, flat.shape[1]), dtype=np.float64)
            for j, r in enumerate(range(lo, hi)):
                p = r // n
                while current["p"] < p:  # chunks arrive in order, so the generator only moves forward
                    current["p"], current["d"] = current["p"] + 1, next(noise)
                out[j] = flat[r % n] + current["d"][r % n]
            return out.astype(x.dtype).reshape((hi - lo,) + x.shape[1:])

        counter = Counter()
        perturbed = explain_rows(explainer, target, rows, make, sample_of, settings, counter, self.name)
        a = np.asarray(attribution, dtype=np.float64).reshape(n, -1)
        diff = np.linalg.norm(perturbed.reshape(rows, -1) - a[sample_of], axis=1)
        denom = np.linalg.norm(a, axis=1)[sample_of]
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = (diff / denom).reshape(self.n_samples, n)
        return self.result(sens.max(0), **counter.as_kwargs())

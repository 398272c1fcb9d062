"""Randomization sanity: a map that does not change when the model or the class does ignores them.

* ``random-logit`` (Sixt et al. 2020, https://arxiv.org/abs/1912.09818): similarity between the map
  of the explained class and the map of a random other class (lower is better). The other class is
  drawn as Quantus's RandomLogit draws it (``RandomState(seed).randint(0, K - 1, N)`` into the
  classes left after removing the explained one).
* ``randomization`` / ``randomization-independent`` (Adebayo et al. 2018, model parameter
  randomization, https://arxiv.org/abs/1810.03292): similarity between the map and the map after
  randomizing layers top-down, cumulatively (cascading) or one at a time (independent); the value
  is the mean over the randomized steps, the per-step means go to ``info``. Needs a backend with the
  optional ``randomized`` protocol (see ``backends.base.Randomizable``).

Similarity is ``spearman`` (rank correlation of the (N, H, W) maps) or ``ssim`` (on the 2-D maps).
"""

from __future__ import annotations

import numpy as np

from ..errors import CapabilityError, UsageError
from ..targets import Class
from ._engine import Counter, explain_rows, need, spatial
from .base import Metric, register
from .similarity import similarity


def _explain_all(explainer, x, target, settings, counter, label):
    n = len(x)
    return explain_rows(explainer, target, n, lambda lo, hi: x[lo:hi], np.arange(n), settings, counter, label)


def off_classes(k: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """A random class other than ``k[i]`` per sample, drawn as Quantus's RandomLogit does."""
    rs = np.random.RandomState(seed)
    pick = rs.randint(0, num_classes - 1, len(k))
    return np.array([[c for c in range(num_classes) if c != ki][j] for ki, j in zip(k, pick, strict=True)])


@register
class RandomLogit(Metric):
    name = "random-logit"
    direction = "lower"
    category = "randomization"
    needs = frozenset({"attribution", "explainer"})

    def __init__(self, similarity: str = "ssim", num_classes: int | None = None):
        self.similarity, self.num_classes = similarity, num_classes

    def plan(self, n, x_shape):
        return {"evaluations": 0, "explanations": n}

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        need("an explainer", explainer, self.name, "pass method= to evaluate, or --method on the CLI")
        if not isinstance(target, Class) or not target.resolved:
            raise UsageError("random-logit needs a resolved class target",
                             hint="use it on classifiers; resolve the target with handle.resolve")
        counter = Counter()
        with handle.session():
            out = handle.forward(x[:1])
        counter.evaluations, counter.calls = 1, 1
        k_all = self.num_classes or out.shape[1]
        off = Class(off_classes(target._k, k_all, settings.seed)).resolve(np.zeros((len(x), k_all)))
        other = _explain_all(explainer, x, off, settings, counter, self.name)
        axis = handle.channel_axis
        sim = similarity(self.similarity)(spatial(attribution, x, axis), spatial(other, x, axis))
        return self.result(sim, info={"other_class": off._k.tolist()}, **counter.as_kwargs())


class _ParameterRandomization(Metric):
    direction = "lower"
    category = "randomization"
    needs = frozenset({"attribution", "explainer", "randomizer"})
    cascading = True

    def __init__(self, similarity: str = "spearman", max_layers: int | None = None):
        self.similarity, self.max_layers = similarity, max_layers

    def plan(self, n, x_shape):
        return {"evaluations": 0, "explanations": n * (self.max_layers or 1)}

    def layers(self, handle) -> list[str]:
        backend = handle.backend
        if not hasattr(backend, "randomized"):
            raise CapabilityError(f"the {handle.framework} backend cannot randomize layers",
                                  hint="parameter randomization needs the backend's randomized() protocol")
        names = list(reversed(backend.randomizable_layers()))  # top-down, as Adebayo et al.
        return names[: self.max_layers] if self.max_layers else names

    def compute(self, handle, x, attribution, target, *, settings, mask, explainer):
        need("an explainer", explainer, self.name, "pass method= to evaluate, or --method on the CLI")
        names = self.layers(handle)
        sim = similarity(self.similarity)
        axis = handle.channel_axis
        base = spatial(attribution, x, axis)
        counter, per_step = Counter(), []
        for j, name in enumerate(names):
            chosen = names[: j + 1] if self.cascading else [name]
            with handle.backend.randomized(chosen, seed=settings.seed + j):
                other = _explain_all(explainer, x, target, settings, counter, f"{self.name} {name}")
            per_step.append(sim(base, spatial(other, x, axis)))
        steps = np.stack(per_step, 1)  # (N, layers)
        return self.result(np.nanmean(steps, 1), info={"layers": names, "per_layer": np.nanmean(steps, 0).tolist()},
                           **counter.as_kwargs())


@register
class CascadingRandomization(_ParameterRandomization):
    name = "randomization"


@register
class IndependentRandomization(_ParameterRandomization):
    name = "randomization-independent"
    cascading = False

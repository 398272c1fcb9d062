"""Every applicable method, plus the ``random`` and ``center`` baselines, scored on the benchmark."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import XaiReadyError

DEFAULT_METRICS = ("deletion", "insertion", "faithfulness-correlation", "pixel-flipping", "infidelity",
                   "max-sensitivity", "sparseness", "complexity", "pointing-game", "relevance-mass",
                   "relevance-rank", "random-logit", "randomization")
# black-box and wrapper methods re-run the model hundreds of times per map; they are opt-in here
SKIP_BY_DEFAULT = ("occlusion", "rise", "kernelshap", "smoothgrad", "smoothgrad-sq", "vargrad")


def default_methods() -> list[str]:
    from ..methods import load_methods

    registry = load_methods()
    cnn = [m for m in registry.names() if m not in SKIP_BY_DEFAULT and registry.get(m).family in ("gradient", "cam")
           and "attention" not in registry.get(m).requires]  # the benchmark CNN has no attention
    return cnn + ["random", "center"]


def run_benchmark(n: int = 32, methods: Sequence[str] | None = None, metrics: Sequence[str] = DEFAULT_METRICS,
                  settings=None, log=sys.stderr):
    """``{method: {metric: MetricResult}}`` on ``n`` correctly classified benchmark test images."""
    from ..api import explainer_for
    from ..metrics.evaluate import evaluate_methods
    from ..targets import Class
    from .models import CAM_LAYER, handle_for, test_batch, train

    trained = train("classification")
    print(f"benchmark CNN: held-out accuracy {trained.score:.3f}", file=log)
    handle = handle_for(trained)
    x, y, mask = test_batch(trained, n)
    results = {}
    for method in methods or default_methods():
        try:
            explainers = {method: explainer_for(handle, method, layer=CAM_LAYER)}
            results.update(evaluate_methods(handle, x, explainers, metrics, Class(y.tolist()), mask=mask,
                                            settings=settings))
        except XaiReadyError as exc:  # a method this model cannot give is left out, and said so
            print(f"skipped {method}: {exc.one_line()}", file=log)
    return results

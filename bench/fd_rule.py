"""False-alarm and detection rates of the finite-difference rule (readiness/probes.py) on real models.

Healthy: every corpus architecture (tests/corpus) at random weights, on random inputs and on inputs
with a flat region (max-pool ties), several direction seeds. Broken: the same architectures with a
data-dependent ``.item()`` scale (the error autograd cannot see) and a custom backward that doubles
the gradient. Prints one row per case and the rates. Run: ``make fd-rule`` (about 10 minutes).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

from corpus import architectures as A  # noqa: E402
from corpus import breaks as B  # noqa: E402
from xaiready.api import as_handle  # noqa: E402
from xaiready.readiness.probes import gradient_correctness  # noqa: E402
from xaiready.targets import Class  # noqa: E402

SEEDS = (0,)


def _inputs(shape):
    x = A.example_input(shape)
    flat = x.copy()
    flat[..., : shape[-2] // 2, :] = 0.5  # a flat region: equal activations, max-pool ties
    pair = np.concatenate([A.example_input(shape, seed=s) for s in (1, 2)])
    return {"random": x, "flat": flat, "batch-of-2": pair}


def _run(model, x, seed):
    handle = as_handle(model)
    target = Class(None).resolve(handle.forward(x), channel_axis=1)
    grad = handle.vjp(x, target).input_grad
    return gradient_correctness(handle, x, target, grad, n_random=2, seed=seed)[0]  # as `check` runs it


def main(names=None):
    names = names or list(A.BUILDERS)
    rows = {"healthy": [], "item-scale": [], "lying-backward": []}
    for name in names:
        for kind in rows:
            model, shape = A.build(name)
            for label, x in _inputs(shape).items():
                if kind == "item-scale":
                    subject = B.ItemScale(model).eval()
                elif kind == "lying-backward":
                    subject, _ = B.inject(A.build(name)[0], "lying-backward", x)
                else:
                    subject = model
                for seed in SEEDS:
                    t = time.perf_counter()
                    fd = _run(subject, x, seed)
                    verdict = "fail" if not fd.ok else "pass" if fd.conclusive else "warn"
                    rows[kind].append(verdict)
                    print(f"{name:26s} {kind:15s} {label:10s} seed {seed}: {verdict:4s} "
                          f"{time.perf_counter() - t:5.1f}s  {fd.detail[:90]}", flush=True)
    healthy = rows["healthy"]
    print(f"\nhealthy: {len(healthy)} cases, false alarms {healthy.count('fail')} "
          f"({healthy.count('fail') / len(healthy):.1%}), inconclusive {healthy.count('warn')}")
    for kind in ("item-scale", "lying-backward"):
        got = rows[kind]
        print(f"{kind}: {len(got)} cases, detected {got.count('fail')} ({got.count('fail') / len(got):.1%}), "
              f"inconclusive {got.count('warn')}, missed {got.count('pass')}")


if __name__ == "__main__":
    main(sys.argv[1:] or None)

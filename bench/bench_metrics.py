"""Metrics side by side with Quantus 0.6 and Captum, in one process, on the same model and inputs.

For each metric: seconds for ours and for the reference, their ratio, and each one's ratio to the
metric's inherent model-call floor: (forward rows) x (seconds per row of one forward at our chunk
size) + (re-explained rows) x (seconds per row of one saliency pass). Models: the benchmark CNN
(trained) and torchvision resnet18 (random weights), batch 8, saliency maps.

    .venv/bin/python bench/bench_metrics.py [--repeats 3] [--models cnn,resnet18] [--chunk 64]

Timings are the best of ``--repeats``; on shared cores, take them as indicative.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def setup(name):
    from xaiready.api import as_handle
    from xaiready.benchmark.models import handle_for, test_batch, train

    if name == "cnn":
        trained = train("classification")
        x, y, _ = test_batch(trained, 8)
        return trained.model, handle_for(trained), x, y
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224)).astype(np.float32)
    handle = as_handle(model)
    y = handle.forward(x).argmax(1)
    return model, handle, x, y


def floors(handle, x, target, explainer, chunk, repeats):
    """Seconds per forward row and per saliency row at the chunk size, and per saliency row at batch N
    (the most a randomization step or a class swap can batch: each needs different weights or class)."""
    rows = np.concatenate([x] * max(1, -(-chunk // len(x))))[:chunk]
    idx = np.arange(chunk) % len(x)
    t_fwd, _ = best_of(lambda: handle.forward(rows), repeats)
    t_exp, _ = best_of(lambda: explainer(rows, target.take(idx)), repeats)
    t_exp_n, _ = best_of(lambda: explainer(x, target), repeats)
    return t_fwd / chunk, t_exp / chunk, t_exp_n / len(x)


def health_measurements(n=32):
    """The numbers behind metrics.health's thresholds, measured on the benchmark CNN."""
    from xaiready.api import explainer_for
    from xaiready.benchmark.models import CAM_LAYER, handle_for, test_batch, train
    from xaiready.metrics._engine import spatial
    from xaiready.metrics.baselines import random_map
    from xaiready.metrics.health import RANDOMIZED_LAYERS, SATURATION
    from xaiready.metrics.similarity import spearman
    from xaiready.targets import Class, runner_up

    trained = train("classification")
    handle = handle_for(trained)
    x, y, _ = test_batch(trained, n, correct_only=False)
    target = handle.resolve(Class(None), x)
    out = handle.forward(x)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    print(f"saturated (top p > {SATURATION}): {(p.max(1) > SATURATION).mean():.3f} of {n} inputs; "
          f"median top p {np.median(p.max(1)):.4f}")
    other = runner_up(target, handle.forward(x))
    layers = list(reversed(handle.backend.randomizable_layers()))[:RANDOMIZED_LAYERS]
    for method in ("saliency", "input-x-gradient", "integrated-gradients", "guided-backprop", "gradcam",
                   "gradcam++", "random"):
        if method == "random":
            explain = lambda xs, t: random_map(xs, 1)  # noqa: E731
        else:
            explain = explainer_for(handle, method, layer=CAM_LAYER if "cam" in method else None)
        a = spatial(explain(x, target), x, 1)
        cls = spearman(a, spatial(explain(x, other), x, 1))
        with handle.backend.randomized(layers, seed=0):
            rnd = spearman(a, spatial(explain(x, target), x, 1))
        print(f"{method:22s} class-swap rank corr median {np.nanmedian(cls):.3f} max {np.nanmax(cls):.3f} | "
              f"top-{RANDOMIZED_LAYERS} randomized median {np.nanmedian(rnd):.3f} max {np.nanmax(rnd):.3f}")


def bench_model(model_name, args, table):
    from xaiready.api import explainer_for
    from xaiready.metrics import METRICS, Settings
    from xaiready.targets import Class

    model, handle, x, y = setup(model_name)
    import captum.metrics as cm
    import quantus  # after torch has trained the CNN (see tests/metrics/test_parity.py)

    n, k = len(x), handle.forward(x[:1]).shape[1]
    big = model_name != "cnn"
    target = handle.resolve(Class(y.tolist()), x)
    sal = explainer_for(handle, "saliency")
    a = sal(x, target)
    t_row, t_exp, t_exp_n = floors(handle, x, target, sal, args.chunk, args.repeats)
    settings = Settings(chunk_size=args.chunk, seed=0)
    q = {"normalise": False, "abs": False, "disable_warnings": True}

    def q_explain(model, inputs, targets, **kw):
        inputs = np.asarray(inputs, dtype=np.float32)
        return sal(inputs, Class(np.asarray(targets).tolist()).resolve(np.zeros((len(inputs), k))))

    def run_q(metric, **kw):
        return lambda: metric(model=model, x_batch=x, y_batch=np.asarray(y), a_batch=a, device="cpu",
                              batch_size=n, **kw)

    runs = int(20 if big else 100)
    fis = x.shape[2] * x.shape[3] // 8  # Quantus requires H*W % step == 0: 24 steps over C*H*W
    specs = [
        ("faithfulness-correlation", METRICS.get("faithfulness-correlation")(nr_runs=runs), None,
         "Quantus", run_q(quantus.FaithfulnessCorrelation(nr_runs=runs, perturb_baseline=0.0, **q), softmax=False)),
        ("pixel-flipping", METRICS.get("pixel-flipping")(features_in_step=fis), None,
         "Quantus", run_q(quantus.PixelFlipping(features_in_step=fis, perturb_baseline=0.0, **q), softmax=True)),
        ("max-sensitivity", METRICS.get("max-sensitivity")(n_samples=5), sal,
         "Quantus", run_q(quantus.MaxSensitivity(nr_samples=5, **q), explain_func=q_explain)),
        ("random-logit", METRICS.get("random-logit")(), sal,
         "Quantus", run_q(quantus.RandomLogit(num_classes=k, **q), explain_func=q_explain)),
    ]
    if not big:  # resnet18 has 62 parameterized layers: MPRT there takes minutes per side
        specs.append(("randomization", METRICS.get("randomization")(), sal, "Quantus",
                      run_q(quantus.MPRT(layer_order="top_down", return_average_correlation=True,
                                         **{**q, "abs": True}), explain_func=q_explain)))
    p_inf = 10
    inf = METRICS.get("infidelity")(n_perturb=p_inf)
    noise = torch.as_tensor(np.concatenate([inf.perturbations(0, i, x[i], 1) for i in range(n)]))
    specs.append(("infidelity", inf, None, "Captum",
                  lambda: cm.infidelity(model, lambda inp: (noise, inp - noise), torch.as_tensor(x),
                                        torch.as_tensor(a), target=torch.as_tensor(y),
                                        n_perturb_samples=p_inf, normalize=True)))

    def c_explain(inputs, target=None):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs
        t = Class(target.tolist()).resolve(np.zeros((len(inputs), k)))
        return (torch.as_tensor(sal(inputs.numpy(), t)),)

    specs.append(("max-sensitivity", METRICS.get("max-sensitivity")(n_samples=5), sal, "Captum",
                  lambda: cm.sensitivity_max(c_explain, torch.as_tensor(x), perturb_radius=0.2,
                                             n_perturb_samples=5, target=torch.as_tensor(y))))
    for name in ("deletion", "insertion"):
        specs.append((name, METRICS.get(name)(steps=20 if big else 50), None, None, None))

    for name, metric, explainer, ref, ref_fn in specs:
        t_ours, res = best_of(lambda m=metric, e=explainer: m(handle, x, a, target, settings=settings, explainer=e),
                              args.repeats)
        per_expl = t_exp_n if name in ("random-logit", "randomization") else t_exp
        floor = res.evaluations * t_row + res.explanations * per_expl
        t_ref = best_of(ref_fn, args.repeats)[0] if ref_fn else float("nan")
        table.append((model_name, name, ref or "-", res.evaluations, res.explanations, t_ours, t_ref, floor))
        print(f"{model_name:8s} {name:25s} vs {ref or '-':7s} ours {t_ours:7.3f}s  ref {t_ref:7.3f}s  "
              f"floor {floor:7.3f}s  ours/ref {t_ours / t_ref:5.2f}  ours/floor {t_ours / floor:5.2f}  "
              f"ref/floor {t_ref / floor:5.2f}", flush=True)



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--health", action="store_true", help="print the measurements behind the health thresholds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="cnn,resnet18")
    ap.add_argument("--chunk", type=int, default=64)
    args = ap.parse_args()
    if args.health:
        return health_measurements()

    table = []
    for model_name in args.models.split(","):
        bench_model(model_name, args, table)

    print("\n| model | metric | vs | fwd rows | expl rows | ours s | ref s | floor s | ours/ref | ours/floor | ref/floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for m, name, ref, ev, ex, to, tr, fl in table:
        print(f"| {m} | {name} | {ref} | {ev} | {ex} | {to:.3f} | {tr:.3f} | {fl:.3f} | {to / tr:.2f} | "
              f"{to / fl:.2f} | {tr / fl:.2f} |")


if __name__ == "__main__":
    main()

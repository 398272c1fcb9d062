"""Calibrate metrics.health's class-blind and model-blind thresholds on a corpus of real architectures.

Healthy corpus: architectures we did not write (torchvision ResNet-18, MobileNetV3-small,
EfficientNet-B0; timm ConvNeXt-atto, ViT-tiny), adapted to 32 x 32 inputs, randomly initialised and
TRAINED here for seconds to a couple of minutes on data shipped in a package (scikit-learn's digits,
8 x 8 upsampled to 32 x 32 x 3, 10 classes; and xaiready's own benchmark shapes, 3 classes), plus
the built-in benchmark CNN. Each model's held-out accuracy is printed: it counts as trained when it
is well above chance.

Broken corpus: "works but tells nothing" explanations built from the same trained models (each
case says what makes it broken). Class-blind cases must trip ``target-sensitivity``, model-blind ones
``model-randomization``.

For every method it prints the distribution of the two similarities (median / p95 / max over every
healthy input of every model), the broken cases' values, and the false-alarm and detection rates at
the thresholds in ``xaiready.metrics.health`` (and at the previous 0.99 / 0.98). Similarity is the
check's own ``map_similarity`` (Spearman; two constant maps 1, one constant map 0). Per input: what
the check says of that input alone; per batch: what it says of the batch (its median sample).
About 11.5 min on one core (``--quick``: 2 models, about 4 min); ``--save`` / ``--load`` keep the
measurements, so the tables can be reprinted at new thresholds without measuring again. The numbers
beside the constants in metrics/health.py pool two seeds:
``--seed 0 --save s0.json``, ``--seed 1 --save s1.json``, then ``--load s0.json,s1.json``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/calibrate_health.py [--seed 0] [--n 32] [--quick] [--save F.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus.breaks import SharedScore  # noqa: E402  (BROKEN, class-blind: one shared score)

METHODS = ("gradcam", "saliency", "input-x-gradient", "integrated-gradients", "guided-backprop")


# ---- data ---------------------------------------------------------------------------------------------------
def digits(size: int = 32, seed: int = 0):
    """scikit-learn's 8 x 8 digits, upsampled to ``size`` x ``size``, 3 channels, standardized; 1297 / 500 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = ((x - x.mean()) / x.std()).numpy()
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:500], perm[500:]
    return (x[train], y[train]), (x[test], y[test])


def shapes(seed: int = 0):
    """xaiready's benchmark images (circle / square / triangle on clutter), 2400 / 300."""
    from xaiready.benchmark.data import make_dataset

    tr, te = make_dataset(2400, seed), make_dataset(300, seed + 1)
    return (tr.x, tr.y), (te.x, te.y)


# ---- architectures (not ours), adapted to 32 x 32 ------------------------------------------------------------
def resnet18(k):
    import torchvision

    m = torchvision.models.resnet18(num_classes=k)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # CIFAR-style stem: layer4 is 2 x 2 at 32 x 32
    return m


def mobilenet_v3_small(k):
    import torchvision

    m = torchvision.models.mobilenet_v3_small(num_classes=k)
    m.features[0][0].stride = (1, 1)  # last feature map 2 x 2
    return m


def efficientnet_b0(k):
    import torchvision

    m = torchvision.models.efficientnet_b0(num_classes=k)
    m.features[0][0].stride = (1, 1)
    return m


def convnext_atto(k):
    import timm

    return timm.create_model("convnext_atto", num_classes=k, patch_size=2)


def vit_tiny(k):
    import timm

    return timm.create_model("vit_tiny_patch16_224", num_classes=k, img_size=32, patch_size=8, depth=6)


def timm_test(name):
    """timm's own small test architectures (``test_resnet``: tests/metrics/test_health.py trains it)."""

    def build(k):
        import timm

        return timm.create_model(name, num_classes=k)

    return build


@dataclass
class Spec:
    name: str
    build: object
    data: str
    epochs: int
    lr: float = 2e-3
    methods: tuple = METHODS  # a method readiness refuses (no CAM layer) is reported and skipped


CORPUS = [
    Spec("resnet18/digits", resnet18, "digits", 4),
    Spec("mobilenet_v3_small/digits", mobilenet_v3_small, "digits", 8, 3e-3),
    Spec("efficientnet_b0/digits", efficientnet_b0, "digits", 5, 3e-3),
    Spec("convnext_atto/digits", convnext_atto, "digits", 6, 2e-3),
    Spec("vit_tiny/digits", vit_tiny, "digits", 15, 1e-3),
    Spec("mobilenet_v3_small/shapes", mobilenet_v3_small, "shapes", 6, 3e-3),
    Spec("timm test_resnet/digits", timm_test("test_resnet"), "digits", 5, 3e-3),
    Spec("timm test_efficientnet/digits", timm_test("test_efficientnet"), "digits", 5, 3e-3),
]


def train(spec: Spec, data, seed: int = 0):
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    model = spec.build(int(ytr.max()) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=1e-4)
    bs = 64
    steps = spec.epochs * (len(ytr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(xtr), torch.as_tensor(ytr)
    model.train()
    for _ in range(spec.epochs):
        perm = torch.randperm(len(yt), generator=gen)
        for b in range(len(yt) // bs):
            idx = perm[b * bs:(b + 1) * bs]
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    recalibrate_batchnorm(model, xt)
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, accuracy(model, xte, yte)


def recalibrate_batchnorm(model, x) -> None:
    """Running statistics recomputed over the training set: torchvision's MobileNet / EfficientNet use
    BN momentum 0.01, which a short training leaves far from the data (eval accuracy at chance)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(x[i:i + 256])
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        pred = torch.cat([model(torch.as_tensor(x[i:i + 250])) for i in range(0, len(x), 250)]).argmax(1)
    return float((pred.numpy() == y).mean())


# ---- broken cases ---------------------------------------------------------------------------------------------


def zero_head(model):
    """BROKEN (class-blind, constant): the trained model with its last layer's weight zeroed: the
    output is the bias alone, every gradient is zero, every map is constant."""
    dead = copy.deepcopy(model)
    name = list(reversed(_handle(dead).backend.randomizable_layers()))[0]
    with torch.no_grad():
        dict(dead.named_modules())[name].weight.zero_()
    return dead


def sobel(xs):
    """An edge detector: the input's gradient magnitude summed over channels; no model involved."""
    x = np.asarray(xs, dtype=np.float64)
    gy, gx = np.gradient(x, axis=(2, 3))
    return np.sqrt(gx ** 2 + gy ** 2).sum(1)


# ---- measurement ----------------------------------------------------------------------------------------------
def _handle(model):
    from xaiready.api import as_handle

    return as_handle(model)


@dataclass
class Row:
    model: str
    method: str
    case: str  # "healthy" or the broken case's name
    kind: str  # healthy | class-blind | model-blind
    cls: np.ndarray = field(default_factory=lambda: np.array([]))
    rnd: np.ndarray = field(default_factory=lambda: np.array([]))
    seconds: float = 0.0


def similarities(handle, x, explain, *, rand_handle=None, do_cls=True, do_rnd=True):
    """Per sample: Spearman(map for top class, map for runner-up), Spearman(map, map after randomizing
    the top RANDOMIZED_LAYERS of ``rand_handle`` (default: the explained model))."""
    from xaiready.metrics._engine import spatial
    from xaiready.metrics.health import RANDOMIZED_LAYERS, map_similarity
    from xaiready.targets import Class, runner_up

    target = handle.resolve(Class(None), x)
    a = spatial(explain(x, target), x, 1)
    cls = rnd = np.array([])
    if do_cls:
        cls = map_similarity(a, spatial(explain(x, runner_up(target, handle.forward(x))), x, 1))
    if do_rnd:
        backend = (rand_handle or handle).backend
        layers = list(reversed(backend.randomizable_layers()))[:RANDOMIZED_LAYERS]
        with backend.randomized(layers, seed=0):
            rnd = map_similarity(a, spatial(explain(x, target), x, 1))
    return cls, rnd


def measure_healthy(name, model, x, methods, rows):
    """Per method: the two similarities of the trained model's own maps on ``x``."""
    from xaiready.api import explainer_for
    from xaiready.errors import CapabilityError

    handle = _handle(model)
    done = []
    for method in methods:
        t = time.perf_counter()
        try:
            cls, rnd = similarities(handle, x, explainer_for(handle, method))
        except CapabilityError as e:  # what a user gets too: the method refused, no map to check
            print(f"  {method} refused: {str(e)[:160]}")
            continue
        rows.append(Row(name, method, "healthy", "healthy", cls, rnd, time.perf_counter() - t))
        if method == "gradcam":
            attr = _explain(handle, x[:1], method)
            print(f"  gradcam layer {attr.layer} {attr.info.get('layer_shape')}")
        done.append(method)
    return done


def _explain(handle, x, method):
    import xaiready as xr

    return xr.explain(handle, x, method, sanity="off")


def _cam_layer(handle, x) -> str:
    return _explain(handle, x[:1], "gradcam").layer


def measure_broken(name, model, x, methods, rows):
    """The broken cases built from the trained ``model`` (values are exact, 1 or NaN: few inputs do)."""
    from xaiready.api import explainer_for
    from xaiready.errors import CapabilityError
    from xaiready.targets import Class, Custom

    handle = _handle(model)
    k = int(handle.forward(x[:1]).shape[1])
    shared = _handle(SharedScore(model, k).eval())
    dead = _handle(zero_head(model).eval())
    frozen = _handle(copy.deepcopy(model))
    lse = Custom(lambda o: o.logsumexp(1), name="logsumexp")
    for method in methods:
        explain = explainer_for(handle, method)
        # BROKEN (class-blind): a wrapper that drops the requested class and explains the predicted one
        # (the `target=None` fallback bug): the runner-up's "map" is the top class's map.
        dropped = lambda xs, tt, e=explain: e(xs, handle.resolve(Class(None), xs))  # noqa: E731
        rows.append(Row(name, method, "target dropped", "class-blind",
                        similarities(handle, x, dropped, do_rnd=False)[0]))
        # BROKEN (class-blind): a Custom target that explains a class-free score (log-sum-exp of the
        # logits: "how confident is the model") whatever class is asked for.
        free = lambda xs, tt, e=explain: e(xs, lse)  # noqa: E731
        rows.append(Row(name, method, "class-free Custom target", "class-blind",
                        similarities(handle, x, free, do_rnd=False)[0]))
        # BROKEN (class-blind): the model's logits replaced by one shared score + fixed offsets.
        rows.append(Row(name, method, "shared-score head", "class-blind",
                        similarities(shared, x, explainer_for(shared, method), do_rnd=False)[0]))
        # BROKEN (class-blind, constant): the last layer's weight zeroed. explain() refuses it up front
        # (readiness measures the gradient as zero); verify=False shows what the health check does.
        # (verify=False also skips the CAM layer search, which finds no layer without gradient: Grad-CAM
        # gets the layer it uses on the trained model.)
        # A layer named without verification has no measured layout: a token layer then cannot be read,
        # and the case is only refused (not counted).
        opts = {"layer": _cam_layer(handle, x)} if method == "gradcam" else {}
        try:
            cls = similarities(dead, x, explainer_for(dead, method, verify=False, **opts), do_rnd=False)[0]
            rows.append(Row(name, method, "zero-weight head", "class-blind", cls))
        except CapabilityError as e:
            print(f"  zero-weight head {method} refused (not counted): {str(e)[:100]}")
        # BROKEN (model-blind): the pipeline explains a frozen copy of the model (an exported or cached
        # copy), so the weights under test, randomized here, never reach the explanation.
        rows.append(Row(name, method, "frozen copy explained", "model-blind", None,
                        similarities(frozen, x, explainer_for(frozen, method), rand_handle=handle, do_cls=False)[1]))
    # BROKEN (class- and model-blind): maps computed from the input alone, in every method's slot.
    for label, fn in (("input |x|", lambda xs, tt: np.abs(np.asarray(xs))), ("edge detector", lambda xs, tt: sobel(xs))):
        cls, rnd = similarities(handle, x, fn)
        for method in methods:
            rows.append(Row(name, method, label, "class-blind", cls))
            rows.append(Row(name, method, label, "model-blind", None, rnd))


def untrained(spec: Spec, k: int, x, rows, methods):
    """Not counted as broken: the same architecture at random init (it tells nothing, but neither
    check is about that); printed to show where such maps fall."""
    from xaiready.api import explainer_for

    torch.manual_seed(1)
    model = spec.build(k).eval()
    handle = _handle(model)
    for method in methods:
        try:
            cls, rnd = similarities(handle, x, explainer_for(handle, method))
        except Exception as e:  # e.g. no CAM layer at random init
            print(f"  untrained {method} refused: {str(e)[:100]}")
            continue
        rows.append(Row(spec.name, method, "untrained (info)", "info", cls, rnd))


def save_rows(rows, path):
    import json

    def enc(v):
        return None if v is None else [None if not np.isfinite(f) else float(f) for f in np.asarray(v, float)]

    with open(path, "w") as f:
        json.dump([{**r.__dict__, "cls": enc(r.cls), "rnd": enc(r.rnd)} for r in rows], f)


def load_rows(path):
    import json

    def dec(v):
        return None if v is None else np.array([np.nan if f is None else f for f in v], dtype=np.float64)

    with open(path) as f:
        return [Row(**{**d, "cls": dec(d["cls"]), "rnd": dec(d["rnd"])}) for d in json.load(f)]


# ---- report ---------------------------------------------------------------------------------------------------
def _stats(v):
    v = np.asarray(v, dtype=np.float64)
    f = v[np.isfinite(v)]
    if not f.size:
        return "   nan /   nan /   nan"
    return f"{np.median(f):6.3f} / {np.quantile(f, 0.95):6.3f} / {f.max():6.3f}"


def _flags(v, thr):
    """Per input, as the check judges a batch of one: above the threshold, or undefined (non-finite)."""
    v = np.asarray(v, dtype=np.float64)
    return ~np.isfinite(v) | (v > thr)


def _batch_flag(v, thr):
    """What the check reports for the batch (its median sample against the threshold)."""
    from xaiready.metrics.health import _blind

    return _blind(v, thr)[0]


def report(rows, methods):
    from xaiready.methods import load_methods
    from xaiready.metrics import health

    def family(m):
        return load_methods().get(m).family

    def target_threshold(m):
        return health.target_threshold(family(m))

    def randomization_threshold(m):
        return health.randomization_threshold(family(m))

    print("\n## healthy trained models: similarity median / p95 / max over all inputs (NaN: undefined)")
    print("| method | class thr | class sim | class NaN | rand thr | rand sim | rand NaN |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        h = [r for r in rows if r.method == m and r.kind == "healthy"]
        c, r_ = np.concatenate([r.cls for r in h]), np.concatenate([r.rnd for r in h])
        print(f"| {m} | {target_threshold(m)} | {_stats(c)} | {int((~np.isfinite(c)).sum())}/{c.size} | "
              f"{randomization_threshold(m)} | {_stats(r_)} | {int((~np.isfinite(r_)).sum())}/{r_.size} |")
    print("\n## per model (healthy): class max, rand max")
    for model in dict.fromkeys(r.model for r in rows):
        cells = []
        for m in methods:
            h = [r for r in rows if r.model == model and r.method == m and r.kind == "healthy"]
            c, r_ = (np.concatenate([getattr(r, a) for r in h]) for a in ("cls", "rnd")) if h else ([], [])
            cells.append(f"{m} {np.nanmax(c):.3f}/{np.nanmax(r_):.3f}" if h else f"{m} -")
        print(f"  {model:28s} " + " | ".join(cells))
    print("\n## broken cases: min / max similarity over inputs and models (the check flags > threshold or NaN)")
    print("| method | case | kind | min | max | NaN | flagged inputs | flagged batches |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        for case in dict.fromkeys(r.case for r in rows if r.kind not in ("healthy",)):
            for kind in ("class-blind", "model-blind", "info"):
                sel = [r for r in rows if r.method == m and r.case == case and r.kind == kind]
                if not sel:
                    continue
                parts = [(r.cls, target_threshold(m)) for r in sel if r.cls is not None and r.cls.size]
                if kind in ("model-blind",):
                    parts = [(r.rnd, randomization_threshold(m)) for r in sel]
                if kind == "info":
                    parts = [(r.cls, target_threshold(m)) for r in sel]
                v = np.concatenate([p for p, _ in parts])
                f = v[np.isfinite(v)]
                flagged = sum(int(_flags(p, t).sum()) for p, t in parts)
                batches = sum(_batch_flag(p, t) for p, t in parts)
                lo, hi = (f"{f.min():.4f}", f"{f.max():.4f}") if f.size else ("nan", "nan")
                label = kind if kind != "info" else "info (class sim)"
                print(f"| {m} | {case} | {label} | {lo} | {hi} | {int((~np.isfinite(v)).sum())}/{v.size} | "
                      f"{flagged}/{v.size} | {batches}/{len(parts)} |")
                if kind == "info":
                    v = np.concatenate([r.rnd for r in sel])
                    t = randomization_threshold(m)
                    print(f"| {m} | {case} | info (rand sim) | {np.nanmin(v):.4f} | {np.nanmax(v):.4f} | "
                          f"{int((~np.isfinite(v)).sum())}/{v.size} | "
                          f"{sum(int(_flags(r.rnd, t).sum()) for r in sel)}/{v.size} | "
                          f"{sum(_batch_flag(r.rnd, t) for r in sel)}/{len(sel)} |")

    rates(rows, methods, target_threshold, randomization_threshold, "the chosen thresholds (metrics.health)")
    rates(rows, methods, lambda m: 0.99, lambda m: 0.98,
          "the previous thresholds and batch rule (0.99 / 0.98, the batch's maximum)", batch=_batch_flag_max)


def _batch_flag_max(v, thr):
    """The previous batch rule: the highest similarity (NaN when no sample has one)."""
    v = np.asarray(v, dtype=np.float64)
    return (not np.isfinite(v).any()) or bool(np.nanmax(v) > thr)


def rates(rows, methods, target_threshold, randomization_threshold, title, batch=None):
    """False alarms on healthy maps and detections of broken ones, per input and per batch (the check)."""
    batch = batch or _batch_flag
    print(f"\n## rates at {title}")
    print("| method | false alarms: class (inputs, batches) | rand (inputs, batches) | detected: class-blind "
          "(inputs, batches) | model-blind (inputs, batches) |")
    print("|---|---|---|---|---|")
    tot = np.zeros(16, dtype=int)
    for m in methods:
        tc, tr = target_threshold(m), randomization_threshold(m)
        h = [r for r in rows if r.method == m and r.kind == "healthy"]
        cb = [r for r in rows if r.method == m and r.kind == "class-blind"]
        mb = [r for r in rows if r.method == m and r.kind == "model-blind"]
        nums = []
        for sel, attr, t in ((h, "cls", tc), (h, "rnd", tr), (cb, "cls", tc), (mb, "rnd", tr)):
            vals = [getattr(r, attr) for r in sel]
            nums += [sum(int(_flags(v, t).sum()) for v in vals), sum(v.size for v in vals),
                     sum(batch(v, t) for v in vals), len(vals)]
        tot += nums
        print(f"| {m} | " + " | ".join(f"{nums[i]}/{nums[i + 1]}, {nums[i + 2]}/{nums[i + 3]}"
                                       for i in range(0, 16, 4)) + " |")
    print("| all | " + " | ".join(f"{tot[i]}/{tot[i + 1]} ({tot[i] / max(tot[i + 1], 1):.1%}), "
                                  f"{tot[i + 2]}/{tot[i + 3]}" for i in range(0, 16, 4)) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32, help="held-out inputs per model")
    ap.add_argument("--broken", type=int, default=8, help="inputs per model for the broken and untrained cases")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="training seed; also picks the held-out inputs (a slice per seed)")
    ap.add_argument("--quick", action="store_true", help="two models, 16 inputs (a smoke run)")
    ap.add_argument("--models", default="", help="comma-separated substrings of the corpus names to keep")
    ap.add_argument("--save", help="write the measured similarities to this JSON file")
    ap.add_argument("--load", help="print the tables from --save files (comma-separated, pooled) at the current "
                    "thresholds and exit")
    args = ap.parse_args()
    if args.load:
        return report([r for f in args.load.split(",") for r in load_rows(f)], METHODS)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    corpus = CORPUS[:2] if args.quick else CORPUS
    if args.models:
        corpus = [s for s in corpus if any(k in s.name for k in args.models.split(","))]
    n = 16 if args.quick else args.n
    rows: list[Row] = []
    cache = {}

    from xaiready.benchmark.models import test_batch
    from xaiready.benchmark.models import train as train_benchmark

    t = time.perf_counter()
    bench = train_benchmark("classification", seed=args.seed)
    x, _, _ = test_batch(bench, n, correct_only=False)
    print(f"benchmark-cnn/shapes (xaiready's own): held-out accuracy {bench.score:.3f} (chance 0.333), "
          f"trained in {time.perf_counter() - t:.0f} s", flush=True)
    done = measure_healthy("benchmark-cnn/shapes", bench.model, x, METHODS, rows)
    measure_broken("benchmark-cnn/shapes", bench.model, x[:args.broken], done, rows)
    for spec in corpus:
        if spec.data not in cache:
            cache[spec.data] = digits() if spec.data == "digits" else shapes()
        data = cache[spec.data]
        t = time.perf_counter()
        model, acc = train(spec, data, seed=args.seed)
        k = int(data[0][1].max()) + 1
        print(f"{spec.name}: held-out accuracy {acc:.3f} (chance {1 / k:.3f}), {spec.epochs} epochs in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        x = data[1][0][args.seed * n:(args.seed + 1) * n]
        t = time.perf_counter()
        done = measure_healthy(spec.name, model, x, spec.methods, rows)
        measure_broken(spec.name, model, x[:args.broken], done, rows)
        untrained(spec, k, x[:args.broken], rows, done)
        print(f"  measured in {time.perf_counter() - t:.0f} s", flush=True)
    if args.save:
        save_rows(rows, args.save)
    report(rows, METHODS)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

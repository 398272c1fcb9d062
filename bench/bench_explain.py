"""Explainers: ours vs Captum and pytorch-grad-cam, side by side in one process; prints ratios.

    python bench/bench_explain.py                        # resnet18 + resnet50, batch 8, 224x224
    python bench/bench_explain.py --quick                # resnet18, fewer steps: a smoke run
    python bench/bench_explain.py --memory-only          # only the peak-memory table

Timings are medians of interleaved runs (ours, anchor, ours, anchor, ...) after one warm-up each, so
load from other processes hits both sides alike. ``fb`` is one plain forward + backward to the input
(``torch.autograd.grad`` w.r.t. the input) at the same batch: the unit the issue's ratios use.
Our side runs through the public API on a reused handle: the capability check (one readiness
measurement per handle and input shape) is paid in the warm-up and reported on its own line. Each of
our methods runs at its default (health checks on) and with ``sanity="off"``; the default line also
shows its cost over the method alone. ``best anchor`` is the fastest anchor setting in the section.

    python bench/bench_explain.py --device cuda          # make bench-gpu: the same on a GPU

Peak memory: each configuration runs in a fresh subprocess that reports its peak resident set size
(sampled from /proc every millisecond; CPU) or ``torch.cuda.max_memory_allocated`` (GPU), minus the
same process's memory after loading the model and one small warm-up forward; a plain forward +
backward at the same batch is measured the same way as the reference line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import xaiready as xr  # noqa: E402
from xaiready.api import as_handle  # noqa: E402
from xaiready.targets import Class  # noqa: E402

K = 3  # explained class


def build(name: str, device: str):
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(fns: dict, repeats: int, device: str) -> dict:
    """Median seconds of each callable, run round-robin after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def plain_fb(model, x):
    xt = x.clone().requires_grad_(True)
    torch.autograd.grad(model(xt)[:, K].sum(), xt)


def layer_of(model):
    return model.layer4


# ---- timing sections ------------------------------------------------------------------------------------------
def bench_cam(model, x, xn, handle, repeats, device):
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    lgc = LayerGradCam(model, layer_of(model))
    gc = GradCAM(model=model, target_layers=[layer_of(model)])
    targets = [ClassifierOutputTarget(K)] * len(x)
    fns = {
        "fb": lambda: plain_fb(model, x),
        "ours gradcam": lambda: xr.explain(handle, xn, "gradcam", Class(K), layer="layer4"),
        "ours gradcam sanity=off": lambda: xr.explain(handle, xn, "gradcam", Class(K), layer="layer4",
                                                      sanity="off"),
        "ours layercam sanity=off": lambda: xr.explain(handle, xn, "layercam", Class(K), layer="layer4",
                                                       sanity="off"),
        "captum LayerGradCam": lambda: lgc.attribute(x, target=K),
        "grad-cam GradCAM": lambda: gc(input_tensor=x, targets=targets),
    }
    t = interleaved(fns, repeats, device)
    model.zero_grad(set_to_none=True)  # grad-cam's backward() filled them
    gc.activations_and_grads.release()
    return t


def bench_ig(model, x, xn, handle, steps, repeats, device, heavy, chunks=()):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    n = len(x)
    fns = {
        "fb": lambda: plain_fb(model, x),
        "ours IG (auto chunk)": lambda: xr.explain(handle, xn, "integrated-gradients", Class(K), n_steps=steps),
        "ours IG (auto chunk) sanity=off": lambda: xr.explain(handle, xn, "integrated-gradients", Class(K),
                                                              n_steps=steps, sanity="off"),
    }
    for ibs in sorted({n, 8, 32}):  # Captum's best of these is the anchor
        fns[f"captum IG internal_batch_size={ibs}"] = lambda ibs=ibs: ig.attribute(x, target=K, n_steps=steps,
                                                                                   internal_batch_size=ibs)
    for c in chunks:  # our chunk size set by hand, to see what the automatic choice leaves on the table
        fns[f"ours IG batch_size={c}"] = lambda c=c: xr.explain(handle, xn, "integrated-gradients", Class(K),
                                                               n_steps=steps, batch_size=c)
    if heavy:
        fns["captum IG internal_batch_size=50"] = lambda: ig.attribute(x, target=K, n_steps=steps,
                                                                       internal_batch_size=50)
    return interleaved(fns, repeats, device)


def bench_smoothgrad(model, x, xn, handle, samples, repeats, device, heavy):
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(model))
    fns = {
        "fb": lambda: plain_fb(model, x),
        "ours smoothgrad (auto chunk)": lambda: xr.explain(handle, xn, "smoothgrad", Class(K), n_samples=samples),
        "ours smoothgrad (auto chunk) sanity=off": lambda: xr.explain(handle, xn, "smoothgrad", Class(K),
                                                                      n_samples=samples, sanity="off"),
    }
    for ntb in (1, 8):
        fns[f"captum NoiseTunnel nt_samples_batch_size={ntb}"] = lambda ntb=ntb: nt.attribute(
            x, nt_samples=samples, nt_samples_batch_size=ntb, stdevs=0.5, target=K)
    if heavy:
        fns["captum NoiseTunnel (default batch)"] = lambda: nt.attribute(x, nt_samples=samples, stdevs=0.5,
                                                                        target=K)
    return interleaved(fns, repeats, device)


def report(title: str, times: dict, per_fb: float) -> None:
    print(f"\n{title}")
    anchors = {k: v for k, v in times.items() if not k.startswith(("ours", "fb"))}
    best_anchor = min(anchors.values()) if anchors else None
    for k, v in times.items():
        if k == "fb":
            continue
        line = f"  {k:<46} {v * 1000:9.1f} ms   {v / per_fb:6.2f}x fb-units"
        if k.startswith("ours") and best_anchor:
            line += f"   {v / best_anchor:5.2f}x best anchor"
        off = times.get(f"{k} sanity=off")
        if off:  # what the default health checks add on top of the method itself
            line += f"   {v / off:5.2f}x its sanity=off"
        print(line)


# ---- peak memory (one subprocess per configuration) ---------------------------------------------------------
def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Samples the resident set size every millisecond: ru_maxrss cannot be reset, and the framework's
    import alone may already have set it higher than what the method adds."""

    def __init__(self):
        import threading

        self.peak, self._stop = rss_now(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_now())
            time.sleep(0.001)

    def stop(self) -> int:
        self._stop = True
        self._thread.join()
        return max(self.peak, rss_now())


def peak_child(cfg: dict) -> None:
    device = cfg["device"]
    model = build(cfg["model"], device)
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=device)
    with torch.no_grad():
        model(x[:1])  # warm the framework up (allocator, kernels) before the baseline is read
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.max_memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = rss_now()
        sampler = RssPeak()
    kind, n = cfg["kind"], cfg["n"]
    if kind == "plain-fb":
        plain_fb(model, x)
    elif kind == "ours-ig":
        xr.explain(as_handle(model), x.cpu().numpy(), "integrated-gradients", Class(K), n_steps=n, verify=False)
    elif kind == "ours-sg":
        xr.explain(as_handle(model), x.cpu().numpy(), "smoothgrad", Class(K), n_samples=n, verify=False)
    elif kind.startswith("captum-ig"):
        from captum.attr import IntegratedGradients

        ibs = cfg.get("ibs")
        IntegratedGradients(model).attribute(x, target=K, n_steps=n, internal_batch_size=ibs)
    elif kind.startswith("captum-sg"):
        from captum.attr import NoiseTunnel, Saliency

        NoiseTunnel(Saliency(model)).attribute(x, nt_samples=n, nt_samples_batch_size=cfg.get("ntb"),
                                               stdevs=0.5, target=K)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        extra = peak - base
    else:
        peak = sampler.stop()
        extra = peak - base
    print(json.dumps({"peak": peak, "extra": max(0, extra), "base": base}))


def peak_memory(model: str, args, configs) -> None:
    print(f"\npeak memory, {model}, batch {args.batch}, {args.size}x{args.size}, {args.device} "
          "(added on top of the loaded model; CPU: resident set size, GPU: max allocated)")
    for label, cfg in configs:
        cfg = {"model": model, "batch": args.batch, "size": args.size, "device": args.device, **cfg}
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            print(f"  {label:<46} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {label:<46} +{r['extra'] / 2**30:6.2f} GiB   (peak {r['peak'] / 2**30:6.2f} GiB)")


def memory_configs(args, heavy):
    configs = [
        ("plain forward+backward (reference)", {"kind": "plain-fb", "n": 0}),
        (f"ours IG n_steps={args.steps}", {"kind": "ours-ig", "n": args.steps}),
        (f"ours IG n_steps={4 * args.steps}", {"kind": "ours-ig", "n": 4 * args.steps}),
        (f"captum IG n_steps={args.steps} internal_batch_size={args.batch}",
         {"kind": "captum-ig", "n": args.steps, "ibs": args.batch}),
        (f"captum IG n_steps={4 * args.steps} internal_batch_size={args.batch}",
         {"kind": "captum-ig", "n": 4 * args.steps, "ibs": args.batch}),
        (f"ours smoothgrad n_samples={args.samples}", {"kind": "ours-sg", "n": args.samples}),
        (f"captum NoiseTunnel n={args.samples} nt_samples_batch_size=1",
         {"kind": "captum-sg", "n": args.samples, "ntb": 1}),
    ]
    if heavy:
        configs += [(f"captum IG n_steps={args.steps} internal_batch_size=50",
                     {"kind": "captum-ig", "n": args.steps, "ibs": 50}),
                    (f"captum IG n_steps={args.steps} default (one pass)",
                     {"kind": "captum-ig-default", "n": args.steps, "ibs": None}),
                    (f"captum NoiseTunnel n={args.samples} default batch",
                     {"kind": "captum-sg-default", "n": args.samples, "ntb": None})]
    return configs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=50, help="IG n_steps for timing (memory also runs 4x this)")
    p.add_argument("--samples", type=int, default=10, help="SmoothGrad samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--heavy", action="store_true", help="also the anchors' large-chunk settings (~10 GB)")
    p.add_argument("--quick", action="store_true", help="resnet18 only, 10 IG steps, 3 repeats")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--ig-chunks", default="", help="also time our IG at these batch sizes, e.g. 4,16,64")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        peak_child(json.loads(args.child))
        return
    if args.quick:
        args.models, args.steps, args.repeats, args.samples = "resnet18", 10, 3, 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch}, {args.size}x{args.size}, repeats {args.repeats}")
    for name in args.models.split(","):
        if not args.memory_only:
            model = build(name, args.device)
            x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
            xn = x.cpu().numpy()
            handle = as_handle(model)
            first = timed(lambda: xr.explain(handle, xn, "gradcam", Class(K)), args.device)  # noqa: B023
            again = timed(lambda: xr.explain(handle, xn, "gradcam", Class(K)), args.device)  # noqa: B023
            print(f"\n== {name}: first explain (readiness measured once, then cached) {first:.2f} s, "
                  f"next {again:.2f} s")
            t = bench_cam(model, x, xn, handle, args.repeats, args.device)
            report(f"CAM ({name}, layer4)   fb = {t['fb'] * 1000:.1f} ms", t, t["fb"])
            reps = max(1, args.repeats // 2)
            chunks = [int(c) for c in args.ig_chunks.split(",") if c]
            t = bench_ig(model, x, xn, handle, args.steps, reps, args.device, args.heavy, chunks)
            report(f"IG n_steps={args.steps} ({name})   unit = {args.steps} x fb = {t['fb'] * args.steps:.2f} s",
                   t, t["fb"] * args.steps)
            t = bench_smoothgrad(model, x, xn, handle, args.samples, reps, args.device, args.heavy)
            report(f"SmoothGrad n_samples={args.samples} ({name})   unit = {args.samples} x fb", t,
                   t["fb"] * args.samples)
        if not args.no_memory:
            peak_memory(name, args, memory_configs(args, args.heavy))


if __name__ == "__main__":
    main()

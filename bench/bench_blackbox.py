"""Black-box methods: onnxruntime vs eager torch, ours vs Captum's Occlusion, ours vs the forward floor.

    python bench/bench_blackbox.py [--size 64] [--repeats 3] [--batch-size 16] [--threads N]

One process, one model (torchvision resnet18, random weights, exported with a dynamic batch axis), the
same input and options everywhere. The forward-pass floor is the time of the forward passes alone:
ceil(windows / batch) forwards of a pre-built batch, plus the one unperturbed forward every method makes.
Repeats are interleaved (every contender once per round) and the best of ``--repeats`` is kept, so
all numbers see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--masks", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch
    import torchvision
    from captum.attr import Occlusion as CaptumOcclusion

    import xaiready as xr
    from xaiready.api import as_handle
    from xaiready.backends.onnxruntime import OnnxRuntimeBackend
    from xaiready.methods.blackbox import Occlusion, Rise
    from xaiready.model import ModelHandle, Source
    from xaiready.targets import Class

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}})
        handle_ort = xr.load(path, convert=False)
        if args.threads:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            handle_ort = ModelHandle(OnnxRuntimeBackend(sess), Source(str(path), "onnx", "onnxruntime"))
        handle_torch = as_handle(model)
        target = Class(7)
        b, w = args.batch_size, args.window
        n_windows = (args.size // w) ** 2
        batch = np.repeat(x, b, axis=0)

        def occ(handle):
            return lambda: Occlusion()(handle, x, target, window=w, stride=w, batch_size=b)

        def rise(handle):
            return lambda: Rise()(handle, x, target, n_masks=args.masks, batch_size=b)

        def floor(handle, n):
            """The forward passes alone, as the method makes them: ceil(n / b) batches plus the unperturbed x."""
            def run():
                for _ in range(-(-n // b)):
                    handle.forward(batch)
                handle.forward(x)
            return run

        captum = CaptumOcclusion(model)

        def run_captum():
            with torch.no_grad():
                captum.attribute(torch.from_numpy(x), sliding_window_shapes=(3, w, w), strides=(3, w, w),
                                 baselines=0.0, target=7, perturbations_per_eval=b)

        contenders = {"occlusion/captum": run_captum}
        for name, handle in (("onnxruntime", handle_ort), ("torch", handle_torch)):
            contenders.update({f"occlusion/{name}": occ(handle), f"rise/{name}": rise(handle),
                               f"floor-occlusion/{name}": floor(handle, n_windows),
                               f"floor-rise/{name}": floor(handle, args.masks)})
        for fn in contenders.values():
            fn()  # warm-up
        # Interleaved repeats: every contender sees the same (shared, noisy) machine; best of each.
        rows = {k: float("inf") for k in contenders}
        with handle_torch.session():
            for _ in range(args.repeats):
                for key, fn in contenders.items():
                    rows[key] = min(rows[key], best(fn, 1))

        # Noise-free view of our overhead: time spent outside the backend's forward during one run.
        outside = {}
        for name, handle in (("onnxruntime", handle_ort), ("torch", handle_torch)):
            inner = handle.backend.forward
            spent = [0.0]

            def timed(batch_, inner=inner, spent=spent):
                t = time.perf_counter()
                try:
                    return inner(batch_)
                finally:
                    spent[0] += time.perf_counter() - t

            handle.backend.forward = timed
            for method, fn in (("occlusion", occ(handle)), ("rise", rise(handle))):
                spent[0] = 0.0
                t = time.perf_counter()
                fn()
                total = time.perf_counter() - t
                outside[f"{method}/{name}"] = (total - spent[0]) / total
            handle.backend.forward = inner

    print(f"resnet18 {args.size}x{args.size}, batch {b}, occlusion {n_windows} windows of {w}px, "
          f"RISE {args.masks} masks; best of {args.repeats}; torch threads {torch.get_num_threads()}")
    for key, value in rows.items():
        print(f"  {key:28} {value * 1000:9.1f} ms")
    print("ratios")
    print(f"  occlusion onnxruntime / torch        {rows['occlusion/onnxruntime'] / rows['occlusion/torch']:.3f}")
    print(f"  rise      onnxruntime / torch        {rows['rise/onnxruntime'] / rows['rise/torch']:.3f}")
    print(f"  occlusion ours(torch) / captum       {rows['occlusion/torch'] / rows['occlusion/captum']:.3f}")
    for name in ("onnxruntime", "torch"):
        print(f"  occlusion ours / forward floor [{name:11}] "
              f"{rows[f'occlusion/{name}'] / rows[f'floor-occlusion/{name}']:.3f}")
        print(f"  rise      ours / forward floor [{name:11}] "
              f"{rows[f'rise/{name}'] / rows[f'floor-rise/{name}']:.3f}")
    print("share of our wall time spent outside the model's forward passes (insensitive to machine load)")
    for key, share in outside.items():
        print(f"  {key:28} {100 * share:5.1f} %")


if __name__ == "__main__":
    main()

"""``xaiready run`` against calling the same method directly, and Ray with 2 workers against 1.

1. Local, one process: images per second of ``run_dataset`` (one method, no metrics) beside a loop
   that calls the method directly on the same batches, already in memory (no reading, no health
   checks, no files). ``run`` is timed twice: as the comparison (``sanity="off"``, no overlays: the
   same work plus reading, writing maps and committing batches) and with its defaults (cheap health
   checks and overlays, which the loop does not do). Target: >= 0.9x the direct loop.
2. Ray, a CPU-bound model (the benchmark CNN at 64 x 64, integrated gradients): images per second
   with 2 actors against 1, in the steady state (first batch committed to last), and end to end
   (Ray's start and the actors' model loading included). Target: >= 1.6x. Needs 2 free cores.

    .venv/bin/python bench/bench_run.py [--images 256] [--batch 16] [--method saliency] [--no-ray]

Timings are the best of ``--repeats``; on shared cores, take them as indicative.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ARCH = "xaiready.benchmark.models:BenchmarkCNN"
MODELS = {  # name: (architecture, image side, images); resnet18 has random weights (nothing is downloaded)
    "cnn": (ARCH, 32, 1024),
    "resnet18": ("torchvision.models:resnet18", 224, 96),
}


def write_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    from xaiready.benchmark.data import make_dataset

    folder.mkdir(parents=True)
    ds = make_dataset(n, seed=3)
    for i in range(n):
        pixels = np.clip((ds.x[i].transpose(1, 2, 0) + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.png")


def direct_loop(model: Path, images: Path, method: str, batch: int, arch: str = ARCH) -> float:
    """Images per second of the method alone, on the run's batches read beforehand."""
    import xaiready as xr
    from xaiready.inputs import ImageOptions, read_input
    from xaiready.methods import load_methods

    handle = xr.load(model, arch=arch)
    opts = ImageOptions(mean=[0.5] * 3, std=[0.5] * 3)
    files = sorted(images.iterdir())
    xs = [np.concatenate([read_input(f, image=opts) for f in files[i:i + batch]]) for i in range(0, len(files), batch)]
    cls = load_methods().get(method)
    cls()(handle, xs[0], None)  # warm-up, as the run's cost measurement is
    start = time.perf_counter()
    with handle.session():
        for x in xs:
            cls()(handle, x, None, contrast=False)
    return len(files) / (time.perf_counter() - start)


def timed_run(model: Path, images: Path, out: Path, arch: str = ARCH, **kwargs) -> tuple[float, float]:
    """(end-to-end images/s of the engine, steady-state images/s from the first batch to the last:
    without the first batch, which also pays for the framework's first call at the batch's shape)."""
    from xaiready.runs import run_dataset

    if out.exists():
        shutil.rmtree(out)
    stamps: list[tuple[float, int]] = []
    run = run_dataset(str(model), images, out=out, model_options={"arch": arch}, mean=[0.5] * 3, std=[0.5] * 3,
                      show_progress=False, log=lambda line: None,
                      progress=lambda done, total: stamps.append((time.perf_counter(), done)), **kwargs)
    (t0, d0), (t1, d1) = stamps[0], stamps[-1]
    steady = (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")
    return run["images"] / run["seconds"], steady


def interleaved(fns, repeats: int) -> list[float]:
    """The best rate of each function, measured in turns (A B C A B C ...) so that a busy spell on
    shared cores does not land on one of them only."""
    rates = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            rates[i].append(fn())
    return [max(r, key=lambda v: v if isinstance(v, float) else v[0]) for r in rates]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn,resnet18", help=f"of {', '.join(MODELS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--method", default="saliency")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-ray", dest="ray", action="store_false")
    p.add_argument("--ray-images", type=int, default=192)
    p.add_argument("--scratch", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                   help="folder for images and run directories (default: /dev/shm, so the disk's speed "
                        "at creating thousands of small files is not what is measured)")
    args = p.parse_args()

    import torch

    from xaiready.benchmark.models import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-run-", dir=args.scratch))
    try:
        model = tmp / "cnn.pt"
        torch.save(train("classification", n_train=1200, epochs=4).model.state_dict(), model)
        for name in args.models.split(","):
            arch, side, n = MODELS[name]
            weights = model
            if name != "cnn":
                import torchvision

                weights = tmp / f"{name}.pt"
                torch.save(getattr(torchvision.models, name)().state_dict(), weights)
            images = tmp / f"images-{name}"
            write_images(images, n, side)
            direct, (same, same_steady), (full, full_steady) = interleaved([
                lambda w=weights, i=images, a=arch: direct_loop(w, i, args.method, args.batch, a),
                lambda w=weights, i=images, a=arch: timed_run(w, i, tmp / "r", a, methods=[args.method],
                                                              batch_size=args.batch, sanity="off", overlays=False),
                lambda w=weights, i=images, a=arch: timed_run(w, i, tmp / "r", a, methods=[args.method],
                                                              batch_size=args.batch)], args.repeats)
            print(f"local, {name}, {n} images {side}x{side}, {args.method}, batch {args.batch}, files in {args.scratch}:")
            print(f"  direct method loop               {direct:8.1f} images/s")
            print(f"  run (sanity off, no overlays)    {same:8.1f} images/s = {same / direct:.2f}x direct "
                  f"(target >= 0.9); steady state {same_steady:.1f} = {same_steady / direct:.2f}x")
            print(f"  run (defaults: health, overlays) {full:8.1f} images/s = {full / direct:.2f}x direct; "
                  f"steady state {full_steady:.1f} = {full_steady / direct:.2f}x")
        if not args.ray:
            return
        big = tmp / "big"
        write_images(big, args.ray_images, 64)  # the benchmark CNN at 64 x 64
        rates = {}
        for workers in (1, 2):
            rates[workers] = timed_run(model, big, tmp / f"ray{workers}", methods=["integrated-gradients"],
                                       batch_size=8, engine="ray", workers=workers, sanity="off", overlays=False)
        (e1, s1), (e2, s2) = rates[1], rates[2]
        print(f"ray, {args.ray_images} images 64x64, integrated-gradients, batch 8:")
        print(f"  1 actor   steady {s1:6.1f} images/s, end to end {e1:6.1f} images/s")
        print(f"  2 actors  steady {s2:6.1f} images/s, end to end {e2:6.1f} images/s")
        print(f"  2 / 1: steady {s2 / s1:.2f}x (target >= 1.6), end to end {e2 / e1:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

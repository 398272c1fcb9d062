"""The demo's last step: the built-in benchmark set through ``xaiready run``, and its HTML report.

The trained benchmark CNN is saved as a state dict, its held-out images as PNG files with their
object masks and a labels CSV, so the run reads a dataset from disk exactly as a user's would.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

ARCH = "xaiready.benchmark.models:BenchmarkCNN"
METHODS = ("gradcam", "integrated-gradients")
METRICS = ("deletion", "insertion", "pointing-game")
IMAGES = 60


def write_benchmark_set(trained, root: Path, n: int = IMAGES) -> tuple[Path, Path, Path]:
    """``root/images/*.png``, ``root/masks/*.png`` and ``root/labels.csv`` of ``n`` held-out images.

    Pixels hold ``(x + 1) / 2`` of the benchmark's roughly zero-mean images, so ``--mean 0.5 --std
    0.5`` gives the model back its own inputs (up to 8-bit rounding).
    """
    from PIL import Image

    from ..benchmark.data import CLASSES

    ds = trained.test
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(min(n, len(ds))):
        name = f"{CLASSES[int(ds.y[i])]}-{i:03d}.png"
        pixels = np.clip((ds.x[i].transpose(1, 2, 0) + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / name)
        Image.fromarray((ds.mask[i] * 255).astype(np.uint8)).save(masks / name)
        rows.append((name, int(ds.y[i])))
    labels = root / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    return images, masks, labels


def benchmark_run(out: Path, console, n: int = IMAGES) -> Path:
    """Run the benchmark set (``n`` images, Grad-CAM and IG, three metrics) into ``out/run``; the report's path."""
    import torch

    from ..benchmark.models import train
    from .runner import run_dataset

    trained = train("classification")
    model = out / "models" / "benchmark-cnn.pt"
    model.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trained.model.state_dict(), model)
    images, masks, labels = write_benchmark_set(trained, out / "benchmark-set", n)
    run_dir = out / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo's own output from an earlier demo: start afresh
    console.print(f"xaiready run over {n} benchmark images: {', '.join(METHODS)}; {', '.join(METRICS)} ...")
    run = run_dataset(str(model), str(images), out=run_dir, methods=METHODS, metrics=METRICS, labels=str(labels),
                masks=str(masks), model_options={"arch": ARCH}, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                batch_size=16)
    report = Path(run["report"])
    console.print(f"[bold]run report: {report}[/] (open it in a browser; the same as `xaiready report {run_dir}`)")
    return report

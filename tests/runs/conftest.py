"""Real files for the run tests: a trained benchmark CNN saved as a state dict, and datasets of PNG
images of mixed sizes (32, 40 and 24 pixels) with labels, masks and manifests on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ARCH = "xaiready.benchmark.models:BenchmarkCNN"
NORM = ["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]  # the PNGs hold (x + 1) / 2
SIZES = (32, 40, 24)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    import torch

    from xaiready.benchmark.models import train

    trained = train("classification", n_train=1200, epochs=4)
    path = tmp_path_factory.mktemp("model") / "cnn.pt"
    torch.save(trained.model.state_dict(), path)
    return path


def write_dataset(root: Path, n: int, *, seed: int = 5, sizes=SIZES, masks: bool = True) -> Path:
    """``root/images`` (half of them in a subfolder), ``root/masks`` alike, ``root/labels.csv`` and
    ``root/manifest.csv`` (path,label,mask); image i has side ``sizes[i % len(sizes)]``."""
    from PIL import Image

    from xaiready.benchmark.data import make_dataset

    ds = make_dataset(n, seed=seed)
    images, mask_dir = root / "images", root / "masks"
    (images / "sub").mkdir(parents=True, exist_ok=True)
    (mask_dir / "sub").mkdir(parents=True, exist_ok=True)
    labels, manifest = ["path,label"], ["path,label,mask"]
    for i in range(n):
        side = sizes[i % len(sizes)]
        pixels = np.clip((ds.x[i].transpose(1, 2, 0) + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)
        name = f"{'sub/' if i % 2 else ''}img{i:04d}.png"
        Image.fromarray(pixels).resize((side, side), Image.BILINEAR).save(images / name)
        if masks:
            m = Image.fromarray((ds.mask[i] * 255).astype(np.uint8)).resize((side, side), Image.NEAREST)
            m.save(mask_dir / name)
        labels.append(f"{name},{ds.y[i]}")
        manifest.append(f"images/{name},{ds.y[i]},{'masks/' + name if masks else ''}")
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return root


@pytest.fixture(scope="session")
def small_set(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("small"), 18)


def xaiready_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "xaiready.cli", *args]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(xaiready_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env)


def dump(run_dir: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without the columns that are timings (seconds, committed_at)."""
    import sqlite3

    con = sqlite3.connect(run_dir / "results.sqlite")
    try:
        return {
            "images": sorted(con.execute("SELECT * FROM images")),
            "attributions": sorted(con.execute("SELECT image, method, path, target, health FROM attributions")),
            "scores": sorted(con.execute("SELECT * FROM scores"), key=lambda r: r[:3]),
            "curves": sorted(con.execute('SELECT * FROM curves')),
            "batches": sorted(con.execute("SELECT batch, images FROM batches")),
            "failures": sorted(con.execute("SELECT * FROM failures")),
        }
    finally:
        con.close()


def maps(run_dir: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((run_dir / "attributions").glob("*.npy"))}

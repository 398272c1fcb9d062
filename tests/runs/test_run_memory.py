"""Memory does not grow with the dataset: over a run of 5,000 small images, the resident memory sampled
after every batch stays within a few MiB of what it was after the first 500 (the dataset is streamed a
batch at a time; only its names are listed up front). Keeping each batch's maps alive (3 KiB per
image) would add 13 MiB: that version of the store fails this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TINY = str(Path(__file__).with_name("tiny_model.py")) + ":TinyCNN"

SAMPLED = """
import os, sys
from xaiready.runs import run_dataset
page = os.sysconf("SC_PAGE_SIZE")
samples = []
def rss(done, total):
    with open("/proc/self/statm") as fh:
        samples.append((done, int(fh.read().split()[1]) * page // 1024))
run_dataset(sys.argv[1], sys.argv[2], out=sys.argv[3], methods=["saliency"], metrics=["sparseness"],
            batch_size=32, model_options={"arch": sys.argv[4]}, show_progress=False, log=lambda line: None,
            progress=rss)
print(" ".join(f"{d}:{k}" for d, k in samples))
"""


def _images(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"{i // 1000:02d}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(sub / f"{i:05d}.png",
                                                                             compress_level=0)


def test_resident_memory_does_not_grow_with_the_dataset(tmp_path):
    import sqlite3

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from tiny_model import TinyCNN
    finally:
        sys.path.pop(0)
    model = tmp_path / "tiny.pt"
    torch.save(TinyCNN().state_dict(), model)
    n = 5000
    _images(tmp_path / "in", n)
    res = subprocess.run([sys.executable, "-c", SAMPLED, str(model), str(tmp_path / "in"), str(tmp_path / "out"), TINY],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM attributions").fetchone()[0] == n
    samples = [tuple(int(v) for v in s.split(":")) for s in res.stdout.split()]
    assert samples[-1][0] == n and len(samples) == -(-n // 32)
    after_500 = next(kib for done, kib in samples if done >= 500)
    peak_after = max(kib for done, kib in samples if done >= 500)
    # the allocator and SQLite's page cache (2 MiB) settle; 4,500 more images' maps would be 13 MiB
    assert peak_after - after_500 < 6 * 1024, f"RSS {after_500} KiB after 500 images, up to {peak_after} KiB"

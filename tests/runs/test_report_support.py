"""A run directory written by hand from real explanations, for the report's tests.

The trained benchmark CNN explains real images (``xaiready.explain``), ``xaiready.evaluate`` scores
them, and the rows go into a SQLite file with DESIGN 3.4's tables, written here with plain SQL: an
independent writer of the contract, so the report is tested against the contract rather than against
one engine's code. One image has a hostile name (HTML and quotes in it).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

HOSTILE = 'odd/<img src=x onerror="document.title=\'pwned\'">&amp;.npy'
SCHEMA = """
CREATE TABLE images(image TEXT PRIMARY KEY, path TEXT, label INTEGER NULL, predicted INTEGER,
                    height INTEGER, width INTEGER, batch INTEGER);
CREATE TABLE attributions(image TEXT, method TEXT, path TEXT, target TEXT, health TEXT, seconds REAL,
                          PRIMARY KEY(image, method));
CREATE TABLE scores(image TEXT, method TEXT, metric TEXT, value REAL, PRIMARY KEY(image, method, metric));
CREATE TABLE curves(image TEXT, method TEXT, metric TEXT, fractions TEXT, "values" TEXT,
                    PRIMARY KEY(image, method, metric));
CREATE TABLE batches(batch INTEGER PRIMARY KEY, images INTEGER, committed_at TEXT);
"""


def _grow(x: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (C, H, W) image and its mask at ``size`` x ``size`` (bilinear / nearest), for mixed sizes."""
    import torch
    import torch.nn.functional as F

    t = F.interpolate(torch.from_numpy(x[None]), size=(size, size), mode="bilinear", align_corners=False)
    m = F.interpolate(torch.from_numpy(mask[None, None].astype(np.float32)), size=(size, size), mode="nearest")
    return t[0].numpy(), m[0, 0].numpy() > 0.5


def make_run_dir(root: Path, *, n: int = 12, methods=("gradcam", "integrated-gradients"),
                 metrics=("deletion", "insertion", "pointing-game"), labels: bool = True,
                 finished: bool = True, total: int | None = None, batch_size: int = 4) -> Path:
    """Write inputs under ``root/inputs`` and a run directory ``root/run``; returns the run directory."""
    from PIL import Image

    import xaiready as xr
    from xaiready import targets
    from xaiready._jsonable import json_default
    from xaiready.benchmark.models import handle_for, test_batch, train
    from xaiready.metrics.baselines import BASELINES, baseline_explainer
    from xaiready.runs.report_images import array_rgb, draw_overlay, file_stem

    started = time.time()
    trained = train("classification")
    handle = handle_for(trained)
    xs, ys, masks = test_batch(trained, n, correct_only=False)
    inputs, run_dir = root / "inputs", root / "run"
    for sub in ("attributions", "overlays"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(run_dir / "results.sqlite")
    con.executescript(SCHEMA)
    for i in range(n):
        image = HOSTILE if i == 1 else f"{'big' if i % 3 == 2 else 'small'}/img{i:03d}.npy"
        x, mask = (xs[i], masks[i]) if i % 3 != 2 else _grow(xs[i], masks[i], 48)
        path = inputs / image
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
        x1 = x[None]
        logits = handle.forward(x1)
        predicted = int(np.asarray(logits).argmax(1)[0])
        label = int(ys[i]) if labels else None
        k = label if labels else predicted
        target = targets.Class([k])
        batch = i // batch_size
        con.execute("INSERT INTO images VALUES (?,?,?,?,?,?,?)",
                    (image, str(path), label, predicted, x.shape[1], x.shape[2], batch))
        for method in methods:
            start = time.perf_counter()
            attr = xr.explain(handle, x1, method, target)
            seconds = time.perf_counter() - start
            rel = f"attributions/{file_stem(image)}__{method}.npy"
            np.save(run_dir / rel, attr.values[0].astype(np.float32))
            overlay = draw_overlay(array_rgb(x), attr.values[0])
            Image.fromarray(overlay).save(run_dir / "overlays" / f"{file_stem(image)}__{method}.png")
            health = [{"check": f["name"], "status": f["status"], "message": f["detail"]}
                      for f in attr.info.get("health", []) if f["status"] in ("warn", "fail")]
            if i == 0 and method == methods[0]:  # one recorded finding, as the engine writes them
                health.append({"check": "map-values", "status": "warn", "message": "sample 0: constant (0)"})
            tgt = {"kind": "class", "index": k, "chosen": "label" if labels else "predicted", "score": "logit"}
            con.execute("INSERT INTO attributions VALUES (?,?,?,?,?,?)",
                        (image, method, rel, json.dumps(tgt), json.dumps(health), seconds))
            _scores(con, handle, x1, attr.values, metrics, target, mask[None], image, method)
        if metrics:
            for name in BASELINES:
                values = baseline_explainer(name, handle.channel_axis)(x1, target)
                _scores(con, handle, x1, values, metrics, target, mask[None], image, name)
    n_batches = (n + batch_size - 1) // batch_size
    con.executemany("INSERT INTO batches VALUES (?,?,?)",
                    [(b, min(batch_size, n - b * batch_size), "2026-01-01T00:00:00Z") for b in range(n_batches)])
    con.commit()
    con.close()
    report = xr.check(handle, xs[:1]).to_dict()
    run = {"schema": 1, "status": "done" if finished else "running",
           "config": {"model": "benchmark-cnn.pt", "inputs": str(inputs), "labels": "labels.csv" if labels else None,
                      "masks": None, "methods": list(methods), "metrics": list(metrics), "batch_size": batch_size,
                      "engine": "local", "workers": 1, "device": "cpu", "seed": 0,
                      "baselines": list(BASELINES) if metrics else []},
           "config_hash": "0123456789abcdef",
           "versions": {"xaiready": xr.__version__, "python": "3.11"},
           "readiness": report, "cost": {"model_calls_per_image": {m: 1 for m in methods}},
           "summary": {}, "images": total if total is not None else n,
           "started_at": "2026-01-01T00:00:00Z"}
    if finished:
        run.update(finished_at="2026-01-01T00:01:00Z", seconds=round(time.time() - started, 3))
    (run_dir / "run.json").write_text(json.dumps(run, indent=2, default=json_default))
    return run_dir


def _scores(con, handle, x, values, metrics, target, mask, image, method) -> None:
    import xaiready as xr

    if not metrics:
        return
    results = xr.evaluate(handle, x, values, list(metrics), target, mask=mask)
    for name, r in results.items():
        v = float(r.values[0])
        con.execute("INSERT INTO scores VALUES (?,?,?,?)", (image, method, name, v if np.isfinite(v) else None))
        if r.curves is not None:
            fractions = r.info.get("fractions") or np.linspace(0, 1, r.curves.shape[1]).tolist()
            con.execute("INSERT INTO curves VALUES (?,?,?,?,?)",
                        (image, method, name, json.dumps([float(f) for f in fractions]),
                         json.dumps([float(c) for c in r.curves[0]])))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One finished run: 12 images (a third of them 48 x 48), two methods, three metrics, labels."""
    return make_run_dir(tmp_path_factory.mktemp("report-run"))


HOSTILE_PNG = 'odd/<img src=x onerror="document.title=\'pwned\'">&amp;.png'
ARCH = "xaiready.benchmark.models:BenchmarkCNN"


def write_png_dataset(root: Path, n: int) -> Path:
    """``root/images`` of PNGs in three sizes (one with a hostile name), ``root/masks`` at the same
    relative paths and ``root/labels.csv``; pixels hold (x + 1) / 2 of the benchmark's images."""
    import csv

    from PIL import Image

    from xaiready.benchmark.data import make_dataset

    ds = make_dataset(n, seed=7)
    rows = []
    for i in range(n):
        name = HOSTILE_PNG if i == 1 else f"{'sub/' if i % 2 else ''}img{i:03d}.png"
        side = (32, 48, 24)[i % 3]
        pixels = np.clip((ds.x[i].transpose(1, 2, 0) + 1) / 2 * 255 + 0.5, 0, 255).astype(np.uint8)
        mask = Image.fromarray((ds.mask[i] * 255).astype(np.uint8)).resize((side, side), Image.NEAREST)
        for folder, img in (("images", Image.fromarray(pixels).resize((side, side), Image.BILINEAR)),
                            ("masks", mask)):
            (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
            img.save(root / folder / name)
        rows.append((name, int(ds.y[i])))
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    return root


def real_run(root: Path, *, n: int = 12, methods: str = "gradcam,integrated-gradients",
             metrics: str = "deletion,insertion,pointing-game") -> Path:
    """A run directory written by ``xaiready run`` itself (a subprocess), then ``xaiready report``."""
    import os
    import subprocess
    import sys

    import torch

    from xaiready.benchmark.models import train

    model = root / "cnn.pt"
    torch.save(train("classification").model.state_dict(), model)
    data = write_png_dataset(root, n)
    out = root / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["run", str(model), "--arch", ARCH, "--inputs", str(data / "images"), "--labels", str(data / "labels.csv"),
            "--masks", str(data / "masks"), "--methods", methods, "--out", str(out), "--batch-size", "4",
            "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--quiet"] + (["--metrics", metrics] if metrics else [])
    for argv in (args, ["report", str(out)]):
        done = subprocess.run([sys.executable, "-m", "xaiready.cli", *argv], capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def engine_run_dir(tmp_path_factory) -> Path:
    """12 PNGs of three sizes with labels and masks, through the real ``xaiready run`` and ``report``."""
    return real_run(tmp_path_factory.mktemp("engine-run"))

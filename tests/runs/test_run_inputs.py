"""Folder and manifest inputs of mixed sizes, with labels and masks: the rows, the summary, and the
metric values against ``xaiready.evaluate`` on the same images (read and explained independently)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from .conftest import ARCH, NORM, dump, run_cli

METHODS = "gradcam,saliency"
METRICS = "deletion,insertion,pointing-game"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, model_file, small_set):
    out = tmp_path_factory.mktemp("runs") / "folder"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"),
                  "--labels", str(small_set / "labels.csv"), "--masks", str(small_set / "masks"), *NORM,
                  "--methods", METHODS, "--metrics", METRICS, "--out", str(out), "--batch-size", "5")
    assert res.returncode == 0, res.stderr
    return out, res


def test_rows_cover_every_image_method_and_metric(folder_run, small_set):
    out, res = folder_run
    rows = dump(out)
    n = 18
    assert len(rows["images"]) == n and not rows["failures"]
    assert {r[0] for r in rows["images"]} == {p.relative_to(small_set / "images").as_posix()
                                               for p in (small_set / "images").rglob("*.png")}
    sizes = {r[0]: (r[4], r[5]) for r in rows["images"]}
    assert sizes["img0000.png"] == (32, 32) and sizes["sub/img0001.png"] == (40, 40) and sizes["img0002.png"] == (24, 24)
    labels = dict(line.split(",") for line in (small_set / "labels.csv").read_text().splitlines()[1:])
    assert all(r[2] == int(labels[r[0]]) and r[3] in (0, 1, 2) for r in rows["images"])
    assert len(rows["attributions"]) == n * 2
    assert len(rows["scores"]) == n * 4 * 3  # 2 methods + 2 baselines, 3 metrics
    assert {r[1] for r in rows["scores"]} == {"gradcam", "saliency", "random", "center"}
    assert len(rows["curves"]) == n * 4 * 2  # deletion and insertion
    assert [r[1] for r in rows["batches"]] == [5, 5, 5, 3]
    for image, method, path, target, health in rows["attributions"]:
        target = json.loads(target)
        assert target == {"kind": "class", "index": int(labels[image]), "chosen": "label", "score": "logit"}
        assert isinstance(json.loads(health), list)
        arr = np.load(out / path)
        side = sizes[image][0]
        assert arr.dtype == np.float32 and arr.shape == ((side, side) if method == "gradcam" else (3, side, side))
        assert (out / "overlays" / (path.split("/")[1][:-4] + ".png")).is_file()
    assert (out / "overlays" / "sub__img0001.png__gradcam.png").is_file()
    assert "cost: model passes per image:" in res.stderr


def test_run_json_holds_config_readiness_and_summary(folder_run):
    out, _ = folder_run
    run = json.loads((out / "run.json").read_text())
    assert run["schema"] == 1 and run["status"] == "done" and run["images"] == 18
    assert run["config"]["methods"] == ["gradcam", "saliency"] and run["config"]["baselines"] == ["random", "center"]
    assert run["config"]["mean"] == [0.5, 0.5, 0.5] and run["config"]["batch_size"] == 5
    assert run["readiness"]["verdict"] == "full"
    assert run["cost"]["model_calls_per_image"]["saliency"] >= 1
    assert set(run["versions"]) >= {"xaiready", "python", "torch"}
    con = sqlite3.connect(out / "results.sqlite")
    values = [v for (v,) in con.execute("SELECT value FROM scores WHERE method='gradcam' AND metric='deletion'")]
    s = run["summary"]["gradcam"]["deletion"]
    assert s["n"] == 18 and s["mean"] == pytest.approx(np.mean(values)) and s["std"] == pytest.approx(np.std(values))


def test_metric_values_equal_xaiready_evaluate_per_image(folder_run, model_file, small_set):
    """An independent path: each image read by xaiready.inputs, explained by xr.explain and scored by
    xr.evaluate on its own."""
    import xaiready as xr
    from xaiready.inputs import ImageOptions, read_input
    from xaiready.runs.dataset import _resize_nearest

    out, _ = folder_run
    handle = xr.load(model_file, arch=ARCH)
    con = sqlite3.connect(out / "results.sqlite")
    stored = {(i, m, k): v for i, m, k, v in con.execute("SELECT * FROM scores")}
    labels = dict(line.split(",") for line in (small_set / "labels.csv").read_text().splitlines()[1:])
    checked = exact = 0
    for image in ("img0000.png", "sub/img0001.png", "img0002.png", "sub/img0017.png"):
        x = read_input(small_set / "images" / image, image=ImageOptions(mean=[0.5] * 3, std=[0.5] * 3))
        from PIL import Image

        with Image.open(small_set / "masks" / image) as m:
            mask = _resize_nearest(np.asarray(m.convert("L")) > 0, x.shape[2:])[None]
        target = xr.targets.Class(int(labels[image]))
        for method in ("gradcam", "saliency"):
            attr = xr.explain(handle, x, method, target)
            np.testing.assert_allclose(np.load(out / f"attributions/{image.replace('/', '__')}__{method}.npy"),
                                       attr.values[0], rtol=1e-5, atol=1e-6)
            scores = xr.evaluate(handle, x, attr, ["deletion", "insertion", "pointing-game"], target, mask=mask)
            for metric, r in scores.items():
                # batched convolutions round differently from single-image ones, which can swap two
                # pixels of a CAM plateau in the deletion order: a few 1e-5 in a curve's area, no more
                assert stored[(image, method, metric)] == pytest.approx(float(r.values[0]), abs=1e-4)
                exact += stored[(image, method, metric)] == float(r.values[0])
                checked += 1
    assert checked == 4 * 2 * 3 and exact >= checked - 4


def test_manifest_gives_the_same_rows_under_its_own_paths(folder_run, tmp_path, model_file, small_set):
    folder, _ = folder_run
    out = tmp_path / "manifest"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "manifest.csv"), *NORM,
                  "--methods", METHODS, "--metrics", METRICS, "--out", str(out), "--batch-size", "5", "--quiet")
    assert res.returncode == 0, res.stderr
    a, b = dump(folder), dump(out)
    rename = {r[0]: "images/" + r[0] for r in a["images"]}
    assert sorted((rename[r[0]], *r[2:6]) for r in a["images"]) == sorted((r[0], *r[2:6]) for r in b["images"])
    renamed = sorted((rename[i], m, k, v) for i, m, k, v in a["scores"])
    assert [r[:3] for r in renamed] == [r[:3] for r in b["scores"]]
    # the manifest's order batches other images together: values agree to float rounding (see above)
    assert [r[3] for r in renamed] == pytest.approx([r[3] for r in b["scores"]], abs=1e-4)


def test_manifest_box_column_is_a_localization_mask(tmp_path, model_file, small_set):
    boxes = ["path,label,box", "images/img0000.png,0,\"0,0,16,16\"", "images/img0002.png,1,\"12,12,24,24\""]
    (small_set / "boxes.csv").write_text("\n".join(boxes) + "\n")
    out = tmp_path / "boxes"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "boxes.csv"), *NORM,
                  "--methods", "gradcam", "--metrics", "relevance-mass", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(out / "results.sqlite")
    got = {i: v for i, v in con.execute("SELECT image, value FROM scores WHERE method='center'")}
    # the centre bump's mass inside a quarter box, and inside the lower-right quarter of a 24 px image
    assert 0 < got["images/img0000.png"] < 0.5 and got["images/img0000.png"] == pytest.approx(
        got["images/img0002.png"], rel=0.05)


def test_an_unreadable_image_is_a_recorded_failure_not_a_traceback(tmp_path, model_file, small_set):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_set / "images", data)
    (data / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    out = tmp_path / "broken"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(data), *NORM, "--methods", "saliency",
                  "--out", str(out), "--batch-size", "4")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "warning: sub/broken.png was not processed:" in res.stderr and "cannot be decoded" in res.stderr
    rows = dump(out)
    assert [r[0] for r in rows["failures"]] == ["sub/broken.png"] and len(rows["images"]) == 18
    assert json.loads((out / "run.json").read_text())["failed"] == 1


@pytest.mark.parametrize("args, message", [
    (["--methods", "gradcan"], "gradcan"),
    (["--methods", "saliency", "--metrics", "delition"], "delition"),
    (["--methods", "saliency", "--inputs", "/nonexistent/dir"], "does not exist"),
], ids=["unknown-method", "unknown-metric", "missing-inputs"])
def test_usage_errors_are_one_line_exit_2(tmp_path, model_file, small_set, args, message):
    base = ["run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"), "--out", str(tmp_path / "r")]
    res = run_cli(*base, *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and message in res.stderr and res.stderr.startswith("error:")
    assert not (tmp_path / "r" / "run.json").exists()

"""Every engine writes the same rows: the local engine with 2 worker processes and Ray Data's actor
pool equal one in-process worker, row for row (maps included)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import ARCH, NORM, dump, maps, run_cli

ARGS = ["--methods", "gradcam,saliency", "--metrics", "deletion,pointing-game", "--batch-size", "3", *NORM]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, model_file, small_set):
    out = tmp_path_factory.mktemp("engines") / "one"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"),
                  "--masks", str(small_set / "masks"), *ARGS, "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    return out


def _same(a_dir, b_dir):
    a, b = dump(a_dir), dump(b_dir)
    for table in a:
        assert a[table] == b[table], table
    ma, mb = maps(a_dir), maps(b_dir)
    assert ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert len(a["images"]) == 18 and len(a["scores"]) == 18 * 4 * 2


def test_two_local_workers_equal_one(tmp_path, one_worker, model_file, small_set):
    out = tmp_path / "two"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"),
                  "--masks", str(small_set / "masks"), *ARGS, "--out", str(out), "--quiet", "--workers", "2")
    assert res.returncode == 0, res.stderr
    _same(one_worker, out)
    assert json.loads((out / "run.json").read_text())["config"]["workers"] == 2


def test_ray_engine_equals_the_local_one(tmp_path, one_worker, model_file, small_set):
    pytest.importorskip("ray.data")
    out = tmp_path / "ray"
    res = run_cli("run", str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"),
                  "--masks", str(small_set / "masks"), *ARGS, "--out", str(out), "--quiet", "--engine", "ray",
                  "--workers", "2")
    assert res.returncode == 0, res.stderr
    _same(one_worker, out)
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["engine"] == "ray" and "ray" in run["versions"]

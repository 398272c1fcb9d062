"""Crash safety and resume: a run killed with SIGKILL at a random point, then ``--resume``, holds the
same rows as an uninterrupted run (no duplicate, none missing), and redoes only batches in flight.
A changed configuration refuses to resume and names what changed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from .conftest import ARCH, NORM, dump, maps, run_cli, write_dataset, xaiready_cmd

ARGS = ["--methods", "gradcam,saliency", "--metrics", "pointing-game,sparseness", "--batch-size", "8", *NORM]


@pytest.fixture(scope="module")
def big_set(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("big"), 200)


def _committed(db) -> int:
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0  # not created yet


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, model_file, big_set):
    common = [str(model_file), "--arch", ARCH, "--inputs", str(big_set / "images"),
              "--masks", str(big_set / "masks"), "--labels", str(big_set / "labels.csv"), *ARGS]
    whole = tmp_path / "whole"
    res = run_cli("run", *common, "--out", str(whole), "--quiet")
    assert res.returncode == 0, res.stderr

    seed = int(os.environ.get("XAIREADY_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kill_after = rng.randrange(1, 21)  # of 25 batches: somewhere in the middle of the run
    per_batch = json.loads((whole / "run.json").read_text())["seconds"] / 25
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(xaiready_cmd("run", *common, "--out", str(crashed), "--quiet"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = crashed / "results.sqlite"
    deadline = time.monotonic() + 300
    while _committed(db) < kill_after and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0, per_batch))  # anywhere within the next batch, mid-transaction included
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _committed(db)
    assert proc.returncode == -signal.SIGKILL and 0 < at_kill < 25, f"seed {seed}: {at_kill} batches at kill"
    assert json.loads((crashed / "run.json").read_text())["status"] == "running"

    res = run_cli("run", *common, "--out", str(crashed), "--resume")
    assert res.returncode == 0, f"seed {seed}: {res.stderr}"
    assert f"resuming: {at_kill} of 25 batches already in the store" in res.stderr
    run = json.loads((crashed / "run.json").read_text())
    assert run["status"] == "done" and run["sessions"][-1]["batches"] == 25 - at_kill  # only what was missing

    a, b = dump(whole), dump(crashed)
    for table in a:
        assert a[table] == b[table], f"seed {seed}: table {table} differs"
    assert len(b["images"]) == 200 and len(b["attributions"]) == 400 and len(b["batches"]) == 25
    ma, mb = maps(whole), maps(crashed)
    assert ma.keys() == mb.keys() and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert run["summary"] == json.loads((whole / "run.json").read_text())["summary"]


def test_changed_configuration_refuses_to_resume_naming_the_change(tmp_path, model_file, small_set):
    out = tmp_path / "run"
    common = [str(model_file), "--arch", ARCH, "--inputs", str(small_set / "images"), "--out", str(out), *NORM]
    res = run_cli("run", *common, "--methods", "saliency", "--quiet")
    assert res.returncode == 0, res.stderr
    before = dump(out)

    res = run_cli("run", *common, "--methods", "saliency,gradcam", "--batch-size", "4", "--resume")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error:")
    assert 'methods ["saliency"] -> ["saliency", "gradcam"]' in res.stderr and "batch_size 16 -> 4" in res.stderr

    res = run_cli("run", *common, "--methods", "saliency")  # the same directory without --resume
    assert res.returncode == 2 and "already holds a run" in res.stderr and "--resume" in res.stderr

    res = run_cli("run", *common, "--methods", "saliency", "--resume", "--workers", "2")  # how, not what
    assert res.returncode == 0, res.stderr
    assert dump(out) == before

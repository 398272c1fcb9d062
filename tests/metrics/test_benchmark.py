"""The built-in benchmark: data with masks, a model that learns it, and metrics that tell maps apart."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xaiready.benchmark.data import make_dataset
from xaiready.metrics import METRICS, Settings
from xaiready.metrics.baselines import center_map, random_map


def test_dataset_is_deterministic_with_masks():
    a, b = make_dataset(12, seed=4), make_dataset(12, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.mask.shape == (12, 32, 32) and a.mask.any(axis=(1, 2)).all()
    assert set(np.unique(a.seg)) <= {0, 1, 2, 3} and np.allclose(a.area, a.mask.mean((1, 2)))


def test_model_reaches_95_percent(trained):
    assert trained.score >= 0.95


# Each metric must score a random map worse than Grad-CAM on the benchmark CNN.
FAST = {"faithfulness-correlation": {"nr_runs": 40}, "infidelity": {"n_perturb": 16},
        "max-sensitivity": {"n_samples": 4}, "randomization": {"max_layers": 3}, "deletion": {"steps": 20},
        "insertion": {"steps": 20}, "pixel-flipping": {"steps": 20}}


@pytest.mark.parametrize("name", sorted(METRICS.names()))
def test_gradcam_beats_random(handle, batch, target, maps, gradcam, name):
    x, _, mask = batch
    metric = METRICS.get(name)(**FAST.get(name, {}))
    rand = lambda xs, t: random_map(xs, 1)  # noqa: E731
    ours = metric(handle, x, maps["gradcam"], target, mask=mask, explainer=gradcam)
    base = metric(handle, x, random_map(x, 1), target, mask=mask, explainer=rand)
    better = ours.mean > base.mean if metric.higher_is_better else ours.mean < base.mean
    assert better, f"{name}: gradcam {ours.mean:.4f} vs random {base.mean:.4f}"


def test_pointing_game_beats_center_clearly(trained, handle, target, gradcam):
    from xaiready.benchmark.models import test_batch

    x, y, mask = test_batch(trained, 64)
    t = handle.resolve(__import__("xaiready").targets.Class(y.tolist()), x)
    pg = METRICS.get("pointing-game")()
    ours = pg(handle, x, gradcam(x, t), t, mask=mask).mean
    center = pg(handle, x, center_map(x, 1), t, mask=mask).mean
    # measured here: Grad-CAM 0.81, centre prior 0.48, random map 0.11 on these 64 images (the centre
    # prior scores that high because objects are large: r = 4.5-8 px in 32 px images)
    assert ours >= center + 0.25, (ours, center)


def test_cli_benchmark_json(capsys):
    from xaiready.cli import main

    code = main(["benchmark", "--n", "4", "--methods", "gradcam", "--metrics", "pointing-game,sparseness", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"gradcam", "random", "center"}
    assert set(rows[0]) == {"method", "metric", "mean", "std", "n", "higher_is_better"}
    assert {r["metric"] for r in rows} == {"pointing-game", "sparseness"}


def test_cli_evaluate_json_and_plot(tmp_path, trained, capsys):
    import torch

    from xaiready.benchmark.models import test_batch
    from xaiready.cli import main

    x, _, mask = test_batch(trained, 3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "m.npy", mask)
    model = tmp_path / "model.pt"
    torch.save(trained.model, model)
    code = main(["evaluate", str(model), "--trust", "--inputs", str(tmp_path / "x.npy"), "--method", "saliency,random",
                 "--metrics", "deletion,insertion,pointing-game", "--masks", str(tmp_path / "m.npy"), "--json",
                 "--plot", str(tmp_path / "curves.png")])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads(out.out)
    assert len(rows) == 6 and {r["metric"] for r in rows} == {"deletion", "insertion", "pointing-game"}
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_api_evaluate(handle, batch, target):
    import xaiready as xr

    x = batch[0][:2]
    attr = xr.explain(handle, x, "saliency", target=xr.targets.Class(target._k[:2].tolist()))
    scores = xr.evaluate(handle, x, attr, metrics=["deletion", "random-logit"], settings=Settings(seed=1))
    assert set(scores) == {"deletion", "random-logit"} and scores["deletion"].n == 2


@pytest.mark.parametrize("task", ["segmentation", "regression"])
def test_variants_run_metrics(task):
    from xaiready.api import explainer_for
    from xaiready.benchmark.models import handle_for, train
    from xaiready.metrics.evaluate import evaluate
    from xaiready.targets import Regression, SegmentationRegion

    trained = train(task, n_train=128, epochs=1)  # tiny: shapes and plumbing; quality is the slow test's job
    handle = handle_for(trained)
    ds = trained.test
    x, mask = ds.x[:3], ds.mask[:3]
    target = SegmentationRegion(1 + int(ds.y[0])) if task == "segmentation" else Regression(0)
    explain = explainer_for(handle, "saliency")
    t = handle.resolve(target, x)
    a = explain(x, t)
    scores = evaluate(handle, x, a, ["deletion", "pointing-game", "max-sensitivity"], t, mask=mask, explainer=explain,
                      settings=Settings(seed=0))
    assert scores["deletion"].curves.shape == (3, 51) and np.isfinite(scores["max-sensitivity"].values).all()


@pytest.mark.slow
def test_variants_learn():
    from xaiready.benchmark.models import train

    assert train("segmentation").score >= 0.92  # pixel accuracy; background alone is about 0.85
    assert train("regression").score >= 0.6  # R^2 of the object's area

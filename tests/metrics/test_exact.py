"""Exact values on hand-built cases, invariants (chunking), and the randomization protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xaiready.api import as_handle
from xaiready.metrics import METRICS, Settings
from xaiready.targets import Regression

X = np.zeros((1, 1, 8, 8), dtype=np.float32)


class Linear(torch.nn.Module):
    """f(x) = sum(w * x): every perturbation's effect is known exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def _metric(name, handle, x, a, target=None, **kw):
    opts = {k: kw.pop(k) for k in list(kw) if k in ("mask", "explainer", "settings")}
    return METRICS.get(name)(**kw)(handle, x, a, target or Regression(0), **opts)


def test_localization_exact():
    h = as_handle(Linear(np.ones((1, 8, 8))))
    a = np.zeros((3, 8, 8))
    a[:, 1, 1], a[:, 1, 2] = 3.0, 1.0
    mask = np.zeros((3, 8, 8), bool)
    mask[0, 1, 1] = True          # max inside
    mask[1, 1, 2] = mask[1, 5, 5] = True  # max outside; 1 of 4 relevance units inside; 1 of top-2 in mask
    x = np.zeros((3, 1, 8, 8), np.float32)
    pg = _metric("pointing-game", h, x, a, mask=mask).values
    assert pg[0] == 1 and pg[1] == 0 and math.isnan(pg[2])  # empty mask: undefined, left out
    rm = _metric("relevance-mass", h, x, a, mask=mask).values
    assert rm[0] == pytest.approx(0.75) and rm[1] == pytest.approx(0.25)
    rr = _metric("relevance-rank", h, x, a, mask=mask).values
    assert rr[0] == 1.0 and rr[1] == 0.5


def test_complexity_exact():
    h = as_handle(Linear(np.ones((1, 8, 8))))
    onehot, uniform = np.zeros((1, 8, 8)), np.ones((1, 8, 8))
    onehot[0, 2, 3] = 1.0
    a = np.concatenate([onehot, uniform])
    x = np.zeros((2, 1, 8, 8), np.float32)
    sp = _metric("sparseness", h, x, a).values
    assert sp[0] == pytest.approx(63 / 64, abs=1e-5) and sp[1] == pytest.approx(0.0, abs=1e-9)
    cx = _metric("complexity", h, x, a).values
    assert cx[0] == pytest.approx(0.0, abs=1e-9) and cx[1] == pytest.approx(math.log(64))


def test_deletion_insertion_exact_on_a_sum():
    # f = sum(x) over 4 pixels of value 1; deleting in any order in 4 steps gives 4,3,2,1,0
    h = as_handle(Linear(np.ones((1, 2, 2))))
    x = np.ones((1, 1, 2, 2), np.float32)
    a = np.array([[[4.0, 3.0], [2.0, 1.0]]])
    d = _metric("deletion", h, x, a, steps=4)
    np.testing.assert_allclose(d.curves[0], [4, 3, 2, 1, 0])
    assert d.values[0] == pytest.approx(2.0)
    assert d.evaluations == 5


def test_faithfulness_exact_on_a_linear_model(rng):
    w = rng.normal(size=(1, 8, 8)).astype(np.float32)
    x = rng.normal(size=(2, 1, 8, 8)).astype(np.float32)
    h = as_handle(Linear(w))
    # input x gradient is exact for a linear model: the subset's attribution sum IS the score drop
    fc = _metric("faithfulness-correlation", h, x, x * w, nr_runs=30, subset_size=10)
    np.testing.assert_allclose(fc.values, 1.0, atol=1e-5)
    # and the gradient w predicts f(x) - f(x - I) = I.w exactly: infidelity 0 (both variants)
    for normalize in (False, True):
        inf = _metric("infidelity", h, x, np.broadcast_to(w, x.shape), n_perturb=8, normalize=normalize)
        np.testing.assert_allclose(inf.values, 0.0, atol=1e-8)


@pytest.mark.parametrize("name", ["deletion", "insertion", "pixel-flipping", "faithfulness-correlation", "infidelity"])
def test_chunked_equals_unchunked(handle, batch, target, maps, name):
    x = batch[0][:3]
    t = target.take(np.arange(3))
    kw = {"nr_runs": 10} if name == "faithfulness-correlation" else {"n_perturb": 5} if name == "infidelity" else {}
    one = METRICS.get(name)(**kw)(handle, x, maps["gradcam"][:3], t, settings=Settings(chunk_size=7))
    big = METRICS.get(name)(**kw)(handle, x, maps["gradcam"][:3], t, settings=Settings(chunk_size=500))
    # float32 convolutions round differently with the batch size: equal to ~1e-5 relative
    np.testing.assert_allclose(one.values, big.values, rtol=1e-4, atol=1e-6)
    assert one.calls > big.calls


def test_max_sensitivity_is_zero_for_a_constant_explainer(handle, batch, target):
    x = batch[0][:2]
    const = np.ones((2, 32, 32))
    r = METRICS.get("max-sensitivity")(n_samples=3)(handle, x, const, target.take([0, 1]),
                                                     explainer=lambda xs, t: np.ones((len(xs), 32, 32)))
    np.testing.assert_allclose(r.values, 0.0)
    assert r.explanations == 6


def test_randomized_restores_weights_exactly_also_after_an_error(trained, handle):
    backend = handle.backend
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    layers = list(reversed(backend.randomizable_layers()))[:2]
    assert layers == ["head", "features.8"]
    with backend.randomized(layers, seed=1):
        assert not torch.equal(trained.model.head.weight, before["head.weight"])
        assert torch.equal(trained.model.features[0].weight, before["features.0.weight"])
    with pytest.raises(RuntimeError), backend.randomized(layers, seed=1):
        raise RuntimeError("boom")
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in trained.model.parameters())


def test_randomization_metric_reports_each_layer(handle, batch, target, maps, gradcam):
    x = batch[0][:2]
    r = METRICS.get("randomization")(max_layers=2)(handle, x, maps["gradcam"][:2], target.take([0, 1]),
                                                    explainer=gradcam)
    assert r.info["layers"] == ["head", "features.8"] and len(r.info["per_layer"]) == 2
    r2 = METRICS.get("randomization-independent")(max_layers=2, similarity="ssim")(
        handle, x, maps["gradcam"][:2], target.take([0, 1]), explainer=gradcam)
    assert r2.values.shape == (2,)


def test_missing_needs_are_usage_errors(handle, batch, target, maps):
    from xaiready.errors import UsageError

    with pytest.raises(UsageError, match="needs ground-truth masks"):
        METRICS.get("pointing-game")()(handle, batch[0], maps["gradcam"], target)
    with pytest.raises(UsageError, match="needs an explainer"):
        METRICS.get("random-logit")()(handle, batch[0], maps["gradcam"], target)
    with pytest.raises(UsageError, match="unknown metric"):
        METRICS.get("pointing_game")


def test_plan_is_announced(handle, batch, target, maps, capsys):
    METRICS.get("deletion")(steps=10)(handle, batch[0][:2], maps["gradcam"][:2], target.take([0, 1]),
                                      settings=Settings(progress=True))
    err = capsys.readouterr().err
    assert "deletion: 2 inputs -> 22 model evaluations" in err




def test_metrics_leave_the_model_as_they_found_it(rng):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(2 * 8 * 8, 3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h = as_handle(model)
    x = rng.normal(size=(2, 1, 8, 8)).astype(np.float32)
    x_copy = x.copy()
    t = h.resolve(__import__("xaiready").targets.Class(None), x)
    grad = lambda xs, tt: h.vjp(xs, tt).input_grad  # noqa: E731
    for name in ("deletion", "faithfulness-correlation", "max-sensitivity", "randomization"):
        METRICS.get(name)()(h, x, grad(x, t), t, explainer=grad)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    np.testing.assert_array_equal(x, x_copy)

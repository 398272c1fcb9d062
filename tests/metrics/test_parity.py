"""Our metrics against Quantus 0.6 and Captum on the same model, inputs, maps and perturbation seeds.

Quantus is run with ``normalise=False, abs=False`` and numeric baselines, so both sides see the
same numbers; remaining definition differences are written beside each test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xaiready.metrics import METRICS, Settings
from xaiready.metrics.robustness import uniform_noise
from xaiready.targets import Class

captum_metrics = pytest.importorskip("captum.metrics")
quantus = None


@pytest.fixture(autouse=True, scope="module")
def _quantus(trained):
    # Quantus imports TensorFlow; importing it before torch has trained the benchmark model crashes
    # torch's optimizer in this environment, so it is imported only once the model exists.
    global quantus
    quantus = pytest.importorskip("quantus")

TOL = 1e-4
QOPTS = {"normalise": False, "abs": False, "disable_warnings": True}


def _q(cls, model, x, y, a, *, s=None, explain=None, softmax=False, **kw):
    metric = cls(**QOPTS, **kw)
    return np.asarray(metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s, explain_func=explain,
                             softmax=softmax, device="cpu"), dtype=np.float64)


def _q_explain(explainer, handle):
    """Quantus's explain_func calling our explainer on labels y (Quantus passes class indices)."""
    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs, dtype=np.float32)
        t = Class(np.asarray(targets).tolist()).resolve(np.zeros((len(inputs), 3)))
        return explainer(inputs, t)[:, None] if explainer(inputs[:1], t.take([0])).ndim == 3 else explainer(inputs, t)

    return explain


def test_faithfulness_correlation_matches_quantus(trained, handle, batch, target, maps):
    x, y, _ = batch
    a = maps["gradcam"][:, None]  # (N, 1, H, W): Quantus broadcasts it over channels, as we do
    ours = METRICS.get("faithfulness-correlation")(nr_runs=20, subset_size=64)(
        handle, x, maps["gradcam"], target, settings=Settings(seed=3))
    np.random.seed(3)  # Quantus draws subsets from the global legacy generator in the same order
    theirs = _q(quantus.FaithfulnessCorrelation, trained.model, x, y, a, nr_runs=20, subset_size=64,
                perturb_baseline=0.0, return_aggregate=False)
    np.testing.assert_allclose(ours.values, theirs, atol=TOL)


def test_pixel_flipping_matches_quantus(trained, handle, batch, target, maps):
    # Same curves (softmax scores, cumulative flips in argsort(-a) order); the value differs by
    # definition: Quantus's AUC is trapz(curve, dx=1), ours divides it by (steps - 1) to lie in [0, 1].
    x, y, _ = batch
    a = maps["gradcam"][:, None]
    ours = METRICS.get("pixel-flipping")(features_in_step=64)(handle, x, maps["gradcam"], target)
    theirs = _q(quantus.PixelFlipping, trained.model, x, y, a, features_in_step=64, perturb_baseline=0.0,
                softmax=True)
    np.testing.assert_allclose(ours.curves, theirs, atol=TOL)
    auc = np.trapezoid(theirs, dx=1, axis=1)  # Quantus's calculate_auc (np.trapz, gone in NumPy 2.4)
    np.testing.assert_allclose(ours.values * (ours.curves.shape[1] - 1), auc, atol=TOL * 32)


def test_max_sensitivity_matches_quantus(trained, handle, batch, target, maps, saliency):
    x, y, _ = batch
    ours = METRICS.get("max-sensitivity")(n_samples=4, radius=0.1)(
        handle, x, maps["saliency"], target, settings=Settings(seed=5), explainer=saliency)
    np.random.seed(5)
    theirs = _q(quantus.MaxSensitivity, trained.model, x, y, maps["saliency"], nr_samples=4, lower_bound=0.1,
                explain=_q_explain(saliency, handle))
    np.testing.assert_allclose(ours.values, theirs, atol=TOL)


def test_random_logit_matches_quantus(trained, handle, batch, target, maps, gradcam):
    # Quantus flattens maps before SSIM (a 1-D SSIM); ours is SSIM on the 2-D map. Quantus gets a
    # similarity_func doing the 2-D SSIM (skimage), so the class draw and the explanations are compared.
    from skimage.metrics import structural_similarity

    def ssim2d(a, b, batched=True, **kw):
        out = []
        for aa, bb in zip(a, b, strict=True):
            aa, bb = aa.reshape(32, 32), bb.reshape(32, 32)
            rng = float(max(aa.max(), bb.max()) - min(aa.min(), bb.min()))
            out.append(structural_similarity(aa, bb, data_range=rng))
        return np.array(out)

    x, y, _ = batch
    ours = METRICS.get("random-logit")()(handle, x, maps["gradcam"], target, settings=Settings(seed=42),
                                          explainer=gradcam)
    theirs = _q(quantus.RandomLogit, trained.model, x, y, maps["gradcam"][:, None], num_classes=3, seed=42,
                similarity_func=ssim2d, explain=_q_explain(gradcam, handle))
    np.testing.assert_allclose(ours.values, theirs, atol=TOL)


@pytest.mark.parametrize("name,cls", [("sparseness", "Sparseness"), ("complexity", "Complexity")])
def test_complexity_metrics_match_quantus(trained, handle, batch, target, maps, name, cls):
    x, y, _ = batch
    s = maps["saliency"]  # input-shaped: we reduce to a (N, H, W) map by sum |a| over channels first
    spatial = np.abs(s).sum(1, keepdims=True)
    ours = METRICS.get(name)()(handle, x, s, target)
    theirs = _q(getattr(quantus, cls), trained.model, x, y, spatial.copy())
    np.testing.assert_allclose(ours.values, theirs, atol=TOL)


@pytest.mark.parametrize("name,cls", [("pointing-game", "PointingGame"), ("relevance-mass", "RelevanceMassAccuracy"),
                                      ("relevance-rank", "RelevanceRankAccuracy")])
def test_localization_matches_quantus(trained, handle, batch, target, maps, name, cls):
    x, y, mask = batch
    a = maps["gradcam"]
    ours = METRICS.get(name)()(handle, x, a, target, mask=mask)
    theirs = _q(getattr(quantus, cls), trained.model, x, y, a[:, None], s=mask[:, None].astype(np.float32))
    np.testing.assert_allclose(ours.values, theirs, atol=TOL)


@pytest.mark.parametrize("perturbation,normalize", [("gaussian", False), ("gaussian", True), ("square", True)])
def test_infidelity_matches_captum(trained, handle, batch, target, maps, perturbation, normalize):
    x, y, _ = batch
    p = 6
    metric = METRICS.get("infidelity")(n_perturb=p, perturbation=perturbation, normalize=normalize)
    ours = metric(handle, x, maps["saliency"], target, settings=Settings(seed=7, chunk_size=5))
    noise = torch.as_tensor(np.concatenate([metric.perturbations(7, i, x[i], 1) for i in range(len(x))]))

    def perturb(inputs):  # Captum repeat_interleaves the inputs: row i*p + j is sample i, draw j
        return noise, inputs - noise

    with torch.no_grad():
        theirs = captum_metrics.infidelity(trained.model, perturb, torch.as_tensor(x), torch.as_tensor(maps["saliency"]),
                                           target=torch.as_tensor(y), n_perturb_samples=p, normalize=normalize)
    np.testing.assert_allclose(ours.values, theirs.numpy(), rtol=1e-4, atol=TOL)


def test_max_sensitivity_matches_captum(trained, handle, batch, target, maps, saliency):
    x, y, _ = batch
    p = 4
    ours = METRICS.get("max-sensitivity")(n_samples=p, radius=0.1)(
        handle, x, maps["saliency"], target, settings=Settings(seed=9), explainer=saliency)
    draws = np.stack(list(uniform_noise(9, len(x), p, x[0].size, 0.1)))  # (p, N, F), perturbation-major
    noise = torch.as_tensor(draws.transpose(1, 0, 2).reshape((len(x) * p,) + x.shape[1:]), dtype=torch.float32)

    def perturb(inputs):
        return inputs + noise

    def explain(inputs, target=None):
        inputs = inputs[0] if isinstance(inputs, tuple) else inputs  # Captum passes a tuple on its first call
        t = handle.resolve(Class(target.tolist()), inputs.numpy())
        return (torch.as_tensor(saliency(inputs.numpy(), t)),)  # Captum iterates the result as a tuple

    theirs = captum_metrics.sensitivity_max(explain, torch.as_tensor(x), perturb_func=perturb, n_perturb_samples=p,
                                            target=torch.as_tensor(y))
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    np.testing.assert_allclose(ours.values, theirs.numpy(), rtol=1e-4, atol=TOL)

"""Task targets on real small models, against gradients written directly in torch."""

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerGradCam

import xaiready as xr
from xaiready.targets import Class, Custom, Regression, SegmentationRegion
from xaiready.testing import zoo

from .conftest import assert_close, build


def _torch_grad(model, x, score_fn):
    xt = torch.tensor(x, requires_grad=True)
    (g,) = torch.autograd.grad(score_fn(model(xt)).sum(), xt)
    return g.numpy()


def test_segmentation_region_default_mask_is_predicted_pixels(x):
    model = build(zoo.SegmentationNet)
    with torch.no_grad():
        pred = model(torch.tensor(x)).argmax(1)  # (N, H, W)
    mask = (pred == 1).float()
    ref = _torch_grad(model, x, lambda out: (out[:, 1] * mask).flatten(1).sum(1))
    attr = xr.explain(model, x, "gradient", SegmentationRegion(1))
    assert_close(attr.values, ref)
    assert attr.target["type"] == "segmentation-region" and attr.target["k"] == 1


def test_segmentation_gradcam_with_a_given_mask(x):
    model = build(zoo.SegmentationNet)
    mask = np.zeros((32, 32), dtype=np.float32)
    mask[8:20, 4:30] = 1
    attr = xr.explain(model, x, "gradcam", SegmentationRegion(2, mask=mask), layer="features.2")
    # Captum with a custom forward that returns the masked class-2 sum as a 1-output "classifier"
    wrapped = lambda t: (model(t)[:, 2] * torch.tensor(mask)).flatten(1).sum(1, keepdim=True)  # noqa: E731
    ref = LayerGradCam(wrapped, model.features[2]).attribute(torch.tensor(x), target=0, relu_attributions=True)
    assert_close(attr.raw, ref.detach().numpy()[:, 0])


def test_regression_target_explains_the_raw_output(x):
    model = build(zoo.RegressionNet)
    ref = IntegratedGradients(lambda t: model(t)[:, 1:2]).attribute(torch.tensor(x), target=0, n_steps=10)
    attr = xr.explain(model, x, "integrated-gradients", Regression(1), n_steps=10)
    assert_close(attr.values, ref.detach().numpy())
    assert attr.target == {"type": "regression", "index": 1}


@pytest.mark.parametrize("score", ["probability", "log-probability"])
def test_class_probability_scores(x, score):
    model = build(zoo.HealthyCNN)
    fn = {"probability": lambda o: o.softmax(1)[:, 3], "log-probability": lambda o: o.log_softmax(1)[:, 3]}[score]
    attr = xr.explain(model, x, "gradient", Class(3, score=score))
    assert_close(attr.values, _torch_grad(model, x, fn))


def test_custom_target_and_per_sample_classes(x):
    model = build(zoo.HealthyCNN)
    attr = xr.explain(model, x, "gradient", Custom(lambda o: o[:, 0] - o[:, 1], name="margin"))
    assert_close(attr.values, _torch_grad(model, x, lambda o: o[:, 0] - o[:, 1]))
    per_sample = xr.explain(model, x, "gradient", Class([4, 0]))
    assert_close(per_sample.values, _torch_grad(model, x, lambda o: o[[0, 1], [4, 0]]))


def test_dict_output_selected_by_name(x):
    model = build(zoo.DictOutputNet)
    attr = xr.explain(model, x, "saliency", Class(2), output="logits")
    ref = np.abs(_torch_grad(model, x, lambda o: o["logits"][:, 2]))
    assert_close(attr.values, ref)


def test_default_target_is_the_predicted_class():
    """Each sample's own predicted class, not sample 0's class for the whole batch."""
    model = build(zoo.HealthyCNN)
    # Plain noise is averaged away by the global pooling (every sample predicts one class); per-image
    # colour offsets move the prediction. Search a seeded pool for a sample predicted unlike sample 0.
    rng = np.random.default_rng(0)
    pool = (rng.standard_normal((32, 3, 32, 32)) + 4 * rng.standard_normal((32, 3, 1, 1))).astype(np.float32)
    with torch.no_grad():
        pool_pred = model(torch.tensor(pool)).argmax(1).numpy()
    other = np.flatnonzero(pool_pred != pool_pred[0])
    assert other.size, "no sample in the pool is predicted unlike sample 0: the test would prove nothing"
    x, pred = pool[[0, other[0]]], pool_pred[[0, other[0]]]
    assert pred[0] != pred[1]
    attr = xr.explain(model, x, "gradcam")
    assert attr.target["chosen"] == "predicted"
    assert attr.target["k"] == pred.tolist()
    # and the maps are those of each sample's own class
    given = xr.explain(model, x, "gradcam", Class(pred.tolist()))
    assert_close(attr.values, given.values)

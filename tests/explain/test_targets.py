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


def test_default_target_is_the_predicted_class(x):
    model = build(zoo.HealthyCNN)
    with torch.no_grad():
        pred = model(torch.tensor(x)).argmax(1).numpy()
    attr = xr.explain(model, x, "gradcam")
    assert attr.target["chosen"] == "predicted"
    assert np.atleast_1d(attr.target["k"]).tolist() in (pred.tolist(), [pred[0]])

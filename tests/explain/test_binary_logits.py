"""Saturated sigmoid maps: check names the logits (``--output MODULE``), and explaining them works.

A one-channel segmentation model (text or defect maps) that ends in a sigmoid saturates: most pixels of
its region sit at p > 0.9999, where d p / d logit < 1e-4. Where the logits are a module's output (an
eager model's last convolution), ``--output`` names that module and the logits are explained instead.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import UsageError


class SigmoidSeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 1, 1)
        self.act = nn.Sigmoid()
        with torch.no_grad():  # confident: most pixels saturate
            self.head.weight.mul_(60)
            self.head.bias.fill_(14.0)

    def forward(self, x):
        return self.act(self.head(self.body(x)))


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return SigmoidSeg().eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)).numpy()


def _saturation(report):
    return next(c for c in report.checks if c.name == "saturation")


def test_saturated_sigmoid_map_names_the_logits(seg, image):
    with torch.no_grad():
        p = seg(torch.tensor(image)).numpy()
    assert (p[p > 0.5] > 0.9999).mean() > 0.5  # the premise: most of the region is saturated
    check = _saturation(xr.check(seg, image))
    assert check.status == "warn"
    assert "--output head, the input of the final Sigmoid" in check.detail


def test_output_module_explains_the_logits_by_hand(seg, image):
    handle = as_handle(seg, output="head")
    report = xr.check(handle, image)
    assert _saturation(report).status == "pass" and "logit" in _saturation(report).detail
    assert report.context["target"]["region"].startswith("pixels with sigmoid(logit) > 0.5")
    a = xr.explain(handle, image, "gradient", sanity="off", verify=False)
    x = torch.tensor(image, requires_grad=True)
    logits = seg.head(seg.body(x))
    region = (logits > 0).float().detach()  # sigmoid(logit) > 0.5
    expect = torch.autograd.grad((logits * region).sum(), x)[0].numpy()
    np.testing.assert_allclose(a.values, expect, rtol=1e-5, atol=1e-6 * np.abs(expect).max())
    cam = xr.explain(handle, image, "gradcam", layer="body", sanity="off", verify=False)
    assert np.abs(cam.values).max() > 0


def test_output_module_that_never_runs_is_one_clear_error(image):
    class TwoHeads(SigmoidSeg):
        def __init__(self):
            super().__init__()
            self.unused = nn.Conv2d(8, 1, 1)

    with pytest.raises(UsageError, match="'unused': that module did not run"):
        as_handle(TwoHeads().eval(), output="unused").forward(image)


def test_smp_unet_with_sigmoid_activation():
    """segmentation-models-pytorch's head wraps its activation (``Activation(nn.Sigmoid)``): the logits
    are named all the same, and explaining them is equivalent to calling the model without it."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=1, activation="sigmoid").eval()
    with torch.no_grad():
        model.segmentation_head[0].weight.mul_(400)  # random weights: make the map confident
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    check = _saturation(xr.check(model, x))
    assert check.status == "warn" and "--output segmentation_head." in check.detail
    name = check.detail.split("--output ")[1].split(",")[0]
    a = xr.explain(as_handle(model, output=name), x, "gradient", sanity="off", verify=False)
    xt = torch.tensor(x, requires_grad=True)
    model.segmentation_head[2] = nn.Identity()  # the same network without its sigmoid
    logits = model(xt)
    expect = torch.autograd.grad((logits * (logits > 0).float().detach()).sum(), xt)[0].numpy()
    np.testing.assert_allclose(a.values, expect, rtol=1e-4, atol=1e-5 * np.abs(expect).max())

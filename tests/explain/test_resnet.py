"""torchvision resnet18 (random weights, small input): BatchNorm, residual adds, in-place ReLUs."""

import numpy as np
import pytest
import torch
from captum.attr import GuidedBackprop, IntegratedGradients
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import xaiready as xr
from xaiready.api import as_handle
from xaiready.targets import Class

from .conftest import assert_close

torchvision = pytest.importorskip("torchvision")

# Captum announces its own (module-level) ReLU hooks on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


def test_resnet18_default_layer_and_cams_match_pytorch_grad_cam(resnet, image):
    handle = as_handle(resnet)
    attr = xr.explain(handle, image, "gradcam", Class(4))
    assert attr.layer == "layer4"  # readiness's default: the last feature block before pooling
    for name, anchor in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        with anchor(model=resnet, target_layers=[resnet.layer4]) as cam:
            ref = cam(input_tensor=torch.tensor(image), targets=[ClassifierOutputTarget(4)] * 2)
        resnet.zero_grad(set_to_none=True)  # the anchor's backward() filled .grad; ours never does
        assert_close(xr.explain(handle, image, name, Class(4)).values, ref)


def test_resnet18_guided_backprop_and_ig_match_captum(resnet, image):
    handle = as_handle(resnet)
    ref = GuidedBackprop(resnet).attribute(torch.tensor(image, requires_grad=True), target=4).detach().numpy()
    ours = xr.explain(handle, image, "guided-backprop", Class(4))
    assert_close(ours.values, ref)
    stats = ours.info["relu_override"]
    assert stats["overridden"] == stats["relu_calls"] == 17 and not stats["not_overridable"]
    ref = IntegratedGradients(resnet).attribute(torch.tensor(image), target=4, n_steps=8).detach().numpy()
    assert_close(xr.explain(handle, image, "integrated-gradients", Class(4), n_steps=8).values, ref)

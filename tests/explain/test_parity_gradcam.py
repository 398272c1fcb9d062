"""Parity with pytorch-grad-cam (jacobgil) on the same model, input, layer and target.

Definition differences, written down:
* pytorch-grad-cam returns ``scale(resize(scale(ReLU(cam))))`` with ``scale`` = x - min, / (max + 1e-7) and
  ``cv2.resize`` (bilinear, half-pixel centres). Min-max scaling commutes with bilinear resizing up to the
  second rescale, so this equals our ``values = minmax(upsample(raw))``, up to the 1e-7 epsilon.
* It runs ``loss.backward()`` (filling parameter ``.grad`` and calling ``model.zero_grad()``); we take
  gradients to the layer only. The layer gradient is the same quantity.
* Grad-CAM++ uses the closed form with powers of the gradient (exp-score derivatives); ours is the same
  formula with the same epsilons (1e-6; XGradCAM 1e-7).
"""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import xaiready as xr
from xaiready._image_ops import upsample
from xaiready.targets import Class

from .conftest import assert_close

ANCHORS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM,
           "xgradcam": XGradCAM}


def _anchor(model, layer, cls, x, k):
    with cls(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        return cam(input_tensor=torch.tensor(x), targets=[ClassifierOutputTarget(k) for _ in x])


@pytest.mark.parametrize("name", list(ANCHORS))
def test_cam_at_layer_resolution(healthy, x, name):
    """HealthyCNN keeps 32x32 features: no resizing, so the channel weighting alone is compared."""
    model = healthy
    ref = _anchor(model, "features.3", ANCHORS[name], x, 1)
    for p in model.parameters():  # the anchor filled .grad; ours must not need or touch it
        p.grad = None
    ours = xr.explain(model, x, name, Class(1), layer="features.3")
    assert_close(ours.values, ref)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", list(ANCHORS))
def test_cam_upsampled(down, x, name):
    """An 8x8 layer upsampled to 32x32: also checks our NumPy bilinear against cv2's."""
    ref = _anchor(down, "conv3", ANCHORS[name], x, 3)
    ours = xr.explain(down, x, name, Class(3), layer="conv3")
    assert ours.raw.shape == (2, 8, 8) and ours.values.shape == (2, 32, 32)
    assert_close(ours.values, ref)


@pytest.mark.parametrize("size", [(32, 32), (17, 45), (5, 3)])
def test_upsample_matches_torch_interpolate(rng, size):
    maps = rng.standard_normal((2, 7, 6)).astype(np.float32)
    for mode in ("bilinear", "nearest"):
        ref = torch.nn.functional.interpolate(torch.tensor(maps[:, None]), size=size, mode=mode)[:, 0].numpy()
        assert_close(upsample(maps, size, mode), ref)

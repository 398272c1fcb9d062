"""Analytic models whose attributions are known exactly."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaiready as xr
from xaiready.methods.gradient import path_points
from xaiready.targets import Class, Regression


class Linear(nn.Module):
    """f(x) = sum(w * x) + b: gradient w, IG from any baseline b0 equals (x - b0) * w exactly."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))
        self.b = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return ((x * self.w).flatten(1).sum(1) + self.b)[:, None]


class Square(nn.Module):
    """f(x) = sum(x^2): IG from 0 is x^2 (grad 2 a x integrates to x^2), Riemann-left undershoots."""

    def forward(self, x):
        return (x * x).flatten(1).sum(1, keepdim=True)


class ReluDiff(nn.Module):
    """f(x) = ReLU(x1 - 1 - x2) (Captum's classic IG example) on inputs (N, 2)."""

    def forward(self, x):
        return torch.relu(x[:, :1] - 1 - x[:, 1:2])


def test_linear_model_gradient_methods(rng):
    w = rng.standard_normal((3, 4, 4)).astype(np.float32)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    m = Linear(w).eval()
    np.testing.assert_allclose(xr.explain(m, x, "gradient", Regression(0)).values, np.broadcast_to(w, x.shape))
    np.testing.assert_allclose(xr.explain(m, x, "saliency", Regression(0)).values, np.abs(np.broadcast_to(w, x.shape)))
    np.testing.assert_allclose(xr.explain(m, x, "input-x-gradient", Regression(0)).values, x * w, rtol=1e-6)
    base = np.full_like(x, -0.3)
    ig = xr.explain(m, x, "integrated-gradients", Regression(0), baseline=base, n_steps=3)
    np.testing.assert_allclose(ig.values, (x - base) * w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ig.info["delta"], 0, atol=1e-4)
    # the noise of SmoothGrad cannot change a constant gradient; VarGrad of it is zero
    np.testing.assert_allclose(xr.explain(m, x, "smoothgrad", Regression(0), base="gradient").values,
                               np.broadcast_to(w, x.shape), rtol=1e-5)
    np.testing.assert_allclose(xr.explain(m, x, "vargrad", Regression(0), base="gradient").values, 0, atol=1e-10)


@pytest.mark.parametrize(("integration", "expected_factor"), [
    ("riemann_left", lambda n: (n - 1) / n), ("riemann_right", lambda n: (n + 1) / n),
    ("riemann_middle", lambda n: 1.0),
    # Captum's trapezoid halves the end weights of 1/n steps, so they sum to (n-1)/n; kept for parity
    ("riemann_trapezoid", lambda n: (n - 1) / n), ("gausslegendre", lambda n: 1.0)])
def test_square_model_quadrature(rng, integration, expected_factor):
    """grad = 2 a x along the path a*x; sum_k w_k 2 a_k = the rule's estimate of the integral of 2a = 1."""
    x = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    n = 4
    ig = xr.explain(Square(), x, "integrated-gradients", Regression(0), n_steps=n, integration=integration,
                    verify=False)
    alphas, weights = path_points(integration, n)
    factor = float((2 * alphas * weights).sum())
    assert factor == pytest.approx(expected_factor(n))
    np.testing.assert_allclose(ig.values, factor * x * x, rtol=1e-5)


def test_relu_diff_integrated_gradients_is_complete():
    x = np.array([[3.0, 1.0]], dtype=np.float32)  # f(x) = 1, f(0) = 0
    ig = xr.explain(ReluDiff(), x, "integrated-gradients", Regression(0), n_steps=200,
                    integration="riemann_trapezoid", verify=False)
    assert ig.values.sum() == pytest.approx(1.0, abs=2e-2)
    assert abs(ig.info["delta"][0]) < 2e-2
    assert ig.values[0, 0] > 0 > ig.values[0, 1]


class GAPLinear(nn.Module):
    """A 2-channel feature map A = x (a 1x1 identity convolution) -> mean -> linear.

    d logit_k / d A_c = W[k, c] / (h w) everywhere, so Grad-CAM = ReLU(sum_c W[k, c] / (hw) * A_c)
    and HiResCAM equals it exactly (constant gradients).
    """

    def __init__(self, weight):
        super().__init__()
        self.features = nn.Conv2d(2, 2, 1, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(2)[:, :, None, None])
            self.head.weight.copy_(torch.tensor(weight))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_cam_on_global_average_pooling_model(rng):
    weight = np.array([[1.0, -2.0], [0.5, 0.25]], dtype=np.float32)
    x = rng.random((1, 2, 6, 6)).astype(np.float32)
    m = GAPLinear(weight).eval()
    expected = np.maximum((weight[0][:, None, None] * x[0]).sum(0) / 36, 0)[None]
    for name in ("gradcam", "hirescam"):
        attr = xr.explain(m, x, name, Class(0), layer="features", verify=False)
        np.testing.assert_allclose(attr.raw, expected, rtol=1e-5, atol=1e-9)
    # LayerCAM keeps only positive gradients: channel 1 (weight -2) drops out
    attr = xr.explain(m, x, "layercam", Class(0), layer="features", verify=False)
    np.testing.assert_allclose(attr.raw, x[:, 0] / 36, rtol=1e-5)


def test_all_zero_cam_is_reported_before_normalization(rng):
    x = rng.random((1, 2, 6, 6)).astype(np.float32)  # positive features
    m = GAPLinear(np.array([[-1.0, -1.0], [1.0, 1.0]], dtype=np.float32)).eval()
    attr = xr.explain(m, x, "gradcam", Class(0), layer="features", verify=False)
    assert not attr.raw.any() and not attr.values.any()
    assert attr.info["degenerate"] == ["all-zero"]
    assert any("all-zero" in w for w in attr.warnings)


def test_blur_and_uniform_baselines(rng):
    from xaiready._image_ops import gaussian_blur
    from xaiready.methods.gradient import make_baseline

    ndimage = pytest.importorskip("scipy.ndimage")
    x = rng.standard_normal((2, 3, 12, 9)).astype(np.float32)
    for sigma in (0.7, 2.0, 5.0):
        ref = ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0)
        np.testing.assert_allclose(gaussian_blur(x, sigma, (2, 3)), ref, rtol=1e-5, atol=1e-6)
    nhwc = np.moveaxis(x, 1, -1)
    np.testing.assert_allclose(np.moveaxis(make_baseline("blur", nhwc, np.arange(2), "NHWC", sigma=2.0), -1, 1),
                               make_baseline("blur", x, np.arange(2), "NCHW", sigma=2.0), rtol=1e-6)
    uni = make_baseline("uniform", x, np.arange(2), "NCHW", seed=3)
    assert all(x[i].min() <= uni[i].min() and uni[i].max() <= x[i].max() for i in range(2))
    # seeded per caller's sample: the same sample gets the same baseline in any row or batch
    np.testing.assert_array_equal(make_baseline("uniform", x[1:], np.array([1]), "NCHW", seed=3)[0], uni[1])
    # IG with the blur baseline is complete on a linear model
    m = Linear(rng.standard_normal((3, 12, 9)).astype(np.float32)).eval()
    ig = xr.explain(m, x, "integrated-gradients", Regression(0), baseline="blur", blur_sigma=2.0, n_steps=2)
    np.testing.assert_allclose(ig.info["delta"], 0, atol=1e-4)

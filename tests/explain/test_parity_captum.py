"""Parity with Captum on the same model, input and target (Captum is the independent reference).

Definition differences, written down:
* Saliency: Captum's ``abs=True`` default is our ``saliency``; ``abs=False`` is our ``gradient``.
* IntegratedGradients: same quadrature rules and step weights as ``captum.attr._utils.approximation_methods``;
  we accumulate the weighted gradients in float64 chunk by chunk (Captum sums float32 over all steps at
  once), so agreement is to float32 rounding, not bitwise.
* NoiseTunnel: Captum's ``stdevs`` is an absolute standard deviation drawn with ``torch.normal``; ours is a
  fraction of each sample's range drawn from a NumPy generator. To compare the aggregation itself, the test
  replays Captum's exact noise (same torch seed, same call) and passes it to ours through ``noise=``.
* GuidedBackprop / Deconvolution: Captum overrides ``nn.ReLU`` modules; we override every ReLU call. On a
  model whose ReLUs are all ``nn.ReLU`` modules (used here) the definitions coincide. Where they differ
  (``F.relu``) see test_relu_rules.py.
* LayerGradCam: Captum returns the un-ReLU'd, un-normalized map at layer resolution unless
  ``relu_attributions=True``; our ``raw`` is that ReLU'd map, ``values`` its upsampled min-max version.
* GuidedGradCam: Captum upsamples the raw Grad-CAM map with ``nearest`` by default; ours uses bilinear
  by default, so the test passes ``interpolation="nearest"``.
"""

import numpy as np
import pytest
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)

import xaiready as xr
from xaiready.targets import Class

from .conftest import assert_close

K = 2  # explained class

# Captum announces its own (module-level) ReLU hooks on every call.
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")


def _t(x):
    return torch.tensor(x, requires_grad=True)


def test_saliency_abs_and_signed(healthy, x):
    ref_abs = Saliency(healthy).attribute(_t(x), target=K, abs=True).detach().numpy()
    ref_signed = Saliency(healthy).attribute(_t(x), target=K, abs=False).detach().numpy()
    assert_close(xr.explain(healthy, x, "saliency", Class(K)).values, ref_abs)
    assert_close(xr.explain(healthy, x, "gradient", Class(K)).values, ref_signed)


def test_input_x_gradient(healthy, x):
    ref = InputXGradient(healthy).attribute(_t(x), target=K).detach().numpy()
    assert_close(xr.explain(healthy, x, "input-x-gradient", Class(K)).values, ref)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_integrated_gradients(down, x, method):
    baseline = np.full_like(x, 0.1)
    ref, delta = IntegratedGradients(down).attribute(_t(x), baselines=torch.tensor(baseline), target=K,
                                                     n_steps=16, method=method, return_convergence_delta=True)
    ours = xr.explain(down, x, "integrated-gradients", Class(K), n_steps=16, integration=method,
                      baseline=baseline)
    assert_close(ours.values, ref.detach().numpy())
    # the same completeness gap, computed independently
    np.testing.assert_allclose(ours.info["delta"], delta.detach().numpy(), atol=1e-5 * np.abs(ref.sum().item()))


@pytest.mark.parametrize(("ours_name", "nt_type"), [("smoothgrad", "smoothgrad"),
                                                     ("smoothgrad-sq", "smoothgrad_sq"), ("vargrad", "vargrad")])
def test_noise_tunnel_with_the_same_noise(healthy, x, ours_name, nt_type):
    n, stdev = 6, 0.3
    torch.manual_seed(7)
    ref = NoiseTunnel(Saliency(healthy)).attribute(_t(x), nt_type=nt_type, nt_samples=n, stdevs=stdev,
                                                   target=K, abs=False).detach().numpy()
    # Replay Captum's draw: torch.normal over the repeat_interleave'd batch (sample-major), same seed.
    torch.manual_seed(7)
    noise = torch.normal(0, torch.tensor(stdev).repeat((len(x) * n,) + x.shape[1:])).numpy()
    ours = xr.explain(healthy, x, ours_name, Class(K), base="gradient", n_samples=n,
                      noise=noise.reshape((len(x), n) + x.shape[1:]), batch_size=5)
    assert_close(ours.values, ref, rtol=2e-5 if nt_type == "vargrad" else 1e-5)  # variance: a difference


def test_noise_tunnel_wraps_integrated_gradients(down, x):
    n, stdev = 3, 0.2
    torch.manual_seed(3)
    ref = NoiseTunnel(IntegratedGradients(down)).attribute(_t(x), nt_samples=n, stdevs=stdev, target=K,
                                                           n_steps=8, method="riemann_middle").detach().numpy()
    torch.manual_seed(3)
    noise = torch.normal(0, torch.tensor(stdev).repeat((len(x) * n,) + x.shape[1:])).numpy()
    ours = xr.explain(down, x, "smoothgrad", Class(K), base="integrated-gradients", n_samples=n, n_steps=8,
                      integration="riemann_middle", noise=noise.reshape((len(x), n) + x.shape[1:]), batch_size=4)
    assert_close(ours.values, ref)


@pytest.mark.parametrize(("ours_name", "anchor"), [("guided-backprop", GuidedBackprop),
                                                    ("deconvnet", Deconvolution)])
def test_relu_rules_on_module_relus(down, x, ours_name, anchor):
    ref = anchor(down).attribute(_t(x), target=K).detach().numpy()
    ours = xr.explain(down, x, ours_name, Class(K))
    assert_close(ours.values, ref)
    assert ours.info["relu_override"]["overridden"] == 3 == ours.info["relu_override"]["relu_calls"]
    assert not ours.warnings


@pytest.mark.parametrize("layer", ["conv3", "block2"])
def test_layer_gradcam(down, x, layer):
    lgc = LayerGradCam(down, dict(down.named_modules())[layer])
    ref = lgc.attribute(_t(x), target=K, relu_attributions=True).detach().numpy()[:, 0]
    ours = xr.explain(down, x, "gradcam", Class(K), layer=layer)
    assert_close(ours.raw, ref)
    # Captum's own upsampling (F.interpolate bilinear) of its map, normalized per sample, is our values.
    up = LayerAttribution.interpolate(torch.tensor(ref[:, None]), (32, 32), interpolate_mode="bilinear")
    up = up.numpy()[:, 0]
    lo, hi = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
    assert_close(ours.values, (up - lo) / (hi - lo))


def test_guided_gradcam(down, x):
    ref = GuidedGradCam(down, down.conv3).attribute(_t(x), target=K).detach().numpy()
    ours = xr.explain(down, x, "guided-gradcam", Class(K), layer="conv3", interpolation="nearest")
    assert_close(ours.values, ref)


def test_default_layer_is_readiness_default(down, x):
    report = xr.check(down, x[:1], Class(K))
    assert xr.explain(down, x, "gradcam", Class(K)).layer == report.cam["default_layer"]

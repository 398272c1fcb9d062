"""Cross-framework parity: the same network with the same weights in PyTorch (NCHW) and Keras (NHWC)
gives the same logits and the same attribution for every registered method, after the layout transpose.

Tolerances (relative to the largest reference value): logits 1e-4 (measured 7e-8); deterministic methods
1e-5 (measured <= 3e-6: float32 convolutions sum in different orders in the two frameworks); methods that draw random noise or masks are compared with the same seed, and their draws are
laid out like the input, so where the draws depend on the layout (LAYOUT_DEPENDENT_DRAWS: the noise of
the SmoothGrad family) the two maps are compared by correlation (> 0.6; 0.75-0.83 measured with the
default 25 samples), and with the noise switched off they must agree to ATTR_TOL like any deterministic
method.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xaiready as xr  # noqa: E402
from xaiready.api import as_handle  # noqa: E402
from xaiready.methods import load_methods  # noqa: E402

METHODS = load_methods()
LOGIT_TOL = 1e-4
ATTR_TOL = 1e-5
LAYOUT_DEPENDENT_DRAWS = {"smoothgrad", "smoothgrad-sq", "vargrad"}
MIN_CORRELATION = 0.6  # measured 0.75-0.83 with 25 samples; independent maps give ~0


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        h = self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(h.mean((2, 3)))


def keras_net():
    import keras

    inp = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inp)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    return keras.Model(inp, keras.layers.Dense(5, name="fc")(h))


def copy_weights(net: TorchNet, model) -> None:
    """Conv kernels (out, in, kh, kw) -> (kh, kw, in, out); dense (out, in) -> (in, out)."""
    for name in ("conv1", "conv2"):
        conv = getattr(net, name)
        model.get_layer(name).set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                           conv.bias.detach().numpy()])
    model.get_layer("fc").set_weights([net.fc.weight.detach().numpy().T, net.fc.bias.detach().numpy()])


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    net = TorchNet().eval()
    model = keras_net()
    copy_weights(net, model)
    x_nhwc = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    return as_handle(net), as_handle(model), x_nhwc


def _to_nhwc(values: np.ndarray, x_ndim: int) -> np.ndarray:
    return values.transpose(0, 2, 3, 1) if values.ndim == x_ndim == 4 else values


def _close(ours, ref, tol):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    assert scale > 0, "reference is all zero: the comparison would prove nothing"
    err = np.abs(ours - ref).max()
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol:g} x scale {scale:.3g}"


def test_logits_agree(pair):
    th, kh, x = pair
    _close(kh.forward(x), th.forward(x.transpose(0, 3, 1, 2)), LOGIT_TOL)


def test_readiness_agrees(pair):
    th, kh, x = pair
    rt, rk = xr.check(th, x.transpose(0, 3, 1, 2)).to_dict(), xr.check(kh, x).to_dict()
    assert rt["verdict"] == rk["verdict"] == "full"
    assert rt["cam"]["default_layer"] == rk["cam"]["default_layer"] == "relu2"
    _close(rk["gradient"]["input_grad_norm"], rt["gradient"]["input_grad_norm"], ATTR_TOL)


@pytest.mark.parametrize("method", [n for n in METHODS.names() if "attention" not in METHODS.get(n).requires
                                    and METHODS.get(n).task is None])
def test_every_method_agrees_after_the_layout_transpose(pair, method):
    th, kh, x = pair
    target = xr.targets.Class(2)
    cls = METHODS.get(method)
    layer = "relu2" if cls.family == "cam" or "cam" in method else None
    at = xr.explain(th, x.transpose(0, 3, 1, 2), method=method, target=target, layer=layer)
    ak = xr.explain(kh, x, method=method, target=target, layer=layer)
    assert ak.layout == "NHWC"
    ref = _to_nhwc(at.values, 4)
    if method in LAYOUT_DEPENDENT_DRAWS:
        assert ak.values.shape == ref.shape and np.isfinite(ak.values).all()
        assert np.corrcoef(ak.values.ravel(), ref.ravel())[0, 1] > MIN_CORRELATION
        if method != "vargrad":  # without noise, the variance is all zero: nothing to compare
            at = xr.explain(th, x.transpose(0, 3, 1, 2), method=method, target=target, noise_level=0.0, n_samples=2)
            ak = xr.explain(kh, x, method=method, target=target, noise_level=0.0, n_samples=2)
            _close(ak.values, _to_nhwc(at.values, 4), ATTR_TOL)
        return
    _close(ak.values, ref, ATTR_TOL)
    if "relu_override" in at.info:
        assert ak.info["relu_override"]["overridden"] == at.info["relu_override"]["overridden"] == 2


@pytest.mark.parametrize("method", ["gradcam", "saliency", "integrated-gradients"])
def test_the_runner_up_map_agrees_across_frameworks(pair, method):
    """The runner-up class's map from the explanation's own forward (the class health check's input):
    Keras and PyTorch agree, and both name the same runner-up class."""
    th, kh, x = pair
    layer = "relu2" if method == "gradcam" else None
    at = xr.explain(th, x.transpose(0, 3, 1, 2), method, xr.targets.Class(2), layer=layer, sanity="off", contrast=True)
    ak = xr.explain(kh, x, method, xr.targets.Class(2), layer=layer, sanity="off", contrast=True)
    assert ak.contrast is not None and ak.contrast.target == at.contrast.target
    _close(ak.contrast.other, _to_nhwc(at.contrast.other, 4), ATTR_TOL)

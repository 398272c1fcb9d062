"""Black-box methods: parity with Captum, analytic models with known attributions, any backend."""

import numpy as np
import pytest
import torch
from onnx_helpers import random_input, small_net

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import UsageError
from xaiready.methods.base import METHODS
from xaiready.methods.blackbox import KernelShap, Occlusion, Rise, RiseMasks, coalitions
from xaiready.targets import Class, Regression


# ---- occlusion vs Captum -----------------------------------------------------------------------------------
@pytest.mark.parametrize("window,stride", [((3, 4, 4), (3, 2, 2)), ((3, 5, 3), (3, 3, 2)), ((1, 4, 4), (1, 4, 4))],
                         ids=["overlapping", "clipped-edges", "per-channel"])
def test_occlusion_equals_captum(window, stride):
    from captum.attr import Occlusion as CaptumOcclusion

    model = small_net()
    x = random_input((2, 3, 15, 16), seed=5)
    ours = Occlusion()(as_handle(model), x, Class(3), window=window, stride=stride, fill=0.3, batch_size=7)
    theirs = CaptumOcclusion(model).attribute(torch.from_numpy(x), sliding_window_shapes=window, strides=stride,
                                              baselines=0.3, target=3, perturbations_per_eval=16)
    np.testing.assert_allclose(ours.values, theirs.detach().numpy(), rtol=0, atol=1e-5)
    assert ours.family == "black_box" and ours.black_box


def test_occlusion_on_onnxruntime_equals_captum_on_torch(exports):
    from captum.attr import Occlusion as CaptumOcclusion

    x = random_input((1, 3, 16, 16), seed=6)
    handle = xr.load(exports["legacy17"], convert=False)
    ours = Occlusion()(handle, x, Class(1), window=4, stride=2)
    theirs = CaptumOcclusion(small_net()).attribute(torch.from_numpy(x), sliding_window_shapes=(3, 4, 4),
                                                    strides=(3, 2, 2), baselines=0.0, target=1)
    np.testing.assert_allclose(ours.values, theirs.detach().numpy(), rtol=0, atol=1e-5)
    assert ours.provenance["model"]["framework"] == "onnxruntime"


def test_occlusion_chunked_equals_unchunked():
    handle = as_handle(small_net())
    x = random_input((1, 3, 16, 16), seed=7)
    one = Occlusion()(handle, x, Class(0), window=3, stride=2, batch_size=1).values
    many = Occlusion()(handle, x, Class(0), window=3, stride=2, batch_size=1000).values
    np.testing.assert_allclose(one, many, atol=1e-6)


# ---- analytic models -----------------------------------------------------------------------------------------
class Linear(torch.nn.Module):
    """f(x) = sum(w * x): Shapley value of a cell = sum of w*x over it (baseline 0)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w), requires_grad=False)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


class Product(torch.nn.Module):
    """f(x) = mean(cell A) * mean(cell B): each cell's Shapley value is f/2, every other cell's 0."""

    def forward(self, x):
        return (x[:, :, :4, :4].mean((1, 2, 3)) * x[:, :, 4:, 4:].mean((1, 2, 3)))[:, None]


class Constant(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 1), 2.5) + 0 * x.sum()


class Pixel(torch.nn.Module):
    """f(x) = x[0, 5, 5]: depends on one pixel only."""

    def forward(self, x):
        return x[:, 0, 5, 5][:, None]


def test_kernelshap_exact_on_a_linear_model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    attr = KernelShap()(as_handle(Linear(w)), x, Regression(0), grid=2)
    assert attr.info["exact"]
    expected = [(w * x)[..., r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].sum() for r in range(2) for c in range(2)]
    np.testing.assert_allclose(attr.info["shapley_values"][0], expected, rtol=1e-4, atol=1e-4)
    assert attr.values.shape == x.shape and attr.family == "black_box"


def test_kernelshap_sampled_is_still_exact_for_an_additive_model():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    attr = KernelShap()(as_handle(Linear(w)), x, Regression(0), grid=4, n_samples=200, batch_size=64)
    assert not attr.info["exact"]  # 2**16 coalitions do not fit in 200 samples
    expected = [(w * x)[..., r * 2:(r + 1) * 2, c * 2:(c + 1) * 2].sum() for r in range(4) for c in range(4)]
    np.testing.assert_allclose(attr.info["shapley_values"][0], expected, rtol=1e-3, atol=1e-4)


def test_kernelshap_splits_an_interaction_evenly():
    x = np.ones((1, 1, 8, 8), dtype=np.float32) * 2.0  # f(x) = 4
    attr = KernelShap()(as_handle(Product()), x, Regression(0), grid=2)
    np.testing.assert_allclose(attr.info["shapley_values"][0], [2.0, 0.0, 0.0, 2.0], atol=1e-5)


def test_kernel_weights_are_shapley_kernel():
    Z, w, exact = coalitions(4, 100, 0)
    assert exact and len(Z) == 14
    sizes = Z.sum(1)
    np.testing.assert_allclose(w[sizes == 1], 3 / (4 * 1 * 3))  # (M-1) / (C(M,k) k (M-k))
    np.testing.assert_allclose(w[sizes == 2], 3 / (6 * 2 * 2))


def test_rise_equals_the_paper_formula_with_the_same_masks():
    model = small_net()
    x = random_input((1, 3, 16, 16), seed=8)
    attr = Rise()(as_handle(model), x, Class(2), n_masks=64, grid=4, p=0.4, seed=3, batch_size=10)
    masks = RiseMasks(64, (4, 4), 0.4, (16, 16), 3).get(np.arange(64))
    reference = np.zeros((16, 16))
    for m in masks:  # S = sum_i f(x * M_i) M_i / (N p)
        with torch.no_grad():
            score = model(torch.from_numpy(x * m[None, None]))[0, 2].item()
        reference += score * m
    reference /= 64 * 0.4
    np.testing.assert_allclose(attr.values[0, 0], reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attr.values[0, 1], attr.values[0, 0])  # same map for every channel


def test_rise_of_a_constant_model_is_the_constant():
    attr = Rise()(as_handle(Constant()), random_input((1, 3, 24, 24)), Regression(0), n_masks=2000, grid=6, p=0.5)
    assert abs(attr.values.mean() - 2.5) < 0.05 * 2.5
    assert attr.values.std() < 0.15


def test_rise_finds_the_only_pixel_that_matters():
    x = np.ones((1, 1, 16, 16), dtype=np.float32)
    attr = Rise()(as_handle(Pixel()), x, Regression(0), n_masks=3000, grid=8, p=0.5, seed=1).values[0, 0]
    assert np.unravel_index(attr.argmax(), attr.shape) in {(5, 5), (4, 5), (5, 4), (6, 5), (5, 6)}
    far = attr[12:, 12:]  # masks there are independent of pixel (5, 5): E = p * x
    assert abs(far.mean() - 0.5) < 0.05


def test_rise_chunked_equals_unchunked():
    handle = as_handle(small_net())
    x = random_input((1, 3, 16, 16), seed=9)
    a = Rise()(handle, x, Class(0), n_masks=40, batch_size=1).values
    b = Rise()(handle, x, Class(0), n_masks=40, batch_size=40).values
    np.testing.assert_allclose(a, b, atol=1e-6)


# ---- contract ---------------------------------------------------------------------------------------------------
def test_registered_as_black_box():
    for name in ("occlusion", "rise", "kernelshap"):
        cls = METHODS.get(name)
        assert cls.family == "black_box" and cls.requires == frozenset({"forward"})


@pytest.mark.parametrize("method", [Occlusion, Rise, KernelShap])
def test_black_box_runs_on_onnxruntime_and_says_so(exports, method):
    handle = xr.load(exports["dynamo"], convert=False)
    options = {"rise": {"n_masks": 16}, "kernelshap": {"n_samples": 16, "grid": 2}}.get(method.name, {})
    attr = method()(handle, random_input((2, 3, 16, 16)), None, **options)
    assert attr.values.shape == (2, 3, 16, 16) and np.isfinite(attr.values).all()
    assert attr.to_dict()["black_box"] is True and any("black-box" in w for w in attr.warnings)


def test_options_are_checked():
    handle = as_handle(small_net())
    with pytest.raises(UsageError, match="no option"):
        Occlusion()(handle, random_input((1, 3, 16, 16)), None, n_steps=3)
    with pytest.raises(UsageError, match="uses no layer"):
        Rise()(handle, random_input((1, 3, 16, 16)), None, layer="conv1")
    with pytest.raises(UsageError, match="larger than the input"):
        Occlusion()(handle, random_input((1, 3, 16, 16)), None, window=20)
    with pytest.raises(UsageError, match="never be occluded"):
        Occlusion()(handle, random_input((1, 3, 16, 16)), None, window=2, stride=3)


def test_progress_reports_on_stderr(capsys):
    Occlusion()(as_handle(small_net()), random_input((1, 3, 16, 16)), None, window=4, progress=True)
    assert "occlusion: 16/16 forward passes" in capsys.readouterr().err


class ChannelsLast(torch.nn.Module):
    """The same SmallNet, fed NHWC inputs (as TensorFlow models are)."""

    def __init__(self):
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


@pytest.mark.parametrize("method,options", [(Occlusion, {"window": 4}), (Rise, {"n_masks": 24}),
                                            (KernelShap, {"grid": 2})], ids=["occlusion", "rise", "kernelshap"])
def test_nhwc_layout_gives_the_transposed_map(method, options):
    x = random_input((1, 3, 16, 16), seed=13)
    nchw = method()(as_handle(small_net()), x, Class(1), **options).values
    handle = as_handle(ChannelsLast())
    handle.layout = "NHWC"
    nhwc = method()(handle, x.transpose(0, 2, 3, 1).copy(), Class(1), **options).values
    np.testing.assert_allclose(nhwc, nchw.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)

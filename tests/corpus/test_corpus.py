"""Readiness verdicts on real architectures from torchvision, timm and transformers (random weights).

The fast part runs in ``make test``; the whole corpus (every architecture at float32, float16 and
bfloat16, every break cause in several architectures) runs with ``make test-corpus``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xaiready as xr

from . import architectures as A
from . import breaks as B

FAST_HEALTHY = ["tv-resnet18", "tv-mobilenet_v3_small", "tv-efficientnet_b0", "tv-convnext_tiny",
                "tv-vit_b_16", "timm-convnext_atto", "timm-vit_tiny", "hf-vit", "hf-resnet"]
FAST_BROKEN = ["tv-resnet18", "hf-vit"]
BROKEN_ARCHS = ["tv-resnet18", "tv-mobilenet_v3_small", "tv-efficientnet_b0", "tv-vit_b_16", "tv-swin_t",
                "timm-convnext_atto", "timm-regnetx_002", "timm-deit_tiny_distilled", "hf-vit", "hf-convnext"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _slow_unless(fast: bool):
    return () if fast else (pytest.mark.slow,)


# Known limits, measured: at random init these gradients are tiny (norm 1e-10 to 1e-13), so float16
# underflows them to exactly zero, and a doubled one cannot be told apart even in float64.
KNOWN = {("tv-mobilenet_v3_small", "float16"), ("tv-mobilenet_v2", "float16"), ("tv-efficientnet_b0", "float16"),
         ("tv-mnasnet0_5", "float16")}
KNOWN_BREAKS = {("tv-efficientnet_b0", "lying-backward")}


def _cases(names, fast_names, dtypes=("float32",), fast_dtypes=("float32",)):
    def marks(n, dt):
        known = (pytest.mark.xfail(strict=True, reason="random-init gradient underflows float16"),) \
            if (n, dt) in KNOWN else ()
        return _slow_unless(n in fast_names and dt in fast_dtypes) + known
    return [pytest.param(n, dt, id=f"{n}-{dt}", marks=marks(n, dt)) for n in names for dt in dtypes]


def _check(model, shape):
    return xr.check(model, A.example_input(shape)).to_dict()


def _status(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


@pytest.mark.parametrize("name,dtype", _cases(A.BUILDERS, FAST_HEALTHY, tuple(DTYPES)))
def test_healthy_architecture_has_a_correct_gradient(name, dtype):
    model, shape = A.build(name, dtype=DTYPES[dtype])
    report = _check(model, shape)
    assert report["gradient"]["status"] == "ok", report["gradient"]
    assert _status(report, "gradient-correct")["status"] == "pass", _status(report, "gradient-correct")
    assert report["verdict"] in ("full", "gradient-only")
    if name in A.CNNS:  # CNN feature maps are CAM layers; transformer layouts are measured elsewhere
        assert report["verdict"] == "full" and report["cam"]["default_layer"]
    if dtype != "float32":
        assert _status(report, "gradient-precision")["status"] == "pass"


@pytest.mark.parametrize("cause", list(B.CAUSES))
@pytest.mark.parametrize("name,dtype", _cases(BROKEN_ARCHS, FAST_BROKEN, ("float32", "bfloat16")))
def test_injected_break_is_found_and_located(name, dtype, cause):
    if (name, cause) in KNOWN_BREAKS:
        pytest.xfail("random-init gradient of norm 1e-13: finite differences stay inconclusive (a warning)")
    if cause == "item-scale" and dtype != "float32":
        pytest.skip("a bfloat16 scale error hides in rounding only the float32 twin can see; kept float32")
    model, shape = A.build(name, dtype=DTYPES[dtype])
    x = A.example_input(shape)
    model, expected = B.inject(model, cause, x)
    report = xr.check(model, x).to_dict()
    found = report["gradient"]["break"] or {}
    where = expected[3] if isinstance(expected[3], tuple) else (expected[3],)
    location = found.get("location")
    # no_grad: the innermost module that ran without gradients, inside the wrapped head
    hit = any(location == w or (cause == "no_grad" and str(location).startswith(w + ".")) for w in where)
    assert (report["verdict"], report["gradient"]["status"], found.get("cause")) == expected[:3], found
    assert hit, (found, where)


def test_numpy_in_grad_mode_quotes_the_framework_message():
    model, shape = A.build("tv-resnet18")
    x = A.example_input(shape)
    model, _ = B.inject(model, "numpy-no-detach", x)
    report = xr.check(model, x).to_dict()
    assert "Can't call numpy() on Tensor that requires grad" in report["gradient"]["break"]["detail"]
    assert _status(report, "forward-with-gradients")["status"] == "fail"


def test_nan_at_a_kink_names_the_op():
    model, shape = A.build("tv-resnet18")
    x = A.example_input(shape)
    model, _ = B.inject(model, "nan-at-kink", x)
    found = xr.check(model, x).to_dict()["gradient"]["break"]
    assert found["op"] == "sqrt" and "no derivative" in found["detail"]


def test_zero_initialised_head_is_named_not_blamed_on_numpy():
    """torchvision's ViT zero-initialises its head: the input gradient is exactly zero before training."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, num_classes=10, image_size=32).eval()
    report = _check(model, (1, 3, 32, 32))
    found = report["gradient"]["break"]
    assert report["verdict"] == "inference-only" and report["gradient"]["status"] == "zero"
    assert (found["cause"], found["location"]) == ("zero-weights", "heads.head"), found
    assert "all 7680 weights" in found["detail"]


def test_batch_coupled_scale_is_measured_whole_batch():
    """A .item() scale over the batch couples the samples; FD must not score perturbed copies together."""
    model, shape = A.build("tv-mobilenet_v3_small")
    x = np.concatenate([A.example_input(shape, seed=s) for s in range(2)])
    report = xr.check(B.ItemScale(model).eval(), x).to_dict()
    detail = _status(report, "gradient-correct")["detail"]
    assert report["gradient"]["status"] == "incorrect" and "other samples of its batch" in detail


def test_finite_difference_rule_false_alarms_and_detection():
    """The FD rule across 3 random seeds of directions: no false alarm on healthy models with ReLU
    kinks and max-pool ties (a constant image region), every item-scale error detected."""
    from xaiready.api import as_handle
    from xaiready.readiness.probes import finite_difference_check
    from xaiready.targets import Class

    model, shape = A.build("tv-resnet18")
    x = A.example_input(shape)
    x[..., :32, :] = 0.5  # a flat region: equal activations, max-pool ties
    for wrapped, lie in ((model, False), (B.ItemScale(model).eval(), True)):
        handle = as_handle(wrapped)
        target = Class(None).resolve(handle.forward(x), channel_axis=1)
        grad = handle.vjp(x, target).input_grad
        for seed in range(3):
            fd = finite_difference_check(handle, x, target, grad, n_random=2, seed=seed)
            assert fd.ok is not lie, fd.detail
            assert fd.conclusive or "not differentiable" in fd.detail, fd.detail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_broken_model_on_cuda_is_located_not_crashed():
    model, shape = A.build("tv-resnet18")
    x = A.example_input(shape)
    model, expected = B.inject(model, "detach", x)
    report = xr.check(model.cuda(), x).to_dict()
    assert report["gradient"]["break"]["cause"] == expected[2]

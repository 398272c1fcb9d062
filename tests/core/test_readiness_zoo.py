"""The readiness check on real PyTorch models: each verdict, status, break location and cause."""

import warnings

import numpy as np
import pytest
import torch

import xaiready as xr
from xaiready.testing import zoo


def _state(model):
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [p.grad for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
        "params": [p.detach().clone() for p in model.parameters()],
    }


def _assert_same(before, after):
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert all(a is b for a, b in zip(before["grad"], after["grad"], strict=True))
    assert before["hooks"] == after["hooks"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before["params"], after["params"], strict=True))


@pytest.mark.parametrize("name", list(zoo.EXPECTED))
def test_zoo_verdicts(name):
    verdict, status, cause, location = zoo.EXPECTED[name]
    model = zoo.build(name).train()  # a caller's model in training mode must come back in training mode
    before = _state(model)
    report = xr.check(model, zoo.example_input())
    d = report.to_dict()
    assert d["verdict"] == verdict
    assert d["gradient"]["status"] == status
    if cause is None:
        assert d["gradient"]["break"] is None
        assert d["cam"]["status"] == "ok" and d["cam"]["default_layer"]
    else:
        assert d["gradient"]["break"]["cause"] == cause
        assert d["gradient"]["break"]["location"] == location
    checks = {c["name"]: c["status"] for c in d["checks"]}
    assert checks["model-unchanged"] == "pass"
    _assert_same(before, _state(model))


def test_healthy_checks_all_pass_and_break_checks_fail():
    d = xr.check(zoo.build("HealthyCNN"), zoo.example_input()).to_dict()
    statuses = {c["name"]: c["status"] for c in d["checks"]}
    for name in ("forward", "score-in-graph", "gradient-exists", "gradient-finite", "gradient-nonzero",
                 "gradient-correct", "cam-layers"):
        assert statuses[name] == "pass", name
    d = xr.check(zoo.build("DetachBetweenBlocks"), zoo.example_input()).to_dict()
    statuses = {c["name"]: c["status"] for c in d["checks"]}
    assert statuses["score-in-graph"] == "pass"  # still in the graph through the head's weights
    assert statuses["gradient-exists"] == "fail"
    assert statuses["break-location"] == "fail"
    assert d["gradient"]["break"]["after"] == "block1"
    d = xr.check(zoo.build("NoGradHead"), zoo.example_input()).to_dict()
    assert {c["name"]: c["status"] for c in d["checks"]}["score-in-graph"] == "fail"


def test_finite_difference_catches_a_lie_that_existence_checks_miss():
    d = xr.check(zoo.build("LyingBackward"), zoo.example_input()).to_dict()
    statuses = {c["name"]: c["status"] for c in d["checks"]}
    assert statuses["gradient-exists"] == statuses["gradient-nonzero"] == "pass"
    assert statuses["gradient-correct"] == "fail"


def test_harmless_item_is_not_blamed():
    """ItemHead uses .item() twice; only the one that cuts the path to the output is reported."""
    d = xr.check(zoo.build("ItemHead"), zoo.example_input()).to_dict()
    assert d["gradient"]["break"]["location"] == "(root)"
    assert d["gradient"]["break"]["op"] == "item"


def test_batch_of_inputs_and_explicit_target():
    report = xr.check(zoo.build("HealthyCNN"), zoo.example_input(n=3), xr.targets.Class(2))
    d = report.to_dict()
    assert d["verdict"] == "full" and d["target"]["k"] == 2 and d["input_shape"] == [3, 3, 32, 32]


def test_segmentation_and_regression_targets():
    seg = xr.check(zoo.build("SegmentationNet"), zoo.example_input(), xr.targets.SegmentationRegion(1)).to_dict()
    assert seg["task"] == "segmentation" and seg["target"]["k"] == 1 and seg["verdict"] == "full"
    reg = xr.check(zoo.build("RegressionNet"), zoo.example_input(), task="regression").to_dict()
    assert reg["task"] == "regression" and reg["target"] == {"type": "regression", "index": 0}


def test_dict_output_picks_logits_and_honours_output():
    model = zoo.build("DictOutputNet")
    d = xr.check(model, zoo.example_input()).to_dict()
    assert d["output_shape"] == [1, 5]
    d = xr.check(model, zoo.example_input(), output="embedding", task="regression").to_dict()
    assert d["output_shape"] == [1, 8]


def test_saturated_softmax_warns_and_logits_do_not():
    d = xr.check(zoo.build("SoftmaxCNN", seed=1), zoo.example_input(seed=1)).to_dict()
    sat = next(c for c in d["checks"] if c["name"] == "saturation")
    assert sat["status"] == "warn" and "logits" in sat["detail"]
    d = xr.check(zoo.build("HealthyCNN"), zoo.example_input()).to_dict()
    assert next(c for c in d["checks"] if c["name"] == "saturation")["status"] == "pass"


def test_resnet_with_inplace_relu_is_full_with_layer4_default():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    d = xr.check(model, x).to_dict()
    assert d["verdict"] == "full"
    assert d["cam"]["default_layer"] == "layer4"
    assert "layer3" in d["cam"]["layers"]


@pytest.mark.parametrize("kind", ["trace", "script", "freeze"])
def test_torchscript_is_gradient_only_and_says_why(kind):
    model = zoo.build("HealthyCNN")
    x = torch.from_numpy(zoo.example_input())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = {"trace": lambda: torch.jit.trace(model, x), "script": lambda: torch.jit.script(model),
                    "freeze": lambda: torch.jit.freeze(torch.jit.script(model))}[kind]()
    d = xr.check(scripted, zoo.example_input()).to_dict()
    assert d["verdict"] == "gradient-only"
    reason = d["cam"]["reason"]
    expected = {"trace": "never calls them", "script": "refuses Python hooks", "freeze": "no submodules"}[kind]
    assert expected in reason


def test_model_unchanged_after_a_failing_check():
    model = zoo.build("HealthyCNN").train()
    before = _state(model)
    with pytest.raises(xr.errors.InputError):
        xr.check(model, np.zeros((1, 4, 32, 32), np.float32))  # wrong channel count
    _assert_same(before, _state(model))


def test_no_input_guesses_shape_and_says_so():
    report = xr.check(zoo.build("HealthyCNN"))
    d = report.to_dict()
    assert d["input_shape"] == [1, 3, 224, 224]
    assert any("guessed shape" in n for n in d["notes"])


def test_non_finite_input_is_refused():
    x = zoo.example_input()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(xr.errors.InputError, match="NaN"):
        xr.check(zoo.build("HealthyCNN"), x)


class _NoneGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return None


class _Blocker(torch.nn.Module):
    def forward(self, x):
        return _NoneGrad.apply(x)


class _CustomNoneBackward(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = zoo._features()
        self.block = _Blocker()
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.block(self.features(x)).mean((2, 3)))


class _TensorCopy(zoo.HealthyCNN):
    def forward(self, x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return super().forward(torch.tensor(x))


class _DecoratedNoGrad(zoo.HealthyCNN):
    @torch.no_grad()
    def forward(self, x):
        return super().forward(x)


@pytest.mark.parametrize("model,cause,location", [
    (_CustomNoneBackward, "custom-backward", "block"),
    (_TensorCopy, "detach", "(root)"),
    (_DecoratedNoGrad, "no_grad", "features.0"),
], ids=["custom-backward-returns-none", "torch.tensor-copy", "no_grad-decorator"])
def test_more_break_patterns(model, cause, location):
    torch.manual_seed(0)
    d = xr.check(model(), zoo.example_input()).to_dict()
    assert d["gradient"]["status"] == "missing"
    assert (d["gradient"]["break"]["cause"], d["gradient"]["break"]["location"]) == (cause, location)

"""Targets of the other vision tasks: binary (one-channel) segmentation and (B, T, K) sequence heads
(CTC recognisers, captioning), on hand-derivable models, against torch autograd and ctc_loss; and the
usage error for an output whose task its shape does not say."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

import xaiready as xr
from xaiready.cli import main
from xaiready.errors import UsageError
from xaiready.targets import SegmentationRegion, Sequence, infer_task, pinned

W = np.array([0.7, -0.4, 0.25], dtype=np.float32)  # the 1x1 conv's weights over 3 input channels
B = np.float32(0.05)


def _onebyone(sigmoid: bool) -> nn.Module:
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(W).reshape(1, 3, 1, 1))
        conv.bias.fill_(float(B))
    return nn.Sequential(conv, nn.Sigmoid()) if sigmoid else nn.Sequential(conv)


def _x(shape=(2, 3, 6, 7), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---- binary segmentation ---------------------------------------------------------------------------

@pytest.mark.parametrize("sigmoid", [True, False], ids=["probabilities", "logits"])
def test_binary_segmentation_region_and_gradient_by_hand(sigmoid):
    x = _x()
    logit = np.einsum("c,nchw->nhw", W, x) + B
    prob = 1 / (1 + np.exp(-logit))
    region = (logit > 0).astype(np.float32)  # probability > 0.5 either way
    assert 0 < region.sum() < region.size  # a real region, not the whole map
    value = prob if sigmoid else logit
    # d/dx[n, c, h, w] of sum(region * value) = region * dvalue/dlogit * W[c]
    slope = prob * (1 - prob) if sigmoid else np.ones_like(logit)
    grad = (region * slope)[:, None] * W[None, :, None, None]

    attr = xr.explain(_onebyone(sigmoid), x, "gradient", SegmentationRegion(), sanity="off")
    np.testing.assert_allclose(attr.values, grad, rtol=1e-5, atol=1e-7)
    assert attr.target["region"].startswith("pixels with")
    assert ("probabilities" if sigmoid else "logits") in attr.target["region"]

    target = SegmentationRegion().resolve(value[:, None])
    np.testing.assert_allclose(target.scores(value[:, None]), (region * value).sum((1, 2)), rtol=1e-5)
    report = xr.check(_onebyone(sigmoid), x)
    assert report.context["task"] == "segmentation" and report.context["target"]["chosen"] == "threshold"
    assert report.context["task_from"].startswith("inferred from the output shape (2, 1, 6, 7)")
    assert report.gradient["status"] == "ok"


def test_binary_segmentation_nhwc_and_the_empty_region():
    x = _x()
    prob = 1 / (1 + np.exp(-(np.einsum("c,nchw->nhw", W, x) + B)))
    nhwc = prob[..., None]  # (N, H, W, 1)
    target = SegmentationRegion().resolve(nhwc, channel_axis=-1)
    np.testing.assert_array_equal(target._mask, (prob > 0.5).astype(np.float32))
    seed = target.seed(nhwc)
    assert seed.shape == nhwc.shape
    np.testing.assert_array_equal(seed[..., 0], (prob > 0.5).astype(np.float32))
    # no pixel above 0.5 in sample 0: the whole map, and the report says so
    low = nhwc.copy()
    low[0] = 0.2
    target = SegmentationRegion().resolve(low, channel_axis=-1)
    assert target._mask[0].all() and "whole map where none is" in target.describe()["region"]
    np.testing.assert_allclose(target.scores(low)[0], 0.2 * 6 * 7, rtol=1e-6)
    with pytest.raises(UsageError, match="out of range for 1 classes") as err:
        SegmentationRegion(1).resolve(nhwc, channel_axis=-1)
    assert "one-channel" in err.value.hint


# ---- sequence heads --------------------------------------------------------------------------------

class CTCNet(nn.Module):
    """conv features -> mean over height -> per-column class scores: (B, T=W, K)."""

    def __init__(self, classes=5):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv1d(8, classes, 1)

    def forward(self, x):
        return self.head(self.features(x).mean(2)).permute(0, 2, 1)


def _best_path_score(out, path, steps):
    """The rule of Sequence(), written in torch."""
    picked = out.log_softmax(2).gather(2, torch.as_tensor(path)[:, :, None])[..., 0]
    return (picked * torch.as_tensor(steps, dtype=out.dtype)).sum(1)


def test_best_path_rule_by_hand():
    z = np.full((1, 6, 3), -2.0)
    best = [1, 1, 0, 1, 2, 2]  # emits 1, 1, 2 at steps 0, 3, 4
    z[0, np.arange(6), best] = 2.0
    t = Sequence().resolve(z)
    np.testing.assert_array_equal(t._steps[0], [1, 0, 0, 1, 1, 0])
    one = 2.0 - np.log(np.exp(2.0) + 2 * np.exp(-2.0))  # log_softmax of the best class at a step
    np.testing.assert_allclose(t.scores(z), [3 * one])
    assert t.describe()["chosen"] == "best path" and t.describe()["text"] == [[1, 1, 2]]
    blank = np.zeros((1, 4, 3))
    blank[0, :, 0] = 3.0
    t = Sequence().resolve(blank)
    assert t._steps.all() and "all-blank" in t.describe()["score"]


@pytest.mark.parametrize("time_axis", [1, 0])
def test_sequence_seed_is_the_derivative_of_its_score(time_axis):
    z = np.random.default_rng(1).normal(size=(3, 9, 5))
    if time_axis == 0:
        z = np.ascontiguousarray(np.transpose(z, (1, 0, 2)))  # (T, B, K)
    t = Sequence(time_axis=time_axis).resolve(z)
    zt = torch.tensor(z, requires_grad=True)
    bt = zt if time_axis == 1 else zt.permute(1, 0, 2)
    ref = _best_path_score(bt, t._path, t._steps)
    (grad,) = torch.autograd.grad(ref.sum(), zt)
    np.testing.assert_allclose(t.scores(z), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(t.seed(z), grad.numpy(), atol=1e-12)
    # finite differences of the score along a random direction
    d = np.random.default_rng(2).normal(size=z.shape)
    eps = 1e-6
    fd = (t.scores(z + eps * d).sum() - t.scores(z - eps * d).sum()) / (2 * eps)
    np.testing.assert_allclose(fd, (t.seed(z) * d).sum(), rtol=1e-6)


@pytest.mark.parametrize("labels", [[1, 2, 2, 3], [[1, 2], [3, 3, 1], [4]], []],
                         ids=["repeat", "per-sample", "empty"])
def test_ctc_labels_score_is_minus_torch_ctc_loss(labels):
    z = np.random.default_rng(3).normal(size=(3, 9, 5))
    per = [labels] * 3 if not labels or np.ndim(labels[0]) == 0 else labels
    zt = torch.tensor(z, requires_grad=True)
    loss = torch.nn.functional.ctc_loss(
        zt.log_softmax(2).transpose(0, 1), torch.tensor([c for s in per for c in s], dtype=torch.long),
        torch.full((3,), 9), torch.tensor([len(s) for s in per]), blank=0, reduction="none")
    (grad,) = torch.autograd.grad(-loss.sum(), zt)
    t = Sequence(labels=labels).resolve(z)
    np.testing.assert_allclose(t.scores(z), -loss.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(t.seed(z), grad.numpy(), atol=1e-10)
    assert t.describe()["chosen"] == "given labels"


def test_ctc_labels_that_cannot_align_are_a_usage_error():
    z = np.zeros((1, 3, 4))
    with pytest.raises(UsageError, match="need at least 4 time steps"):
        Sequence(labels=[1, 1, 2]).resolve(z)
    with pytest.raises(UsageError, match="other than the blank"):
        Sequence(labels=[0, 1]).resolve(z)


@pytest.mark.parametrize("target", [Sequence(), Sequence(labels=[2, 1, 1]), Sequence(blank=4),
                                    SegmentationRegion()], ids=["best-path", "labels", "blank4", "binary-seg"])
def test_numpy_and_torch_outputs_give_the_same_scores_and_seeds(target):
    rng = np.random.default_rng(4)
    out = rng.normal(size=(2, 1, 5, 6)) if isinstance(target, SegmentationRegion) else rng.normal(size=(2, 8, 5))
    t = target.resolve(out)

    class Ops:  # what TorchOps.asarray does: the resolved arrays become tensors
        @staticmethod
        def asarray(a, dtype=None):
            return torch.as_tensor(np.asarray(a, dtype=dtype))

    on = t.on(Ops())
    tensor = torch.tensor(out)
    np.testing.assert_allclose(on.scores(tensor).numpy(), t.scores(out), rtol=1e-12)
    np.testing.assert_allclose(on.seed(tensor).numpy(), t.seed(out), atol=1e-12)
    np.testing.assert_allclose(on.take(torch.tensor([1, 1])).scores(tensor[[1, 1]]).numpy(),
                               t.take(np.array([1, 1])).scores(out[[1, 1]]), rtol=1e-12)


def test_check_and_explain_a_ctc_model_with_sequence():
    model = CTCNet()
    x = _x((2, 3, 8, 12), seed=5)
    report = xr.check(model, x, target=Sequence())
    ctx = report.context
    assert ctx["task"] == "sequence" and ctx["task_from"] == "from the target"
    assert ctx["target"]["type"] == "sequence" and ctx["target"]["chosen"] == "best path"
    assert len(ctx["target"]["path"]) == 2 and len(ctx["target"]["path"][0]) == 12
    assert report.gradient["status"] == "ok"
    assert {c.name: c.status for c in report.checks}["gradient-correct"] == "pass"

    with torch.no_grad():
        t = Sequence().resolve(model(torch.tensor(x)).numpy())
    xt = torch.tensor(x, requires_grad=True)
    (grad,) = torch.autograd.grad(_best_path_score(model(xt).double(), t._path, t._steps).sum(), xt)
    attr = xr.explain(model, x, "gradient", Sequence(), sanity="off")
    np.testing.assert_allclose(attr.values, grad.numpy(), rtol=1e-4, atol=1e-7)
    sal = xr.explain(model, x, "saliency", target=Sequence())
    assert sal.values.shape[0] == 2 and np.isfinite(sal.values).all() and np.any(sal.values)
    assert sal.target["chosen"] == "best path"

    labelled = xr.check(model, x, target=Sequence(labels=[1, 2, 3]))
    assert labelled.context["target"]["chosen"] == "given labels" and labelled.gradient["status"] == "ok"


def test_pinned_sequence_keeps_the_clean_best_path():
    z = np.random.default_rng(6).normal(size=(2, 7, 4))
    t = Sequence().resolve(z)
    again = pinned(t).resolve(z + np.random.default_rng(7).normal(size=z.shape) * 5)
    np.testing.assert_array_equal(again._path, t._path)
    assert again.describe()["chosen"] == "given path"


def test_a_3d_output_needs_an_explicit_task():
    model = CTCNet()
    x = _x((1, 3, 8, 12))
    with pytest.raises(UsageError, match=r"output has shape \(1, 12, 5\): choose --task sequence"):
        infer_task((1, 12, 5))
    with pytest.raises(UsageError, match="choose --task"):
        xr.check(model, x)
    with pytest.raises(UsageError, match="choose --task"):
        xr.explain(model, x, "gradient")
    assert infer_task((1, 12, 5), fallback="regression") == "regression"
    report = xr.check(model, x, task="regression")  # an explicit choice, noted in the report
    assert report.context["task"] == "regression" and report.context["task_from"] == "given"


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ctc_files(tmp_path):
    (tmp_path / "ctcnet.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class CTCNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())\n"
        "        self.head = nn.Conv1d(8, 5, 1)\n\n"
        "    def forward(self, x):\n"
        "        return self.head(self.features(x).mean(2)).permute(0, 2, 1)\n")
    torch.save(CTCNet().state_dict(), tmp_path / "ctc.pt")
    return tmp_path


def test_cli_3d_output_without_task_is_exit_2_one_line(ctc_files, capsys):
    args = ["check", ctc_files / "ctc.pt", "--arch", f"{ctc_files / 'ctcnet.py'}:CTCNet", "--input-shape", "1,3,8,12"]
    code, out, err = _cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "choose --task sequence|detection|regression|segmentation" in err

    code, out, err = _cli(capsys, *args, "--task", "sequence", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["task"] == "sequence" and d["task_from"] == "given" and d["target"]["chosen"] == "best path"

    code, out, err = _cli(capsys, *args, "--target-text", "3,1,4", "--blank", "0", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["task"] == "sequence" and d["target"]["labels"] == [3, 1, 4] and d["target"]["chosen"] == "given labels"

    code, _, err = _cli(capsys, *args, "--task", "regression", "--target-text", "3,1")
    assert code == 2 and "--target-text and --blank are for --task sequence" in err


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")
def test_keras_sequence_head_explained_with_sequence():
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    h = keras.layers.AveragePooling2D((8, 1))(h)  # (B, 1, 12, 6)
    h = keras.layers.Reshape((12, 6))(h)
    model = keras.Model(inp, keras.layers.Dense(5)(h))  # (B, T=12, K=5)
    x = _x((2, 8, 12, 3), seed=8)

    t = Sequence().resolve(model(x).numpy())
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logp = tf.nn.log_softmax(tf.cast(model(xt), tf.float64), axis=2)
        score = tf.reduce_sum(tf.reduce_sum(logp * tf.one_hot(t._path, 5, dtype=tf.float64), 2) * t._steps)
    grad = tape.gradient(score, xt).numpy()

    attr = xr.explain(model, x, "gradient", Sequence(), sanity="off")
    np.testing.assert_allclose(attr.values, grad, rtol=1e-4, atol=1e-7)
    report = xr.check(model, x, target=Sequence(labels=[1, 2]))
    assert report.context["task"] == "sequence" and report.gradient["status"] == "ok"
    assert {c.name: c.status for c in report.checks}["gradient-correct"] == "pass"

"""Detection as a task: check and explain on real detectors from the command line and the API.

Random-weight detectors built here (torchvision Faster R-CNN saved as a file, a two-level YOLO-style
head, a tiny Hugging Face DETR), an analytic detector whose D-RISE map is known, a Keras YOLO-style
head against a hand-written score, and ``--target-fn`` on a model that returns a list of dicts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from torchvision.ops import box_iou as tv_box_iou

import xaiready as xr
from xaiready.errors import UsageError
from xaiready.methods.blackbox import RiseMasks
from xaiready.targets import Detection

from .test_detection import build_frcnn

XAIREADY = [sys.executable, "-m", "xaiready"]


def _cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*XAIREADY, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=900)


@pytest.fixture(scope="module")
def frcnn_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("frcnn")
    torch.save(build_frcnn(), d / "frcnn.pt")
    np.save(d / "x.npy", torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)).numpy())
    return d


def test_check_cli_on_faster_rcnn_file(frcnn_files):
    """No flag needed: a model returning list[dict] is a detection task; its gradient holds the RPN's
    detached proposals fixed (named, a warning), and the default CAM layer is a backbone/neck map."""
    r = _cli("check", frcnn_files / "frcnn.pt", "--trust", "--input", frcnn_files / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["verdict"] == "full"
    assert report["task"] == "detection" and report["task_from"] == "the model returns detections"
    assert report["target"]["chosen"] == "top-scoring" and report["target"]["output"] == "list[dict]"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["gradient-correct"]["status"] in ("pass", "warn")  # finite differences may move proposals
    if checks["gradient-correct"]["status"] == "warn":
        assert "detaches" in checks["gradient-correct"]["detail"]
    default = report["cam"]["default_layer"]
    assert default.startswith("backbone.") and "every one of" in report["cam"]["default_reason"]


class DetachingDetector(nn.Module):
    """One box whose position comes from a detached branch (as torchvision's RPN proposals do) and whose
    score reads the image under it: finite differences of the model see the box move, autograd holds it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        f = torch.tanh(self.conv(x))
        shift = f.mean((1, 2, 3)).detach() * 40  # the detached "proposal"
        weight = torch.sigmoid(torch.arange(32.0) - 16 - shift[:, None])  # (B, 32): where the box reads
        score = torch.sigmoid((f.mean((1, 2)) * weight[:, None, :]).sum((1, 2)))
        boxes = torch.stack([8 + shift, 8 + shift, 20 + shift, 20 + shift], 1)
        return [{"boxes": boxes[i:i + 1], "scores": score[i:i + 1], "labels": torch.ones(1, dtype=torch.int64)}
                for i in range(x.shape[0])]


def test_detach_by_design_is_a_named_warning_not_a_break():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    report = xr.check(DetachingDetector().eval(), x)
    checks = {c.name: c for c in report.checks}
    assert report.context["task"] == "detection"
    assert checks["gradient-correct"].status == "warn", checks["gradient-correct"].detail
    assert "detaches" in checks["gradient-correct"].detail and "the model itself: finite differences disagree" in \
        checks["gradient-correct"].detail
    assert report.verdict == "full"


def test_explain_cli_gradcam_and_drise_draw_the_box(frcnn_files, tmp_path):
    out = tmp_path / "det.png"
    r = _cli("explain", frcnn_files / "frcnn.pt", "--trust", "--input", frcnn_files / "x.npy", "--task", "detection",
             "--box-index", "2", "--method", "gradcam", "--method", "drise", "--n-masks", "48", "--sanity", "off",
             "--out", out)
    assert r.returncode == 0, r.stderr
    assert "gradcam: values (1, 160, 160), detection box 2" in r.stdout
    assert "drise [black-box]: values (1, 3, 160, 160), detection box 2" in r.stdout
    from PIL import Image

    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    lime = (img[..., 0] < 60) & (img[..., 1] > 200) & (img[..., 2] < 60)  # the drawn box's edge colour
    assert lime.sum() > 50


def test_detection_flags_are_usage_errors_elsewhere(frcnn_files):
    r = _cli("check", frcnn_files / "frcnn.pt", "--trust", "--input", frcnn_files / "x.npy", "--task",
             "classification", "--box-index", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "for --task detection" in r.stderr


class TwoLevelYolo(nn.Module):
    """A v8-style head (B, 4 + K, N) over two pyramid levels (stride 4 and 8), read through a frozen
    1x1 convolution over all anchors, as YOLOv8's DFL is: only ``c2`` feeds both levels."""

    def __init__(self, k=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.head2, self.head3 = nn.Conv2d(16, 4 + k, 1), nn.Conv2d(16, 4 + k, 1)
        self.fixed = nn.Conv2d(4 + k, 4 + k, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.fixed.weight.copy_(torch.eye(4 + k)[..., None, None])

    def forward(self, x):
        f2 = self.c2(self.stem(x))
        f3 = self.c3(f2)
        r = torch.cat([self.head2(f2).flatten(2), self.head3(f3).flatten(2)], 2)  # (B, 4+K, N)
        r = self.fixed(r[..., None])[..., 0]
        xy = torch.sigmoid(r[:, :2]) * x.shape[-1]
        wh = torch.exp(r[:, 2:4].clamp(max=2)) * 8
        return torch.cat([xy, wh, torch.sigmoid(r[:, 4:])], 1)


def test_yolo_default_cam_layer_is_shared_by_every_level():
    """Without the shared-box rule the deepest map would be the stride-8 level, which half the boxes never
    see; the fixed convolution over anchors is never a CAM layer."""
    torch.manual_seed(0)
    model = TwoLevelYolo().eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    report = xr.check(model, x, task="detection")
    assert report.verdict == "full" and report.context["target"]["output"].startswith("yolo-v8")
    assert report.cam["default_layer"] in ("c2", "c2.0", "c2.1"), report.cam["default_reason"]
    assert "fixed" not in report.cam["layers"]
    a = xr.explain(model, x, "gradcam", target=Detection(), sanity="off")
    assert a.layer == report.cam["default_layer"] and np.abs(a.values).max() > 0


class AnalyticDetector(nn.Module):
    """Three anchors, v5 layout (B, 3, 6). Anchors 0 and 1 hold the same fixed box over rows/cols 8..24;
    anchor 0's class score is the mean of the image over the box's left half, anchor 1's over its right
    half (objectness 1). Anchor 2 is a fixed box elsewhere with class score 0."""

    def forward(self, x):
        b = x.shape[0]
        left, right = x[:, :, 8:24, 8:16].mean((1, 2, 3)), x[:, :, 8:24, 16:24].mean((1, 2, 3))
        box = torch.tensor([16.0, 16.0, 16.0, 16.0]).expand(b, 4)  # xywh: x1 = 8 .. x2 = 24
        elsewhere = torch.tensor([48.0, 48.0, 8.0, 8.0]).expand(b, 4)
        one, zero = torch.ones(b, 1), torch.zeros(b, 1)
        anchors = [torch.cat([box, one, left[:, None]], 1), torch.cat([box, one, right[:, None]], 1),
                   torch.cat([elsewhere, one, zero], 1)]
        return torch.stack(anchors, 1)


def test_drise_on_an_analytic_detector():
    """With an all-ones image and fill 0, a mask's D-RISE weight is its best similarity over *all*
    anchors: max(IoU 1 x mean of the mask over the left half, IoU 1 x mean over the right half, IoU 0 x 0),
    not the explained anchor's alone. The map is (1 / (N p)) sum_i w_i M_i, written out here by hand."""
    x = np.ones((1, 3, 64, 64), np.float32)
    target = Detection(index=0, layout="v5")
    n, grid, p = 200, 8, 0.5
    a = xr.explain(AnalyticDetector(), x, "drise", target=target, n_masks=n, grid=grid, p=p, sanity="off")
    masks = RiseMasks(n, (grid, grid), p, (64, 64), 0).get(np.arange(n)).astype(np.float64)
    weights = np.maximum(masks[:, 8:24, 8:16].mean((1, 2)), masks[:, 8:24, 16:24].mean((1, 2)))
    expect = np.tensordot(weights, masks, axes=1) / (n * p)
    ours = a.values[0, 0]
    np.testing.assert_allclose(ours, expect, rtol=1e-5, atol=1e-7)
    inside, far = ours[8:24, 8:24].mean(), ours[40:, 40:].mean()
    assert inside > 1.15 * far  # masks that keep the region weigh more
    with pytest.raises(UsageError, match="one detected box"):
        xr.explain(AnalyticDetector(), x, "drise", target=xr.targets.Regression(0), n_masks=8, sanity="off")


def test_single_scale_head_default_layer_is_not_its_prediction_map():
    """A one-level head: every box depends on every map, so only the channel rule keeps the CAM off the
    1x1 convolution that writes the (4 + K)-channel predictions."""
    from .test_detection import TinyYolo

    torch.manual_seed(0)
    model = TinyYolo("v8").eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)).numpy()
    report = xr.check(model, x, task="detection")
    assert "conv.3" in report.cam["layers"]  # the prediction map is a valid layer, just not the default
    assert report.cam["default_layer"] == "conv.2", report.cam["default_reason"]


def _tiny_detr():
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    cfg = DetrConfig(use_timm_backbone=False, backbone=None, use_pretrained_backbone=False,
                     backbone_config=ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                                  out_features=["stage4"]),
                     num_queries=6, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_labels=3)
    torch.manual_seed(0)
    return DetrForObjectDetection(cfg).eval()


def test_detr_query_score_by_hand():
    """A DETR query's score: softmax over classes with "no object" last, times the IoU of its relative
    cxcywh box with the reference (1 for the query itself), checked by hand."""
    model = _tiny_detr()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(pixel_values=x)
    prob = out.logits.softmax(-1)[0, :, :-1]
    q, label = divmod(int(prob.argmax()), prob.shape[1])
    report = xr.check(model, x.numpy())
    assert report.context["task"] == "detection" and report.verdict == "full"
    t = report.context["target"]
    assert (t["output"], t["index"], t["label"]) == ("detr", q, label)
    cx, cy, w, h = out.pred_boxes[0, q].tolist()
    assert t["box"] == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rel=1e-6)
    ref = torch.tensor([[0.1, 0.2, 0.6, 0.7]])
    a = xr.explain(model, x.numpy(), "gradient", target=Detection(index=q, label=label, box=ref[0].tolist()),
                   sanity="off", verify=False)
    xt = x.clone().requires_grad_(True)
    o = model(pixel_values=xt)
    c = o.pred_boxes[0, q]
    pred = torch.stack([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])[None]
    hand = tv_box_iou(pred.double(), ref.double())[0, 0] * o.logits.softmax(-1)[0, q, label].double()
    grad = torch.autograd.grad(hand, xt)[0].numpy()
    assert a.scores[0] == pytest.approx(float(hand.detach()), rel=1e-5)
    np.testing.assert_allclose(a.values, grad, rtol=1e-4, atol=1e-4 * np.abs(grad).max())


def test_keras_yolo_head_matches_a_hand_written_score():
    """The same Detection code path on Keras: a (B, N, 5 + K) head, its input gradient against
    tf.GradientTape on the score written out by hand."""
    import tensorflow as tf
    from tensorflow import keras

    keras.utils.set_random_seed(0)
    n, k = 24, 2
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    raw = keras.layers.Reshape((n, 5 + k))(keras.layers.Dense(n * (5 + k))(h))
    model = keras.Model(inp, keras.layers.Activation("sigmoid")(raw))  # boxes in 0..1 (xywh), scores in 0..1
    x = np.random.default_rng(5).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    out = model(x).numpy()
    ref = np.array([0.1, 0.2, 0.7, 0.8])
    anchor, label = 3, 1
    a = xr.explain(model, x, "gradient", target=Detection(index=anchor, label=label, box=ref), sanity="off",
                   verify=False)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        p = model(xt)[0, anchor]
        x1, y1, x2, y2 = p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2
        iw = tf.maximum(tf.minimum(x2, ref[2]) - tf.maximum(x1, ref[0]), 0)
        ih = tf.maximum(tf.minimum(y2, ref[3]) - tf.maximum(y1, ref[1]), 0)
        inter = iw * ih
        iou = inter / (p[2] * p[3] + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter)
        score = iou * p[4] * p[5 + label]
    grad = tape.gradient(score, xt).numpy()
    assert out.shape == (1, n, 5 + k) and 0 < float(score) < 1
    assert a.scores[0] == pytest.approx(float(score), rel=1e-5)
    np.testing.assert_allclose(a.values, grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max())


def test_target_fn_gets_the_raw_list_of_dicts(frcnn_files, tmp_path):
    """``--target-fn`` sees torchvision's list[dict] itself: the sum of the kept scores of class 1."""
    fn = tmp_path / "scores.py"
    fn.write_text("import torch\n\n"
                  "def class1(output):\n"
                  "    return torch.stack([d['scores'][d['labels'] == 1].sum() for d in output])\n")
    r = _cli("explain", frcnn_files / "frcnn.pt", "--trust", "--input", frcnn_files / "x.npy", "--method", "saliency",
             "--target-fn", f"{fn}:class1", "--sanity", "off", "--save", tmp_path / "s.npy")
    assert r.returncode == 0, r.stderr
    model = torch.load(frcnn_files / "frcnn.pt", weights_only=False).eval()
    x = torch.tensor(np.load(frcnn_files / "x.npy"), requires_grad=True)
    det = model(x)[0]
    expect = torch.autograd.grad(det["scores"][det["labels"] == 1].sum(), x)[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), np.abs(expect), rtol=1e-4,
                               atol=1e-5 * np.abs(expect).max())
    bad = _cli("explain", frcnn_files / "frcnn.pt", "--trust", "--input", frcnn_files / "x.npy", "--method",
               "saliency", "--target-fn", f"{fn}:nope", "--out", tmp_path / "n.png")
    assert bad.returncode == 3 and "has no function 'nope'" in bad.stderr


def test_ssdlite_and_fcos():
    """The other torchvision families: SSDLite checked (a backbone map for CAM), FCOS explained."""
    from torchvision.models.detection import fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large

    torch.manual_seed(0)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)).numpy()
    ssd = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4, score_thresh=0.0).eval()
    report = xr.check(ssd, x)
    assert report.verdict == "full" and report.context["task"] == "detection"
    assert report.cam["default_layer"].startswith("backbone.")
    fcos = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128,
                             score_thresh=0.0).eval()
    a = xr.explain(fcos, x, "saliency", target=Detection(), sanity="off", verify=False)
    assert a.target["output"] == "list[dict]" and np.isfinite(a.values).all() and np.abs(a.values).max() > 0

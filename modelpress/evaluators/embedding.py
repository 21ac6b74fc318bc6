"""Embeddings: cosine similarity of each sample's embedding to the FP32 reference's (optionally mean-pooled
over the attention mask, as sentence-transformers pools token states)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.evaluators.base import Evaluator, EvaluatorConfig, ModelLike, Predictions, model_name


@dataclass
class EmbeddingConfig(EvaluatorConfig):
    output: str = ""  # "" = the first output
    pooling: Literal["none", "mean"] = "none"  # mean: average token states where attention_mask is 1
    mask_input: str = "attention_mask"


class EmbeddingEvaluator(Evaluator):
    name = "embedding"
    summary = "cosine of each sample's embedding to the FP32 reference's (mean and worst)"
    config_cls = EmbeddingConfig
    primary = "cosine_mean"

    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        cfg: EmbeddingConfig = self.config  # type: ignore[assignment]
        emb = self.output(model, data, runtime).astype(np.float64)
        if cfg.pooling == "mean":
            if cfg.mask_input not in data.inputs or emb.ndim != 3:
                raise ModelpressError(f"embedding: mean pooling needs [samples, tokens, dim] outputs and a "
                                      f"{cfg.mask_input!r} input; got output {list(emb.shape)}, inputs "
                                      f"{sorted(data.inputs)}")
            m = data.inputs[cfg.mask_input].astype(np.float64)[..., None]
            emb = (emb * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return Predictions(model_name(model), emb.reshape(len(emb), -1))

    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        from modelpress.benchmarks.evaluate import fidelity

        ref = targets if targets is not None else (None if reference is None else reference.value)
        if ref is None:
            raise ModelpressError("embedding: needs a reference model (or reference embeddings as targets)")
        fid = fidelity(pred.value, np.asarray(ref))
        return {"samples": int(len(pred.value)), "cosine_mean": fid.cosine_mean, "cosine_min": fid.cosine_min,
                "max_abs_err": fid.max_abs_err}

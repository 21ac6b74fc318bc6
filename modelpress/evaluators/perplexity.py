"""Causal LMs: perplexity over token ids (wraps modelpress.runtimes.generate.OnnxCausalLM.perplexity, which
`modelpress llm eval` uses). Data: a Dataset whose `input_ids` rows are token sequences (one row per text;
rows are scored one after another, each in windows of `window` tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.data import Dataset, positive_int
from modelpress.errors import ModelpressError
from modelpress.evaluators.base import Evaluator, EvaluatorConfig, ModelLike, Predictions

# OnnxCausalLM drives an ONNX Runtime session itself (KV cache feeds): these runtimes map to its providers
_PROVIDERS = {"ort-cpu": ["CPUExecutionProvider"], "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


@dataclass
class PerplexityConfig(EvaluatorConfig):
    window: int = 256
    threads: int = 0  # 0: the runtime's default

    def validate(self) -> None:
        super().validate()
        positive_int(self.window, "window")


class PerplexityEvaluator(Evaluator):
    name = "perplexity"
    summary = "perplexity of a causal LM export (Optimum text-generation-with-past) on held-out token ids"
    config_cls = PerplexityConfig
    primary = "perplexity"
    higher_is_better = False

    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        from modelpress.runtimes.generate import OnnxCausalLM

        cfg: PerplexityConfig = self.config  # type: ignore[assignment]
        if not isinstance(model, (str, Path)):
            raise ModelpressError("perplexity: give the model as a path (an LLM folder or its model.onnx)")
        if runtime not in _PROVIDERS:
            raise ModelpressError(f"perplexity runs on {sorted(_PROVIDERS)}, not {runtime!r}")
        path = Path(model)
        path = path / "model.onnx" if path.is_dir() else path
        if "input_ids" not in data.inputs:
            raise ModelpressError(f"perplexity: the data needs an 'input_ids' array, it has {sorted(data.inputs)}")
        ids = np.asarray(data.inputs["input_ids"])
        if ids.dtype.kind not in "iu":
            raise ModelpressError(f"perplexity: input_ids must be integer token ids, got dtype {ids.dtype}")
        nll, tokens = 0.0, 0
        with OnnxCausalLM(path, threads=cfg.threads, providers=_PROVIDERS[runtime]) as lm:
            for row in ids.reshape(len(ids), -1):
                r = lm.perplexity(row.tolist(), window=cfg.window)
                nll += np.log(r["perplexity"]) * r["tokens"]
                tokens += int(r["tokens"])
        return Predictions(path.name, {"perplexity": float(np.exp(nll / tokens)), "tokens": tokens})

    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        out = {"perplexity": round(pred.value["perplexity"], 4), "tokens": pred.value["tokens"],
               "window": self.config.window}  # type: ignore[attr-defined]
        if reference is not None:
            ref = reference.value["perplexity"]
            out["reference_perplexity"] = round(ref, 4)
            out["perplexity_ratio"] = round(pred.value["perplexity"] / ref, 6)
        return out

"""Task evaluators: name -> "module:Class", each module imported on first use (as the runtimes and passes are).

An evaluator turns a model's outputs on real data into the task's metric: top-1 / agreement (classification),
cosine to the reference (embeddings), perplexity (causal LMs), COCO mAP (detection), a Frechet distance on a
classifier's features plus reconstruction error (generative). Every evaluator runs the model through
`modelpress.runtimes.create_runner`, so it measures on the study's runtime. A new evaluator is one module with
an `Evaluator` subclass (modelpress.evaluators.base) and one line below."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpress.evaluators.base import Evaluator, EvaluatorConfig
from modelpress.registry import LazyRegistry

EVALUATORS: Mapping[str, type[Evaluator]] = LazyRegistry({
    "classification": "modelpress.evaluators.classification:ClassificationEvaluator",
    "embedding": "modelpress.evaluators.embedding:EmbeddingEvaluator",
    "perplexity": "modelpress.evaluators.perplexity:PerplexityEvaluator",
    "detection": "modelpress.evaluators.detection:DetectionEvaluator",
    "generative": "modelpress.evaluators.generative:GenerativeEvaluator",
})
register_evaluator = EVALUATORS.register  # type: ignore[attr-defined]


def build_evaluator(name: str, options: dict[str, Any] | None = None) -> Evaluator:
    """The evaluator `name` with its typed config built from loose options (recipe/CLI); one line on a bad key."""
    return EVALUATORS.build(name, options, "evaluator", f"evaluator {name}")  # type: ignore[attr-defined]


__all__ = ["EVALUATORS", "Evaluator", "EvaluatorConfig", "build_evaluator", "register_evaluator"]

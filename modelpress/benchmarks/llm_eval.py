"""LLM metrics for an exported folder: perplexity on held-out text, prefill and decode tokens/s, time to
first token, peak memory and size on disk. Each model is measured in a fresh process pinned to the
profile's cores (as `modelpress profile` does), so peak RSS is that model's alone."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelpress.benchmarks.presets import EdgeProfile
from modelpress.errors import ModelpressError
from modelpress.machine import vm_mib
from modelpress.models.text import heldout_text


@dataclass
class LLMMetrics:
    model: str
    size_bytes: int
    perplexity: float
    ppl_tokens: int
    ttft_ms: float  # median over runs: the prompt's prefill, first token out
    prefill_tok_s: float
    decode_tok_s: float
    decode_ms_p50: float
    peak_rss_mb: float
    prompt_tokens: int
    new_tokens: int
    runs: int
    profile: str
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _measure(folder: str, cores: list[int], threads: int, ppl_ids: list[int], prompt_ids: list[int],
             new_tokens: int, runs: int, window: int) -> dict[str, Any]:
    """Runs in a fresh spawned process."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    from modelpress.runtimes.generate import OnnxCausalLM

    with OnnxCausalLM(Path(folder) / "model.onnx", threads=threads) as lm:
        ppl = lm.perplexity(ppl_ids, window=window)
        lm.generate(prompt_ids, max_new_tokens=2)  # warm-up
        gens = [lm.generate(prompt_ids, max_new_tokens=new_tokens) for _ in range(runs)]
    decode = [ms for g in gens for ms in g.decode_ms]
    ttft = statistics.median(g.ttft_ms for g in gens)
    return {"perplexity": ppl["perplexity"], "ppl_tokens": ppl["tokens"], "ttft_ms": ttft,
            "prefill_tok_s": len(prompt_ids) / (ttft / 1e3), "decode_tok_s": 1e3 / statistics.mean(decode),
            "decode_ms_p50": statistics.median(decode), "tokens": gens[0].tokens,
            "peak_rss_mb": vm_mib("VmHWM")}  # not ru_maxrss: Linux carries the parent's high-water mark over exec


def evaluate_llm(folder: str | Path, profile: EdgeProfile, *, ppl_tokens: int = 2048, window: int = 256,
                 prompt: str | None = None, new_tokens: int = 32, runs: int = 3) -> LLMMetrics:
    from transformers import AutoTokenizer

    from modelpress.exporters.llm import check_llm_folder
    from modelpress.onnxutil import model_size_bytes

    folder = check_llm_folder(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(folder)
    text = heldout_text()
    ids = tok(text)["input_ids"][:ppl_tokens]
    prompt = prompt or text[:400]
    prompt_ids = tok(prompt)["input_ids"]
    cores = list(profile.cores) if profile.cores else []
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        try:
            r = pool.submit(_measure, str(folder), cores, profile.intra_op_threads, ids, prompt_ids, new_tokens,
                            runs, window).result()
        except ModelpressError:
            raise
        except Exception as e:
            raise ModelpressError(f"measuring {folder} failed: {type(e).__name__}: {str(e)[:200]}") from None
    return LLMMetrics(str(folder), model_size_bytes(folder / "model.onnx"), round(r["perplexity"], 4), r["ppl_tokens"],
                      round(r["ttft_ms"], 2), round(r["prefill_tok_s"], 1), round(r["decode_tok_s"], 2),
                      round(r["decode_ms_p50"], 2), round(r["peak_rss_mb"], 1), len(prompt_ids), new_tokens, runs,
                      profile.name, tok.decode(r["tokens"]))

"""Greedy generation and perplexity with ONNX Runtime on an exported causal LM with a KV cache.

The session is fed input_ids / attention_mask / position_ids and the past key/values it returned
last step; prefill (the prompt in one call) and decode (one token per call) are timed apart, since
they stress a CPU differently: prefill is GEMM-bound, decode is bound by reading the weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelpress.errors import ModelpressError
from modelpress.errors import first_line
from modelpress.runtimes.ort import ORT_DTYPES, OrtCpuRunner


@dataclass
class Generation:
    tokens: list[int]
    prompt_tokens: int
    ttft_ms: float  # prefill call: prompt in, first token out
    decode_ms: list[float] = field(default_factory=list)  # one per further token

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / (self.ttft_ms / 1e3)

    @property
    def decode_tok_s(self) -> float | None:
        return len(self.decode_ms) / (sum(self.decode_ms) / 1e3) if self.decode_ms else None


class OnnxCausalLM:
    """An Optimum-exported decoder (`text-generation-with-past`) run by ONNX Runtime."""

    def __init__(self, model: str | Path, threads: int = 0, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        from modelpress.runtimes import RunnerOptions

        # the runners' session settings (threads, graph optimization, quiet logs); the session is made here,
        # without the runner's full ONNX parse, which would add the whole model to the measured peak memory
        opts = OrtCpuRunner(model, RunnerOptions(intra_op_threads=threads, inter_op_threads=1)).session_options()
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:
            raise ModelpressError(f"ONNX Runtime cannot load {model}: {first_line(e)}") from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        if "input_ids" not in self.inputs:
            raise ModelpressError(f"{model} is not a causal LM export (no input_ids input)")
        self.past = sorted((n for n in self.inputs if n.startswith("past_key_values.")),
                           key=lambda n: (int(n.split(".")[1]), n))
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __enter__(self) -> "OnnxCausalLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.session = None

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.past:
            i = self.inputs[name]
            shape = [batch if k == 0 else (0 if not isinstance(d, int) else d) for k, d in enumerate(i.shape)]
            feeds[name] = np.zeros(shape, dtype=ORT_DTYPES.get(i.type, "float32"))
        return feeds

    def forward(self, ids: np.ndarray, past: dict[str, np.ndarray], past_len: int) -> tuple[np.ndarray, dict]:
        b, n = ids.shape
        feeds = {"input_ids": ids.astype(np.int64), **past}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((b, past_len + n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + n, dtype=np.int64), (b, n)).copy()
        out = self.session.run(None, feeds)
        named = dict(zip(self.outputs, out))
        present = {p: named[p.replace("past_key_values", "present")] for p in self.past}
        return named["logits"], present

    def generate(self, prompt_ids: np.ndarray, max_new_tokens: int = 32, eos_token_id: int | None = None) -> Generation:
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        t0 = time.perf_counter()
        logits, past = self.forward(ids, self._empty_past(1), 0)
        tok = int(logits[0, -1].argmax())
        gen = Generation([tok], ids.shape[1], (time.perf_counter() - t0) * 1e3)
        length = ids.shape[1]
        while len(gen.tokens) < max_new_tokens and tok != eos_token_id:
            t0 = time.perf_counter()
            logits, past = self.forward(np.array([[tok]], dtype=np.int64), past, length)
            tok = int(logits[0, -1].argmax())
            gen.decode_ms.append((time.perf_counter() - t0) * 1e3)
            gen.tokens.append(tok)
            length += 1
        return gen

    def perplexity(self, token_ids: list[int], window: int = 256) -> dict[str, float]:
        """exp(mean negative log-likelihood) over non-overlapping windows (each scored from its own start)."""
        nll, count = 0.0, 0
        ids = np.asarray(token_ids, dtype=np.int64)
        if len(ids) < 2:
            raise ModelpressError("perplexity needs at least 2 tokens of text")
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start:start + window + 1]
            if len(chunk) < 2:
                break
            logits, _ = self.forward(chunk[None, :-1], self._empty_past(1), 0)
            lg = logits[0].astype(np.float64)
            lg -= lg.max(axis=-1, keepdims=True)
            logp = lg - np.log(np.exp(lg).sum(axis=-1, keepdims=True))
            nll -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
            count += len(chunk) - 1
        return {"perplexity": math.exp(nll / count), "tokens": count, "window": window}

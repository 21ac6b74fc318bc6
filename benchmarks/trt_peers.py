"""TensorRT's explicit INT8 made on a CPU: modelpress `-t trt-int8` against NVIDIA ModelOpt's ONNX INT8 PTQ, the tool
a TensorRT user would pick instead, on the same three real models and data as benchmarks/peers.py.

    python benchmarks/trt_peers.py --model all --modelopt-venv /tmp/modelopt-venv --out trt-peers

Rows per model: FP32; modelpress trt-int8 with its defaults (the validation floor and repairs: what a user gets);
modelpress trt-int8 as configured (no floor, no repairs: the quantizer alone, like for like with ModelOpt);
ModelOpt int8 with its defaults (entropy calibration, the rest of the graph FP16) and with the rest FP32.
Columns: fidelity to FP32 on the held-out data, computed by ONNX Runtime on CPU (the only runtime here: TensorRT
cannot be installed on these machines, so no engine was built and nothing here is a TensorRT latency); size; and
whether the Q/DQ follows the rules TensorRT's explicit quantization reads (modelpress's check_tensorrt_qdq).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
import peers_modelopt  # noqa: E402


def build(task: peers.Task, work: Path, args, versions: dict) -> list[peers.Art]:
    from modelpress.optimizers import optimize

    arts = [peers.Art("FP32", task.ref, "modelpress export" if task.name != "ddddocr-det" else "as shipped")]

    def ours(name: str, path: Path, **kw) -> None:
        print(f"[{task.name}] {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            res = optimize(task.ref, path, "trt-int8", None, task.calib, **kw)
            kept = next((n for n in res.notes if n.startswith("kept in FP32")), "")
            how = "; ".join(filter(None, [f"calibration {res.config.get('calibration')}",
                                          res.repairs[-1] if res.repairs else "", kept]))
            arts.append(peers.Art(name, path, how, build_s=round(time.perf_counter() - t0, 1)))
        except Exception as e:  # noqa: BLE001 - a refusal is a row with its reason
            arts.append(peers.Art(name, None, "", peers._why(e), round(time.perf_counter() - t0, 1)))

    ours("modelpress trt-int8 (defaults: floor + repairs)", work / "trt-int8.onnx")
    ours("modelpress trt-int8 as configured (no floor, no repairs)", work / "trt-int8-raw.onnx",
         min_fidelity="none", repair=False)
    if args.modelopt_venv is None:
        arts.append(peers.Art("ModelOpt", error="not run: give --modelopt-venv DIR (created if it lacks ModelOpt, or "
                                                f"by hand: {peers_modelopt.setup_commands(Path('DIR'))})"))
        return arts
    py, ver = peers_modelopt.ensure(Path(args.modelopt_venv), lambda s: print(s, file=sys.stderr, flush=True))
    if py is None:
        arts.append(peers.Art("ModelOpt", error=ver))
        return arts
    versions["nvidia-modelopt"] = ver
    print(f"[{task.name}] ModelOpt {ver}", file=sys.stderr, flush=True)
    for name, path, how, err, secs in peers_modelopt.quantize(py, task.ref, task.calib, work / "modelopt"):
        arts.append(peers.Art(name, path, how, err, secs))
    return arts


def first_output(task: peers.Task, path: Path, optimize: bool):
    """The first output on the held-out data, one sample at a time, [samples, -1] float64; ONNX Runtime's graph
    optimizations on or off."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return np.stack([sess.run(None, {k: task.evald.inputs[k][i:i + 1] for k in names})[0].reshape(-1)
                     for i in range(len(task.evald))]).astype(np.float64)


def unoptimized_cosine(task: peers.Task, path: Path, ref) -> float:
    """Mean cosine of the first output to FP32's (`ref`) with ONNX Runtime's graph optimizations off: where it
    differs from the optimized figure, the CPU's graph optimizer changed the result, not the quantizer (ORT 1.32
    collapses ModelOpt's FP16 MobileNetV2: mean cosine 0.45 optimized, 0.96 not)."""
    import numpy as np

    got = first_output(task, path, optimize=False)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
    return float(cos.mean())


def rows_of(arts: list[peers.Art], task: peers.Task) -> list[dict]:
    from modelpress.onnxutil import model_size_bytes
    from modelpress.optimizers.tensorrt import check_tensorrt_qdq

    base = model_size_bytes(arts[0].path)
    ref = first_output(task, task.ref, optimize=True)  # FP32's outputs, once for every row
    rows = []
    for a in arts:
        rows.append(row := peers.row_head(a))
        if "error" in row:
            continue
        try:
            facts = check_tensorrt_qdq(a.path)
            rules = f"yes ({facts['qdq_pairs']} Q/DQ, {facts['per_channel_weights']} per-channel weights)"
        except Exception as e:  # noqa: BLE001
            rules = f"no: {str(e).split(': ', 1)[-1][:120]}"
        try:
            unopt = round(unoptimized_cosine(task, a.path, ref), 4)
        except Exception as e:  # noqa: BLE001
            unopt = f"fails: {peers._why(e)[:100]}"
        row.update(path=str(a.path), fidelity=a.fidelity, tensorrt_rules=rules,
                   size_vs_fp32=round(model_size_bytes(a.path) / base, 3), mean_cosine_ort_unoptimized=unopt)
    return rows


def markdown(task: peers.Task, rows: list[dict], mach: dict, versions: dict) -> str:
    metric = "top-1 agreement" if task.metric == "agreement" else "mean cosine"
    vers = ", ".join(f"{k} {v or 'n/a'}" for k, v in versions.items())
    lines = [f"### {task.title}", "",
             f"CPU: {mach['cpu']} ({', '.join(mach['cpu_flags'])}); {vers}. Fidelity vs FP32 on {task.data}, "
             "ONNX Runtime CPU.", "",
             f"| artifact | {metric} | worst-sample cosine | mean cosine, ORT graph optimizations off | size vs FP32 "
             "| TensorRT Q/DQ rules | build s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['artifact']} | – | – | – | – | – | {r['build_s'] or '–'} | REFUSED/FAILED: {r['error']} |")
            continue
        f = r["fidelity"]
        val = "–" if f.get("value") is None else f"{f['value']:.4f}"
        if f.get("confident_samples") is not None:
            ca = f.get("confident_agreement")
            val += f"; {'–' if ca is None else format(ca, '.4f')} where FP32 is confident ({f['confident_samples']})"
        wc = "–" if f.get("worst_sample_cosine") is None else f"{f['worst_sample_cosine']:.4f}"
        lines.append(f"| {r['artifact']} | {val} | {wc} | {r['mean_cosine_ort_unoptimized']} | {r['size_vs_fp32']:.3f}x | "
                     f"{r['tensorrt_rules']} | "
                     f"{r['build_s'] or '–'} | {r['note']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all", choices=[*peers.MODELS, "all"])
    ap.add_argument("--modelopt-venv", default=None, metavar="DIR",
                    help="ModelOpt's own venv (created there if it lacks ModelOpt); without it the row says how")
    args, work, mach, versions = peers.setup(ap, "modelpress-trt-peers-", ("modelpress", "onnxruntime", "onnx"))
    loaders = {"minilm": peers._minilm, "mobilenetv2": peers._mobilenet, "ddddocr-det": peers._ddddocr}
    results, tables = [], []
    for name in peers.MODELS if args.model == "all" else (args.model,):
        t0 = time.perf_counter()
        (work / name).mkdir(parents=True, exist_ok=True)
        for stale in ("trt-int8.onnx", "trt-int8-raw.onnx"):
            (work / name / stale).unlink(missing_ok=True)
        shutil.rmtree(work / name / "modelopt", ignore_errors=True)
        task = loaders[name](work / name)
        arts = build(task, work / name, args, versions)
        peers.score(task, arts)
        rows = rows_of(arts, task)
        tables.append(markdown(task, rows, mach, versions))
        print(tables[-1] + "\n", flush=True)
        results.append({"model": name, "title": task.title, "data": task.data, "metric": task.metric,
                        "seconds": round(time.perf_counter() - t0, 1), "rows": rows})
    if args.out:
        Path(args.out + ".md").write_text("\n\n".join(tables) + "\n")
        Path(args.out + ".json").write_text(json.dumps({"machine": mach, "versions": versions, "results": results},
                                                       indent=1, default=str))


if __name__ == "__main__":
    main()

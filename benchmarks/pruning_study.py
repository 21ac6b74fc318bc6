"""Pruning and low-rank beside quantization, on real models: size, parameters, FLOPs, accuracy, latency.

    python benchmarks/pruning_study.py digits        # the demo's CNN on real MNIST (fine-tuned, top-1)
    python benchmarks/pruning_study.py mobilenetv2   # ImageNet MobileNetV2 (distilled on photo crops, agreement)
    python benchmarks/pruning_study.py all --iterations 200

Unstructured and 2:4 sparsity are real (half the weights are zero) but the exported graph stays dense: the
table shows what that buys on a CPU runtime. Structured pruning removes channels with torch-pruning, so
the graph, its FLOPs and its latency shrink; it is also chained with static INT8.

DigitsCNN: trained as `modelpress demo` trains it, every pruned variant fine-tuned 2 epochs on the 4,000
training digits, top-1 on the 1,000 held out. MobileNetV2: no labelled ImageNet images ship in any package,
so pruned variants are distilled (MSE to the FP32 logits) on 96 crops of the real photos and judged by top-1
agreement with FP32 on 96 other crops: expect a large drop, stated as measured.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from modelpress.benchmarks.presets import resolve_profile  # noqa: E402
from modelpress.benchmarks.profiler import ProfileConfig  # noqa: E402
from modelpress.benchmarks.report import render_rich  # noqa: E402
from modelpress.exporters import ExportConfig, export_onnx, load_model_source  # noqa: E402
from modelpress.optimizers.pytorch import FinetuneConfig  # noqa: E402
from modelpress.study import Candidate, compare  # noqa: E402


def candidates(first_layer: str) -> list[Candidate]:
    s8 = {"max_calib_samples": 128}
    return [
        Candidate("static-int8", "static-int8", s8),
        Candidate("unstructured-50", "prune-unstructured", {"sparsity": 0.5}),
        Candidate("unstructured-80", "prune-unstructured", {"sparsity": 0.8}),
        Candidate("2:4", "prune-nm", {"n": 2, "m": 4, "exclude": [first_layer], "skip_incompatible": True}),
        Candidate("structured-30", "prune-structured", {"sparsity": 0.3}),
        Candidate("structured-50", "prune-structured", {"sparsity": 0.5}),
        Candidate("structured-50+static-int8", chain=[("prune-structured", {"sparsity": 0.5}), ("static-int8", s8)]),
        Candidate("lowrank-e90", "lowrank", {"energy": 0.9}),
    ]


def study(name: str, out: Path, pcfg: ProfileConfig, profiles) -> dict:
    import torch

    torch.set_num_threads(2)
    if name == "digits":
        from modelpress.models import digits

        source, first = "modelpress.models.digits:trained", "features.0"
        evald, train, calib = digits.modelpress_eval_data(), digits.modelpress_train_data(), None
        calib = train.take(256)
        ft, metric, drop = FinetuneConfig(epochs=2), "top1", 0.01
        title = "DigitsCNN on real MNIST (1,000 held out; pruned variants fine-tuned 2 epochs; quality = top-1)"
    else:
        from modelpress.models import mobilenetv2

        source, first = "modelpress.models.mobilenetv2:factory", "features.0.0"
        evald, train = mobilenetv2.photo_views(32, seed=0), mobilenetv2.photo_views(32, seed=2)
        calib = mobilenetv2.photo_views(16, seed=1)
        ft, metric, drop = FinetuneConfig(epochs=3, batch_size=16, lr=1e-4), "agreement", 0.02
        title = ("MobileNetV2 (ImageNet) on 96 crops of 3 real photos (pruned variants distilled 3 epochs on 96 "
                 "other crops; quality = top-1 agreement with fp32)")
    module, example = load_model_source(source)
    exported = export_onnx(module, example, out / "fp32.onnx", ExportConfig(opset=18, atol=1e-3, rtol=1e-3))
    return compare(out / "fp32.onnx", out, candidates(first), profiles, eval_data=evald, calib_data=calib,
                   profile_config=pcfg, metric=metric, max_accuracy_drop=drop, title=title, source=source,
                   export_config=ExportConfig(opset=18, atol=1e-3, rtol=1e-3), finetune=ft, train_data=train,
                   task={"model": source, "exporter": exported.exporter, "finetune": vars(ft)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["digits", "mobilenetv2", "all"])
    ap.add_argument("--out", default="modelpress-pruning")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--profiles", default="edge-1core,edge-2core")
    args = ap.parse_args()
    from rich.console import Console

    profiles = [resolve_profile(p) for p in args.profiles.split(",")]
    pcfg = ProfileConfig(iterations=args.iterations, warmup=20, op_breakdown=True)
    con = Console(width=150)
    for name in ("digits", "mobilenetv2"):
        if args.model in (name, "all"):
            t0 = time.perf_counter()
            report = study(name, Path(args.out) / name, pcfg, profiles)
            con.print(render_rich(report, wide=True))
            for v in report["variants"]:
                for n in v["notes"]:
                    con.print(f"[dim]{v['name']}: {n}[/dim]")
            con.print(f"[dim]{name}: {time.perf_counter() - t0:.0f}s; report in {Path(args.out) / name}[/dim]\n")


if __name__ == "__main__":
    main()

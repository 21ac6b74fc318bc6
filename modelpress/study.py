"""Compress one FP32 model several ways, then evaluate and profile every variant side by side.

The library entry point behind `modelpress demo` (and, later, recipes): it
returns the report dict and writes report.json / report.md atomically.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from modelpress.benchmarks.evaluate import evaluate
from modelpress.benchmarks.presets import EdgeProfile
from modelpress.benchmarks.profiler import ProfileConfig, profile_model
from modelpress.benchmarks.report import Variant, build_report, render_markdown
from modelpress.cache import data_sha256, file_sha256, key_of
from modelpress.data import Dataset
from modelpress.io import write_json, write_text
from modelpress.onnxutil import check_onnx_file, graph_stats, model_size_bytes, op_counts
from modelpress.errors import GoalNotMet, ModelpressError
from modelpress.optimizers import build_pass, optimize_chain
from modelpress.optimizers.pytorch import is_torch_technique


@dataclass
class Candidate:
    """One variant to make: a technique and its options, or a chain of (technique, options) steps."""

    name: str
    technique: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    chain: list[tuple[str, dict[str, Any]]] | None = None

    @property
    def steps(self) -> list[tuple[str, dict[str, Any]]]:
        return self.chain or ([(self.technique, self.options)] if self.technique else [])

    @property
    def label(self) -> str:
        return " + ".join(t for t, _ in self.steps) or "-"


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=False) as p:
        yield p


def default_metric(eval_data: Dataset) -> str:
    return "top1" if eval_data.labels is not None else "agreement"


def check_chain(steps: list[tuple[str, dict[str, Any]]], has_source: bool = True) -> None:
    """A chain is PyTorch techniques (if any) first, then ONNX passes; every name and option must be valid."""
    from modelpress.optimizers.pytorch import build_torch_pass

    seen_onnx = None
    for technique, options in steps:
        if is_torch_technique(technique):
            if seen_onnx:
                raise ModelpressError(f"chain {[t for t, _ in steps]}: {technique} changes the PyTorch model, so it "
                                      f"must come before ONNX techniques such as {seen_onnx}")
            if not has_source:
                raise ModelpressError(f"{technique} works on the PyTorch model: the study needs its source "
                                      "(a 'package.module:factory')")
            build_torch_pass(technique, options)
        else:
            build_pass(technique, options)
            seen_onnx = seen_onnx or technique


def _variant(name: str, technique: str | None, path: Path, **kw: Any) -> Variant:
    stats = graph_stats(path)
    return Variant(name, technique, path.name, model_size_bytes(path), ops=op_counts(path), params=stats["params"],
                   flops=stats["flops"], sha256=file_sha256(path), **kw)


def _build(c: Candidate, reference: Path, path: Path, calib: Dataset | None, source: str | None, export_config: Any,
           finetune: Any, train_data: Dataset | None) -> list[Any]:
    """Make one candidate: PyTorch steps on the source then export, then the ONNX passes."""
    from modelpress.optimizers.base import PassResult
    from modelpress.optimizers.pytorch import compress_and_export

    torch_steps = [s for s in c.steps if is_torch_technique(s[0])]
    onnx_steps = c.steps[len(torch_steps):]
    if not torch_steps:
        return optimize_chain(reference, path, onnx_steps, calib)
    exported_to = path if not onnx_steps else path.with_name(f".{path.stem}.pt-export.onnx")
    try:
        res, _ = compress_and_export(source, exported_to, torch_steps, finetune_cfg=finetune, train_data=train_data,
                                     export_config=export_config)
        results = [PassResult(s.technique, s.config, [*s.notes, *_layer_notes(s)]) for s in res.steps]
        if res.finetune:
            results[-1].notes.append("fine-tuned: " + ", ".join(f"{k}={v}" for k, v in res.finetune.items()))
        if onnx_steps:
            results += optimize_chain(exported_to, path, onnx_steps, calib)
        return results
    finally:
        if onnx_steps:
            for leftover in (exported_to, exported_to.with_name(exported_to.name + ".export.json")):
                leftover.unlink(missing_ok=True)


def _layer_notes(step: Any) -> list[str]:
    """One short line of per-layer facts: sparsity, channels or rank."""
    parts = []
    for row in step.layers:
        if "sparsity" in row:
            parts.append(f"{row['layer']} {row['sparsity']:.0%}")
        elif "out_channels" in row and row["shape_before"] != row["shape"]:
            parts.append(f"{row['layer']} {row['out_channels']}")
        elif row.get("factorized"):
            parts.append(f"{row['layer']} rank {row['rank']}/{row['full_rank']}")
    return [f"per layer: {', '.join(parts)}"] if parts else []


def compare(
    reference: str | Path, out_dir: str | Path, candidates: list[Candidate], profiles: list[EdgeProfile], *,
    eval_data: Dataset, calib_data: Dataset | None = None, profile_config: ProfileConfig | None = None,
    title: str = "modelpress comparison", task: dict[str, Any] | None = None, max_accuracy_drop: float = 0.01,
    show_progress: bool = True, metric: str | None = None, source: str | None = None, export_config: Any = None,
    finetune: Any = None, train_data: Dataset | None = None, cache: Any = None, selection: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`metric`: "top1" (needs labels), "agreement" (top-1 agreement with fp32) or "cosine" (mean cosine
    similarity to fp32's outputs, for embedding models); default top1 with labels, else agreement.
    A candidate whose technique fails is reported under `failed` and the study goes on.

    Chains may start with PyTorch techniques (pruning, low-rank): those run on `source` (the factory the
    reference was exported from), with `finetune`/`train_data`, before export with `export_config`.
    `cache` (a StepCache) reuses finished builds, evaluations and profiles; `extra` is merged into the report."""
    reference = check_onnx_file(reference)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pcfg = profile_config or ProfileConfig(op_breakdown=True)
    metric = metric or default_metric(eval_data)
    for c in candidates:  # fail on a bad technique or option before any work is done
        check_chain(c.steps, has_source=source is not None)
    failed: dict[str, str] = {}

    variants = [_variant("fp32", None, reference)]
    paths = {"fp32": reference}
    ref_sha, eval_sha = variants[0].sha256, data_sha256(eval_data) if cache is not None else None
    build_inputs = None if cache is None else [
        ref_sha, data_sha256(calib_data), source, asdict(export_config) if export_config else None,
        asdict(finetune) if finetune else None]
    train_sha = data_sha256(train_data) if cache is not None else None
    with _progress(show_progress) as prog:
        task_id = prog.add_task("compressing", total=len(candidates)) if prog else None
        for c in candidates:
            if prog:
                prog.update(task_id, description=f"compressing: {c.name}")
            path = out_dir / f"{c.name}.onnx"
            bkey = hit = None
            if cache is not None:
                bkey = key_of("build", *build_inputs, c.steps,
                              train_sha if any(is_torch_technique(t) for t, _ in c.steps) else None)
                hit = cache.model(bkey)
            if hit is not None:
                cache.restore(hit, path)
                meta = cache.get("models", bkey)
                config, notes = meta["config"], meta["notes"]
            else:
                goal_note: list[str] = []
                try:
                    results = _build(c, reference, path, calib_data, source, export_config, finetune, train_data)
                except GoalNotMet as e:  # the best model found was saved: measure it, and say it misses its goal
                    results, goal_note = [], [str(e)]
                except Exception as e:  # one candidate's failure must not end the study: record it, go on
                    failed[c.name] = str(e) if isinstance(e, ModelpressError) else \
                        f"internal error: {type(e).__name__}: {e}"
                    if prog:
                        prog.advance(task_id)
                    continue
                config = results[0].config if len(results) == 1 else {r.technique: r.config for r in results}
                notes = [f"{r.technique}: {n}" for r in results for n in r.notes] + goal_note
                if cache is not None:
                    cache.put_model(bkey, path, {"config": config, "notes": notes})
            paths[c.name] = path
            variants.append(_variant(c.name, c.label, path, config=config, notes=notes))
            if prog:
                prog.advance(task_id)

        ref_out = None
        task_id = prog.add_task("evaluating", total=len(variants)) if prog else None
        for v in variants:
            if prog:
                prog.update(task_id, description=f"evaluating: {v.name}")
            ekey = None if cache is None else key_of("eval", v.sha256, ref_sha, eval_sha)
            got = cache.get("evals", ekey) if cache is not None else None
            if got is None:
                if ref_out is None and v is not variants[0]:
                    _, ref_out = evaluate(reference, eval_data)
                metrics, out = evaluate(paths[v.name], eval_data, reference=ref_out)
                ref_out = out if ref_out is None else ref_out
                got = {"top1": metrics.top1, "fidelity": asdict(metrics.fidelity) if metrics.fidelity else None}
                if cache is not None:
                    cache.put("evals", ekey, got)
            v.top1, v.fidelity = got["top1"], got["fidelity"]
            if prog:
                prog.advance(task_id)

        task_id = prog.add_task("profiling", total=len(variants) * len(profiles)) if prog else None
        profile_inputs = eval_data.take(64)
        inputs_sha = data_sha256(profile_inputs) if cache is not None else None
        for prof in profiles:
            for v in variants:
                if prog:
                    prog.update(task_id, description=f"profiling: {v.name} @ {prof.name}")
                pkey = None if cache is None else key_of("profile", v.sha256, prof.to_dict(), asdict(pcfg), inputs_sha)
                got = cache.get("profiles", pkey) if cache is not None else None
                if got is None:
                    got = profile_model(paths[v.name], prof, pcfg, data=profile_inputs,
                                        data_label="evaluation data (first 64)").to_dict()
                    if cache is not None:
                        cache.put("profiles", pkey, got)
                v.latency[prof.name] = got
                if prog:
                    prog.advance(task_id)

    report = build_report(
        variants, [p.to_dict() for p in profiles], title=title,
        task={"metric": metric, "eval_samples": len(eval_data),
              "calib_samples": None if calib_data is None else len(calib_data), **(task or {})},
        profile_config=asdict(pcfg), max_accuracy_drop=max_accuracy_drop, objective_profile=profiles[0].name,
        selection=selection,
    )
    report["failed"] = failed
    if cache is not None:
        report["cache"] = {"hits": cache.hits, "misses": cache.misses}
    report.update(extra or {})
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
    return report

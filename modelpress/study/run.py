"""Running a study: `run_plan(StudyPlan)` (build -> evaluate -> profile -> select -> report), `compare()` (the
same with keywords, for scripts), `run_study(StudyRecipe)` (a recipe file, replayable, cached) and `run_studies`
(several recipes on one executor, one progress view). Where the work runs is the executor's business
(modelpress.study.executors: local, the default, or ray)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelpress.benchmarks.presets import EdgeProfile
from modelpress.benchmarks.profiler import ProfileConfig
from modelpress.benchmarks.report import build_report, render_markdown
from modelpress.cache import data_sha256
from modelpress.config import make_config
from modelpress.data import Dataset
from modelpress.errors import CheckFailed, ModelpressError
from modelpress.io import write_json, write_text
from modelpress.onnxutil import check_onnx_file
from modelpress.progress import progress_bar
from modelpress.study.executors import Executor, get_executor
from modelpress.study.auto import auto_section, expand_auto
from modelpress.study.executors.base import PhaseGate, Prefixed
from modelpress.study.plan import Candidate, SelectionConfig, StudyPlan, default_metric
from modelpress.study.stages import _build_stage, _evaluate_stage, _profile_stage, _Run, _variant
from modelpress.validate import DEFAULT_MIN_FIDELITY, FidelityFloor

_EXPORT_LOCK = threading.Lock()  # studies run side by side export their references one at a time


@contextlib.contextmanager
def _executor(executor: Executor | str | None) -> Any:
    """The executor given (left open: its owner closes it), or one made from a name (closed at the end)."""
    if isinstance(executor, Executor):
        yield executor
        return
    with get_executor(executor) as ex:
        yield ex


def run_plan(plan: StudyPlan, *, show_progress: bool = True, executor: Executor | str | None = None,
             progress: Any = None) -> dict[str, Any]:
    """Build, validate, evaluate and profile every candidate of `plan`, pick one, write report.json/report.md.

    An `auto` candidate is first expanded into auto's chains for this CPU (modelpress.study.auto); the report's
    `auto` section then says which of them `optimize -t auto` would pick. Every candidate is built through the
    validation choke point (the floor against the reference, on the calibration data when given, so repairs are
    not tuned on the evaluation set; else on the evaluation data). A candidate that fails at build, validation,
    evaluation or profiling is recorded under `failed` (with its stage) and the study goes on; the study raises
    only when the reference itself fails, or (require_completed, after every output is written) when no candidate
    completed. `executor`: where the work runs (an Executor, or "local" / "ray"; default local); `progress`: a
    progress display to add this study's bars to."""
    plan.check()
    with _executor(executor) as ex:
        return _run_plan(plan, ex, show_progress, progress)


def _run_plan(plan: StudyPlan, ex: Executor, show_progress: bool, progress: Any) -> dict[str, Any]:
    reference = check_onnx_file(plan.reference)
    # `auto` becomes its chains for this CPU and this model (modelpress.study.auto), before any work
    candidates, auto = expand_auto(plan.candidates, Path(reference), plan.calib_data is not None, plan.runtime)
    ex.check(plan)
    out_dir = Path(plan.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = plan.metric or default_metric(plan.eval_data)
    floor = FidelityFloor.parse(plan.min_fidelity)
    cache, runtime = plan.cache, plan.runtime
    run = _Run(Path(reference), out_dir, plan.eval_data, plan.calib_data, cache, runtime,
               paths={"fp32": Path(reference)}, executor=ex,
               evaluator=None if plan.evaluator is None else (plan.evaluator, dict(plan.evaluator_options)),
               targets=plan.targets)
    variants = [_variant("fp32", None, reference)]
    build_inputs = None if cache is None else [
        variants[0].sha256, data_sha256(plan.calib_data), data_sha256(plan.eval_data),
        None if floor is None else str(floor), runtime, plan.source, asdict(plan.export) if plan.export else None,
        asdict(plan.finetune) if plan.finetune else None]
    train_sha = data_sha256(plan.train_data) if cache is not None else None
    kw = dict(source=plan.source, export_config=plan.export, finetune=plan.finetune, train_data=plan.train_data,
              min_fidelity=floor, runtime=runtime,
              # validate (and steer repairs) on calibration samples; evaluation data stays for the measurement
              data=plan.calib_data if plan.calib_data is not None else plan.eval_data,
              data_source="calibration data" if plan.calib_data is not None else "evaluation data")
    where = plan.ray_resources if ex.name != "local" else None
    shown = contextlib.nullcontext(progress) if progress is not None else progress_bar(show_progress)
    with shown as prog:
        with ex.compute_phase():  # studies side by side: none times while another still builds
            _build_stage(run, candidates, variants, build_inputs, train_sha, prog, kw)
            variants = _evaluate_stage(run, variants, prog)
        with ex.timing_phase():
            variants = _profile_stage(run, variants, plan.profiles, plan.profile, prog, where or None)

    report = build_report(
        variants, [p.to_dict() for p in plan.profiles], title=plan.title,
        task={"metric": metric, "eval_samples": len(plan.eval_data), "runtime": runtime,
              "min_fidelity": None if floor is None else str(floor),
              "calib_samples": None if plan.calib_data is None else len(plan.calib_data), **plan.task},
        profile_config=asdict(plan.profile), max_accuracy_drop=plan.selection.max_accuracy_drop,
        objective_profile=plan.profiles[0].name, selection=plan.selection.rule(),
    )
    report["failed"] = {f["name"]: f"{f['stage']}: {f['reason']}" for f in run.failures}
    report["failures"] = run.failures
    if auto is not None:  # what `optimize -t auto` would pick among its candidates, from these measurements
        report["auto"] = auto_section(report, auto, plan.selection.profile or plan.profiles[0].name)
    if cache is not None:
        report["cache"] = {"hits": cache.hits, "misses": cache.misses}
    if ex.records_placement:  # which node built, evaluated and timed each variant ("cache": reused)
        report["executor"] = _placement_report(ex.describe() or {}, run.placement, where)
    report.update(plan.extra)
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", render_markdown(report))
    return report


def _placement_report(info: dict[str, Any], placement: dict[str, Any], where: Any) -> dict[str, Any]:
    used: set[str] = set()
    for entry in placement.values():
        for v in entry.values():
            used.update(v.values() if isinstance(v, dict) else [v])
    nodes = {k: h for k, h in (info.get("nodes") or {}).items() if k in used}
    return {**info, "nodes": nodes, "profile_resources": where, "placement": placement}


def compare(
    reference: str | Path, out_dir: str | Path, candidates: list[Candidate], profiles: list[EdgeProfile], *,
    eval_data: Dataset, calib_data: Dataset | None = None, profile_config: ProfileConfig | None = None,
    title: str = "modelpress comparison", task: dict[str, Any] | None = None, max_accuracy_drop: float = 0.01,
    show_progress: bool = True, metric: str | None = None, source: str | None = None, export_config: Any = None,
    finetune: Any = None, train_data: Dataset | None = None, cache: Any = None, selection: dict | None = None,
    extra: dict[str, Any] | None = None, min_fidelity: Any = DEFAULT_MIN_FIDELITY, runtime: str | None = None,
    executor: Executor | str | None = None,
) -> dict[str, Any]:
    """`run_plan` with keywords (benchmark scripts use it). `metric`: "top1" (needs labels), "agreement" (top-1
    agreement with fp32) or "cosine" (mean cosine similarity to fp32's outputs, for embedding models).
    `selection`: SelectionConfig's keys but the budget; `runtime` overrides `profile_config.runner`; `executor`:
    where the work runs (modelpress.study.executors)."""
    pcfg = profile_config or ProfileConfig(op_breakdown=True)
    if runtime is not None:
        pcfg = dataclasses.replace(pcfg, runner=runtime)
    sel = make_config(SelectionConfig, {"max_accuracy_drop": max_accuracy_drop, **(selection or {})}, "selection")
    plan = StudyPlan(Path(reference), Path(out_dir), candidates, profiles, eval_data, calib_data, train_data, pcfg,
                     sel, title=title, metric=metric, min_fidelity=min_fidelity, source=source, export=export_config,
                     finetune=finetune, cache=cache, task=dict(task or {}), extra=dict(extra or {}))
    return run_plan(plan, show_progress=show_progress, executor=executor)


def run_study(recipe: Any, *, show_progress: bool = True, use_cache: bool = True,
              executor: Executor | str | None = None, progress: Any = None) -> dict[str, Any]:
    """Run a StudyRecipe (modelpress.study.recipe): export the reference if needed, run the plan (on `executor`),
    write the recipe as run (every default spelled out), the report and its HTML page."""
    from modelpress.benchmarks.html import write_html
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.cache import StepCache, file_sha256
    from modelpress.data import load_npz
    from modelpress.exporters.torch_onnx import export_onnx, load_model_source
    from modelpress.study.plan import full_chain

    out = Path(recipe.output)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: load_npz(v) for k, v in recipe.data.items()}
    cache = StepCache(out / ".cache") if use_cache else None
    reference = Path(recipe.model) if recipe.model else out / "fp32.onnx"
    if not reference.is_file():
        if not recipe.source:
            raise ModelpressError(f"no such model: {reference}")
        with _EXPORT_LOCK:
            if not reference.is_file():
                module, example = load_model_source(recipe.source)
                export_onnx(module, example, reference, recipe.export)
    floor = FidelityFloor.parse(recipe.min_fidelity)
    # the recipe as run: every option of every step, defaults included
    ran = dataclasses.replace(recipe, metric=recipe.metric or default_metric(data["eval"]),
                              min_fidelity="none" if floor is None else str(floor),
                              candidates=[{"name": c["name"], "chain": full_chain(c["chain"])}
                                          for c in recipe.candidates])
    plan = StudyPlan(
        reference, out, [Candidate(c["name"], chain=c["chain"]) for c in recipe.candidates],
        [resolve_profile(p) for p in recipe.profiles], data["eval"], data.get("calib"), data.get("train"),
        recipe.profile, recipe.selection, title=recipe.title, metric=ran.metric, min_fidelity=floor,
        source=recipe.source, export=recipe.export, finetune=recipe.finetune, cache=cache,
        task={"source": recipe.source, "reference_sha256": file_sha256(reference)},
        extra={"recipe": ran.to_yaml(out.resolve()), **({} if cache is not None else {"cache": None})})
    plan.ray_resources = recipe.ray_resources
    if recipe.evaluator:
        plan.evaluator, plan.evaluator_options = recipe.evaluator["name"], dict(recipe.evaluator["options"])
    report = run_plan(plan, show_progress=show_progress, executor=executor, progress=progress)
    ran.save(out / "recipe.yaml")
    write_html(report, out / "report.html")
    require_completed(report, out)
    return report


def require_completed(report: dict[str, Any], out_dir: str | Path) -> None:
    """A study is a success when the reference and at least one candidate completed (exit 0); otherwise
    CheckFailed (exit 3), raised by the caller after every output is written."""
    if len(report["variants"]) < 2 and report.get("failed"):
        raise CheckFailed(f"no candidate completed ({'; '.join(f'{n}: {e}' for n, e in report['failed'].items())}); "
                          f"the report is in {out_dir}")


def run_studies(recipes: list[Any], *, executor: Executor | str | None = None, show_progress: bool = True,
                use_cache: bool = True) -> list[dict[str, Any] | BaseException]:
    """Run several StudyRecipes on one executor with one progress view: one after another locally; side by side
    on an executor that runs units in parallel (Ray), where every study builds and evaluates at once and timing
    starts when none builds any more. -> each study's report, or the exception that ended it, in order."""
    results: list[dict[str, Any] | BaseException] = [ModelpressError("not run")] * len(recipes)
    with _executor(executor) as ex, progress_bar(show_progress) as prog:
        ex.start()  # here, in the main thread, once

        def one(i: int, rec: Any) -> None:
            view = Prefixed(prog, f"[{i + 1}] {Path(rec.output).name}") if prog and len(recipes) > 1 else prog
            try:
                results[i] = run_study(rec, show_progress=show_progress, use_cache=use_cache, executor=ex,
                                       progress=view)
            except Exception as e:  # one study's end is its own: the others go on
                results[i] = e
            finally:
                if ex.gate is not None:
                    ex.gate.leave()

        if len(recipes) < 2 or not getattr(ex, "parallel", False):
            for i, rec in enumerate(recipes):
                one(i, rec)
            return results
        ex.gate = PhaseGate(list(range(len(recipes))))
        try:
            threads = [threading.Thread(target=lambda i=i, r=r: (ex.gate.bind(i), one(i, r)),  # type: ignore
                                        name=f"study-{i}", daemon=True) for i, r in enumerate(recipes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            ex.gate = None
    return results

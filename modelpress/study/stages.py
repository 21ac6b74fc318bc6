"""A study's three stages: build every candidate (through the validation choke point), evaluate every variant
on the study's runtime, profile every variant under every edge profile. Each stage looks up the step cache here,
hands the missing work to the study's executor as units (`_build_task`, `_evaluate_task`, `_profile_task`: plain
functions of plain data, so a Ray worker runs them as well as this process), then records the results, or a
candidate's failure (with its stage), in the recipe's order and goes on; only the reference's own failure raises.
`_Run` is the state they share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelpress.benchmarks.evaluate import evaluate
from modelpress.benchmarks.presets import EdgeProfile
from modelpress.benchmarks.profiler import ProfileConfig, profile_model
from modelpress.benchmarks.report import Variant
from modelpress.cache import data_sha256, file_sha256, key_of
from modelpress.data import Dataset
from modelpress.errors import GoalNotMet, ModelpressError, first_line
from modelpress.onnxutil import graph_stats, model_size_bytes
from modelpress.optimizers import optimize_chain
from modelpress.optimizers.pytorch import is_torch_technique
from modelpress.study.executors.base import Executor, LocalExecutor, StageProgress
from modelpress.study.plan import Candidate, full_chain, model_file
from modelpress.validate import Validator


def _variant(name: str, technique: str | None, path: Path, sha256: str | None = None, **kw: Any) -> Variant:
    """A report row's facts about the model at `path` (`sha256` when the build already hashed it)."""
    stats = graph_stats(path)
    return Variant(name, technique, path.name, model_size_bytes(path), ops=stats["ops"], params=stats["params"],
                   flops=stats["flops"], sha256=sha256 or file_sha256(path), **kw)


def _build(c: Candidate, reference: Path, path: Path, calib: Dataset | None, *, source: str | None, export_config: Any,
           finetune: Any, train_data: Dataset | None, **validation: Any) -> list[Any]:
    """Make one candidate: PyTorch steps on the source then export, then the ONNX passes (validated against
    the reference; `validation` = min_fidelity, data, runtime)."""
    from modelpress.optimizers.pytorch import compress_and_export

    torch_steps = [s for s in c.steps if is_torch_technique(s[0])]
    onnx_steps = c.steps[len(torch_steps):]
    if not torch_steps:
        return optimize_chain(reference, path, onnx_steps, calib, **validation)
    exported_to = path if not onnx_steps else path.with_name(f".{path.stem}.pt-export.onnx")
    try:
        res, _ = compress_and_export(source, exported_to, torch_steps, finetune_cfg=finetune, train_data=train_data,
                                     export_config=export_config)
        # a pruned network is meant to differ from the reference: record its fidelity, enforce only validity
        v = Validator(reference, validation.get("data"), validation.get("runtime", "ort-cpu"), None,
                      data_source="evaluation data").check(exported_to)
        results = res.steps
        for s in results:
            s.notes.extend(_layer_notes(s))
        results[-1].validation = v.to_dict()
        results[-1].notes.append(f"validated (fidelity recorded, not enforced): {v.summary()}")
        if res.finetune:
            results[-1].notes.append("fine-tuned: " + ", ".join(f"{k}={v}" for k, v in res.finetune.items()))
        if onnx_steps:
            results += optimize_chain(exported_to, path, onnx_steps, calib, **validation)
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


def _failure(e: BaseException) -> str:
    """A candidate's failure in one line: our own errors as they are, anything else flagged as a bug."""
    if isinstance(e, ModelpressError):
        return " ".join(str(e).split())
    return f"internal error (a modelpress bug, please report it): {type(e).__name__}: {first_line(e)}"


@dataclass
class _Run:
    """One study's shared state: what every stage reads, where it records failures, and the executor that runs its
    units of work (`placement`: which node built, evaluated and timed each variant, when the executor says)."""

    reference: Path
    out_dir: Path
    eval_data: Dataset
    calib_data: Dataset | None
    cache: Any
    runtime: str
    failures: list[dict[str, str]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    executor: Executor = field(default_factory=LocalExecutor)
    placement: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluator: tuple[str, dict[str, Any]] | None = None  # (name, options) of the task evaluator, if any
    targets: Any = None  # its ground truth (None: it judges against the reference's predictions)

    def fail(self, name: str, stage: str, e: BaseException) -> None:
        self.failures.append({"name": name, "stage": stage, "reason": _failure(e)})

    def place(self, name: str, stage: str, node: str | None, profile: str | None = None) -> None:
        if node is None:
            return
        entry = self.placement.setdefault(name, {})
        if profile is None:
            entry[stage] = node
        else:
            entry.setdefault(stage, {})[profile] = node

    def plugins(self, techniques: list[str]) -> dict[str, dict[str, str]]:
        """Where the techniques and the runtime are defined ("module:Class"), so a worker process knows a plugin
        registered in this one (as the profiler's child process does)."""
        from modelpress.optimizers.registry import PASSES
        from modelpress.runtimes import RUNNERS

        return {"passes": {t: PASSES.path(t) for t in dict.fromkeys(techniques) if t in PASSES},  # type: ignore
                "runners": {self.runtime: RUNNERS.path(self.runtime)}}  # type: ignore[attr-defined]


def _install_plugins(ctx: dict[str, Any]) -> None:
    from modelpress.optimizers.registry import PASSES
    from modelpress.runtimes import RUNNERS

    plugins = ctx.get("plugins") or {}
    for name, path in plugins.get("passes", {}).items():
        PASSES.register_path(name, path)  # type: ignore[attr-defined]
    for name, path in plugins.get("runners", {}).items():
        RUNNERS.register_path(name, path)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- units of work (run by an executor)


def _build_task(item: tuple[Candidate, str], ctx: dict[str, Any]) -> dict[str, Any]:
    """Build one candidate at its path (written through a temp file renamed into place): its config, notes,
    validation and the sha256 of what was written."""
    _install_plugins(ctx)
    c, path = item[0], Path(item[1])
    goal_note: list[str] = []
    try:
        results = _build(c, ctx["reference"], path, ctx["calib"], **ctx["kw"])
    except GoalNotMet as e:  # the best model found was saved: measure it, and say it misses its goal
        results, goal_note = [], [str(e)]
    except Exception:
        path.unlink(missing_ok=True)
        raise
    if not path.is_file():  # e.g. a step that saved nothing: never measure a model that is not there
        raise ModelpressError("the chain wrote no model")
    config = results[0].config if len(results) == 1 else {r.technique: r.config for r in results}
    notes = [f"{r.technique}: {n}" for r in results for n in r.notes] + goal_note + [
        f"{r.technique}: repaired: {'; '.join(r.repairs)}" for r in results if len(r.repairs) > 1]
    validation = next((r.validation for r in reversed(results) if r.validation), None)
    return {"config": config, "notes": notes, "validation": validation, "sha256": file_sha256(path)}


def _evaluate_task(item: tuple[str, bool], ctx: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Top-1 and fidelity (against ctx's reference outputs, when given) of one model, and the task evaluator's
    metrics when the study names one; for the reference (item[1]) also its outputs and decoded predictions."""
    _install_plugins(ctx)
    metrics, out = evaluate(Path(item[0]), ctx["eval_data"], reference=ctx.get("reference_out"),
                            runtime=ctx["runtime"])
    got = {"top1": metrics.top1, "fidelity": asdict(metrics.fidelity) if metrics.fidelity else None}
    pred = None
    if ctx.get("evaluator"):
        from modelpress.evaluators import build_evaluator

        ev = build_evaluator(*ctx["evaluator"])
        mine = ev.predict(Path(item[0]), ctx["eval_data"], ctx["runtime"])
        # the reference's predictions are what every variant's task metric is judged against
        pred = mine if item[1] else None
        task = ev.score(mine, ctx["eval_data"], mine if item[1] else ctx.get("reference_pred"), ctx.get("targets"))
        got["task"] = {"evaluator": ev.name, "primary": ev.primary, "higher_is_better": ev.higher_is_better,
                       "config": ev.config.to_dict(), **task}
    return got, ((out, pred) if item[1] else None)


def _profile_task(item: str, ctx: dict[str, Any]) -> dict[str, Any]:
    _install_plugins(ctx)
    return profile_model(Path(item), ctx["profile"], ctx["config"], data=ctx["inputs"],
                         data_label="evaluation data (first 64)").to_dict()


# ----------------------------------------------------------------------------- stages (run here, in the driver)


def _not_here(path: Path, sha: str, node: str | None) -> ModelpressError | None:
    """The model a worker reports must be here, byte for byte: on a cluster the study's output folder has to be
    on a filesystem every node shares."""
    if path.is_file() and file_sha256(path) == sha:
        return None
    return ModelpressError(f"the model built on node {node} is not at {path} on this machine: on a cluster the "
                           "study's output folder must be on a filesystem every node shares")


def _build_stage(run: _Run, candidates: list[Candidate], variants: list[Variant], build_inputs: list | None,
                 train_sha: str | None, prog: Any, kw: dict[str, Any]) -> None:
    bar = StageProgress(prog, "compressing", len(candidates))
    metas: dict[str, dict[str, Any]] = {}
    keys: dict[str, str | None] = {}
    todo: list[Candidate] = []
    for c in candidates:
        path = run.out_dir / model_file(c.name)
        bkey = meta = None
        if run.cache is not None:  # keyed by every option, defaults spelled out: a replayed recipe-as-run hits
            bkey = key_of("build", *build_inputs, full_chain(c.steps),
                          train_sha if any(is_torch_technique(t) for t, _ in c.steps) else None)
            meta = run.cache.load_model(bkey, path)
        keys[c.name] = bkey
        if meta is None:
            todo.append(c)
            continue
        metas[c.name] = {"config": meta["config"], "notes": meta["notes"], "validation": meta.get("validation")}
        run.place(c.name, "build", "cache" if run.executor.records_placement else None)
        bar.label(c.name)
        bar.advance()
    ctx = {"reference": run.reference, "calib": run.calib_data, "kw": kw,
           "plugins": run.plugins([t for c in todo for t, _ in c.steps])}
    outcomes = run.executor.map(_build_task, [(c, str(run.out_dir / model_file(c.name))) for c in todo], ctx,
                                stage="build", labels=[c.name for c in todo], progress=bar)
    for c, o in zip(todo, outcomes):
        path = run.out_dir / model_file(c.name)
        # a worker on another node must have written into the shared folder; a local one wrote it here
        error = o.error or (_not_here(path, o.value["sha256"], o.node) if o.node is not None else None)
        if error is not None:  # one candidate's failure must not end the study: record it, go on
            run.fail(c.name, "build", error)
            _clean_after_failure(path)
            continue
        metas[c.name] = {k: o.value[k] for k in ("config", "notes", "validation")}
        run.place(c.name, "build", o.node)
        if run.cache is not None:
            run.cache.put_model(keys[c.name], path, metas[c.name])
        metas[c.name]["sha256"] = o.value["sha256"]
    for c in candidates:  # the report lists the candidates in the recipe's order, whatever finished first
        if c.name in metas:
            path = run.paths[c.name] = run.out_dir / model_file(c.name)
            variants.append(_variant(c.name, c.label, path, **metas[c.name]))


def _clean_after_failure(path: Path) -> None:
    """Nothing of a failed build stays: its model, a PyTorch export in progress, and temps of a killed worker."""
    from modelpress.io import sweep_stale_temps

    path.unlink(missing_ok=True)
    export = path.with_name(f".{path.stem}.pt-export.onnx")
    for leftover in (export, export.with_name(export.name + ".export.json")):
        leftover.unlink(missing_ok=True)
    sweep_stale_temps(path.parent, path.name)


def _evaluate_stage(run: _Run, variants: list[Variant], prog: Any) -> list[Variant]:
    """Top-1 and fidelity of each variant on the study's runtime; a variant that fails here is dropped. The
    reference's outputs are computed once (when any variant needs them) and shared by every evaluation."""
    ref_sha, eval_sha = variants[0].sha256, data_sha256(run.eval_data) if run.cache is not None else None
    bar = StageProgress(prog, "evaluating", len(variants))
    task_key = () if run.evaluator is None else (run.evaluator, _targets_sha(run.targets))
    keys = {v.name: None if run.cache is None else key_of("eval", v.sha256, ref_sha, eval_sha, run.runtime, *task_key)
            for v in variants}
    got: dict[str, dict[str, Any]] = {}
    todo = []
    for v in variants:
        hit = run.cache.get("evals", keys[v.name]) if run.cache is not None else None
        if hit is None:
            todo.append(v)
        else:
            got[v.name] = hit
            run.place(v.name, "evaluate", "cache" if run.executor.records_placement else None)
            bar.label(v.name)
            bar.advance()
    ctx: dict[str, Any] = {"eval_data": run.eval_data, "runtime": run.runtime,
                           "plugins": run.plugins([]), "evaluator": run.evaluator, "targets": run.targets}
    if todo:  # the reference first: its outputs are what every variant's fidelity is measured against
        ref_first = todo[0] is variants[0]
        ref_path = run.paths[variants[0].name] if ref_first else run.reference
        o = run.executor.map(_evaluate_task, [(str(ref_path), True)], ctx, stage="evaluate",
                             labels=[variants[0].name], progress=bar if ref_first else None)[0]
        if o.error is not None:
            raise o.error  # the reference is the user's own model: its failure is the user's to see
        ctx["reference_out"], ctx["reference_pred"] = o.value[1]
        if ref_first:
            _keep_eval(run, variants[0], o.value[0], o.node, keys, got)
            todo = todo[1:]
    outcomes = run.executor.map(_evaluate_task, [(str(run.paths[v.name]), False) for v in todo], ctx,
                                stage="evaluate", labels=[v.name for v in todo], progress=bar)
    for v, o in zip(todo, outcomes):
        if o.error is not None:
            run.fail(v.name, "evaluate", o.error)
        else:
            _keep_eval(run, v, o.value[0], o.node, keys, got)
    kept = []
    ref_task = (got.get(variants[0].name) or {}).get("task")
    for v in variants:
        if v.name in got:
            v.top1, v.fidelity = got[v.name]["top1"], got[v.name]["fidelity"]
            v.task = _with_change(got[v.name].get("task"), ref_task)
            kept.append(v)
    return kept


def _targets_sha(targets: Any) -> str | None:
    import hashlib
    import pickle

    return None if targets is None else hashlib.sha256(pickle.dumps(targets)).hexdigest()


def _with_change(task: dict[str, Any] | None, ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """The task metrics plus `change`: the headline metric's change vs the reference, positive = better."""
    if task is None:
        return None
    key, value = task["primary"], task.get(task["primary"])
    base = (ref or {}).get(key)
    change = None if value is None or base is None else (value - base if task["higher_is_better"] else base - value)
    return {**task, "change": None if change is None else round(float(change), 6)}


def _keep_eval(run: _Run, v: Variant, value: dict[str, Any], node: str | None, keys: dict, got: dict) -> None:
    got[v.name] = value
    run.place(v.name, "evaluate", node)
    if run.cache is not None:
        run.cache.put("evals", keys[v.name], value)


def _profile_stage(run: _Run, variants: list[Variant], profiles: list[EdgeProfile], pcfg: ProfileConfig,
                   prog: Any, where: dict[str, float] | None = None) -> list[Variant]:
    """Every variant under every edge profile, one profile after another (a variant that fails one is not timed
    under the next). `where`: the node resources the timings need (Ray's placement; part of the cache key)."""
    bar = StageProgress(prog, "profiling", len(variants) * len(profiles))
    profile_inputs = run.eval_data.take(64)
    inputs_sha = data_sha256(profile_inputs) if run.cache is not None else None
    broken: set[str] = set()
    for prof in profiles:
        ctx = {"profile": prof, "config": pcfg, "inputs": profile_inputs, "plugins": run.plugins([])}
        todo, keys = [], {}
        for v in variants:
            if v.name in broken:
                continue
            key = keys[v.name] = None if run.cache is None else key_of(
                "profile", v.sha256, prof.to_dict(), asdict(pcfg), inputs_sha, *([where] if where else []))
            hit = run.cache.get("profiles", key) if run.cache is not None else None
            if hit is None:
                todo.append(v)
                continue
            v.latency[prof.name] = hit
            run.place(v.name, "profile", "cache" if run.executor.records_placement else None, prof.name)
            bar.label(f"{v.name} @ {prof.name}")
            bar.advance()
        outcomes = run.executor.map(_profile_task, [str(run.paths[v.name]) for v in todo], ctx, stage="profile",
                                    labels=[f"{v.name} @ {prof.name}" for v in todo], progress=bar, resources=where)
        for v, o in zip(todo, outcomes):
            if o.error is not None:
                if v is variants[0]:
                    raise o.error
                run.fail(v.name, f"profile ({prof.name})", o.error)
                broken.add(v.name)
                continue
            v.latency[prof.name] = o.value
            run.place(v.name, "profile", o.node, prof.name)
            if run.cache is not None:
                run.cache.put("profiles", keys[v.name], o.value)
    return [v for v in variants if v.name not in broken]

"""A study's three stages: build every candidate (through the validation choke point), evaluate every variant
on the study's runtime, profile every variant under every edge profile. Each stage records a candidate's failure
(with its stage) and goes on; only the reference's own failure raises. `_Run` is the state they share, with the one
cache helper they all use."""

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
from modelpress.onnxutil import graph_stats, model_size_bytes, op_counts
from modelpress.optimizers import optimize_chain
from modelpress.optimizers.pytorch import is_torch_technique
from modelpress.study.plan import Candidate, full_chain
from modelpress.validate import Validator


def _variant(name: str, technique: str | None, path: Path, **kw: Any) -> Variant:
    stats = graph_stats(path)
    return Variant(name, technique, path.name, model_size_bytes(path), ops=op_counts(path), params=stats["params"],
                   flops=stats["flops"], sha256=file_sha256(path), **kw)


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
    """One study's shared state: what every stage reads and where it records failures."""

    reference: Path
    out_dir: Path
    eval_data: Dataset
    calib_data: Dataset | None
    cache: Any
    runtime: str
    failures: list[dict[str, str]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    def fail(self, name: str, stage: str, e: BaseException) -> None:
        self.failures.append({"name": name, "stage": stage, "reason": _failure(e)})

    def cached(self, kind: str, key: str | None, compute: Any) -> Any:
        """The cache's entry for `key`, else compute() stored under it (no cache: just compute)."""
        got = self.cache.get(kind, key) if self.cache is not None else None
        if got is None:
            got = compute()
            if self.cache is not None:
                self.cache.put(kind, key, got)
        return got


def _build_stage(run: _Run, candidates: list[Candidate], variants: list[Variant], build_inputs: list | None,
                 train_sha: str | None, prog: Any, kw: dict[str, Any]) -> None:
    task_id = prog.add_task("compressing", total=len(candidates)) if prog else None
    for c in candidates:
        if prog:
            prog.update(task_id, description=f"compressing: {c.name}")
        path = run.out_dir / f"{c.name}.onnx"
        bkey = meta = None
        if run.cache is not None:  # keyed by every option, defaults spelled out: a replayed recipe-as-run hits
            bkey = key_of("build", *build_inputs, full_chain(c.steps),
                          train_sha if any(is_torch_technique(t) for t, _ in c.steps) else None)
            meta = run.cache.load_model(bkey, path)
        if meta is not None:
            config, notes, validation = meta["config"], meta["notes"], meta.get("validation")
        else:
            goal_note: list[str] = []
            try:
                results = _build(c, run.reference, path, run.calib_data, **kw)
            except GoalNotMet as e:  # the best model found was saved: measure it, and say it misses its goal
                results, goal_note = [], [str(e)]
            except Exception as e:  # one candidate's failure must not end the study: record it, go on
                run.fail(c.name, "build", e)
                path.unlink(missing_ok=True)
                if prog:
                    prog.advance(task_id)
                continue
            if not path.is_file():  # e.g. a step that saved nothing: never measure a model that is not there
                run.fail(c.name, "build", ModelpressError("the chain wrote no model"))
                if prog:
                    prog.advance(task_id)
                continue
            config = results[0].config if len(results) == 1 else {r.technique: r.config for r in results}
            notes = [f"{r.technique}: {n}" for r in results for n in r.notes] + goal_note + [
                f"{r.technique}: repaired: {'; '.join(r.repairs)}" for r in results if len(r.repairs) > 1]
            validation = next((r.validation for r in reversed(results) if r.validation), None)
            if run.cache is not None:
                run.cache.put_model(bkey, path, {"config": config, "notes": notes, "validation": validation})
        run.paths[c.name] = path
        variants.append(_variant(c.name, c.label, path, config=config, notes=notes, validation=validation))
        if prog:
            prog.advance(task_id)


def _evaluate_stage(run: _Run, variants: list[Variant], prog: Any) -> list[Variant]:
    """Top-1 and fidelity of each variant on the study's runtime; a variant that fails here is dropped."""
    ref_sha, eval_sha = variants[0].sha256, data_sha256(run.eval_data) if run.cache is not None else None
    ref_out: list[Any] = []
    task_id = prog.add_task("evaluating", total=len(variants)) if prog else None

    def measure(v: Variant) -> dict[str, Any]:
        if not ref_out and v is not variants[0]:
            ref_out.append(evaluate(run.reference, run.eval_data, runtime=run.runtime)[1])
        metrics, out = evaluate(run.paths[v.name], run.eval_data, reference=ref_out[0] if ref_out else None,
                                runtime=run.runtime)
        if not ref_out:
            ref_out.append(out)
        return {"top1": metrics.top1, "fidelity": asdict(metrics.fidelity) if metrics.fidelity else None}

    kept = []
    for v in variants:
        if prog:
            prog.update(task_id, description=f"evaluating: {v.name}")
        key = None if run.cache is None else key_of("eval", v.sha256, ref_sha, eval_sha, run.runtime)
        try:
            got = run.cached("evals", key, lambda: measure(v))
        except Exception as e:
            if v is variants[0]:
                raise  # the reference is the user's own model: its failure is the user's to see
            run.fail(v.name, "evaluate", e)
        else:
            v.top1, v.fidelity = got["top1"], got["fidelity"]
            kept.append(v)
        if prog:
            prog.advance(task_id)
    return kept


def _profile_stage(run: _Run, variants: list[Variant], profiles: list[EdgeProfile], pcfg: ProfileConfig,
                   prog: Any) -> list[Variant]:
    task_id = prog.add_task("profiling", total=len(variants) * len(profiles)) if prog else None
    profile_inputs = run.eval_data.take(64)
    inputs_sha = data_sha256(profile_inputs) if run.cache is not None else None
    broken: set[str] = set()
    for prof in profiles:
        for v in variants:
            if prog:
                prog.update(task_id, description=f"profiling: {v.name} @ {prof.name}")
            if v.name in broken:
                continue
            key = None if run.cache is None else key_of("profile", v.sha256, prof.to_dict(), asdict(pcfg), inputs_sha)
            try:
                v.latency[prof.name] = run.cached("profiles", key, lambda: profile_model(
                    run.paths[v.name], prof, pcfg, data=profile_inputs,
                    data_label="evaluation data (first 64)").to_dict())
            except Exception as e:
                if v is variants[0]:
                    raise
                run.fail(v.name, f"profile ({prof.name})", e)
                broken.add(v.name)
            if prog:
                prog.advance(task_id)
    return [v for v in variants if v.name not in broken]

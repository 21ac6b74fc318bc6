"""A study as typed data: the candidates, the selection rule and the whole run (`StudyPlan`), each section a
dataclass built with the same `make_config` as a pass's options, so a recipe key, a CLI option and a library
argument are checked the same way and the recipe-as-run is `asdict` of what ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelpress.benchmarks.presets import EdgeProfile
from modelpress.benchmarks.profiler import ProfileConfig
from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.optimizers import build_pass
from modelpress.optimizers.autopick import AUTO
from modelpress.validate import DEFAULT_MIN_FIDELITY

METRICS = ("top1", "agreement", "cosine")


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

    @property
    def is_auto(self) -> bool:
        """`auto`: expanded when the study runs into auto's chains for this CPU (modelpress.study.auto)."""
        return any(t == AUTO for t, _ in self.steps)


@dataclass
class SelectionConfig:
    """How the pick is made. `max_accuracy_drop` is a fraction: of accuracy points (0.005 = 0.5 pt), or, with
    `relative`, of the reference's own metric (0.01 = 1% of it); recipes write it with its unit (modelpress.units).
    Ties within `margin` of the fastest p50 are noise: the smallest of them wins."""

    max_accuracy_drop: float = 0.01
    relative: bool = False
    objective: Literal["latency", "size", "weighted"] = "latency"
    profile: str | None = None  # the edge profile the pick is made on (default: the first)
    weights: dict[str, float] | None = None  # objective weighted: {"latency": w, "size": w, "accuracy": w}
    # With an evaluator: how much its headline metric (mAP, perplexity, FD, ...) may worsen, as a fraction of the
    # reference's value. None: the same fraction as max_accuracy_drop. The fidelity floor alone does not protect
    # a task metric (a detector's boxes can move while its raw outputs stay cosine-close).
    max_task_drop: float | None = None

    def validate(self) -> None:
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ModelpressError(f"selection: max_accuracy_drop must be a fraction from 0 to 1, got "
                                  f"{self.max_accuracy_drop}")
        if self.max_task_drop is not None and not 0 <= self.max_task_drop <= 1:
            raise ModelpressError(f"selection: max_task_drop must be a fraction from 0 to 1 (0.02 or '2%'), got "
                                  f"{self.max_task_drop}")

    def rule(self) -> dict[str, Any]:
        """The selection mapping the report's `select` reads (everything but the budget)."""
        return {"relative": self.relative, "objective": self.objective, "profile": self.profile,
                "weights": self.weights,
                "max_task_drop": self.max_accuracy_drop if self.max_task_drop is None else self.max_task_drop}


# A study's profiling defaults: more warm-up than a one-off `profile`, and the per-op breakdown that explains a
# slow variant.
STUDY_PROFILE_DEFAULTS: dict[str, Any] = {"warmup": 20, "op_breakdown": True}


def study_profile_config(**given: Any) -> ProfileConfig:
    from modelpress.config import make_config

    return make_config(ProfileConfig, {**STUDY_PROFILE_DEFAULTS, **given}, "profile")


@dataclass
class StudyPlan:
    """Everything one study run needs, typed: what `compare()` takes as keywords and a recipe as YAML. Accuracy,
    validation and latency are all measured on one runtime, `profile.runner`."""

    reference: Path
    out_dir: Path
    candidates: list[Candidate]
    profiles: list[EdgeProfile]
    eval_data: Dataset
    calib_data: Dataset | None = None
    train_data: Dataset | None = None  # fine-tuning after PyTorch techniques
    profile: ProfileConfig = field(default_factory=study_profile_config)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    title: str = "modelpress comparison"
    metric: str | None = None  # top1 | agreement | cosine; default top1 with labels, else agreement
    min_fidelity: Any = DEFAULT_MIN_FIDELITY  # the validation floor (a FidelityFloor, its text, or None)
    source: str | None = None  # the PyTorch factory, for chains that start with PyTorch techniques
    export: Any = None  # ExportConfig for those chains
    finetune: Any = None  # FinetuneConfig for those chains
    cache: Any = None  # a StepCache: finished builds, evaluations and profiles are reused
    evaluator: str | None = None  # a task evaluator (modelpress.evaluators) measured beside top-1/fidelity
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    targets: Any = None  # the task's ground truth for the evaluator (boxes, images); None: judge against FP32
    task: dict[str, Any] = field(default_factory=dict)  # merged into the report's task
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the report
    ray_resources: dict[str, float] | None = None  # node labels every timing needs (the Ray executor's placement)

    @property
    def runtime(self) -> str:
        return self.profile.runner

    def check(self) -> None:
        """Every technique, option and metric checked before any work is done."""
        if self.metric is not None and self.metric not in METRICS:
            raise ModelpressError(f"metric must be one of {list(METRICS)}, got {self.metric!r}")
        if not self.profiles:
            raise ModelpressError("a study needs at least one edge profile")
        if self.selection.profile is not None and self.selection.profile not in {p.name for p in self.profiles}:
            raise ModelpressError(f"selection.profile {self.selection.profile!r} is not one of the study's profiles "
                                  f"{[p.name for p in self.profiles]}")
        self.profile.check()
        if self.evaluator is not None:
            from modelpress.evaluators import build_evaluator

            build_evaluator(self.evaluator, self.evaluator_options)
        for c in self.candidates:
            check_chain(c.steps, has_source=self.source is not None)
        check_names(self.candidates)


def default_metric(eval_data: Dataset) -> str:
    return "top1" if eval_data.labels is not None else "agreement"


def model_file(name: str) -> str:
    """The file a candidate's model is written to in the study's folder: its name, '/' written '-' (auto's
    candidates are named PREFIX/NAME, e.g. auto/static-int8 -> auto-static-int8.onnx)."""
    return name.replace("/", "-") + ".onnx"


def check_names(candidates: list[Candidate]) -> None:
    """Every candidate has its own name and its own model file; fp32 is the reference's."""
    seen: dict[str, str] = {model_file("fp32"): "fp32 (the reference)"}
    for c in candidates:
        f = model_file(c.name)
        if f in seen:
            raise ModelpressError(f"candidates {seen[f]!r} and {c.name!r} would both write {f}: give each candidate "
                                  "its own name")
        seen[f] = c.name


def check_chain(steps: list[tuple[str, dict[str, Any]]], has_source: bool = True) -> None:
    """A chain is PyTorch techniques (if any) first, then ONNX passes; every name and option must be valid.
    `auto` stands alone with no options: it is expanded into auto's own chains when the study runs."""
    if any(t == AUTO for t, _ in steps):
        if len(steps) > 1:
            raise ModelpressError(f"chain {[t for t, _ in steps]}: auto is a candidate on its own (it becomes whole "
                                  "chains for this CPU), so it cannot be chained with other techniques")
        if steps[0][1]:
            raise ModelpressError(f"auto chooses every option itself: give it no options (got {sorted(steps[0][1])})")
        return
    seen_onnx = None
    for technique, options in steps:
        p = build_pass(technique, options)
        if p.input_kind == "torch":
            if seen_onnx:
                raise ModelpressError(f"chain {[t for t, _ in steps]}: {technique} changes the PyTorch model, so it "
                                      f"must come before ONNX techniques such as {seen_onnx}")
            if not has_source:
                raise ModelpressError(f"{technique} works on the PyTorch model: the study needs its source "
                                      "(a 'package.module:factory')")
        else:
            seen_onnx = seen_onnx or technique


def full_chain(chain: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Every step with every option, defaults included: what a recipe-as-run records and what cache keys hash.
    `auto` stays `auto` (it has no options; it is expanded for the CPU that runs the study)."""
    return [(t, {} if t == AUTO else build_pass(t, o).config.to_dict()) for t, o in chain]

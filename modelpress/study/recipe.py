"""Study recipes: `modelpress run RECIPE.yaml` — one file names the model, the candidates, the data, the
targets and the selection rule; the run writes the study (models, report.json/.md/.html) and the recipe it
ran, with every option spelled out, so replaying it gives the same artifacts.

    modelpress: 1
    kind: study
    title: DigitsCNN study
    source: modelpress.models.digits:trained   # PyTorch factory (needed by pruning / low-rank)
    model: fp32.onnx                           # or an ONNX reference (exported from `source` when absent)
    export: {opset: 18}
    data: {eval: eval.npz, calib: calib.npz, train: train.npz}   # .npz files, relative to the recipe
    finetune: {epochs: 2}
    candidates:
      - [static-int8]
      - name: pruned-int8
        chain: ["prune-structured:0.5", static-int8]     # TECHNIQUE:VALUE sets its main option
      - name: fp16
        chain: [{technique: fp16, options: {keep_io_types: true}}]
      - [auto]                                   # auto's chains for this CPU: auto/graph, auto/static-int8, ...
    profiles: [edge-1core, edge-2core]
    profile: {iterations: 200, warmup: 20}
    metric: top1                                # top1 | agreement | cosine
    selection: {max_accuracy_drop: 1pt, objective: latency, profile: edge-1core}   # 1pt absolute, '1%' relative
    min_fidelity: cosine=0.97                   # the validation floor of every ONNX step
    output: study                               # folder, relative to the recipe

Steps are cached under OUTPUT/.cache by a hash of their inputs and config (see modelpress.cache).
`auto` (no options, not chained) is expanded when the study runs into the candidates `optimize -t auto` would try
on this machine, each judged like any other; report.json's `auto` section says which one `-t auto` would pick and
the ISA flags it planned for (modelpress.study.auto). The recipe as run keeps `auto`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpress.benchmarks.profiler import ProfileConfig
from modelpress.errors import ModelpressError
from modelpress.exporters.torch_onnx import ExportConfig
from modelpress.io import write_text
from modelpress.optimizers.autopick import AUTO
from modelpress.optimizers.pytorch import FinetuneConfig
from modelpress.study.plan import (
    METRICS, STUDY_PROFILE_DEFAULTS, SelectionConfig, check_chain, model_file, study_profile_config,
)
from modelpress.recipe import RECIPE_VERSION, _mapping, _where, parse_step
from modelpress.study.auto import possible_names

_TOP = {"modelpress", "kind", "title", "source", "model", "export", "data", "finetune", "candidates", "profiles",
        "profile", "metric", "selection", "output", "min_fidelity", "evaluator"}
_DATA = {"eval", "calib", "train"}
_SELECTION = {"max_accuracy_drop", "relative", "objective", "profile", "weights", "max_task_drop"}


@dataclass
class StudyRecipe:
    """A study recipe (the file's contents, checked and typed); `run_study` turns it into a StudyPlan and runs it.
    Its sections are the same config classes the library uses, so the recipe as run is their `asdict`."""

    output: str
    candidates: list[dict[str, Any]]  # {"name": str, "chain": [(technique, options), ...]}
    data: dict[str, str]
    source: str | None = None
    model: str | None = None
    title: str = "modelpress study"
    export: ExportConfig = field(default_factory=ExportConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    profiles: list[str] = field(default_factory=lambda: ["edge-1core"])
    profile: ProfileConfig = field(default_factory=study_profile_config)
    metric: str | None = None
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    min_fidelity: str | None = None  # the validation floor of every ONNX step (None: the default)
    ray_resources: dict[str, float] | None = None  # profile.ray_resources: node labels timings need (Ray executor)
    # a task evaluator (modelpress.evaluators), judged against FP32's own predictions: {"name", "options"}
    evaluator: dict[str, Any] | None = None

    def to_yaml(self, base: Path | None = None) -> str:
        rel = (lambda p: p if p is None or base is None or ":" in p and not os.path.exists(p)  # noqa: E731
               else os.path.relpath(Path(p).resolve(), base))
        doc: dict[str, Any] = {"modelpress": RECIPE_VERSION, "kind": "study", "title": self.title}
        if self.source:
            doc["source"] = self.source
        if self.model:
            doc["model"] = rel(self.model)
        doc["export"] = dataclasses.asdict(self.export)
        doc["data"] = {k: rel(v) for k, v in self.data.items()}
        doc["finetune"] = dataclasses.asdict(self.finetune)
        doc["candidates"] = [{"name": c["name"], "chain": [{"technique": t, "options": o} for t, o in c["chain"]]}
                             for c in self.candidates]
        from modelpress.units import format_accuracy_budget

        sel = dataclasses.asdict(self.selection)  # the budget is written with its unit ('0.5pt' or '1%')
        sel["max_accuracy_drop"] = format_accuracy_budget(self.selection.max_accuracy_drop, self.selection.relative)
        profile = dataclasses.asdict(self.profile)
        if self.ray_resources:
            profile["ray_resources"] = dict(self.ray_resources)
        doc.update(profiles=self.profiles, profile=profile, metric=self.metric,
                   selection=sel, min_fidelity=self.min_fidelity, output=rel(self.output))
        if self.evaluator:
            doc["evaluator"] = self.evaluator
        return "# modelpress study recipe: replay with `modelpress run FILE`\n" + yaml.safe_dump(
            doc, sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path) -> Path:
        return write_text(path, self.to_yaml(Path(path).resolve().parent))


def _step(raw: Any, node: yaml.Node, path: Path) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        tech, sep, value = raw.partition(":")
        if not sep:
            return tech, {}
        if tech == AUTO:
            raise ModelpressError(f"{_where(node, path)}: auto chooses every option itself: write it as [auto], "
                                  "with no value or options")
        from modelpress.optimizers.registry import PASSES

        primary = PASSES[tech].primary_option if tech in PASSES else None
        if primary is None:
            raise ModelpressError(f"{_where(node, path)}: {tech!r} has no main option for the TECHNIQUE:VALUE form; "
                                  "write {technique: ..., options: {...}}")
        from modelpress.yamlsafe import load_yaml

        return tech, {primary: load_yaml(value, f"{_where(node, path)}: {tech}")[1]}
    if isinstance(raw, dict):
        technique, opts, _ = parse_step(node, raw, path, "a chain step")
        return technique, opts
    raise ModelpressError(f"{_where(node, path)}: a chain step is a technique name or {{technique, options}}")


def _check_keys(node: yaml.Node, path: Path, allowed: set[str], what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    m = _mapping(node, path, what)
    for key, (k, _) in m.items():
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, allowed, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ModelpressError(f"{_where(k, path)}: unknown key {key!r} in {what}{hint}; keys are {sorted(allowed)}")
    return m


def load_study_recipe(path: str | Path, *, allow_outside: bool = False) -> StudyRecipe:
    """Parse and check a study recipe; every error names the file, the line and the key.
    The output folder must lie under the recipe's folder unless `allow_outside` (the CLI's --allow-outside)."""
    path = Path(path)
    if not path.is_file():
        raise ModelpressError(f"no such recipe: {path}")
    from modelpress.yamlsafe import load_yaml_file

    root, doc = load_yaml_file(path)  # bounded: size, aliases, expanded size (modelpress.yamlsafe)
    if root is None:
        raise ModelpressError(f"{path}: the recipe is empty")
    top = _check_keys(root, path, _TOP, "the recipe")
    at = lambda key: _where(top[key][1], path)  # noqa: E731
    if doc.get("modelpress", RECIPE_VERSION) != RECIPE_VERSION:
        raise ModelpressError(f"{at('modelpress')}: recipe version {doc['modelpress']!r} is not supported "
                              f"(this modelpress reads version {RECIPE_VERSION})")
    if doc.get("kind", "study") != "study":
        raise ModelpressError(f"{at('kind')}: kind must be 'study' for `modelpress run` (an optimize recipe has "
                              "no kind: replay it with `modelpress optimize --recipe`)")
    for key in ("candidates", "data", "output"):
        if key not in top:
            raise ModelpressError(f"{path}: missing key {key!r}")
    if "source" not in top and "model" not in top:
        raise ModelpressError(f"{path}: give 'source' (a PyTorch factory) or 'model' (an ONNX file), or both")
    for key in ("source", "model", "output", "title", "metric"):
        if key in top and not isinstance(doc[key], (str, type(None))):
            raise ModelpressError(f"{at(key)}: {key!r} must be a string, got {type(doc[key]).__name__}")
    if doc.get("metric") is not None and doc.get("metric") not in METRICS:
        raise ModelpressError(f"{at('metric')}: metric must be top1, agreement or cosine, got {doc['metric']!r}")
    data_map = _check_keys(top["data"][1], path, _DATA, "data")
    if "eval" not in data_map:
        raise ModelpressError(f"{at('data')}: data needs 'eval' (an .npz file)")
    base = path.parent
    resolve = lambda p: str(p) if Path(p).is_absolute() else os.path.normpath(base / p)  # noqa: E731
    data = {}
    for k, (_, vn) in data_map.items():
        v = doc["data"][k]
        if not isinstance(v, str):
            raise ModelpressError(f"{_where(vn, path)}: data.{k} must be a file path (a string)")
        if not Path(resolve(v)).is_file():
            raise ModelpressError(f"{_where(vn, path)}: data.{k}: no such file: {v}")
        data[k] = resolve(v)
    for section, allowed in (("selection", _SELECTION),
                             ("profile", {f.name for f in dataclasses.fields(ProfileConfig)} | {"ray_resources"})):
        if section in top:
            _check_keys(top[section][1], path, allowed, section)
    selection = {"max_accuracy_drop": 0.01, **(doc.get("selection") or {})}
    sel_node = top["selection"][1] if "selection" in top else root
    # one unit rule (modelpress.units): '0.5pt' points, '1%' relative to the reference, a bare number a fraction
    from modelpress.units import parse_accuracy_budget, stated_unit
    from modelpress.yamlsafe import short

    drop = selection["max_accuracy_drop"]
    sel_keys = _mapping(sel_node, path, "selection") if "selection" in top else {}
    at_drop = _where(sel_keys["max_accuracy_drop"][1] if "max_accuracy_drop" in sel_keys else sel_node, path)
    fraction, relative = parse_accuracy_budget(drop, f"{at_drop}: max_accuracy_drop")
    stated = stated_unit(drop) is not None
    given = selection.get("relative", relative)
    if not isinstance(given, bool):
        raise ModelpressError(f"{_where(sel_node, path)}: relative must be true or false, got {short(given)}")
    if stated and given != relative:
        raise ModelpressError(f"{at_drop}: max_accuracy_drop {short(drop)} is {'relative' if relative else 'in points'}"
                              f" but relative: {str(given).lower()} says otherwise; drop one of them")
    selection.update(max_accuracy_drop=fraction, relative=given)  # the recipe as run states relative: true/false
    if selection.get("max_task_drop") is not None:  # a fraction of the reference's task metric: 0.02 or '2%'
        from modelpress.units import parse_percent

        try:
            selection["max_task_drop"] = parse_percent(selection["max_task_drop"])
        except ModelpressError as e:
            raise ModelpressError(f"{_where(sel_keys['max_task_drop'][1], path)}: max_task_drop must be a fraction "
                                  f"(0.02) or a percentage ('2%') of the reference's task metric ({e})") from None
    for section in ("export", "finetune", "profile"):
        if section in top and not isinstance(doc[section], dict):
            raise ModelpressError(f"{at(section)}: {section!r} must be a mapping")
    export = _typed("export", doc.get("export") or {}, ExportConfig, top, path)
    finetune = _typed("finetune", doc.get("finetune") or {}, FinetuneConfig, top, path)
    ray_resources = _ray_resources((doc.get("profile") or {}).get("ray_resources"), top, path)
    given = {k: v for k, v in (doc.get("profile") or {}).items() if k != "ray_resources"}
    profile = _typed("profile", {**STUDY_PROFILE_DEFAULTS, **given}, ProfileConfig, top, path)
    try:
        profile.check()  # the runtime exists here and its runtime_options are its own
    except ModelpressError as e:
        raise ModelpressError(f"{at('profile') if 'profile' in top else path}: profile: {e}") from None
    sel_cfg = _typed("selection", selection, SelectionConfig, top, path)
    profiles = doc.get("profiles") or ["edge-1core"]
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise ModelpressError(f"{at('profiles')}: profiles must be a list of preset names")
    from modelpress.benchmarks.presets import resolve_profile

    for p in profiles:
        try:
            resolve_profile(p)
        except ModelpressError as e:
            raise ModelpressError(f"{at('profiles')}: {e}") from None
    if sel_cfg.profile is not None and sel_cfg.profile not in profiles:
        raise ModelpressError(f"{_where(sel_node, path)}: selection.profile {sel_cfg.profile!r} is not one of the "
                              f"study's profiles {profiles}")

    cands_node = top["candidates"][1]
    if not isinstance(cands_node, yaml.SequenceNode) or not cands_node.value:
        raise ModelpressError(f"{_where(cands_node, path)}: 'candidates' must be a non-empty list")
    candidates, names = [], set()
    for node, raw in zip(cands_node.value, doc["candidates"]):
        if isinstance(raw, list):
            chain_node, name = node, None
        else:
            keys = _check_keys(node, path, {"name", "chain"}, "a candidate")
            if "chain" not in keys:
                raise ModelpressError(f"{_where(node, path)}: a candidate needs 'chain'")
            chain_node, name, raw = keys["chain"][1], raw.get("name"), raw["chain"]
        if isinstance(raw, str):
            raw, chain_node = [raw], yaml.SequenceNode("tag:yaml.org,2002:seq", [chain_node])
        if not isinstance(chain_node, yaml.SequenceNode) or not raw:
            raise ModelpressError(f"{_where(chain_node, path)}: a chain must be a non-empty list of techniques")
        chain = [_step(r, n, path) for r, n in zip(raw, chain_node.value)]
        try:
            check_chain(chain, has_source="source" in top)
        except ModelpressError as e:
            raise ModelpressError(f"{_where(chain_node, path)}: {e}") from None
        name = str(name or "+".join(t for t, _ in chain))
        if chain[0][0] == AUTO and any(c["chain"][0][0] == AUTO for c in candidates):
            raise ModelpressError(f"{_where(node, path)}: auto may be a candidate once per study")
        # the files they write: 'a/b' and 'a-b' would both write a-b.onnx; auto's candidates are auto/graph, ...
        files = {model_file(n) for n in possible_names(name, chain)}
        if files & names or name == "fp32":
            hint = "; auto's candidates are named NAME/graph, NAME/static-int8, ..." if any(
                c["chain"][0][0] == AUTO for c in [*candidates, {"chain": chain}]) else ""
            raise ModelpressError(f"{_where(node, path)}: candidate name {name!r} is used twice (fp32 is the "
                                  f"reference{hint})")
        names |= files
        candidates.append({"name": name, "chain": chain})
    model = doc.get("model")
    if model is not None and not Path(resolve(model)).is_file() and "source" not in top:
        raise ModelpressError(f"{at('model')}: no such file: {model}")
    from modelpress.recipe import resolve_output

    output = resolve_output(doc["output"], top["output"][1], path, allow_outside, normalize=True)
    return StudyRecipe(output=output, candidates=candidates, data=data, source=doc.get("source"),
                       model=resolve(model) if model else None, title=doc.get("title") or "modelpress study",
                       export=export, finetune=finetune, profiles=profiles, profile=profile, metric=doc.get("metric"),
                       selection=sel_cfg, min_fidelity=_min_fidelity(doc, top, path), ray_resources=ray_resources,
                       evaluator=_evaluator(doc, top, path))


def _ray_resources(raw: Any, top: dict, path: Path) -> dict[str, float] | None:
    """profile.ray_resources: {name: amount > 0}, the Ray node resources every timing needs (e.g. device_rpi5: 1)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not
                                            isinstance(v, bool) and v > 0 for k, v in raw.items()):
        raise ModelpressError(f"{_where(top['profile'][1], path)}: profile.ray_resources must map resource names to "
                              "amounts > 0, e.g. {device_rpi5: 1}")
    return {k: float(v) for k, v in raw.items()} or None


def _evaluator(doc: dict, top: dict, path: Path) -> dict[str, Any] | None:
    """`evaluator: NAME` or `{name: NAME, options: {...}}`, checked (name and options) where it is written; the
    recipe as run spells out every option."""
    if "evaluator" not in top:
        return None
    raw, node = doc["evaluator"], top["evaluator"][1]
    if isinstance(raw, str):
        raw = {"name": raw}
    else:
        _check_keys(node, path, {"name", "options"}, "evaluator")
    if not isinstance(raw.get("name"), str) or not isinstance(raw.get("options") or {}, dict):
        raise ModelpressError(f"{_where(node, path)}: evaluator is a name or {{name: NAME, options: {{...}}}}")
    from modelpress.evaluators import build_evaluator

    try:
        ev = build_evaluator(raw["name"], raw.get("options") or {})
    except ModelpressError as e:
        raise ModelpressError(f"{_where(node, path)}: {e}") from None
    return {"name": ev.name, "options": ev.config.to_dict()}


def _min_fidelity(doc: dict, top: dict, path: Path) -> str | None:
    from modelpress.validate import FidelityFloor

    if "min_fidelity" not in top:
        return None
    try:
        floor = FidelityFloor.parse(str(doc["min_fidelity"]) if doc["min_fidelity"] is not None else "none")
    except ModelpressError as e:
        raise ModelpressError(f"{_where(top['min_fidelity'][1], path)}: {e}") from None
    return "none" if floor is None else str(floor)


def _typed(section: str, values: dict, cls: type, top: dict, path: Path) -> Any:
    """Build a section's dataclass config with make_config (as a pass's options), naming the bad key and line."""
    from modelpress.config import make_config

    where = _where(top[section][1], path) if section in top else str(path)
    try:
        return make_config(cls, values, section)
    except ModelpressError as e:
        raise ModelpressError(f"{where}: {e}") from None
    except TypeError as e:
        raise ModelpressError(f"{where}: {section}: {e}") from None

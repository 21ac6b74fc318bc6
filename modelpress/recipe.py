"""Recipes: a YAML file that says exactly what an optimization run did, so it can be replayed.

    modelpress: 1                 # recipe format version
    model: fp32.onnx              # paths are relative to the recipe's folder
    output: model.int8.onnx
    calib: calib.npz              # optional; needed by calibrated techniques
    steps:                        # applied in order
      - technique: graph
        options: {tool: transformers, model_type: bert}
      - technique: static-int8
        options: {calibration: percentile}

A dumped recipe (`--dump-recipe`) lists every option of every step, defaults included,
so a later modelpress with other defaults still replays the same run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpress.errors import ModelpressError
from modelpress.io import write_text
from modelpress.yamlsafe import clip, load_yaml_file, short

RECIPE_VERSION = 1
_TOP_KEYS = {"modelpress", "model", "output", "calib", "steps", "min_fidelity"}
_STEP_KEYS = {"technique", "options"}


@dataclass
class Step:
    technique: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    model: str
    output: str
    steps: list[Step]
    calib: str | None = None
    min_fidelity: str | None = None  # the validation floor the run used ("none" = off; None = the default)

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"modelpress": RECIPE_VERSION, "model": self.model, "output": self.output}
        if self.calib:
            doc["calib"] = self.calib
        if self.min_fidelity:
            doc["min_fidelity"] = self.min_fidelity
        doc["steps"] = [{"technique": s.technique, "options": s.options} for s in self.steps]
        return "# modelpress recipe: replay with `modelpress optimize --recipe FILE`\n" + yaml.safe_dump(
            doc, sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path) -> Path:
        """Write with paths relative to the recipe's folder, which is how load_recipe resolves them."""
        import os

        base = Path(path).resolve().parent
        rel = lambda p: None if p is None else os.path.relpath(Path(p).resolve(), base)  # noqa: E731
        moved = Recipe(rel(self.model), rel(self.output), self.steps, rel(self.calib), self.min_fidelity)
        return write_text(path, moved.to_yaml())


def _where(node: yaml.Node, path: Path) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ModelpressError(f"{_where(node, path)}: {what} must be a mapping (key: value)")
    out = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            raise ModelpressError(f"{_where(k, path)}: a key in {what} must be a name, not a list or mapping")
        out[k.value] = (k, v)
    return out


def resolve_output(value: Any, node: yaml.Node, path: Path, allow_outside: bool = False,
                   normalize: bool = False) -> str:
    """A recipe's `output`, relative to the recipe's folder; refused when it is empty, absolute or lands
    outside that folder (`..`, a link) unless `allow_outside`."""
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ModelpressError(f"{_where(node, path)}: 'output' must be a non-empty file path (a string)")
    base = path.parent
    target = Path(value) if Path(value).is_absolute() else base / value
    if not allow_outside:
        root = Path(os.path.realpath(base))
        real = Path(os.path.realpath(target))
        if Path(value).is_absolute() or not (real == root or real.is_relative_to(root)):
            raise ModelpressError(
                f"{_where(node, path)}: output {short(value)} is outside the recipe's folder {short(str(root), 120)}; "
                "use a path under that folder, or allow it explicitly with --allow-outside (allow_outside=True)")
    return os.path.normpath(target) if normalize else str(target)


def parse_step(node: yaml.Node, raw: dict, path: Path, what: str) -> tuple[str, dict[str, Any], dict]:
    """A `{technique, options}` step -> (technique, options, its key nodes for error locations)."""
    keys = _mapping(node, path, what)
    for key, (k, _) in keys.items():
        if key not in _STEP_KEYS:
            raise ModelpressError(f"{_where(k, path)}: unknown step key {short(key)}; "
                                  f"step keys are {sorted(_STEP_KEYS)}")
    if "technique" not in keys:
        raise ModelpressError(f"{_where(node, path)}: {what} needs 'technique'")
    if not isinstance(raw.get("technique"), str):
        raise ModelpressError(f"{_where(keys['technique'][1], path)}: 'technique' must be a technique name (a string), "
                              f"got {short(raw.get('technique'))}")
    opts = raw.get("options") or {}
    if not isinstance(opts, dict):
        raise ModelpressError(f"{_where(keys['options'][1], path)}: 'options' must be a mapping")
    return str(raw["technique"]), opts, keys


def load_recipe(path: str | Path, *, allow_outside: bool = False) -> Recipe:
    """Parse and check a recipe; errors name the file, the line and the key.

    The output must lie under the recipe's folder unless `allow_outside` (the CLI's --allow-outside).
    The YAML is bounded (size, aliases, expanded size: see modelpress.yamlsafe).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelpressError(f"no such recipe: {path}")
    root, doc = load_yaml_file(path)
    if root is None:
        raise ModelpressError(f"{path}: the recipe is empty")
    top = _mapping(root, path, "the recipe")
    for key, (k, _) in top.items():
        if key not in _TOP_KEYS:
            raise ModelpressError(f"{_where(k, path)}: unknown key {short(key)}; recipe keys are {sorted(_TOP_KEYS)}")
    for key in ("model", "output", "steps"):
        if key not in top:
            raise ModelpressError(f"{path}: missing key {key!r}")
    version = doc.get("modelpress", RECIPE_VERSION)
    if version != RECIPE_VERSION or isinstance(version, bool):
        raise ModelpressError(f"{_where(top['modelpress'][1], path)}: recipe version {short(version)} is not supported "
                              f"(this modelpress reads version {RECIPE_VERSION})")
    for key in ("model", "output", "calib"):
        if key in top and not isinstance(doc.get(key), (str, type(None))):
            raise ModelpressError(f"{_where(top[key][1], path)}: {key!r} must be a file path (a string)")
    for key in ("model", "output"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise ModelpressError(f"{_where(top[key][1], path)}: {key!r} must be a non-empty file path (a string)")
    output = resolve_output(doc["output"], top["output"][1], path, allow_outside)
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise ModelpressError(f"{_where(steps_node, path)}: 'steps' must be a non-empty list")
    steps = []
    from modelpress.optimizers import build_onnx_pass

    for node, raw in zip(steps_node.value, doc["steps"]):
        technique, opts, keys = parse_step(node, raw, path, "a step")
        try:
            build_onnx_pass(technique, opts)
        except ModelpressError as e:
            at = keys["options"][1] if "options" in keys and "option" in str(e) else keys["technique"][1]
            raise ModelpressError(f"{_where(at, path)}: {clip(e)}") from None
        steps.append(Step(technique, opts))
    base = path.parent
    resolve = lambda p: None if p is None else str((base / p) if not Path(p).is_absolute() else Path(p))  # noqa: E731
    floor = doc.get("min_fidelity")
    if floor is not None:
        from modelpress.validate import FidelityFloor

        try:
            parsed = FidelityFloor.parse(str(floor))
        except ModelpressError as e:
            raise ModelpressError(f"{_where(top['min_fidelity'][1], path)}: {e}") from None
        floor = "none" if parsed is None else str(parsed)
    return Recipe(resolve(doc["model"]), output, steps, resolve(doc.get("calib") or None), floor)


def run_recipe(rec: Recipe, *, min_fidelity: str | None = None, data: Any = None,
               keep_best: bool = False) -> tuple[list[Any], Recipe]:
    """Run an optimize recipe (its chain on its model, validated against it) and return the step results and the
    recipe as run: every option spelled out and the floor used (`min_fidelity` overrides the recipe's own)."""
    from modelpress.data import load_npz
    from modelpress.optimizers import optimize_chain
    from modelpress.validate import FidelityFloor

    floor = FidelityFloor.parse(min_fidelity if min_fidelity is not None else rec.min_fidelity)
    steps = [(s.technique, s.options) for s in rec.steps]
    results = optimize_chain(rec.model, rec.output, steps, load_npz(rec.calib) if rec.calib else None,
                             min_fidelity=floor, data=data, keep_best=keep_best)
    ran = Recipe(rec.model, rec.output, [Step(r.technique, r.config) for r in results], rec.calib,
                 "none" if floor is None else str(floor))
    return results, ran

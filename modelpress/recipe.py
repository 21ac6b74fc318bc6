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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelpress.errors import ModelpressError
from modelpress.io import write_text

RECIPE_VERSION = 1
_TOP_KEYS = {"modelpress", "model", "output", "calib", "steps"}
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

    def to_yaml(self) -> str:
        doc: dict[str, Any] = {"modelpress": RECIPE_VERSION, "model": self.model, "output": self.output}
        if self.calib:
            doc["calib"] = self.calib
        doc["steps"] = [{"technique": s.technique, "options": s.options} for s in self.steps]
        return "# modelpress recipe: replay with `modelpress optimize --recipe FILE`\n" + yaml.safe_dump(
            doc, sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path) -> Path:
        """Write with paths relative to the recipe's folder, which is how load_recipe resolves them."""
        import os

        base = Path(path).resolve().parent
        rel = lambda p: None if p is None else os.path.relpath(Path(p).resolve(), base)  # noqa: E731
        moved = Recipe(rel(self.model), rel(self.output), self.steps, rel(self.calib))
        return write_text(path, moved.to_yaml())


def _where(node: yaml.Node, path: Path) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(node: yaml.Node, path: Path, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ModelpressError(f"{_where(node, path)}: {what} must be a mapping (key: value)")
    return {k.value: (k, v) for k, v in node.value}


def parse_step(node: yaml.Node, raw: dict, path: Path, what: str) -> tuple[str, dict[str, Any], dict]:
    """A `{technique, options}` step -> (technique, options, its key nodes for error locations)."""
    keys = _mapping(node, path, what)
    for key, (k, _) in keys.items():
        if key not in _STEP_KEYS:
            raise ModelpressError(f"{_where(k, path)}: unknown step key {key!r}; step keys are {sorted(_STEP_KEYS)}")
    if "technique" not in keys:
        raise ModelpressError(f"{_where(node, path)}: {what} needs 'technique'")
    opts = raw.get("options") or {}
    if not isinstance(opts, dict):
        raise ModelpressError(f"{_where(keys['options'][1], path)}: 'options' must be a mapping")
    return str(raw["technique"]), opts, keys


def load_recipe(path: str | Path) -> Recipe:
    """Parse and check a recipe; errors name the file, the line and the key."""
    path = Path(path)
    if not path.is_file():
        raise ModelpressError(f"no such recipe: {path}")
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ModelpressError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if root is None:
        raise ModelpressError(f"{path}: the recipe is empty")
    top = _mapping(root, path, "the recipe")
    for key, (k, _) in top.items():
        if key not in _TOP_KEYS:
            raise ModelpressError(f"{_where(k, path)}: unknown key {key!r}; recipe keys are {sorted(_TOP_KEYS)}")
    for key in ("model", "output", "steps"):
        if key not in top:
            raise ModelpressError(f"{path}: missing key {key!r}")
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    version = doc.get("modelpress", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise ModelpressError(f"{_where(top['modelpress'][1], path)}: recipe version {version!r} is not supported "
                              f"(this modelpress reads version {RECIPE_VERSION})")
    for key in ("model", "output", "calib"):
        if key in top and not isinstance(doc[key], (str, type(None))):
            raise ModelpressError(f"{_where(top[key][1], path)}: {key!r} must be a file path (a string)")
    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise ModelpressError(f"{_where(steps_node, path)}: 'steps' must be a non-empty list")
    steps = []
    from modelpress.optimizers import build_pass

    for node, raw in zip(steps_node.value, doc["steps"]):
        technique, opts, keys = parse_step(node, raw, path, "a step")
        try:
            build_pass(technique, opts)
        except ModelpressError as e:
            at = keys["options"][1] if "options" in keys and "option" in str(e) else keys["technique"][1]
            raise ModelpressError(f"{_where(at, path)}: {e}") from None
        steps.append(Step(technique, opts))
    base = path.parent
    resolve = lambda p: None if p is None else str((base / p) if not Path(p).is_absolute() else Path(p))  # noqa: E731
    return Recipe(resolve(doc["model"]), resolve(doc["output"]), steps, resolve(doc.get("calib")))

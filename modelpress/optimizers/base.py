"""A pass: one optimization step with a typed config, so a run can be written out and replayed.

Modelled on Olive's passes: `Pass.config_cls` is a dataclass; `build_pass(name,
options)` rejects unknown options and wrong types with one line, and
`config.to_dict()` is exactly what a recipe records.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.yamlsafe import short


@dataclass
class PassConfig:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PassResult:
    technique: str
    config: dict[str, Any]
    notes: list[str] = dataclasses.field(default_factory=list)
    goal_met: bool | None = None  # accuracy-aware passes: False = best model saved, but over budget
    validation: dict[str, Any] | None = None  # what the choke point measured (modelpress.validate)
    repairs: list[str] = dataclasses.field(default_factory=list)  # every try the executor made, in order


class Pass(abc.ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    config_cls: ClassVar[type[PassConfig]] = PassConfig
    needs_calibration: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False  # refuses an input that is already quantized

    def __init__(self, config: PassConfig | None = None) -> None:
        self.config = config or self.config_cls()

    def min_opset(self) -> int:
        """The least opset the artifact's format needs (e.g. per-channel QDQ: 13); older inputs are upgraded."""
        return 0

    def for_old_opset(self) -> "Pass | None":
        """This pass in a form that works below min_opset (e.g. per-tensor), when the upgrade fails."""
        return None

    def repairs(self, ctx: Any, first: Any) -> Iterator[Any]:
        """Tries that may restore validity or fidelity (modelpress.optimizers.repair): yield attempts made with
        `ctx.attempt(...)`, return when satisfied. Default: none."""
        return iter(())

    @abc.abstractmethod
    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """Write the optimized model to `model_out` (a temp path the caller renames into place)."""

    def calibration(self, model_in: Path, calib: Dataset | None) -> tuple[Dataset, list]:
        """(calibration data, the model's input specs), the data checked against the model's inputs."""
        from modelpress.runtimes import create_runner

        if calib is None:
            raise ModelpressError(f"{self.name} needs calibration data: pass --calib FILE.npz")
        with create_runner("ort-cpu", model_in) as r:
            specs = r.inputs
        calib.check_against(specs, "calibration data")
        return calib, specs


def make_config(cls: type[PassConfig], options: dict[str, Any], pass_name: str) -> PassConfig:
    """Build a typed config from loose options (CLI/YAML), naming any unknown key or bad value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ModelpressError(f"{pass_name}: unknown option(s) {short(unknown)}; options are {sorted(fields)}")
    values = {}
    for key, raw in options.items():
        values[key] = _coerce(raw, hints[key], f"{pass_name}: option {key}")
    cfg = cls(**values)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if raw not in args:
            raise ModelpressError(f"{where} must be one of {list(args)}, got {short(raw)}")
        return raw
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(raw, a, where)
            except ModelpressError as e:
                errors.append(str(e))
        raise ModelpressError(errors[0])
    if origin is list:
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ModelpressError(f"{where} must be a list, got {short(raw)}")
        return [_coerce(x.strip() if isinstance(x, str) else x, args[0], where) for x in items]
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if str(raw).lower() in ("true", "1", "yes", "on"):
            return True
        if str(raw).lower() in ("false", "0", "no", "off"):
            return False
        raise ModelpressError(f"{where} must be true or false, got {short(raw)}")
    if hint in (int, float):
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = hint(raw)
            if hint is int and isinstance(raw, float) and raw != value:
                raise ValueError
            return value
        except (TypeError, ValueError):
            raise ModelpressError(f"{where} must be {hint.__name__}, got {short(raw)}") from None
    if hint is str:
        return str(raw)
    return raw

"""A pass: one optimization step with a typed config, so a run can be written out and replayed.

Modelled on Olive's passes: one `Pass` base for every input kind (`input_kind` "onnx": `run` rewrites an ONNX
file; "torch": `apply`/`finalize` change a PyTorch module before export), one result type (`PassResult`), and
each technique's facts on its class (input kind, calibration, whether it quantizes, the option a bare recipe
value sets). `Pass.config_cls` is a dataclass; `build_pass(name, options)` rejects unknown options and wrong types with
one line, and `config.to_dict()` is exactly what a recipe records.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from modelpress.data import Dataset
from modelpress.errors import ModelpressError


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
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # torch passes: what changed, per layer


class Pass(abc.ABC):
    """One technique. Subclasses set the class facts below and implement `run` (onnx) or `apply` (torch)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config_cls: ClassVar[type[PassConfig]] = PassConfig
    input_kind: ClassVar[Literal["onnx", "torch"]] = "onnx"
    needs_calibration: ClassVar[bool] = False
    quantizes: ClassVar[bool] = False  # refuses an input that is already quantized
    # the option a bare recipe value sets: `prune-structured:0.5` means {sparsity: 0.5}
    primary_option: ClassVar[str | None] = None

    def __init__(self, config: PassConfig | None = None) -> None:
        self.config = config or self.config_cls()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.input_kind not in ("onnx", "torch"):
            raise TypeError(f"{cls.__name__}: input_kind must be 'onnx' or 'torch', not {cls.input_kind!r}")
        if cls.primary_option is not None and cls.primary_option not in {f.name for f in
                                                                         dataclasses.fields(cls.config_cls)}:
            raise TypeError(f"{cls.__name__}: primary_option {cls.primary_option!r} is not an option of "
                            f"{cls.config_cls.__name__}")

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

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """ONNX passes: write the optimized model to `model_out` (a temp path the caller renames into place)."""
        raise NotImplementedError(f"{self.name} works on a PyTorch model (input_kind {self.input_kind!r})")

    def apply(self, model: Any, example: tuple) -> tuple[Any, PassResult]:
        """Torch passes: change `model` (in place or by returning a new one); masks may stay until `finalize`."""
        raise NotImplementedError(f"{self.name} works on an ONNX model (input_kind {self.input_kind!r})")

    def finalize(self, model: Any) -> None:
        """Torch passes: make the change permanent (e.g. fold pruning masks into the weights)."""

    def calibration(self, model_in: Path, calib: Dataset | None) -> tuple[Dataset, list]:
        """(calibration data, the model's input specs), the data checked against the model's inputs."""
        from modelpress.runtimes import create_runner

        if calib is None:
            raise ModelpressError(f"{self.name} needs calibration data: pass --calib FILE.npz")
        with create_runner("ort-cpu", model_in) as r:
            specs = r.inputs
        calib.check_against(specs, "calibration data")
        return calib, specs

"""The evaluator contract: a typed config, and `evaluate(model, data, runtime=..., reference=..., targets=...)`
returning a flat dict of metrics whose headline is `metrics[cls.primary]`.

`model` is an ONNX path or a runner factory (a callable returning a `modelpress.runtimes.Runner`, not yet
loaded), so a study evaluates on its own runtime. `reference` is the FP32 model (a path or factory), or the
`Predictions` an earlier `predict()` of it returned: a study computes the reference's outputs once and passes
them to every variant. `targets` is the task's ground truth where it does not fit a `Dataset` (boxes per image,
real images); without it, evaluators that can judge against the reference do so."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Union

import numpy as np

from modelpress.data import Dataset, batch_size_for, positive_int
from modelpress.errors import ModelpressError

ModelLike = Union[str, Path, Callable[[], Any]]


@dataclass
class EvaluatorConfig:
    batch_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        positive_int(self.batch_size, "batch_size")


@dataclass
class Predictions:
    """What one model produced on one data set, in the evaluator's own decoded form (outputs, boxes, images)."""

    model: str
    value: Any
    extra: dict[str, Any] = field(default_factory=dict)


def open_runner(model: ModelLike, runtime: str):
    """A loaded-on-enter runner for a path (on `runtime`) or from a factory."""
    from modelpress.runtimes import create_runner

    if callable(model) and not isinstance(model, (str, Path)):
        return model()
    return create_runner(runtime, model)


def model_name(model: ModelLike) -> str:
    return Path(model).name if isinstance(model, (str, Path)) else getattr(model, "__name__", type(model).__name__)


def run_outputs(model: ModelLike, data: Dataset, runtime: str = "ort-cpu", batch_size: int = 32,
                outputs: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every (or the named) output over all samples, batched; a model fixed at batch 1 is fed one at a time."""
    with open_runner(model, runtime) as r:
        data.check_against(r.inputs, "evaluation data")
        names = outputs or [o.name for o in r.outputs]
        if not names:
            raise ModelpressError(f"{model_name(model)} has no graph outputs: there is nothing to evaluate")
        bs = batch_size_for(r.inputs, batch_size)
        got: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for b in data.batches(bs):
            out = r.infer(b)
            for n in names:
                got[n].append(np.asarray(out[n]))
    return {n: np.concatenate(v) for n, v in got.items()}


class Evaluator(abc.ABC):
    """One task metric. Subclasses set `name`, `summary`, `config_cls`, `primary` (the headline metric's key)
    and `higher_is_better`, and implement `predict` and `score`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config_cls: ClassVar[type[EvaluatorConfig]] = EvaluatorConfig
    primary: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    def __init__(self, config: EvaluatorConfig | None = None) -> None:
        self.config = config or self.config_cls()

    @abc.abstractmethod
    def predict(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> Predictions:
        """Run the model on the data (on `runtime`) and decode its outputs."""

    @abc.abstractmethod
    def score(self, pred: Predictions, data: Dataset, reference: Predictions | None, targets: Any) -> dict[str, Any]:
        """The metrics from decoded predictions: against `targets` when given, else against `reference`."""

    def output(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu") -> np.ndarray:
        """The output the config names (`output`, "" = the first), run in the config's batches."""
        name = getattr(self.config, "output", "")
        outs = run_outputs(model, data, runtime, self.config.batch_size, [name] if name else None)
        return next(iter(outs.values()))

    def evaluate(self, model: ModelLike, data: Dataset, runtime: str = "ort-cpu",
                 reference: "ModelLike | Predictions | None" = None, targets: Any = None) -> dict[str, Any]:
        """Metrics of `model` on `data`, measured on `runtime`."""
        if reference is not None and not isinstance(reference, Predictions):
            reference = self.predict(reference, data, runtime)
        metrics = self.score(self.predict(model, data, runtime), data, reference, targets)
        return {"evaluator": self.name, "primary": self.primary, **metrics}

    def change(self, value: float | None, ref_value: float | None) -> float | None:
        """Signed change vs the reference, positive = better (so tables read the same for every metric)."""
        if value is None or ref_value is None:
            return None
        return (value - ref_value) if self.higher_is_better else (ref_value - value)

"""The runner interface every runtime implements: load / infer / close.

Modelled on Polygraphy's runners: one small surface so profiling, evaluation
and parity checks never care which runtime sits underneath.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype and shape of one model input or output (str/None dims are symbolic)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass
class RunnerOptions:
    """Knobs every runner understands; a runner ignores what it has no equivalent for."""

    intra_op_threads: int = 0  # 0 = the runtime's default (all cores)
    inter_op_threads: int = 0
    graph_optimization: str = "all"
    profile_ops_prefix: str | None = None  # set to collect a per-op trace

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runner(abc.ABC):
    """Runs one ONNX model. Use as a context manager, or call load() and close()."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, model_path: str | Path, options: RunnerOptions | None = None) -> None:
        self.model_path = Path(model_path)
        self.options = options or RunnerOptions()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here?, why not). Lets the CLI say *why* a runtime cannot be used."""
        return True, ""

    @abc.abstractmethod
    def load(self) -> None: ...

    @abc.abstractmethod
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - optional for runners holding nothing
        pass

    @property
    @abc.abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abc.abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    def __enter__(self) -> "Runner":
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

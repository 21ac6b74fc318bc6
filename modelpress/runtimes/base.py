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
    """Runs one ONNX model. Use as a context manager, or call load() and close().

    Template methods, as Polygraphy's runners: the public `load` / `infer` / `close` check the runner's state
    and the feeds (names, dtypes, ranks, fixed dims: one line naming the first mismatch), then call
    `load_impl` / `infer_impl` / `close_impl`, which each runtime implements. What a runtime can do beyond
    that is declared, not assumed: `supports_op_profile` (per-op kernel times), `fast_fp16` (native float16
    kernels, so fp16 artifacts pay off), `artifact_suffixes` (what it loads)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    supports_op_profile: ClassVar[bool] = False
    fast_fp16: ClassVar[bool] = False
    artifact_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def __init__(self, model_path: str | Path, options: RunnerOptions | None = None) -> None:
        self.model_path = Path(model_path)
        self.options = options or RunnerOptions()
        self._loaded = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here?, why not). Lets the CLI say *why* a runtime cannot be used."""
        return True, ""

    def load(self) -> None:
        if self._loaded:
            raise RuntimeError(f"{self.name} runner for {self.model_path.name} is already loaded")
        self.load_impl()
        self._loaded = True
        self._specs = {s.name: s for s in self.inputs}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._loaded:
            raise RuntimeError(f"{self.name} runner not loaded; call load() first")
        self._check_feeds(feeds)
        return self.infer_impl(feeds)

    def close(self) -> None:
        if self._loaded:
            self.close_impl()
        self._loaded = False

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        from modelpress.errors import ModelpressError

        specs = self._specs
        missing = sorted(set(specs) - set(feeds))
        extra = sorted(set(feeds) - set(specs))
        if missing or extra:
            raise ModelpressError(f"{self.model_path.name}: feeds {'lack ' + str(missing) if missing else ''}"
                                  f"{' and ' if missing and extra else ''}{'have unknown ' + str(extra) if extra else ''}"
                                  f"; the model's inputs are {sorted(specs)}")
        for name, arr in feeds.items():
            s = specs[name]
            if np.asarray(arr).ndim != len(s.shape):
                raise ModelpressError(f"{self.model_path.name}: input {name!r} has rank {np.asarray(arr).ndim}, "
                                      f"the model wants {len(s.shape)} ({list(s.shape)})")
            bad = [i for i, (want, got) in enumerate(zip(s.shape, np.shape(arr))) if isinstance(want, int) and want > 0
                   and want != got]
            if bad:
                raise ModelpressError(f"{self.model_path.name}: input {name!r} has shape {list(np.shape(arr))}, "
                                      f"the model wants {list(s.shape)}")

    @abc.abstractmethod
    def load_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close_impl(self) -> None:  # noqa: B027 - optional for runners holding nothing
        pass

    def end_profiling(self) -> str | None:
        """The per-op trace's path (runners with `supports_op_profile` and options.profile_ops_prefix)."""
        return None

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

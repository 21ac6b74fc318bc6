"""The runner interface every runtime implements: load / infer / close.

Modelled on Polygraphy's runners: one small surface so profiling, evaluation
and parity checks never care which runtime sits underneath.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, fields
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
    """The knobs every runtime has (an edge profile's thread counts). Each runtime's own knobs live in its
    subclass, named by the runner's `options_cls` and built from a recipe's `runtime_options` by make_config."""

    intra_op_threads: int = 0  # 0 = the runtime's default (all cores)
    inter_op_threads: int = 0

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
    options_cls: ClassVar[type[RunnerOptions]] = RunnerOptions
    package: ClassVar[str] = ""  # the Python package that provides the runtime (its version goes into reports)
    supports_op_profile: ClassVar[bool] = False
    fast_fp16: ClassVar[bool] = False
    artifact_suffixes: ClassVar[tuple[str, ...]] = (".onnx",)

    def __init__(self, model_path: str | Path, options: RunnerOptions | Mapping[str, Any] | None = None) -> None:
        self.model_path = Path(model_path)
        self.options = self.make_options(options)
        self._loaded = False

    @classmethod
    def make_options(cls, options: RunnerOptions | Mapping[str, Any] | None = None, **common: Any) -> RunnerOptions:
        """This runtime's options from a mapping (a recipe's `runtime_options`, checked: unknown key or bad value
        is one line), or from the common knobs of another runtime's options object."""
        from modelpress.config import make_config

        if isinstance(options, cls.options_cls):
            return options
        values: dict[str, Any] = dict(common)
        if isinstance(options, RunnerOptions):  # e.g. plain RunnerOptions(threads): keep what this runtime has
            values.update({k: v for k, v in asdict(options).items() if k in {f.name for f in fields(cls.options_cls)}})
        elif options:
            values.update(options)
        return make_config(cls.options_cls, values, f"runtime {cls.name}")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here?, why not). Lets the CLI say *why* a runtime cannot be used."""
        return True, ""

    @classmethod
    def check_artifact(cls, path: str | Path) -> Path:
        """The file this runtime would load, checked before any work: an ONNX model fully (modelpress.onnxutil),
        another artifact (an engine, an IR) by its suffix; a one-line error names what this runtime loads."""
        from modelpress.errors import ModelpressError
        from modelpress.onnxutil import check_onnx_file

        p = Path(path)
        if p.suffix.lower() not in cls.artifact_suffixes and not (p.suffix == "" and ".onnx" in cls.artifact_suffixes):
            raise ModelpressError(f"runtime {cls.name} loads {', '.join(cls.artifact_suffixes)} files, not {p.name}")
        if p.suffix.lower() in (".onnx", ""):
            return check_onnx_file(p)
        if not p.is_file():
            raise ModelpressError(f"no such file: {p}")
        return p

    @classmethod
    def version(cls) -> str | None:
        """The runtime's version (reports and bundles record it): its `package`'s __version__; None where it is
        not installed."""
        if not cls.package:
            return None
        import importlib

        try:
            return str(importlib.import_module(cls.package).__version__)
        except ImportError:
            return None

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

    def op_breakdown(self, feeds: list[Mapping[str, np.ndarray]], iterations: int) -> dict[str, float]:
        """Share of kernel time per op type over `iterations` calls, from the runtime's own profiler (runners
        that declare `supports_op_profile`; a separate, untimed session). Sorted, largest share first."""
        if not self.supports_op_profile:
            raise NotImplementedError(f"{self.name} has no per-op profiler")
        totals = self.op_times_impl(feeds, iterations)
        all_us = sum(totals.values()) or 1.0
        return {k: round(v / all_us, 4) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}

    def op_times_impl(self, feeds: list[Mapping[str, np.ndarray]], iterations: int) -> dict[str, float]:
        """Kernel time per op type (any unit) for runners with `supports_op_profile`."""
        raise NotImplementedError

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

"""Runtime registry: name -> "module:Class", imported only when a runtime is used (as Olive's registry does).
A new runtime is one module with a `Runner` subclass (modelpress.runtimes.base) and one line below."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from modelpress.errors import ModelpressError
from modelpress.runtimes.base import GRAPH_OPT_LEVELS, Runner, RunnerOptions, TensorSpec

_REGISTRY = {
    "ort-cpu": "modelpress.runtimes.ort:OrtCpuRunner",
    "ort-cuda": "modelpress.runtimes.ort:OrtCudaRunner",
    "ort-tensorrt": "modelpress.runtimes.ort:OrtTensorrtRunner",
    "openvino": "modelpress.runtimes.openvino:OpenVinoCpuRunner",
}


class _Runners(Mapping):
    """name -> Runner class, each module imported on first use (`import openvino` only when asked for)."""

    def __getitem__(self, name: str) -> type[Runner]:
        module, _, cls = _REGISTRY[name].partition(":")
        return getattr(importlib.import_module(module), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)


RUNNERS: Mapping[str, type[Runner]] = _Runners()


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Register a runner class defined outside modelpress (a plugin) under its `name`."""
    _REGISTRY[cls.name] = f"{cls.__module__}:{cls.__qualname__}"
    return cls


def get_runner(name: str) -> type[Runner]:
    """The runner class for `name`, or a one-line error naming the known ones and why one is unusable."""
    if name not in _REGISTRY:
        raise ModelpressError(f"unknown runtime {str(name)[:60]!r}; known: {', '.join(sorted(_REGISTRY))}")
    cls = RUNNERS[name]
    ok, why = cls.availability()
    if not ok:
        raise ModelpressError(f"runtime {name!r} is not usable on this machine: {why}")
    return cls


def create_runner(name: str, model_path, options: RunnerOptions | None = None) -> Runner:
    return get_runner(name)(model_path, options)


__all__ = [
    "GRAPH_OPT_LEVELS", "RUNNERS", "Runner", "RunnerOptions", "TensorSpec", "create_runner", "get_runner", "register_runner",
]

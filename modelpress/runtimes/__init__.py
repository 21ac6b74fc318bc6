"""Runtime registry: name -> "module:Class", imported only when a runtime is used (as Olive's registry does).
A new runtime is one module with a `Runner` subclass (modelpress.runtimes.base) and one line below."""

from __future__ import annotations

from collections.abc import Mapping

from modelpress.errors import ModelpressError
from modelpress.registry import LazyRegistry
from modelpress.runtimes.base import GRAPH_OPT_LEVELS, Runner, RunnerOptions, TensorSpec

RUNNERS: Mapping[str, type[Runner]] = LazyRegistry({
    "ort-cpu": "modelpress.runtimes.ort:OrtCpuRunner",
    "ort-cuda": "modelpress.runtimes.ort:OrtCudaRunner",
    "ort-tensorrt": "modelpress.runtimes.ort:OrtTensorrtRunner",
    "openvino": "modelpress.runtimes.openvino:OpenVinoCpuRunner",
    "tensorrt": "modelpress.runtimes.tensorrt:TensorrtRunner",
})
register_runner = RUNNERS.register  # type: ignore[attr-defined]


def get_runner(name: str) -> type[Runner]:
    """The runner class for `name`, or a one-line error naming the known ones and why one is unusable."""
    if name not in RUNNERS:
        raise ModelpressError(f"unknown runtime {str(name)[:60]!r}; known: {', '.join(sorted(RUNNERS))}")
    cls = RUNNERS[name]
    ok, why = cls.availability()
    if not ok:
        raise ModelpressError(f"runtime {name!r} is not usable on this machine: {why}")
    return cls


def create_runner(name: str, model_path, options: RunnerOptions | Mapping | None = None) -> Runner:
    """A runner for `model_path` on runtime `name`; `options` is that runtime's options object or a mapping of
    its options (checked: an unknown key or bad value is one line)."""
    return get_runner(name)(model_path, options)


def runtime_versions() -> dict[str, str]:
    """Version of every installed runtime, by the package that provides it (reports and bundles record it)."""
    out: dict[str, str] = {}
    for name in RUNNERS:
        cls = RUNNERS[name]
        v = cls.version()
        if v is not None:
            out.setdefault(cls.package, v)
    return out


__all__ = [
    "GRAPH_OPT_LEVELS", "RUNNERS", "Runner", "RunnerOptions", "TensorSpec", "create_runner", "get_runner", "register_runner",
    "runtime_versions",
]

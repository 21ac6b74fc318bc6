"""Runtime registry. A new runtime is one module with a `@register_runner` class,
imported at the bottom of this file."""

from __future__ import annotations

from modelpress.errors import ModelpressError
from modelpress.runtimes.base import GRAPH_OPT_LEVELS, Runner, RunnerOptions, TensorSpec

RUNNERS: dict[str, type[Runner]] = {}


def register_runner(cls: type[Runner]) -> type[Runner]:
    RUNNERS[cls.name] = cls
    return cls


def get_runner(name: str) -> type[Runner]:
    """The runner class for `name`, or a one-line error naming the known ones and why one is unusable."""
    try:
        cls = RUNNERS[name]
    except KeyError:
        raise ModelpressError(f"unknown runtime {name!r}; known: {', '.join(sorted(RUNNERS))}") from None
    ok, why = cls.availability()
    if not ok:
        raise ModelpressError(f"runtime {name!r} is not usable on this machine: {why}")
    return cls


def create_runner(name: str, model_path, options: RunnerOptions | None = None) -> Runner:
    return get_runner(name)(model_path, options)


from modelpress.runtimes import ort  # noqa: E402,F401  (registers the ONNX Runtime runners)

__all__ = [
    "GRAPH_OPT_LEVELS", "RUNNERS", "Runner", "RunnerOptions", "TensorSpec", "create_runner", "get_runner", "register_runner",
]

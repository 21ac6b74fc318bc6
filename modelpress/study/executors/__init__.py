"""Where a study's work runs. A stage (build, evaluate, profile) hands its units of work to an executor's `map`;
the executor runs them and returns one `Outcome` per unit, in order, so the stage records results and failures the
same way whatever ran them.

- `local` (the default): one unit after another in this process, as modelpress always ran;
- `ray`: every unit a Ray task (a local Ray instance, or a cluster at an address); profiling tasks hold a per-node
  resource, so two timings never share a node. Ray is imported only when this executor is asked for.
"""

from __future__ import annotations

from typing import Any

from modelpress.errors import ModelpressError
from modelpress.study.executors.base import Executor, LocalExecutor, Outcome, StageProgress

EXECUTORS = ("local", "ray")


def get_executor(name: str | Executor | None = None, **options: Any) -> Executor:
    """An executor by name ("local" or "ray"; options go to its constructor), or the one given."""
    if name is None or name == "local":
        return LocalExecutor()
    if isinstance(name, Executor):
        return name
    if name == "ray":
        from modelpress.study.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ModelpressError(f"unknown executor {str(name)[:40]!r}; choose one of {list(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Outcome", "StageProgress", "get_executor"]

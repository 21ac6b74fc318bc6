"""The executor contract and the local executor.

A unit of work is a module-level function `fn(item, ctx)` (so another process can import it by name) with a plain,
picklable item and context. `attempt` runs one and turns whatever it raised into an `Outcome`, never an exception,
so a stage decides what a failure means (recorded for a candidate, raised for the reference) and both executors
record it the same way."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

Task = Callable[[Any, dict[str, Any]], Any]


@dataclass
class Outcome:
    """What one unit of work gave: its value, or the exception it raised; `node` is where it ran (None locally,
    where every unit runs in this process)."""

    value: Any = None
    error: BaseException | None = None
    node: str | None = None
    host: dict[str, str] | None = None  # the node's hostname and address, where a node is recorded


def attempt(fn: Task, item: Any, ctx: dict[str, Any], node: str | None = None) -> Outcome:
    """Run one unit; an Exception becomes the outcome's error (KeyboardInterrupt and SystemExit still end the run)."""
    try:
        return Outcome(fn(item, ctx), node=node)
    except Exception as e:  # one unit's failure is its own: the stage records it and goes on
        return Outcome(error=e, node=node)


class StageProgress:
    """One stage's bar (or nothing, when progress is off): `label` names what runs now, `advance` counts one done."""

    def __init__(self, prog: Any, desc: str, total: int) -> None:
        self.prog, self.desc = prog, desc
        self.task_id = prog.add_task(desc, total=total) if prog else None

    def label(self, text: str) -> None:
        if self.prog:
            self.prog.update(self.task_id, description=f"{self.desc}: {text}")

    def advance(self) -> None:
        if self.prog:
            self.prog.advance(self.task_id)


class Prefixed:
    """A progress view whose bars carry a study's name, so several studies share one display."""

    def __init__(self, prog: Any, prefix: str) -> None:
        self.prog, self.prefix = prog, prefix

    def add_task(self, description: str, **kw: Any) -> Any:
        return self.prog.add_task(f"{self.prefix} {description}", **kw)

    def update(self, task_id: Any, description: str | None = None, **kw: Any) -> None:
        if description is not None:
            kw["description"] = f"{self.prefix} {description}"
        self.prog.update(task_id, **kw)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self.prog.advance(task_id, advance)


class PhaseGate:
    """Studies run side by side compute (build, evaluate) freely, but time only once none of them computes any
    more: a build on the node that is timing a model would disturb the timing. Keys are the studies'."""

    def __init__(self, keys: list[Any]) -> None:
        self._cond = threading.Condition()
        self._computing = set(keys)
        self._local = threading.local()

    def bind(self, key: Any) -> None:
        """Make `key` this thread's study."""
        self._local.key = key

    def leave(self) -> None:
        """This thread's study computes no more (its compute stages ended, or it failed)."""
        with self._cond:
            self._computing.discard(getattr(self._local, "key", None))
            self._cond.notify_all()

    def wait_quiet(self) -> None:
        self.leave()
        with self._cond:
            self._cond.wait_for(lambda: not self._computing)


class Executor:
    """Runs a stage's units of work. Subclasses implement `map`; the rest has working defaults."""

    name = "executor"
    records_placement = False  # whether the report says where each unit ran
    parallel = False  # whether several studies may run side by side on it (run_studies)
    gate: PhaseGate | None = None  # set by run_studies when several studies share this executor

    def map(self, fn: Task, items: list[Any], ctx: dict[str, Any], *, stage: str, labels: list[str],
            progress: StageProgress | None = None, resources: dict[str, float] | None = None) -> list[Outcome]:
        """One Outcome per item, in the items' order. `stage` is build, evaluate or profile (placement rules);
        `ctx` is shared by every item (sent once); `labels` name the items for the progress view; `resources`:
        node resources the units need (Ray's placement labels; the local executor has only this machine)."""
        raise NotImplementedError

    def start(self) -> Any:
        """Get ready (connect to a cluster, start a local one); `map` starts it too when needed."""

    def check(self, plan: Any) -> None:
        """Raise a one-line ModelpressError when `plan` cannot run here (e.g. a resource no node offers)."""

    def describe(self) -> dict[str, Any] | None:
        """What the report records about the executor (None: nothing, the local executor's report is unchanged)."""
        return None

    @contextlib.contextmanager
    def compute_phase(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self.gate is not None:
                self.gate.leave()

    @contextlib.contextmanager
    def timing_phase(self) -> Iterator[None]:
        if self.gate is not None:
            self.gate.wait_quiet()
        yield

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every unit in this process, one after another: modelpress's behaviour before executors existed."""

    name = "local"

    def map(self, fn: Task, items: list[Any], ctx: dict[str, Any], *, stage: str, labels: list[str],
            progress: StageProgress | None = None, resources: dict[str, float] | None = None) -> list[Outcome]:
        outcomes = []
        for item, label in zip(items, labels):
            if progress:
                progress.label(label)
            outcomes.append(attempt(fn, item, ctx))
            if progress:
                progress.advance()
        return outcomes

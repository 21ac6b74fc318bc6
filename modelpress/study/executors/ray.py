"""The Ray executor: every unit of a study's stages is a Ray task.

- Builds and evaluations take one CPU each and run side by side on any node.
- Timings hold one unit of the node resource `modelpress_profiler` (a node started here offers 1; a cluster's
  nodes offer it with `ray start --resources='{"modelpress_profiler": 1}'`), so two timings never share a node;
  a recipe's `profile: {ray_resources: {device_rpi5: 1}}` adds labels that pin timings to the nodes that have them.
  Studies run together (`run_studies`) start timing only once none of them builds or evaluates any more.
- Artifacts move through the study's output folder, which every node must see at the same path (a shared
  filesystem on a cluster; the same disk for a local instance); the driver checks each model a worker reports
  by its sha256. Data and reference outputs go through Ray's object store, once per stage. The step cache lives
  in that folder too, so a build done on one node is reused by every other.
- A task whose worker dies is retried (`max_retries`); a model is written through a temp file renamed into place,
  so a killed attempt leaves no partial model, and the temps it left are swept by the retry (modelpress.io).

Ray is imported only when this executor starts. Worker logs are not copied to this process's output.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
from typing import Any

from modelpress.errors import ModelpressError, first_line
from modelpress.study.executors.base import Executor, Outcome, StageProgress, Task, attempt

PROFILER_RESOURCE = "modelpress_profiler"
DEFAULT_MAX_CPUS = 8  # a local instance takes at most this many of the machine's CPUs
# Ray reads it when imported: "0" makes the node's address 127.0.0.1, so its servers listen on loopback only
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _run_unit(fn: Task, item: Any, ctx: dict[str, Any], cwd: str) -> Outcome:
    """One unit on a Ray worker: in the driver's folder (relative paths mean the same there), with the node's
    identity on the outcome and an error that can travel back."""
    import socket

    import ray

    if os.path.isdir(cwd):
        os.chdir(cwd)
    node = ray.get_runtime_context().get_node_id()
    out = attempt(fn, item, ctx, node=node)
    out.host = {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address()}
    if out.error is not None:
        try:
            pickle.dumps(out.error)
        except Exception:  # an exception that cannot be pickled comes back as its type and first line
            out.error = RuntimeError(f"{type(out.error).__name__}: {first_line(out.error)}")
    return out


def _messages_to_stderr(ray: Any) -> None:
    """Ray prints its own error messages (e.g. "a worker died") on the driver's stdout; send them to stderr, so
    stdout stays the report alone (--json). A private hook: where Ray has no such function, nothing changes."""
    mod = getattr(getattr(ray, "_private", None), "worker", None)
    orig = getattr(mod, "print_to_stdstream", None)
    if orig is None or getattr(orig, "_modelpress", False):
        return

    def to_stderr(data: dict, *args: Any, **kw: Any) -> Any:
        return orig({**data, "is_err": True}, *args, **kw)

    to_stderr._modelpress = True  # type: ignore[attr-defined]
    mod.print_to_stdstream = to_stderr


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ModelpressError("`--executor ray` needs Ray: pip install 'modelpress[ray]'") from None
    return ray


class RayExecutor(Executor):
    """Runs units as Ray tasks. `address`: a cluster's (`ray://HOST:PORT` or `HOST:PORT`; default the RAY_ADDRESS
    environment variable); without one a local instance is started with at most `num_cpus` CPUs and stopped by
    `close()`. A Ray already initialized in this process is used as it is (and left running)."""

    name = "ray"
    records_placement = True
    parallel = True

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 2) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus or min(os.cpu_count() or 1, DEFAULT_MAX_CPUS)
        if self.num_cpus < 1 or max_retries < 0:
            raise ModelpressError("ray: num_cpus must be >= 1 and max_retries >= 0")
        self.max_retries = max_retries
        self._ray: Any = None
        self._started = False
        self._remote: Any = None
        self._lock = threading.Lock()
        self.hosts: dict[str, dict[str, str]] = {}

    def start(self) -> Any:
        with self._lock:  # studies side by side may all ask at once
            return self._start()

    def _start(self) -> Any:
        if self._ray is not None:
            return self._ray
        if not self.address:  # a local instance serves this machine only: every Ray server on 127.0.0.1
            os.environ.setdefault(LOCAL_ONLY_ENV, "0")
        ray = _import_ray()
        if not ray.is_initialized():
            quiet = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:  # a local instance: this machine's CPUs (bounded), one timing at a time
                    ray.init(num_cpus=self.num_cpus, resources={PROFILER_RESOURCE: 1}, **quiet)
            except Exception as e:  # ConnectionError, a bad address, a port in use: one line
                where = self.address or "a local Ray instance"
                hint = ("; a cluster with token authentication needs RAY_AUTH_MODE=token here too, and its token "
                        "(`ray get-auth-token`)" if self.address and os.environ.get("RAY_AUTH_MODE") is None else "")
                raise ModelpressError(f"cannot start Ray ({where}): {type(e).__name__}: {first_line(e)}{hint}") from None
            self._started = True
        _messages_to_stderr(ray)
        self._ray = ray
        self._remote = ray.remote(_run_unit)
        return ray

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray, self._started, self._remote = None, False, None

    def check(self, plan: Any) -> None:
        """Some alive node must offer a timing slot and every label the recipe asks for, else the timings would
        wait forever: say so before any work."""
        ray = self.start()
        need = {PROFILER_RESOURCE: 1.0, **(getattr(plan, "ray_resources", None) or {})}
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if not any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items()) for n in nodes):
            raise ModelpressError(
                f"no node of the Ray cluster offers {need} for timing: start the nodes that may time models with "
                f"`ray start ... --resources='{{\"{PROFILER_RESOURCE}\": 1}}'` (plus the recipe's ray_resources)")

    def describe(self) -> dict[str, Any]:
        where = self.address or ("a local instance" if self._started else "the Ray instance this process runs")
        return {"name": "ray", "address": where, "max_retries": self.max_retries,
                "nodes": dict(self.hosts)}

    def _options(self, stage: str, resources: dict[str, float] | None) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": 1, "max_retries": self.max_retries}
        if stage == "profile":
            opts["resources"] = {PROFILER_RESOURCE: 1, **(resources or {})}
        return opts

    def map(self, fn: Task, items: list[Any], ctx: dict[str, Any], *, stage: str, labels: list[str],
            progress: StageProgress | None = None, resources: dict[str, float] | None = None) -> list[Outcome]:
        if not items:
            return []
        ray = self.start()
        ctx_ref = ray.put(ctx)  # the data goes to the object store once, not once per task
        remote = self._remote.options(**self._options(stage, resources))
        refs = [remote.remote(fn, item, ctx_ref, os.getcwd()) for item in items]
        pending = list(refs)
        try:
            while pending:
                if progress:
                    progress.label(f"{len(pending)} of {len(refs)} on Ray")
                done, pending = ray.wait(pending, num_returns=1)
                for _ in done:
                    if progress:
                        progress.advance()
        except BaseException:  # Ctrl-C, SIGTERM: nothing of ours keeps running
            for r in pending:
                ray.cancel(r, force=True)
            raise
        outcomes = []
        for ref, label in zip(refs, labels):
            try:
                out = ray.get(ref)
            except Exception as e:  # the worker died more often than it may be retried, a node was lost, ...
                out = Outcome(error=ModelpressError(
                    f"the Ray task ({stage} of {label}) failed after {self.max_retries} retries: "
                    f"{type(e).__name__}: {first_line(e)}"))
            if out.node and out.host:
                self.hosts[out.node] = out.host
            outcomes.append(out)
        return outcomes

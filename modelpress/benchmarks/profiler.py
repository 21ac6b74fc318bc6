"""Latency profiling in a child process pinned to an edge profile's cores.

Why a child: CPU affinity and runtime thread pools are per process and must be
set before the runtime starts; a fresh process also gives an honest cold start
and a peak-memory figure that is this model's and not the parent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.benchmarks.presets import EdgeProfile
from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.runtimes import GRAPH_OPT_LEVELS, RUNNERS, get_runner


@dataclass
class ProfileConfig:
    warmup: int = 10
    iterations: int = 200
    duration_s: float | None = None  # time budget; with iterations, whichever ends first
    batch_size: int = 1
    runner: str = "ort-cpu"
    graph_optimization: str = "all"  # ONNX Runtime's level (runtimes without one accept only "all")
    op_breakdown: bool = False  # also run the runtime's per-op profiler (separate session, not timed)
    op_breakdown_iterations: int = 20
    runtime_options: dict[str, Any] = field(default_factory=dict)  # the runtime's own knobs (its options class)

    def check(self) -> None:
        if self.warmup < 0 or self.iterations < 1 or self.batch_size < 1:
            raise ModelpressError("--warmup must be >= 0, --iterations and --batch-size >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ModelpressError("--duration must be > 0 seconds")
        if self.graph_optimization not in GRAPH_OPT_LEVELS:
            raise ModelpressError(f"unknown graph optimization level {self.graph_optimization!r}; choose {GRAPH_OPT_LEVELS}")
        runner_options(get_runner(self.runner), asdict(self), 0, 0)  # the runtime's options, checked up front


def runner_options(runner_cls: Any, cfg: dict[str, Any], intra: int, inter: int) -> Any:
    """The runtime's options for a profile: the edge profile's threads, the config's runtime_options, and the
    graph optimization level where the runtime has one."""
    has_levels = any(f.name == "graph_optimization" for f in fields(runner_cls.options_cls))
    if cfg.get("graph_optimization", "all") != "all" and not has_levels:
        raise ModelpressError(f"runtime {runner_cls.name} has no graph optimization levels; leave "
                              "graph_optimization at 'all'")
    level = {"graph_optimization": cfg.get("graph_optimization", "all")} if has_levels else {}
    return runner_cls.make_options({"intra_op_threads": intra, "inter_op_threads": inter, **level,
                                    **(cfg.get("runtime_options") or {})})


@dataclass
class LatencyStats:
    """Milliseconds per inference call (one batch)."""

    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    iqr_ms: float
    throughput_items_s: float

    @classmethod
    def from_samples(cls, samples_ms: list[float], batch_size: int) -> "LatencyStats":
        a = np.asarray(samples_ms, dtype=np.float64)
        p25, p50, p75, p90, p99 = np.percentile(a, [25, 50, 75, 90, 99])
        r = lambda v: round(float(v), 4)  # noqa: E731
        return cls(len(a), r(a.mean()), r(a.std()), r(a.min()), r(p50), r(p90), r(p99), r(a.max()), r(p75 - p25),
                   round(batch_size * 1000.0 / float(a.mean()), 2))


@dataclass
class ProfileResult:
    model: str
    runner: str
    profile: dict[str, Any]
    batch_size: int
    inputs: str  # "synthetic" or the data file
    stats: LatencyStats
    load_ms: float
    cold_start_ms: float  # session creation + first inference
    peak_rss_mb: float  # whole measuring process
    model_rss_mb: float  # peak minus the process before the model was loaded
    samples_ms: list[float] = field(repr=False, default_factory=list)
    op_breakdown: dict[str, float] | None = None  # op type -> share of kernel time
    affinity: list[int] = field(default_factory=list)  # the cores the measuring process actually ran on
    energy: dict[str, Any] | None = None  # joules around the timed loop from hardware counters, or why not available

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def profile_model(
    model: str | Path, profile: EdgeProfile, config: ProfileConfig | None = None, data: Dataset | None = None,
    data_label: str | None = None,
) -> ProfileResult:
    """Measure `model` under `profile` in a pinned child process. `data=None` means synthetic inputs."""
    cfg = config or ProfileConfig()
    cfg.check()
    model = get_runner(cfg.runner).check_artifact(model)  # ONNX fully checked; an engine or IR by its runtime
    with tempfile.TemporaryDirectory(prefix="modelpress-profile-") as tmp:
        job: dict[str, Any] = {
            "model": str(Path(model).resolve()), "profile": profile.to_dict(), "config": asdict(cfg),
            "inputs": None, "result": os.path.join(tmp, "result.json"),
            "runner_path": RUNNERS.path(cfg.runner),  # so a plugin runtime registered here is known there
        }
        if data is not None:
            job["inputs"] = str(data.save(os.path.join(tmp, "inputs.npz")))
        job_path = os.path.join(tmp, "job.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        proc = subprocess.run(
            [sys.executable, "-m", "modelpress.benchmarks._child", job_path],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if not os.path.exists(job["result"]):
            tail = (proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise ModelpressError(f"profiling child exited with code {proc.returncode}: {tail[0][:300]}")
        with open(job["result"]) as f:
            res = json.load(f)
    if "error" in res:
        raise ModelpressError(res["error"])
    res["stats"] = LatencyStats(**res["stats"])
    res["inputs"] = data_label or ("synthetic" if data is None else "given data")
    return ProfileResult(**res)

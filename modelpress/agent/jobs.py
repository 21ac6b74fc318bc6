"""A profiling job as the agent receives it: a strict, typed description, then the same profiler as local runs.

Every field is checked against a fixed list and a type before any work (unknown keys, wrong types and
out-of-range numbers are refused), so nothing a client sends reaches the profiler unchecked; the model and
data are named by sha256 only and looked up in the agent's own store.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import asdict, dataclass
from typing import Any

from modelpress.agent.store import SHA256_RE, BlobStore
from modelpress.errors import ModelpressError, first_line

MAX_PROFILES = 8


@dataclass(frozen=True)
class ProfileSpec:
    """One profile as the client named it; resolved on the device (its cores, not the client's)."""

    preset: str | None = None
    cores: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class JobSpec:
    model: str  # sha256 of the .onnx in the agent's store
    inputs: str | None  # sha256 of an .npz in the store, or None for synthetic inputs
    data_label: str | None
    profiles: tuple[ProfileSpec, ...]
    runtime: str = "ort-cpu"
    warmup: int = 10
    iterations: int = 200
    duration_s: float | None = None
    batch_size: int = 1
    graph_optimization: str = "all"
    op_breakdown: bool = False
    interleave: str | None = None  # a second model (sha256) profiled right after `model` in every round (gate)
    rounds: int = 1  # round after round: model, interleave, model, interleave, ... so drift hits both alike

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["profiles"] = [asdict(p) for p in self.profiles]
        return d


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ModelpressError(f"job field {key!r} must be a whole number from {lo} to {hi}")
    return v


def _str(v: Any, key: str, limit: int = 100) -> str:
    if not isinstance(v, str) or not v or len(v) > limit or not v.isprintable():
        raise ModelpressError(f"job field {key!r} must be a short printable string")
    return v


def _sha(v: Any, key: str) -> str:
    if not isinstance(v, str) or not SHA256_RE.match(v):
        raise ModelpressError(f"job field {key!r} must be a sha256 (64 lower-case hex digits)")
    return v


def _profile(raw: Any) -> ProfileSpec:
    if not isinstance(raw, dict) or set(raw) - {"preset", "cores", "threads"}:
        raise ModelpressError("each job profile is {preset, cores, threads} (each may be null)")
    preset, cores, threads = raw.get("preset"), raw.get("cores"), raw.get("threads")
    return ProfileSpec(None if preset is None else _str(preset, "preset", 40),
                       None if cores is None else _str(cores, "cores", 200),
                       None if threads is None else _int(threads, "threads", 0, 1024))


def parse_job(raw: Any) -> JobSpec:
    """The JSON a client posted, checked field by field (one-line ModelpressError on the first problem)."""
    if not isinstance(raw, dict):
        raise ModelpressError("the job must be a JSON object")
    known = set(JobSpec.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ModelpressError(f"unknown job field(s) {sorted(unknown)[:5]}; known: {sorted(known)}")
    profiles = raw.get("profiles") or [{}]
    if not isinstance(profiles, list) or len(profiles) > MAX_PROFILES:
        raise ModelpressError(f"job field 'profiles' must be a list of at most {MAX_PROFILES}")
    duration = raw.get("duration_s")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not 0 < duration <= 3600):
        raise ModelpressError("job field 'duration_s' must be a number of seconds in (0, 3600]")
    if not isinstance(raw.get("op_breakdown", False), bool):
        raise ModelpressError("job field 'op_breakdown' must be true or false")
    label = raw.get("data_label")
    return JobSpec(
        model=_sha(raw.get("model"), "model"),
        inputs=None if raw.get("inputs") is None else _sha(raw["inputs"], "inputs"),
        data_label=None if label is None else _str(label, "data_label", 300),
        profiles=tuple(_profile(p) for p in profiles),
        runtime=_str(raw.get("runtime", "ort-cpu"), "runtime", 40),
        warmup=_int(raw.get("warmup", 10), "warmup", 0, 100_000),
        iterations=_int(raw.get("iterations", 200), "iterations", 1, 10**9),
        duration_s=None if duration is None else float(duration),
        batch_size=_int(raw.get("batch_size", 1), "batch_size", 1, 65_536),
        graph_optimization=_str(raw.get("graph_optimization", "all"), "graph_optimization", 20),
        op_breakdown=raw.get("op_breakdown", False),
        interleave=None if raw.get("interleave") is None else _sha(raw["interleave"], "interleave"),
        rounds=_int(raw.get("rounds", 1), "rounds", 1, 100),
    )


def _refuse_external_data(path) -> None:
    """The client inlines external weights before upload, so a stored model never points at other files; one
    that does (another model in the store, say) is refused rather than followed."""
    import onnx

    from modelpress.onnxutil import check_onnx_file, external_locations

    check_onnx_file(path)
    if external_locations(onnx.load(str(path), load_external_data=False)):
        raise ModelpressError("the model points at external data files; the agent only runs self-contained models "
                              "(`modelpress profile --target` inlines external weights before upload)")


def run_job(spec: JobSpec, store: BlobStore, facts: dict[str, Any]) -> dict[str, Any]:
    """Run the job with modelpress's own profiler (blocking; the server calls it in a worker thread).
    Returns {"result": {...}} or {"error": "one line"}; never raises."""
    from modelpress.agent.facts import thermal
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.data import load_npz

    try:
        cfg = ProfileConfig(warmup=spec.warmup, iterations=spec.iterations, duration_s=spec.duration_s,
                            batch_size=spec.batch_size, runner=spec.runtime, graph_optimization=spec.graph_optimization,
                            op_breakdown=spec.op_breakdown)
        cfg.check()
        profs = [resolve_profile(p.preset, p.cores, p.threads) for p in spec.profiles]
        data = load_npz(store.path("data", spec.inputs)) if spec.inputs else None
        before = thermal()
        models = [store.path("models", sha) for sha in (spec.model, spec.interleave) if sha]
        for m in models:
            _refuse_external_data(m)
        results = [profile_model(m, p, cfg, data, data_label=spec.data_label)
                   for _ in range(spec.rounds) for p in profs for m in models]  # in this order: the client relies on it
        after = thermal()
    except ModelpressError as e:  # the store's file names mean nothing to the client: name the model by its hash
        msg = str(e)
        for sha in filter(None, (spec.model, spec.interleave)):
            msg = msg.replace(str(store.path("models", sha)), f"model {sha[:12]}")
        return {"error": f"on the device: {first_line(ModelpressError(msg))}"}
    except Exception as e:  # a bug on the agent: the client gets one line, the agent's log the traceback
        traceback.print_exc(file=sys.stderr)
        return {"error": f"internal error on the agent: {type(e).__name__}: {first_line(e)}"}
    device = {**facts, "thermal": {"before": before, "after": after}}
    return {"result": {"results": [r.to_dict() for r in results], "device": device, "job": spec.to_json()}}

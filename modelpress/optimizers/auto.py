"""`-t auto`: the fastest faithful artifact for the machine it runs on.

Which INT8 format is fastest depends on the instruction set (VNNI makes signed 8-bit weights and static QDQ fast;
plain AVX2 saturates U8S8 and wants 7-bit weights) and on the model (a transformer wants its attention fused
before quantization). `auto` builds the candidates that can win here (`candidates_for`), lets the validation
floor drop the unfaithful ones (with every technique's repairs), times the rest under the edge profile in
pinned child processes, and writes the fastest, never something slower than FP32 with graph optimizations; the
record says why each other one lost. It is a study (modelpress.study) with a fixed candidate list, so the step
cache, failure recording and the report come with it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.errors import ModelpressError


@dataclass
class AutoResult:
    output: str
    pick: str  # the candidate written ("graph" when nothing beat FP32 with graph optimizations)
    isa: list[str]
    runtime: str
    profile: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # every candidate: speed, fidelity, size, why not
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _is_transformer(model: Path) -> bool:
    from modelpress.onnxutil import op_counts

    ops = op_counts(model)
    return bool({"Softmax", "LayerNormalization", "Erf"} & set(ops)) and ops.get("MatMul", 0) >= 4


def candidates_for(model: Path, flags: set[str], calib: bool, fast_fp16: bool) -> list[tuple[str, list]]:
    """(name, chain) of the artifacts that can win on a CPU with these ISA flags, for this model."""
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    transformer = _is_transformer(model)
    fuse = [("graph", {"tool": "transformers", "model_type": "bert"})] if transformer else []
    out: list[tuple[str, list]] = [("graph", [("graph", {"level": "all"})])]
    # dynamic INT8: signed 8-bit weights are the fast path with VNNI; without it, 7-bit weights avoid U8S8
    # saturation. Per-channel keeps transformers faithful at the same speed.
    dyn = {"weight_type": "int8", "reduce_range": not vnni}
    out.append(("dynamic-int8-pc", [*fuse, ("dynamic-int8", {**dyn, "per_channel": True})]))
    out.append(("dynamic-int8", [*fuse, ("dynamic-int8", {**dyn, "per_channel": False})]))
    if not transformer:  # dynamic ConvInteger is slower than FP32 on every CPU measured: MatMul/Gemm only
        out[-2:] = [("dynamic-int8-pc", [("dynamic-int8", {**dyn, "per_channel": True, "op_types": ["MatMul", "Gemm"]})])]
    if calib:
        out.append(("static-int8", [*fuse, ("static-int8", {})]))
        if vnni:
            out.append(("static-int8-s8", [*fuse, ("static-int8", {"activation_type": "int8"})]))
    if fast_fp16:
        out.append(("fp16", [("fp16", {})]))
    return out


def auto_optimize(model: str | Path, output: str | Path, calib: Dataset | None = None, *, data: Dataset | None = None,
                  min_fidelity: Any = None, profile: str = "edge-1core", runtime: str = "ort-cpu",
                  iterations: int = 100, show_progress: bool = False) -> AutoResult:
    """Build, validate and time the candidates for this machine; write the fastest faithful one to `output`."""
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig
    from modelpress.io import place_model
    from modelpress.machine import describe
    from modelpress.onnxutil import check_onnx_file
    from modelpress.runtimes import get_runner
    from modelpress.study import Candidate, compare
    from modelpress.validate import DEFAULT_MIN_FIDELITY

    model = check_onnx_file(model)
    output = Path(output)
    if output.resolve() == model.resolve():
        raise ModelpressError("output must differ from the input model")
    evald = data if data is not None else calib
    if evald is None:
        raise ModelpressError("auto needs samples to judge fidelity on: give --calib (and/or --data) FILE.npz")
    prof = resolve_profile(profile)
    runner = get_runner(runtime)
    flags = set(describe()["cpu_flags"])
    cands = candidates_for(model, flags, calib is not None, runner.fast_fp16)
    with tempfile.TemporaryDirectory(prefix="modelpress-auto-") as tmp:
        rep = compare(model, tmp, [Candidate(n, chain=c) for n, c in cands], [prof], eval_data=evald.take(64),
                      calib_data=calib, profile_config=ProfileConfig(iterations=iterations, warmup=10, runner=runtime),
                      metric="agreement" if evald.labels is None else "top1", show_progress=show_progress,
                      min_fidelity=DEFAULT_MIN_FIDELITY if min_fidelity is None else min_fidelity,
                      selection={"relative": False}, max_accuracy_drop=1.0, title="modelpress auto")
        rows, fp32 = [], rep["variants"][0]["latency"][prof.name]["p50_ms"]
        graph_p50 = next((v["latency"][prof.name]["p50_ms"] for v in rep["variants"] if v["name"] == "graph"), fp32)
        for v in rep["variants"][1:]:
            p50 = v["latency"][prof.name]["p50_ms"]
            rows.append({"name": v["name"], "chain": v["technique"], "speed_vs_fp32": round(fp32 / p50, 3),
                         "p50_ms": p50, "size_ratio": v["size_ratio"],
                         "fidelity": (v.get("validation") or {}).get("worst"), "why_not": None})
        chains = dict(cands)
        for name, why in rep["failed"].items():
            rows.append({"name": name, "chain": " + ".join(t for t, _ in chains[name]) if name in chains else None,
                         "speed_vs_fp32": None, "p50_ms": None, "size_ratio": None, "fidelity": None,
                         "why_not": f"refused: {why[:300]}"})
        timed = [r for r in rows if r["p50_ms"] is not None]
        best = min(timed, key=lambda r: r["p50_ms"]) if timed else None
        note = ""
        if best is None or best["p50_ms"] >= min(graph_p50, fp32):
            best = next((r for r in timed if r["name"] == "graph"), None)
            note = "no quantized candidate beat FP32 with graph optimizations on this machine; wrote the graph-" \
                   "optimized FP32 model"
            if best is None:
                raise ModelpressError("auto: no candidate could be built and timed: " +
                                      "; ".join(f"{r['name']}: {r['why_not']}" for r in rows)[:800])
        floor = min(graph_p50, fp32)
        for r in timed:
            if r is best:
                continue
            if note:  # the fallback: nothing quantized beat FP32, so a faster-than-graph row still lost to FP32
                r["why_not"] = f"not faster than FP32: {r['p50_ms']:.4g} ms vs {floor:.4g} ms p50 on {prof.name}"
            else:
                r["why_not"] = f"slower: {r['p50_ms']:.4g} ms vs {best['p50_ms']:.4g} ms p50 on {prof.name}"
        place_model(Path(tmp) / f"{best['name']}.onnx", output, move=True)  # with its external data, if any
    return AutoResult(str(output), best["name"], sorted(flags), runtime, prof.name,
                      sorted(rows, key=lambda r: (r["p50_ms"] is None, r["p50_ms"] or 0)), note)

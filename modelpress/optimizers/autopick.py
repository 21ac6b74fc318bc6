"""What `auto` builds on this CPU and which of it wins: plain functions of the model, the ISA flags and a study's
report, shared by `optimize -t auto` (modelpress.optimizers.auto) and a study's `auto` candidate
(modelpress.study.auto). Nothing here runs a study, so both can import it without a cycle.

- `candidates_for`: the (name, chain) pairs that can win on a CPU with these ISA flags, for this model;
- `pick_fastest_faithful`: auto's one selection rule, read off a study report: the fastest candidate that
  completed (so passed the validation floor), never one slower than FP32 with graph optimizations, and why
  each other one lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUTO = "auto"  # the technique name a recipe or a Candidate writes to ask for auto's candidates
# every name candidates_for can give (a study's output guard names the files auto may write before expanding it)
NAMES = ("graph", "dynamic-int8-pc", "dynamic-int8", "static-int8", "static-int8-s8", "fp16")
GRAPH = "graph"  # the FP32 graph-optimized candidate: auto's floor and its fallback
Chain = list[tuple[str, dict[str, Any]]]


def isa_flags() -> set[str]:
    """The ISA flags of this machine's CPU that candidates_for reads (modelpress.machine)."""
    from modelpress.machine import describe

    return set(describe()["cpu_flags"])


def _is_transformer(model: Path) -> bool:
    from modelpress.onnxutil import op_counts

    ops = op_counts(model)
    return bool({"Softmax", "LayerNormalization", "Erf"} & set(ops)) and ops.get("MatMul", 0) >= 4


def candidates_for(model: Path, flags: set[str], calib: bool, fast_fp16: bool) -> list[tuple[str, Chain]]:
    """(name, chain) of the artifacts that can win on a CPU with these ISA flags, for this model."""
    from modelpress.machine import VNNI_FLAGS

    vnni = bool(VNNI_FLAGS & flags)
    transformer = _is_transformer(model)
    fuse: Chain = [("graph", {"tool": "transformers", "model_type": "bert"})] if transformer else []
    out: list[tuple[str, Chain]] = [(GRAPH, [("graph", {"level": "all"})])]
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


@dataclass
class AutoPick:
    """auto's verdict on a study report: the candidate it picks (None when none could be built and timed), one row
    per candidate (p50, speed-up over FP32, size ratio, worst fidelity, and `why_not` for every one not picked)."""

    pick: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def pick_fastest_faithful(report: dict[str, Any], chains: dict[str, Chain], profile: str,
                          graph: str = GRAPH) -> AutoPick:
    """auto's selection rule, on a study report whose reference (variants[0]) is FP32. Only the variants named in
    `chains` compete. A candidate that completed passed the study's validation floor (faithful); one that failed is
    refused with its reason. The fastest p50 on `profile` wins, unless it is no faster than FP32 and than `graph`
    (FP32 with graph optimizations): then `graph` is the pick and the note says so. Never asks for an accuracy
    budget: fidelity is the floor's business."""
    variants = {v["name"]: v for v in report["variants"]}
    fp32 = report["variants"][0]["latency"][profile]["p50_ms"]
    failed = report.get("failed") or {}
    rows: list[dict[str, Any]] = []
    for name, chain in chains.items():
        v = variants.get(name)
        row = {"name": name, "chain": " + ".join(t for t, _ in chain), "speed_vs_fp32": None, "p50_ms": None,
               "size_ratio": None, "fidelity": None, "why_not": None}
        if v is not None and profile in v["latency"]:
            p50 = v["latency"][profile]["p50_ms"]
            row.update(speed_vs_fp32=round(fp32 / p50, 3), p50_ms=p50, size_ratio=v["size_ratio"],
                       fidelity=(v.get("validation") or {}).get("worst"))
        else:
            row["why_not"] = f"refused: {(failed.get(name) or f'not profiled on {profile}')[:300]}"
        rows.append(row)
    timed = [r for r in rows if r["p50_ms"] is not None]
    graph_row = next((r for r in timed if r["name"] == graph), None)
    floor = min(fp32, graph_row["p50_ms"]) if graph_row else fp32
    best = min(timed, key=lambda r: r["p50_ms"]) if timed else None
    note = ""
    if best is None or best["p50_ms"] >= floor:
        best = graph_row
        note = ("no quantized candidate beat FP32 with graph optimizations on this machine: the pick is the graph-"
                "optimized FP32 model" if best else "no candidate beat FP32 and the graph-optimized FP32 one could not be "
                "built and timed, so there is nothing to pick")
    for r in timed:
        if r is best:
            continue
        if note:  # the fallback: nothing quantized beat FP32, so a faster-than-graph row still lost to FP32
            r["why_not"] = f"not faster than FP32: {r['p50_ms']:.4g} ms vs {floor:.4g} ms p50 on {profile}"
        else:
            r["why_not"] = f"slower: {r['p50_ms']:.4g} ms vs {best['p50_ms']:.4g} ms p50 on {profile}"
    rows.sort(key=lambda r: (r["p50_ms"] is None, r["p50_ms"] or 0))
    return AutoPick(None if best is None else best["name"], rows, note)

"""The comparison report: one JSON document (schema in docs/report-schema.md), rendered as a
terminal table and as Markdown. The JSON is the source; renderers only read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpress import __version__
from modelpress.machine import describe, has_vnni
from modelpress.ops import has
from modelpress.errors import ModelpressError

SCHEMA = "modelpress.report"
SCHEMA_VERSION = 1


@dataclass
class Variant:
    """What a study measured for one artifact; `latency` maps profile name -> ProfileResult.to_dict()."""

    name: str
    technique: str | None
    path: str
    size_bytes: int
    config: dict[str, Any] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    top1: float | None = None
    fidelity: dict[str, float] | None = None
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    params: int | None = None  # elements of all initializers in the ONNX graph
    flops: int | None = None  # 2 x MACs of Conv/MatMul/Gemm at batch 1, from the graph
    sha256: str | None = None  # of the model file, so a bundle finds its row
    validation: dict[str, Any] | None = None  # the choke point's record (modelpress.validate)
    task: dict[str, Any] | None = None  # the study's task evaluator (modelpress.evaluators): metrics, primary, change


def versions() -> dict[str, str]:
    """modelpress, onnx, every installed runtime (modelpress.runtimes) and torch where installed."""
    import onnx

    from modelpress.runtimes import runtime_versions

    v = {"modelpress": __version__, "onnx": onnx.__version__, **runtime_versions()}
    try:
        import torch

        v["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency, but reports need not require it
        pass
    return v


def build_report(
    variants: list[Variant], profiles: list[dict[str, Any]], *, title: str, task: dict[str, Any],
    profile_config: dict[str, Any], max_accuracy_drop: float = 0.01, objective_profile: str | None = None,
    latency_margin: float = 0.05, selection: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report; variants[0] is the reference every ratio is taken against.

    `selection`: {"objective": "latency" | "size" | "weighted", "profile": NAME, "relative": bool,
    "weights": {"latency": w, "size": w, "accuracy": w}}; default min latency on the first profile."""
    ref = variants[0]
    rows = []
    for v in variants:
        lat = {}
        for pname, res in v.latency.items():
            ref_p50 = ref.latency[pname]["stats"]["p50_ms"]
            lat[pname] = {**res["stats"], "speedup_p50": round(ref_p50 / res["stats"]["p50_ms"], 3),
                          "cold_start_ms": res["cold_start_ms"], "peak_rss_mb": res["peak_rss_mb"],
                          "model_rss_mb": res["model_rss_mb"], "op_breakdown": res.get("op_breakdown"),
                          "samples_ms": res.get("samples_ms", [])}
        acc = None if v.top1 is None else {"top1": v.top1, "drop": round((ref.top1 or 0) - v.top1, 6)}
        rows.append({
            "name": v.name, "technique": v.technique, "config": v.config, "path": v.path,
            "size_bytes": v.size_bytes, "size_ratio": round(v.size_bytes / ref.size_bytes, 4), "ops": v.ops,
            "params": v.params, "flops": v.flops, "sha256": v.sha256,
            "accuracy": acc, "fidelity": v.fidelity, "validation": v.validation, "latency": lat, "task": v.task,
            "notes": list(v.notes),
            "findings": _findings(v.name, lat, ref.latency, ref.name, latency_margin),
        })
    sel = dict(selection or {})
    objective_profile = sel.get("profile") or objective_profile or profiles[0]["name"]
    metric = task.get("metric", "top1")
    budget = max_accuracy_drop
    if sel.get("relative") and metric == "top1" and ref.top1:
        budget = max_accuracy_drop * ref.top1  # "at most 1% of the reference's accuracy"
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "title": title, "versions": versions(),
        "machine": describe(), "task": task, "profiles": profiles, "profile_config": profile_config,
        "reference": ref.name, "variants": rows,
        "selection": select(rows, budget, objective_profile, latency_margin, metric, sel.get("objective", "latency"),
                            sel.get("weights"), sel.get("max_task_drop", max_accuracy_drop)),
        "pareto": {p["name"]: pareto_front(rows, p["name"], metric) for p in profiles},
    }


def pareto_front(rows: list[dict], profile: str, metric: str = "top1") -> list[str]:
    """Variants no other variant beats on size, p50 latency on `profile` and accuracy loss all at once."""
    pts = []
    for r in rows:
        if profile in r["latency"]:
            pts.append((r["name"], r["size_bytes"], r["latency"][profile]["p50_ms"], _drop(r, metric) or 0.0))
    front = []
    for n, s, lat, d in pts:
        dominated = any(s2 <= s and l2 <= lat and d2 <= d and (s2, l2, d2) != (s, lat, d) for _, s2, l2, d2 in pts)
        if not dominated:
            front.append(n)
    return front


def _findings(name: str, lat: dict, ref_lat: dict, ref_name: str, margin: float) -> list[str]:
    """Say when a variant is not faster than the reference, and why, from ONNX Runtime's per-op profile."""
    out = []
    for pname, s in lat.items():
        sp = s["speedup_p50"]
        if sp >= 1.0 or name == ref_name:
            continue
        if sp >= 1 - margin:
            out.append(f"no faster than {ref_name} on {pname} ({sp:.2f}x, within the {margin:.0%} noise margin)")
            continue
        ref_p50 = ref_lat[pname]["stats"]["p50_ms"]
        line = f"{1 / sp:.2f}x slower than {ref_name} on {pname} (p50 {s['p50_ms']:.3g} vs {ref_p50:.3g} ms)"
        ops = s.get("op_breakdown") or {}
        if ops:
            top, share = next(iter(ops.items()))
            line += f": {top} takes {share:.0%} of its kernel time (≈{share * s['p50_ms']:.3g} ms per inference)"
            if has(top, "integer_kernel") and not has_vnni():
                line += "; this CPU has no VNNI (avx512_vnni/avx_vnni), so integer kernels run on plain AVX2"
        out.append(line)
    return out


def select(rows: list[dict], max_accuracy_drop: float, profile: str, margin: float = 0.05,
           metric: str = "top1", objective: str = "latency", weights: dict[str, float] | None = None,
           max_task_drop: float | None = None) -> dict[str, Any]:
    """Within the accuracy budget: fastest p50 on `profile` (objective latency; variants within `margin` of
    the fastest count as tied, that is run-to-run noise, and the smallest of them wins), or smallest
    (objective size), or lowest weighted score (latency and size as ratios to the reference, accuracy loss
    in points). With task metrics (an evaluator's), a variant whose headline metric is worse than the reference's
    by more than `max_task_drop` of it is out too. Explained in one line."""
    if objective not in ("latency", "size", "weighted"):
        raise ModelpressError(f"selection objective must be latency, size or weighted, got {objective!r}")
    ref = rows[0]
    rejected: dict[str, str] = {}
    ok = []
    for r in rows:
        drop = _drop(r, metric)
        if drop is not None and drop > max_accuracy_drop + 1e-12:
            rejected[r["name"]] = (f"cosine {1 - drop:.4f} is below {1 - max_accuracy_drop:.4f}" if metric == "cosine" else
                                   f"accuracy drop {drop * 100:.2f} pt exceeds the budget of {max_accuracy_drop * 100:.2f} pt")
        elif (task_why := _task_loss(r, ref, max_task_drop)) is not None:
            rejected[r["name"]] = task_why
        elif profile not in r["latency"]:
            rejected[r["name"]] = f"not profiled on {profile}"
        else:
            ok.append(r)
    p50 = lambda r: r["latency"][profile]["p50_ms"]  # noqa: E731
    w = {"latency": 1.0, "size": 1.0, "accuracy": 1.0, **(weights or {})}
    score = lambda r: (w["latency"] * p50(r) / p50(ref) + w["size"] * r["size_ratio"]  # noqa: E731
                       + w["accuracy"] * max(0.0, (_drop(r, metric) or 0.0) * 100))
    tied: list[dict] = []
    if not ok:
        pick = ref
    elif objective == "size":
        pick = min(ok, key=lambda r: (r["size_bytes"], p50(r)))
    elif objective == "weighted":
        pick = min(ok, key=score)
    else:
        fastest = min(p50(r) for r in ok)
        tied = [r for r in ok if p50(r) <= fastest * (1 + margin)]
        pick = min(tied, key=lambda r: (r["size_bytes"], p50(r)))
    for r in ok:
        if r is pick:
            continue
        sp = r["latency"][profile]["speedup_p50"]
        if r is not ref and sp < 1 - margin:
            rejected[r["name"]] = f"{1 / sp:.2f}x slower than {ref['name']} on {profile}"
        elif objective == "size":
            rejected[r["name"]] = f"larger than {pick['name']} ({r['size_bytes']:,} vs {pick['size_bytes']:,} B)"
        elif objective == "weighted":
            rejected[r["name"]] = f"weighted score {score(r):.3f} vs {score(pick):.3f} for {pick['name']}"
        elif r in tied:
            rejected[r["name"]] = f"ties on latency with {pick['name']} on {profile} but is larger"
        else:
            rejected[r["name"]] = f"slower than {pick['name']} on {profile} (p50 {p50(r):.3g} vs {p50(pick):.3g} ms)"
    s = pick["latency"].get(profile, {})
    if pick is ref:
        reason = f"{ref['name']}: no variant within the accuracy budget is faster on {profile} or as fast and smaller"
    else:
        drop = _drop(pick, metric)
        acc = "" if drop is None else (f", cosine {1 - drop:.4f}" if metric == "cosine" else f", top-1 {-drop * 100:+.2f} pt")
        sp = s["speedup_p50"]
        speed = (f"{sp:.2f}x faster than {ref['name']}" if sp >= 1 + margin else
                 f"as fast as {ref['name']} ({sp:.2f}x, within the {margin:.0%} noise margin)" if sp >= 1 - margin else
                 f"{1 / sp:.2f}x SLOWER than {ref['name']}")
        reason = f"{pick['name']}: {speed} on {profile} (p50 {s['p50_ms']:.3g} ms), {1 / pick['size_ratio']:.1f}x smaller{acc}"
    goal = {"latency": f"min p50 latency on {profile}, ties within {margin:.0%} broken by size",
            "size": "min size on disk",
            "weighted": f"min weighted score on {profile} ({w['latency']:g} x latency ratio + {w['size']:g} x size "
                        f"ratio + {w['accuracy']:g} x accuracy loss in points)"}[objective]
    return {"objective": goal,
            "max_accuracy_drop": max_accuracy_drop, "latency_margin": margin,
            **({"max_task_drop": max_task_drop} if ref.get("task") and max_task_drop is not None else {}),
            "pick": pick["name"], "reason": reason, "rejected": rejected}


def _task_loss(row: dict, ref: dict, budget: float | None) -> str | None:
    """Why `row` is out on its task metric (worse than the reference's by more than `budget` of it), or None."""
    task, ref_task = row.get("task"), ref.get("task")
    if budget is None or not task or not ref_task or row is ref or task.get("change") is None:
        return None
    key = task["primary"]
    base = ref_task.get(key)
    if not base:
        return None
    loss = -task["change"] / abs(base)  # change is signed so that positive = better, for every metric
    if loss <= budget + 1e-12:
        return None
    return (f"task metric {key} {task.get(key):.4g} vs {base:.4g} for {ref['name']}: {loss:.1%} worse, over the "
            f"budget of {budget:.1%} (selection.max_task_drop)")


def _drop(row: dict, metric: str = "top1") -> float | None:
    """The quality loss the budget applies to: top-1 drop, 1 - top-1 agreement, or 1 - mean cosine."""
    if metric == "cosine":
        return None if row["fidelity"] is None else 1.0 - row["fidelity"]["cosine_mean"]
    if row["accuracy"] is not None:
        return row["accuracy"]["drop"]
    if row["fidelity"] is not None:
        return 1.0 - row["fidelity"]["top1_agreement"]
    return None


# --------------------------------------------------------------------------- renderers


def table_cells(report: dict) -> tuple[list[str], list[list[str]]]:
    pnames = [p["name"] for p in report["profiles"]]
    cos = report["task"].get("metric") == "cosine"
    head = ["variant", "technique", "size", "× fp32", "params", "MFLOPs", "top-1", "Δ top-1 pt",
            "cosine" if cos else "agree"]
    task = next((r["task"] for r in report["variants"] if r.get("task")), None)
    if task:
        head += [f"{task['evaluator']}: {task['primary']}", "Δ (+ better)"]
    for p in pnames:
        head += [f"{p} p50 ms", f"{p} p90 ms", f"{p} speedup"]
    body = []
    for r in report["variants"]:
        row = [r["name"], r["technique"] or "-", _mb(r["size_bytes"]), f"{r['size_ratio']:.2f}",
               "-" if r.get("params") is None else f"{r['params']:,}",
               "-" if r.get("flops") is None else f"{r['flops'] / 1e6:,.1f}",
               *_accuracy_cells(r, report["reference"]), _agree_cell(r, report["task"].get("metric", "top1"))]
        if task:
            t = r.get("task") or {}
            v, d = t.get(t.get("primary", "")), t.get("change")
            row += ["-" if v is None else f"{v:.4g}", "ref" if r["name"] == report["reference"] else
                    "-" if d is None else f"{d:+.4g}"]
        for p in pnames:
            s = r["latency"].get(p)
            row += ["-", "-", "-"] if s is None else [f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['speedup_p50']:.2f}x"]
        body.append(row)
    return head, body


def _accuracy_cells(row: dict, reference: str) -> tuple[str, str]:
    """(top-1, change vs reference in points); the reference's own change reads 'ref'."""
    acc = row["accuracy"]
    if acc is None:
        return "-", "-"
    return f"{acc['top1'] * 100:.2f}%", "ref" if row["name"] == reference else f"{-acc['drop'] * 100:+.2f}"


def _agree_cell(row: dict, metric: str = "top1") -> str:
    if row["fidelity"] is None:
        return "-"
    if metric == "cosine":
        return f"{row['fidelity']['cosine_mean']:.4f}"
    return f"{row['fidelity']['top1_agreement'] * 100:.1f}%"


def auto_line(auto: dict) -> str:
    """The report's `auto` section in one line: what `optimize -t auto` would write from this study's candidates."""
    isa = ", ".join(auto["isa"]) or "baseline"
    line = (f"{auto['pick'] or 'nothing'} (what `optimize -t auto` writes: the fastest of its candidates that passed "
            f"the validation floor, on {auto['profile']}, never slower than FP32 with graph optimizations; "
            f"planned for ISA {isa})")
    return line + (f"; {auto['note']}" if auto["note"] else "")


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def render_markdown(report: dict) -> str:
    head, body = table_cells(report)
    m = report["machine"]
    lines = [f"# {report['title']}", "",
             f"Machine: {m['cpu']} ({m['usable_cores']} usable cores; flags: {', '.join(m['cpu_flags']) or 'none'}), "
             f"onnxruntime {m['onnxruntime']}. Latency: batch {report['profile_config']['batch_size']}, "
             f"{report['profile_config']['iterations']} iterations after {report['profile_config']['warmup']} warm-up.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", "Profiles:"] + [f"- `{p['name']}`: {p['description']}" for p in report["profiles"]]
    sel = report["selection"]
    lines += ["", f"**Pick ({sel['objective']}, max accuracy drop {sel['max_accuracy_drop'] * 100:.2f} pt):** {sel['reason']}"]
    lines += [f"- {k} not picked: {v}" for k, v in sel["rejected"].items()]
    if report.get("auto"):
        lines += ["", f"**auto would pick:** {auto_line(report['auto'])}"]
        lines += [f"- {r['name']}: {r['why_not']}" for r in report["auto"]["rows"] if r["why_not"]]
    if report.get("pareto"):
        lines += [""] + [f"Pareto front on {p} (size × latency × accuracy): {', '.join(ns)}"
                         for p, ns in report["pareto"].items()]
    findings = [(r["name"], f) for r in report["variants"] for f in r["findings"]]
    if findings:
        lines += ["", "Findings:"] + [f"- {n}: {f}" for n, f in findings]
    if report.get("failed"):
        lines += ["", "Failed (the study went on without them):"] + [f"- {n}: {e}" for n, e in report["failed"].items()]
    return "\n".join(lines) + "\n"


def render_rich(report: dict, wide: bool = False):
    """The terminal rendering: the table, the pick, the findings. Compact (p50 only) fits 80 columns for
    two profiles; `wide` adds p90 per profile and the size in bytes."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    pnames = [p["name"] for p in report["profiles"]]
    # No title inside: rich widens a table to its title. Two profiles fit 80 columns.
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True, padding=(0, 1), pad_edge=False)
    t.add_column("variant", no_wrap=True)
    metric = report["task"].get("metric", "top1")
    heads = ("size", "MFLOPs", "top-1") if wide else ("size", "top-1")
    for h in (*heads, "cosine" if metric == "cosine" else "agree"):
        t.add_column(h, justify="right", no_wrap=True)
    for p in pnames:
        t.add_column(f"{p}\n{'p50 / p90 ms' if wide else 'p50 ms'}  speed", justify="right", no_wrap=True)
    pick = report["selection"]["pick"]
    for r in report["variants"]:
        top1, change = _accuracy_cells(r, report["reference"])
        size = f"{r['size_bytes']:,} B" if wide else _mb(r["size_bytes"])
        flops = [] if not wide else ["-" if r.get("flops") is None else f"{r['flops'] / 1e6:,.1f}"]
        cells = [r["name"], f"{size} {r['size_ratio']:.2f}x", *flops,
                 top1 if change in ("-", "ref") else f"{top1} {change}", _agree_cell(r, metric)]
        for p in pnames:
            s = r["latency"].get(p)
            p90 = f" / {s['p90_ms']:.3f}" if wide and s else ""
            cells.append("-" if s is None else f"{s['p50_ms']:.3f}{p90}  {s['speedup_p50']:.2f}x")
        t.add_row(*cells, style="bold green" if r["name"] == pick else None)
    profiles = "; ".join(f"{p['name']} = {p['description']}" for p in report["profiles"])
    parts = [Text(report["title"], style="bold"), t, Text("Profiles: " + profiles, style="dim"),
             Text("size: on disk and × fp32; top-1: accuracy and change in points; agree: top-1 agreement with fp32; "
                  "speed: p50 speed-up over fp32 (above 1 is faster)", style="dim")]
    sel = report["selection"]
    parts.append(Text.assemble(("Pick: ", "bold green"), sel["reason"]))
    for name, why in sel["rejected"].items():
        parts.append(Text(f"  {name} not picked: {why}"))
    if report.get("auto"):
        parts.append(Text.assemble(("auto would pick: ", "bold cyan"), auto_line(report["auto"])))
    for r in report["variants"]:
        for f in r["findings"]:
            parts.append(Text.assemble(("Finding: ", "bold yellow"), f"{r['name']} is {f}"))
    for name, err in report.get("failed", {}).items():
        parts.append(Text.assemble(("Failed: ", "bold red"), f"{name}: {err}"))
    return Group(*parts)

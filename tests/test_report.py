"""Selection and rendering are pure functions of measured numbers: tested on fixed numbers."""

from __future__ import annotations

from modelpress.benchmarks.report import Variant, build_report, render_markdown, render_rich, select


def _row(name, p50, size, top1_drop=0.0, ops=None):
    return {"name": name, "size_bytes": size, "size_ratio": size / 1000,
            "accuracy": {"top1": 0.9 - top1_drop, "drop": top1_drop}, "fidelity": None,
            "latency": {"edge": {"p50_ms": p50, "speedup_p50": 1.0 / p50}}, "findings": []}


def test_pick_fastest_within_budget():
    rows = [_row("fp32", 1.0, 1000), _row("fast-but-bad", 0.4, 250, 0.05), _row("int8", 0.6, 260, 0.002)]
    sel = select(rows, 0.01, "edge")
    assert sel["pick"] == "int8"
    assert "1.67x faster than fp32" in sel["reason"] and "3.8x smaller" in sel["reason"]
    assert "exceeds the budget" in sel["rejected"]["fast-but-bad"]


def test_a_task_metric_loss_keeps_a_faithful_variant_out():
    """A detector's raw outputs can stay cosine-close while its boxes move: with an evaluator, the headline task
    metric has its own budget, a fraction of the reference's value, whichever way the metric points."""
    def task(v, change, primary="map50_95"):
        return {"evaluator": "detection", "primary": primary, primary: v, "change": change}

    rows = [_row("fp32", 1.0, 1000), _row("int8", 0.5, 250), _row("fp16", 0.9, 500)]
    rows[0]["task"], rows[1]["task"], rows[2]["task"] = task(0.40, 0.0), task(0.37, -0.03), task(0.399, -0.001)
    sel = select(rows, 0.01, "edge", max_task_drop=0.02)
    assert sel["pick"] == "fp16" and "7.5% worse" in sel["rejected"]["int8"] and sel["max_task_drop"] == 0.02
    assert select(rows, 0.01, "edge", max_task_drop=0.1)["pick"] == "int8"
    # lower is better (perplexity): change is signed positive = better, so a rise is a loss
    rows[0]["task"], rows[1]["task"] = task(10.0, 0.0, "perplexity"), task(10.5, -0.5, "perplexity")
    rows[2]["task"] = task(10.0, 0.0, "perplexity")
    assert "5.0% worse" in select(rows, 0.01, "edge", max_task_drop=0.02)["rejected"]["int8"]


def test_ties_within_margin_go_to_the_smaller_and_say_so():
    rows = [_row("fp32", 1.0, 1000), _row("int8", 1.02, 260)]
    sel = select(rows, 0.01, "edge")
    assert sel["pick"] == "int8"
    assert "as fast as fp32" in sel["reason"] and "noise margin" in sel["reason"]
    assert "ties on latency" in sel["rejected"]["fp32"]


def test_slower_variant_is_never_picked_silently():
    rows = [_row("fp32", 1.0, 1000), _row("dyn", 2.5, 250)]
    sel = select(rows, 0.01, "edge")
    assert sel["pick"] == "fp32" and "no variant" in sel["reason"]
    assert sel["rejected"]["dyn"] == "2.50x slower than fp32 on edge"


def _lat(p50, ops=None):
    return {"stats": {"p50_ms": p50, "p90_ms": p50 * 1.1}, "cold_start_ms": 10.0, "peak_rss_mb": 50.0,
            "model_rss_mb": 5.0, "op_breakdown": ops, "samples_ms": [p50]}


def test_build_report_findings_and_renderers():
    variants = [
        Variant("fp32", None, "fp32.onnx", 4000, top1=0.97, latency={"edge-1core": _lat(1.0, {"Conv": 0.9})}),
        Variant("dynamic-int8", "dynamic-int8", "d.onnx", 1000, top1=0.969,
                fidelity={"top1_agreement": 0.99, "cosine_mean": 0.999, "cosine_min": 0.99, "max_abs_err": 0.1},
                latency={"edge-1core": _lat(2.5, {"ConvInteger": 0.8, "Mul": 0.2})}),
        Variant("static-int8", "static-int8", "s.onnx", 1000, top1=0.97, latency={"edge-1core": _lat(1.02)}),
    ]
    profiles = [{"name": "edge-1core", "cores": [0], "intra_op_threads": 1, "inter_op_threads": 1, "description": "d"}]
    rep = build_report(variants, profiles, title="t", task={}, profile_config={"batch_size": 1, "iterations": 1, "warmup": 0})
    assert rep["schema"] == "modelpress.report" and rep["schema_version"] == 1
    dyn = rep["variants"][1]
    assert dyn["size_ratio"] == 0.25 and dyn["accuracy"]["drop"] == 0.001
    assert dyn["latency"]["edge-1core"]["speedup_p50"] == 0.4
    assert "2.50x slower than fp32 on edge-1core" in dyn["findings"][0] and "ConvInteger takes 80%" in dyn["findings"][0]
    assert "within the 5% noise margin" in rep["variants"][2]["findings"][0]
    assert rep["selection"]["pick"] == "static-int8"
    md = render_markdown(rep)
    assert "| dynamic-int8 | dynamic-int8 | 1.0 kB | 0.25 | - | - | 96.90% | -0.10 | 99.0% |" in md and "**Pick" in md

    from rich.console import Console

    con = Console(width=80, record=True)
    con.print(render_rich(rep))
    text = con.export_text()
    assert "Pick: static-int8" in text and "Finding: dynamic-int8 is 2.50x slower" in text
    assert "…" not in text  # the compact table fits 80 columns: nothing truncated
    wide = Console(width=140, record=True)
    wide.print(render_rich(rep, wide=True))
    wide_text = wide.export_text()
    assert "2.500 / 2.750  0.40x" in wide_text and "1,000 B" in wide_text


def test_cosine_metric_and_failed_candidates():
    variants = [
        Variant("fp32", None, "fp32.onnx", 4000, latency={"edge-1core": _lat(10.0)}),
        Variant("int8", "dynamic-int8", "q.onnx", 1000, latency={"edge-1core": _lat(5.0)},
                fidelity={"top1_agreement": 0.5, "cosine_mean": 0.995, "cosine_min": 0.98, "max_abs_err": 0.1}),
        Variant("lossy", "int4-weight", "w.onnx", 600, latency={"edge-1core": _lat(4.0)},
                fidelity={"top1_agreement": 0.5, "cosine_mean": 0.95, "cosine_min": 0.9, "max_abs_err": 0.3}),
    ]
    profiles = [{"name": "edge-1core", "cores": [0], "intra_op_threads": 1, "inter_op_threads": 1, "description": "d"}]
    rep = build_report(variants, profiles, title="t", task={"metric": "cosine"},
                       profile_config={"batch_size": 1, "iterations": 1, "warmup": 0})
    assert rep["selection"]["pick"] == "int8" and "cosine 0.9950" in rep["selection"]["reason"]
    assert rep["selection"]["rejected"]["lossy"] == "cosine 0.9500 is below 0.9900"
    rep["failed"] = {"inc-dynamic": "inc-dynamic: the model has no op this technique quantizes"}
    md = render_markdown(rep)
    assert "| cosine |" in md and "| 0.9950 |" in md and "Failed (the study went on without them):" in md

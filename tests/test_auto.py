"""`-t auto`: the candidates follow the CPU's ISA and the model's kind; the pick is the fastest faithful one (never
slower than FP32 with graph optimizations) and every other candidate says why it lost. Timings are not asserted:
which candidate wins depends on the machine."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_clean_error, run_cli


def test_candidates_follow_the_isa_and_the_model(tiny_onnx):
    from modelpress.optimizers.auto import candidates_for

    vnni = dict(candidates_for(tiny_onnx, {"avx2", "avx512_vnni"}, calib=True, fast_fp16=False))
    avx2 = dict(candidates_for(tiny_onnx, {"avx2"}, calib=True, fast_fp16=False))
    assert "static-int8-s8" in vnni and "static-int8-s8" not in avx2  # signed activations pay off only with VNNI
    assert vnni["dynamic-int8-pc"][-1][1]["reduce_range"] is False and avx2["dynamic-int8-pc"][-1][1]["reduce_range"]
    # a CNN: dynamic INT8 only where it can be fast (MatMul/Gemm), never ConvInteger
    assert vnni["dynamic-int8-pc"][-1][1]["op_types"] == ["MatMul", "Gemm"]
    assert "graph" in vnni and "fp16" not in vnni
    assert "static-int8" not in dict(candidates_for(tiny_onnx, {"avx2"}, calib=False, fast_fp16=True))
    assert "fp16" in dict(candidates_for(tiny_onnx, {"avx2"}, calib=False, fast_fp16=True))


def test_auto_writes_the_fastest_faithful_candidate_and_says_why_the_others_lost(tmp_path, tiny_onnx, tiny_npz):
    out = tmp_path / "best.onnx"
    p = run_cli("optimize", str(tiny_onnx), "-t", "auto", "--calib", str(tiny_npz), "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert out.is_file() and res["pick"] in {r["name"] for r in res["rows"]}
    timed = [r for r in res["rows"] if r["p50_ms"] is not None]
    pick = next(r for r in timed if r["name"] == res["pick"])
    if res["note"]:  # nothing beat FP32 on this run: the graph-optimized FP32 model is written, never a slower one
        assert res["pick"] == "graph" and "FP32" in res["note"]
    else:  # the fastest of the faithful ones (an internal-consistency check on one run's numbers, not a speed target)
        assert all(r["p50_ms"] >= pick["p50_ms"] for r in timed)
    assert all(r["why_not"] for r in res["rows"] if r["name"] != res["pick"])  # every loser says why
    assert res["isa"] is not None and res["profile"] == "edge-1core"


def test_auto_bad_input_is_one_line(tmp_path, tiny_onnx, tiny_npz):
    p = run_cli("optimize", str(tiny_onnx), "-t", "auto", "-o", str(tmp_path / "x.onnx"))
    assert_clean_error(p, 2, "auto needs samples")
    p = run_cli("optimize", str(tiny_onnx), "-t", "auto", "--calib", str(tiny_npz), "--option", "per_channel=true",
                "-o", str(tmp_path / "x.onnx"))
    assert_clean_error(p, 2, "chooses every option itself")
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------- auto as a study candidate

AUTO_STUDY = """\
modelpress: 1
kind: study
model: fp32.onnx
data: {eval: data.npz, calib: data.npz}
candidates:
  - [dynamic-int8]
  - [auto]
profiles: [edge-1core]
profile: {iterations: 5, warmup: 1, op_breakdown: false}
output: out
"""


def _study(tmp_path, tiny_onnx, tiny_npz, text: str = AUTO_STUDY):
    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(text)
    return tmp_path / "r.yaml"


def test_auto_candidate_expands_into_auto_chains_for_the_isa(tiny_onnx):
    from modelpress.optimizers.auto import candidates_for
    from modelpress.study import Candidate
    from modelpress.study.auto import expand_auto

    given = [Candidate("dyn", "dynamic-int8"), Candidate("auto", "auto"), Candidate("s8", "static-int8")]
    for flags in ({"avx2"}, {"avx2", "avx512_vnni"}):
        cands, exp = expand_auto(given, tiny_onnx, calib=True, runtime="ort-cpu", flags=flags)
        want = candidates_for(tiny_onnx, flags, calib=True, fast_fp16=False)
        # in place of `auto`, in candidates_for's order, named auto/NAME, each with auto's own chain
        assert [c.name for c in cands] == ["dyn", *(f"auto/{n}" for n, _ in want), "s8"]
        assert {c.name: c.steps for c in cands[1:-1]} == {f"auto/{n}": chain for n, chain in want}
        assert exp.isa == sorted(flags) and exp.chains == {f"auto/{n}": chain for n, chain in want} and not exp.note
    # no calibration data: no static INT8 candidate, and the expansion says so
    cands, exp = expand_auto([Candidate("fast", "auto")], tiny_onnx, calib=False, runtime="ort-cpu", flags={"avx2"})
    assert all(c.name.startswith("fast/") and "static" not in c.name for c in cands) and "calibration" in exp.note
    assert expand_auto(given[:1], tiny_onnx, calib=True, runtime="ort-cpu") == (given[:1], None)


def test_auto_pick_rule_on_a_report():
    """pick_fastest_faithful on made-up numbers: its reasons, its fallback to the graph-optimized model, and
    nothing to pick when that one failed too."""
    from modelpress.optimizers.autopick import pick_fastest_faithful

    def report(**p50):
        rows = [{"name": n, "latency": {"p": {"p50_ms": ms}}, "size_ratio": 1.0, "validation": {"worst": 0.99}}
                for n, ms in p50.items() if ms is not None]
        return {"variants": rows, "failed": {n: "build: below the floor" for n, ms in p50.items() if ms is None}}

    chains = {n: [(n, {})] for n in ("graph", "dyn", "s8")}
    res = pick_fastest_faithful(report(fp32=2.0, graph=1.9, dyn=1.0, s8=None), chains, "p")
    assert res.pick == "dyn" and not res.note
    why = {r["name"]: r["why_not"] for r in res.rows}
    assert why["dyn"] is None and why["graph"].startswith("slower") and why["s8"].startswith("refused: build")
    assert [r["name"] for r in res.rows] == ["dyn", "graph", "s8"]  # timed by p50, then the refused
    res = pick_fastest_faithful(report(fp32=2.0, graph=1.9, dyn=1.95, s8=None), chains, "p")
    assert res.pick == "graph" and "FP32" in res.note
    assert res.rows[1]["why_not"].startswith("not faster than FP32")
    res = pick_fastest_faithful(report(fp32=2.0, graph=None, dyn=2.5, s8=None), chains, "p")
    assert res.pick is None and "nothing to pick" in res.note and all(r["why_not"] for r in res.rows)


def test_study_with_an_auto_candidate_reports_what_auto_would_pick(tmp_path, tiny_onnx, tiny_npz):
    from modelpress.optimizers.auto import candidates_for
    from modelpress.optimizers.autopick import pick_fastest_faithful

    p = run_cli("run", str(_study(tmp_path, tiny_onnx, tiny_npz)), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    auto = rep["auto"]
    assert auto["candidate"] == "auto" and auto["profile"] == "edge-1core" and auto["runtime"] == "ort-cpu"
    assert auto["isa"] == sorted(rep["machine"]["cpu_flags"])  # the flags the expansion planned for, recorded
    want = [f"auto/{n}" for n, _ in candidates_for(tiny_onnx, set(auto["isa"]), calib=True, fast_fp16=False)]
    assert list(auto["candidates"]) == want
    # ordinary candidates: each one a report row (after the user's own) or a recorded failure, judged by the
    # study's selection like any other
    names = [v["name"] for v in rep["variants"]]
    assert names[:2] == ["fp32", "dynamic-int8"] and set(names[2:]) | set(rep["failed"]) == set(want)
    assert {r["name"] for r in auto["rows"]} == set(want)
    assert set(rep["selection"]["rejected"]) | {rep["selection"]["pick"]} >= set(names[2:])
    for n in names[2:]:
        assert (tmp_path / "out" / f"{n.replace('/', '-')}.onnx").is_file()
    # auto's pick is the selection function's, on this report; every other candidate says why it lost
    chains = {n: [tuple(step) for step in chain] for n, chain in auto["candidates"].items()}
    again = pick_fastest_faithful(rep, chains, "edge-1core", graph="auto/graph")
    assert auto["pick"] == again.pick and auto["pick"] in want and auto["rows"] == again.rows
    assert all(r["why_not"] for r in auto["rows"] if r["name"] != auto["pick"])
    assert "auto would pick:" in (tmp_path / "out" / "report.md").read_text()
    assert "technique: auto" in (tmp_path / "out" / "recipe.yaml").read_text()  # the recipe as run keeps `auto`


@pytest.mark.parametrize("candidates, needle", [
    ("  - [\"auto:fast\"]\n", "auto chooses every option itself"),
    ("  - [{technique: auto, options: {per_channel: true}}]\n", "auto chooses every option itself"),
    ("  - [graph, auto]\n", "cannot be chained"),
    ("  - [auto]\n  - {name: again, chain: [auto]}\n", "auto may be a candidate once per study"),
    ("  - [auto]\n  - {name: auto/graph, chain: [graph]}\n", "used twice"),
])
def test_auto_candidate_bad_input_is_one_line_with_its_line(tmp_path, tiny_onnx, tiny_npz, candidates, needle):
    text = AUTO_STUDY.replace("  - [dynamic-int8]\n  - [auto]\n", candidates)
    p = run_cli("run", str(_study(tmp_path, tiny_onnx, tiny_npz, text)))
    assert_clean_error(p, 2, needle)
    assert "r.yaml:" in p.stderr and not (tmp_path / "out").exists()


def test_auto_candidate_in_a_plan_is_checked_before_any_work(tmp_path, tiny_onnx, tiny_data):
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.errors import ModelpressError
    from modelpress.study import Candidate, compare

    for cands, needle in (([Candidate("auto", "auto", {"per_channel": True})], "auto chooses every option"),
                          ([Candidate("auto", "auto"), Candidate("a2", "auto")], "once per study"),
                          ([Candidate("auto", "auto"), Candidate("auto-graph", "graph")], "would both write")):
        with pytest.raises(ModelpressError, match=needle) as e:
            compare(tiny_onnx, tmp_path / "out", cands, [resolve_profile("edge-1core")], eval_data=tiny_data,
                    show_progress=False)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()

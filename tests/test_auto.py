"""`-t auto`: the candidates follow the CPU's ISA and the model's kind; the pick is the fastest faithful one (never
slower than FP32 with graph optimizations) and every other candidate says why it lost. Timings are not asserted:
which candidate wins depends on the machine."""

from __future__ import annotations

import json

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

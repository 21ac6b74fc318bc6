"""The validation choke point: every artifact checked (checker, loads, finite, faithful) before it appears,
repairs where plain onnxruntime gets it wrong, and studies that go on when one candidate fails."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelpress.data import Dataset
from modelpress.errors import BelowFidelityFloor, ModelpressError
from modelpress.exporters import ExportConfig, export_onnx
from modelpress.onnxutil import op_counts, opset_of
from modelpress.optimizers import optimize, optimize_chain
from modelpress.validate import FidelityFloor, InvalidArtifact, Validator, check_structure
from tests.conftest import assert_clean_error, no_leftovers, run_cli


@pytest.mark.parametrize("text, want", [
    (None, FidelityFloor("cosine", 0.97)), ("agreement=0.99", FidelityFloor("agreement", 0.99)),
    (" Cosine = 0.5 ", FidelityFloor("cosine", 0.5)), ("none", None), ("off", None),
])
def test_floor_parse(text, want):
    assert FidelityFloor.parse(text) == want


@pytest.mark.parametrize("text", ["cosine", "cosine=2", "psnr=30", "cosine=abc", "=0.9"])
def test_floor_parse_refuses(text):
    with pytest.raises(ModelpressError, match="bad min-fidelity"):
        FidelityFloor.parse(text)


def _overflow_model(path):
    """y = exp(x) * 1e-6 + x: fine in FP32, but exp(x) leaves float16's range (65504) for x above 11."""
    nodes = [helper.make_node("Exp", ["x"], ["e"], name="exp"),
             helper.make_node("Mul", ["e", "b"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "x"], ["y"], name="add")]
    g = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
                          [numpy_helper.from_array(np.full((16,), 1e-6, np.float32), "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_repairs_are_tried_and_reported(tmp_path):
    """float16 rounds exp(x) for x in 8..14: a floor of cosine 1.0 makes every fp16 repair run on real ORT
    (folding, Constants, then the nodes with the largest FP32 activations kept in FP32), each try reported."""
    src = _overflow_model(tmp_path / "o.onnx")
    data = Dataset({"x": np.random.default_rng(0).uniform(8, 14, (16, 16)).astype(np.float32)})
    with pytest.raises(BelowFidelityFloor) as err:
        optimize(src, tmp_path / "h.onnx", "fp16", data=data, min_fidelity="cosine=1.0")
    msg = str(err.value)
    for step in ("as configured", "folded first", "Constant nodes kept in FP32", "1 overflow-prone nodes kept in FP32"):
        assert step in msg
    assert no_leftovers(tmp_path, "h.onnx")
    res = optimize(src, tmp_path / "h.onnx", "fp16", data=data)  # the default floor holds as configured
    assert res.repairs == [res.repairs[0]] and res.validation["passed"]
    check_structure(tmp_path / "h.onnx")


def test_static_int8_on_old_opset_is_upgraded_and_valid(tmp_path, tiny_data):
    from tests.factories import tiny_cnn

    model, example = tiny_cnn()
    src = tmp_path / "old.onnx"
    export_onnx(model, example, src, ExportConfig(exporter="torchscript", opset=11))
    assert opset_of(src) == 11
    res = optimize(src, tmp_path / "q.onnx", "static-int8", calib=tiny_data)
    assert any("opset upgraded 11 -> 13" in n for n in res.notes)
    assert check_structure(tmp_path / "q.onnx") == "full" and res.validation["passed"]
    assert "DequantizeLinear" in op_counts(tmp_path / "q.onnx")


def test_already_quantized_is_refused(tmp_path, tiny_onnx, tiny_data):
    optimize(tiny_onnx, tmp_path / "q.onnx", "static-int8", calib=tiny_data)
    for tech in ("static-int8", "dynamic-int8"):
        with pytest.raises(ModelpressError, match="already quantized"):
            optimize(tmp_path / "q.onnx", tmp_path / "qq.onnx", tech, calib=tiny_data)
    assert not (tmp_path / "qq.onnx").exists()


def test_below_floor_writes_nothing_unless_keep_best(tmp_path, tiny_onnx, tiny_data):
    out = tmp_path / "d.onnx"
    with pytest.raises(BelowFidelityFloor, match=r"below the floor cosine=1 .*nothing was written"):
        optimize(tiny_onnx, out, "dynamic-int8", data=tiny_data, min_fidelity="cosine=1.0", repair=False)
    assert no_leftovers(tmp_path, "d.onnx")
    with pytest.raises(BelowFidelityFloor, match="kept as"):
        optimize(tiny_onnx, out, "dynamic-int8", data=tiny_data, min_fidelity="cosine=1.0", repair=False,
                 keep_best=True)
    assert not out.exists() and (tmp_path / "d.below-floor.onnx").is_file()


def test_cli_floor_exit_6_one_line(tmp_path, tiny_onnx, tiny_npz):
    out = tmp_path / "d.onnx"
    p = run_cli("optimize", str(tiny_onnx), "-t", "dynamic-int8", "--data", str(tiny_npz), "--min-fidelity",
                "cosine=1", "-o", str(out))
    assert_clean_error(p, 6, "below the floor cosine=1")
    assert no_leftovers(tmp_path, "d.onnx")
    assert_clean_error(run_cli("optimize", str(tiny_onnx), "-t", "dynamic-int8", "--min-fidelity", "psnr=3", "-o",
                               str(out)), 2, "bad min-fidelity")


def test_cli_json_records_validation(tmp_path, tiny_onnx, tiny_npz):
    p = run_cli("optimize", str(tiny_onnx), "-t", "static-int8", "--calib", str(tiny_npz), "-o",
                str(tmp_path / "q.onnx"), "--json")
    assert p.returncode == 0, p.stderr
    step = json.loads(p.stdout)["steps"][0]
    v = step["validation"]
    assert v["checker"] == "full" and v["runtime"] == "ort-cpu" and v["passed"] and v["data_source"] == "calibration data"
    assert {o["name"] for o in v["outputs"]} == {"output"} and v["outputs"][0]["kind"] == "classifier"
    assert step["repairs"][0].startswith("as configured")


def test_validator_refuses_nan_and_reports_per_output(tmp_path):
    src = _overflow_model(tmp_path / "o.onnx")
    m = onnx.load(str(src))
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((16,), np.inf, np.float32), "b"))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    data = Dataset({"x": np.ones((4, 16), np.float32)})
    v = Validator(src, data)
    with pytest.raises(InvalidArtifact, match="NaN/Inf on 4 of 4 samples"):
        v.check(tmp_path / "bad.onnx")
    ok = v.check(src)
    assert ok.passed and ok.worst == 1.0 and ok.outputs[0].max_abs_err == 0.0


def test_synthetic_inputs_are_said(tmp_path, tiny_onnx):
    res = optimize(tiny_onnx, tmp_path / "d.onnx", "dynamic-int8")
    assert res.validation["data_source"].startswith("synthetic inputs")


def test_chain_floor_end_to_end(tmp_path, tiny_onnx, tiny_data):
    results = optimize_chain(tiny_onnx, tmp_path / "c.onnx", [("graph", {}), ("static-int8", {})], tiny_data)
    assert "whole chain vs its input" in results[-1].notes[-1]


STUDY = """\
modelpress: 1
kind: study
model: fp32.onnx
data: {eval: data.npz, calib: data.npz}
candidates:
  - [static-int8]
  - name: no-matmul
    chain: [int4-weight]
min_fidelity: cosine=0.98
profiles: [edge-1core]
profile: {iterations: 5, warmup: 1, op_breakdown: false}
output: out
"""


def test_study_goes_on_when_candidates_fail(tmp_path, tiny_onnx, tiny_npz):
    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(STUDY)
    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr  # the reference and one candidate completed
    rep = json.loads(p.stdout)
    assert [v["name"] for v in rep["variants"]] == ["fp32", "static-int8"]
    stages = {f["name"]: f["stage"] for f in rep["failures"]}
    assert stages == {"no-matmul": "build"}
    assert "no op this technique quantizes" in rep["failed"]["no-matmul"]
    assert rep["variants"][1]["validation"]["passed"] is True
    assert "min_fidelity: cosine=0.98" in (tmp_path / "out" / "recipe.yaml").read_text()
    assert "Failed (the study went on without them)" in (tmp_path / "out" / "report.md").read_text()
    assert not (tmp_path / "out" / "no-matmul.onnx").exists()


def test_study_with_no_completed_candidate_writes_report_and_exits_3(tmp_path, tiny_onnx, tiny_npz):
    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(STUDY.replace("  - [static-int8]\n", ""))
    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert_clean_error(p, 3, "no candidate completed")
    assert (tmp_path / "out" / "report.json").is_file() and (tmp_path / "out" / "report.html").is_file()


def test_goal_missed_mid_chain_hands_its_best_model_on(tmp_path, tiny_onnx, tiny_data):
    """inc-tune that misses its goal saves its best model; a later step builds on it and the chain's final model is
    written (then GoalNotMet, exit 4), so a study measures a model that exists, never one that was not written."""
    from modelpress.errors import GoalNotMet

    out = tmp_path / "c.onnx"
    steps = [("inc-tune", {"evaluator": "tests.factories:strict_evaluator", "max_trials": 1}), ("graph", {})]
    with pytest.raises(GoalNotMet):
        optimize_chain(tiny_onnx, out, steps, tiny_data)
    assert check_structure(out) == "full" and "QuantizeLinear" in op_counts(out)

"""TensorRT's CPU-verifiable parts: the explicit-quantization artifact (trt-int8) and its rules, the calibration
table for the implicit path, the runners' options and the doctor. Engine builds need a GPU: `gpu` tests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.errors import CheckFailed, ModelpressError
from tests.conftest import assert_clean_error, run_cli


def test_trt_int8_follows_tensorrt_rules_and_is_validated(tmp_path, tiny_onnx, tiny_data):
    import onnx

    from modelpress.optimizers import optimize
    from modelpress.optimizers.tensorrt import check_tensorrt_qdq

    out = tmp_path / "m.trt-int8.onnx"
    res = optimize(tiny_onnx, out, "trt-int8", calib=tiny_data)
    assert res.validation["checker"] and res.validation["runtime"] == "ort-cpu"  # faithful on CPU before a GPU
    assert any("TensorRT rules hold" in n for n in res.notes)
    m = onnx.load(str(out))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = {t.name: t for t in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
           and len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(z.data_type == onnx.TensorProto.INT8 for z in zps)
    assert all(not np.any(onnx.numpy_helper.to_array(z)) for z in zps)  # symmetric: zero points 0
    assert not any(t.data_type == onnx.TensorProto.INT32 for t in m.graph.initializer)  # biases stay float
    assert check_tensorrt_qdq(out)["per_channel_weights"] >= 1
    assert out.stat().st_size < tiny_onnx.stat().st_size  # int8 weights under DequantizeLinear


def test_tensorrt_rule_check_refuses_what_tensorrt_would_reject(tmp_path, tiny_onnx, tiny_data):
    from modelpress.optimizers import optimize
    from modelpress.optimizers.tensorrt import check_tensorrt_qdq

    asym = tmp_path / "asym.onnx"  # ORT's default static INT8: uint8 activations with zero points
    optimize(tiny_onnx, asym, "static-int8", calib=tiny_data)
    with pytest.raises(CheckFailed, match="UINT8|zero point|int32 bias"):
        check_tensorrt_qdq(asym)
    with pytest.raises(CheckFailed, match="no Q/DQ"):
        check_tensorrt_qdq(tiny_onnx)
    with pytest.raises(ModelpressError, match="per-channel"):
        from modelpress.optimizers import build_pass

        build_pass("trt-int8", {"per_channel": False})


def test_trt_int8_repair_keeps_the_layer_that_reads_the_outliers(tmp_path):
    """The exclusion search ranks only the op types trt-int8 quantizes, and an activation's error is charged to the
    node that reads it through Q/DQ: the MatMul after an Exp is kept in FP32, not the Exp (which trt-int8 never
    quantizes) nor both."""
    from modelpress.data import Dataset
    from modelpress.optimizers import build_pass, optimize
    from modelpress.optimizers.ort_quant import quantized_op_types
    from modelpress.optimizers.sensitivity import layer_sensitivity
    from modelpress.optimizers.tensorrt import TRT_OP_TYPES
    from tests.onnx_models import heavy_tail_mlp_onnx

    model = heavy_tail_mlp_onnx(tmp_path / "m.onnx")
    data = Dataset({"x": np.random.default_rng(1).normal(0, 1, (64, 32)).astype(np.float32)})
    assert quantized_op_types(build_pass("trt-int8")) == set(TRT_OP_TYPES)
    assert quantized_op_types(build_pass("trt-int8", {"quantize_residual_add": True})) == {*TRT_OP_TYPES, "Add"}
    ranked = {s.node: s for s in layer_sensitivity(model, data, {"op_types": TRT_OP_TYPES}, max_samples=32)}
    assert ranked["/down/MatMul"].input_sqnr_db == ranked["/Exp"].activation_sqnr_db
    assert ranked["/down/MatMul"].score < ranked["/up/MatMul"].score
    raw = optimize(model, tmp_path / "raw.onnx", "trt-int8", None, data, min_fidelity="none", repair=False)
    assert raw.validation["worst"] < 0.95  # per-tensor int8 cannot hold the Exp's tail
    res = optimize(model, tmp_path / "q.onnx", "trt-int8", None, data, min_fidelity="cosine=0.999")
    assert res.config["exclude_nodes"] == ["/down/MatMul"] and res.validation["worst"] >= 0.999
    assert "kept in FP32 by the repairs (1): /down/MatMul" in res.notes  # named: the engine runs it in FP32


def test_calibration_table_for_the_tensorrt_ep(tmp_path, tiny_onnx, tiny_npz):
    out = tmp_path / "cal"
    p = run_cli("calibrate", str(tiny_onnx), "--calib", str(tiny_npz), "--format", "tensorrt", "-o", str(out),
                "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["tensors"] > 0 and sorted(x.name for x in out.iterdir()) == sorted(res["files"])
    table = json.loads((out / "calibration.json").read_text())
    assert "input" in table and len(table) == res["tensors"]
    lines = (out / "calibration.cache").read_text().splitlines()
    assert len(lines) == res["tensors"] and all(len(x.rsplit(" ", 1)) == 2 for x in lines)
    # entropy is a real KL search: its ranges are not MinMax's (ORT's own bins would make them so)
    from modelpress.data import load_npz
    from modelpress.optimizers.tensorrt import write_calibration_table

    assert res["method"] == "percentile"
    tables = {}
    for method in ("minmax", "entropy"):
        write_calibration_table(tiny_onnx, load_npz(tiny_npz), tmp_path / method, method=method)
        tables[method] = json.loads((tmp_path / method / "calibration.json").read_text())
    assert tables["entropy"] != tables["minmax"] and table != tables["minmax"]
    # the table goes into a bundle beside the model and is recorded in its manifest
    from modelpress.bundle import package, verify

    man = package(tiny_onnx, tmp_path / "b.mpk", calibration=out)
    assert man["calibration"]["format"] == "tensorrt" and "calibration/calibration.flatbuffers" in man["files"]
    assert verify(tmp_path / "b.mpk")["ok"]
    # refusals: one line, nothing written
    again = run_cli("calibrate", str(tiny_onnx), "--calib", str(tiny_npz), "--format", "tensorrt", "-o", str(out))
    assert_clean_error(again, 2, "not an empty folder")
    bad = run_cli("calibrate", str(tiny_onnx), "--calib", str(tiny_npz), "--format", "tflite", "-o",
                  str(tmp_path / "x"))
    assert bad.returncode == 2 and not (tmp_path / "x").exists()


def test_doctor_says_what_each_gpu_path_needs():
    p = run_cli("doctor", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    paths = {c["name"]: c for c in rep["checks"]}
    assert paths["ort-cpu"]["ok"] and {"ort-cuda", "ort-tensorrt", "tensorrt"} <= set(paths)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not paths["ort-cuda"]["ok"] and "onnxruntime-gpu" in paths["ort-cuda"]["fix"]
        assert "replace" in paths["ort-cuda"]["fix"]  # the CPU build must be replaced, not joined
    human = run_cli("doctor")
    assert human.returncode == 0 and "ort-tensorrt" in human.stdout


def test_tensorrt_runner_refuses_cleanly_without_tensorrt(tiny_onnx):
    from modelpress.runtimes import RUNNERS, get_runner

    ok, why = RUNNERS["tensorrt"].availability()
    if ok:
        pytest.skip("TensorRT is installed here")
    assert "tensorrt" in why.lower()
    with pytest.raises(ModelpressError, match="not usable on this machine"):
        get_runner("tensorrt")
    p = run_cli("build-engine", str(tiny_onnx), "-o", "never.engine")
    assert p.returncode == 2 and "tensorrt" in p.stderr and "\n" not in p.stderr.strip()


@pytest.mark.gpu
def test_engine_build_and_profile_on_a_gpu(tmp_path, tiny_onnx, tiny_npz):  # pragma: no cover - needs a GPU
    from modelpress.runtimes import RUNNERS

    if not RUNNERS["tensorrt"].availability()[0]:
        pytest.skip("needs an NVIDIA GPU and TensorRT")
    engine = tmp_path / "m.engine"
    p = run_cli("build-engine", str(tiny_onnx), "-o", str(engine), "--fp16", "--shapes", "input:1x1x16x16")
    assert p.returncode == 0, p.stderr
    q = run_cli("profile", str(engine), "--runtime", "tensorrt", "-n", "20", "--json")
    assert q.returncode == 0, q.stderr

"""ONNX Runtime quantization passes on a small model built here (real onnxruntime, no mocks)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.benchmarks.evaluate import evaluate, predict
from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.onnxutil import model_size_bytes, op_counts
from modelpress.optimizers import PASSES, build_pass, optimize
from tests.conftest import assert_clean_error, no_leftovers, run_cli


def test_registry_has_both_int8_passes():
    assert {"dynamic-int8", "static-int8"} <= set(PASSES)
    assert PASSES["static-int8"].needs_calibration and not PASSES["dynamic-int8"].needs_calibration


def test_dynamic_int8(tiny_onnx, tiny_data, tmp_path):
    out = tmp_path / "dyn.onnx"
    res = optimize(tiny_onnx, out, "dynamic-int8")
    ops = op_counts(out)
    assert ops.get("ConvInteger") == 2 and "DynamicQuantizeLinear" in ops
    assert model_size_bytes(out) < model_size_bytes(tiny_onnx)
    assert res.config["weight_type"] == "int8"
    metrics, _ = evaluate(out, tiny_data, reference=predict(tiny_onnx, tiny_data))
    assert metrics.fidelity.cosine_mean > 0.95


def test_static_int8_calibrated(tiny_onnx, tiny_data, tmp_path):
    out = tmp_path / "st.onnx"
    res = optimize(tiny_onnx, out, "static-int8", {"max_calib_samples": 32, "calib_batch_size": 8}, calib=tiny_data)
    ops = op_counts(out)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    assert "calibrated on the first 32 of 48 samples" in " ".join(res.notes)
    metrics, _ = evaluate(out, tiny_data, reference=predict(tiny_onnx, tiny_data))
    assert metrics.fidelity.cosine_mean > 0.98


def _activation_scales(path) -> dict[str, float]:
    import onnx

    m = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}


@pytest.mark.parametrize("calibration", ["entropy", "percentile"])
def test_static_int8_other_calibrations(tiny_onnx, tiny_data, tmp_path, calibration):
    from modelpress.optimizers.ort_quant import ENTROPY_NEEDS, entropy_supported

    opts = {"calibration": calibration, "max_calib_samples": 16}
    if calibration == "entropy" and not entropy_supported():  # the oldest supported onnxruntime: refused, not faked
        with pytest.raises(ModelpressError, match="needs onnxruntime >= 1.32"):
            optimize(tiny_onnx, tmp_path / "q.onnx", "static-int8", opts, calib=tiny_data)
        assert not (tmp_path / "q.onnx").exists() and "percentile" in ENTROPY_NEEDS
        return
    optimize(tiny_onnx, tmp_path / "q.onnx", "static-int8", opts, calib=tiny_data)
    assert "QuantizeLinear" in op_counts(tmp_path / "q.onnx")
    # a real KL search, not MinMax's ranges under another name (ORT's own 128/128 bins searched one window)
    optimize(tiny_onnx, tmp_path / "mm.onnx", "static-int8", {**opts, "calibration": "minmax"}, calib=tiny_data)
    got, minmax = _activation_scales(tmp_path / "q.onnx"), _activation_scales(tmp_path / "mm.onnx")
    assert got.keys() == minmax.keys() and any(abs(got[k] - minmax[k]) > 1e-6 * minmax[k] for k in got)
    assert all(got[k] <= minmax[k] * (1 + 1e-5) for k in got)  # both clip the tails MinMax stretches for


def test_typed_options():
    p = build_pass("static-int8", {"per_channel": "false", "exclude_nodes": "a,b", "max_calib_samples": "64"})
    assert p.config.per_channel is False and p.config.exclude_nodes == ["a", "b"] and p.config.max_calib_samples == 64
    with pytest.raises(ModelpressError, match=r"unknown option\(s\) \['bogus'\]"):
        build_pass("static-int8", {"bogus": 1})
    with pytest.raises(ModelpressError, match="calibration must be one of"):
        build_pass("static-int8", {"calibration": "kl"})
    with pytest.raises(ModelpressError, match="max_calib_samples must be int"):
        build_pass("static-int8", {"max_calib_samples": "lots"})
    with pytest.raises(ModelpressError, match="unknown technique 'int3'"):
        build_pass("int3")


def test_cli_optimize_json(tiny_onnx, tiny_npz, tmp_path):
    out = tmp_path / "q.onnx"
    p = run_cli("optimize", str(tiny_onnx), "-t", "static-int8", "--calib", str(tiny_npz), "-o", str(out),
                "--option", "calibration=percentile", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["steps"][0]["config"]["calibration"] == "percentile" and res["size_ratio"] < 1


@pytest.fixture
def bad(tmp_path, tiny_onnx):
    from modelpress.exporters import ExportConfig, export_onnx
    from tests.factories import no_quantizable_ops

    m, ex = no_quantizable_ops()
    plain = export_onnx(m, ex, tmp_path / "plain.onnx", ExportConfig(exporter="torchscript")).path
    wrong = Dataset({"input": np.zeros((4, 1, 9, 9), np.float32)}).save(tmp_path / "wrong.npz")
    empty = tmp_path / "empty.npz"
    np.savez(empty, input=np.zeros((0, 1, 16, 16), np.float32))
    return {"model": tiny_onnx, "plain": plain, "wrong": wrong, "empty": empty}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{model}", "-t", "int3"], "unknown technique 'int3'"),
        (["{model}", "-t", "static-int8", "--option", "bogus=1"], "unknown option(s) ['bogus']"),
        (["{model}", "-t", "static-int8", "--option", "nokeyvalue"], "bad --option"),
        (["{model}", "-t", "static-int8"], "needs calibration data"),
        (["{model}", "-t", "static-int8", "--calib", "{wrong}"], "per-sample shape [1, 9, 9]"),
        (["{model}", "-t", "static-int8", "--calib", "{empty}"], "zero samples"),
        (["{plain}", "-t", "dynamic-int8"], "no op this technique quantizes"),
        (["missing.onnx", "-t", "dynamic-int8"], "no such file"),
    ],
)
def test_cli_optimize_bad_input(bad, tmp_path, args, needle):
    args = [a.format(**bad) for a in args]
    assert_clean_error(run_cli("optimize", *args, "-o", str(tmp_path / "out.onnx")), 2, needle)
    assert no_leftovers(tmp_path, "out.onnx")

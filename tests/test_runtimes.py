from __future__ import annotations

import numpy as np
import pytest

from modelpress.errors import ModelpressError
from modelpress.runtimes import RUNNERS, RunnerOptions, create_runner, get_runner
from tests.conftest import run_cli


def test_registry_and_unknown():
    assert {"ort-cpu", "ort-cuda", "ort-tensorrt"} <= set(RUNNERS)
    with pytest.raises(ModelpressError, match="unknown runtime 'tflite'"):
        get_runner("tflite")


def test_ort_cpu_runner_signature_and_infer(tiny_onnx):
    with create_runner("ort-cpu", tiny_onnx, {"intra_op_threads": 1, "graph_optimization": "basic"}) as r:
        assert r.options.graph_optimization == "basic" and r.options.intra_op_threads == 1
        assert r.inputs[0].name == "input" and r.inputs[0].shape == ("batch", 1, 16, 16) and r.inputs[0].dtype == "float32"
        out = r.infer({"input": np.zeros((3, 1, 16, 16), np.float32)})
        assert out["output"].shape == (3, 10)
        with pytest.raises(ModelpressError, match=r"input 'input' has shape \[3, 2, 16, 16\]"):
            r.infer({"input": np.zeros((3, 2, 16, 16), np.float32)})  # checked before the runtime sees it


def test_runtime_options_belong_to_each_runtime(tiny_onnx):
    """Each runtime's own knobs are its options class; a mapping is checked like a pass's options (one line);
    common knobs (threads) carry over from plain RunnerOptions."""
    from modelpress.runtimes.ort import OrtCpuRunner, OrtTensorrtOptions, OrtTensorrtRunner

    with pytest.raises(ModelpressError, match="runtime ort-cpu: unknown option.*performance_hint"):
        create_runner("ort-cpu", tiny_onnx, {"performance_hint": "LATENCY"})
    with pytest.raises(ModelpressError, match="graph_optimization must be one of"):
        create_runner("ort-cpu", tiny_onnx, {"graph_optimization": "max"})
    assert OrtCpuRunner(tiny_onnx, RunnerOptions(intra_op_threads=2)).options.intra_op_threads == 2
    # the TensorRT EP's provider options come from its options (documented trt_* keys); nothing is loaded here
    trt = OrtTensorrtRunner(tiny_onnx, {"int8": True, "fp16": False, "int8_calibration_table": "calibration.flatbuffers"})
    assert isinstance(trt.options, OrtTensorrtOptions)
    name, opts = trt.providers()[0]
    assert name == "TensorrtExecutionProvider" and opts["trt_int8_enable"] and not opts["trt_fp16_enable"]
    assert opts["trt_int8_calibration_table_name"] == "calibration.flatbuffers"
    if RUNNERS["openvino"].availability()[0]:
        from modelpress.runtimes.openvino import OpenVinoOptions

        r = create_runner("openvino", tiny_onnx, {"performance_hint": "THROUGHPUT", "intra_op_threads": 1})
        assert isinstance(r.options, OpenVinoOptions) and r.config()["PERFORMANCE_HINT"] == "THROUGHPUT"
        with pytest.raises(ModelpressError, match="runtime openvino: unknown option.*graph_optimization"):
            create_runner("openvino", tiny_onnx, {"graph_optimization": "basic"})


def test_gpu_runners_say_why_not_here():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelpressError, match="not usable on this machine: CUDAExecutionProvider is not in this onnxruntime"):
        get_runner("ort-cuda")
    p = run_cli("list", "runtimes")
    assert "ort-cpu        available" in p.stdout and "ort-cuda       unavailable" in p.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ["ort-cuda", "ort-tensorrt"])
def test_gpu_runner_matches_cpu(tiny_onnx, runtime):
    x = {"input": np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32)}
    with create_runner("ort-cpu", tiny_onnx) as cpu, create_runner(runtime, tiny_onnx) as gpu:
        # TensorRT runs in FP16 here: tolerance fits half precision
        np.testing.assert_allclose(gpu.infer(x)["output"], cpu.infer(x)["output"], atol=2e-2, rtol=2e-2)

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
    with create_runner("ort-cpu", tiny_onnx, RunnerOptions(intra_op_threads=1, graph_optimization="basic")) as r:
        assert r.inputs[0].name == "input" and r.inputs[0].shape == ("batch", 1, 16, 16) and r.inputs[0].dtype == "float32"
        out = r.infer({"input": np.zeros((3, 1, 16, 16), np.float32)})
        assert out["output"].shape == (3, 10)
        with pytest.raises(ModelpressError, match=r"input 'input' has shape \[3, 2, 16, 16\]"):
            r.infer({"input": np.zeros((3, 2, 16, 16), np.float32)})  # checked before the runtime sees it


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

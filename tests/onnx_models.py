"""Small ONNX models built with onnx.helper alone, for installs without PyTorch (the ONNX-only install).

`tiny_cnn_onnx` is the graph the TorchScript exporter writes for tests.factories.TinyCNN (same ops, names,
opset, IR version, dynamic batch, value_info), with weights drawn the way PyTorch initializes them, so the ONNX
commands can be tested where torch is absent (.ci/smoke-ranges, tests/test_install.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(fan_in)  # PyTorch's default bound for Conv2d / Linear weights and biases
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def tiny_cnn_onnx(path: str | Path, seed: int = 0) -> Path:
    """TinyCNN as ONNX: [batch, 1, 16, 16] 'input' -> [batch, 10] 'output' (Conv/Relu/MaxPool x2, Gemm)."""
    rng = np.random.default_rng(seed)
    weights = {
        "conv1.weight": _uniform(rng, (8, 1, 3, 3), 9), "conv1.bias": _uniform(rng, (8,), 9),
        "conv2.weight": _uniform(rng, (16, 8, 3, 3), 72), "conv2.bias": _uniform(rng, (16,), 72),
        "fc.weight": _uniform(rng, (10, 256), 256), "fc.bias": _uniform(rng, (10,), 256),
    }
    conv = {"dilations": [1, 1], "group": 1, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    pool = {"ceil_mode": 0, "dilations": [1, 1], "kernel_shape": [2, 2], "pads": [0, 0, 0, 0], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"], "/conv1/Conv",
                         **conv),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/Relu_output_0"], "/Relu"),
        helper.make_node("MaxPool", ["/Relu_output_0"], ["/pool/MaxPool_output_0"], "/pool/MaxPool", **pool),
        helper.make_node("Conv", ["/pool/MaxPool_output_0", "conv2.weight", "conv2.bias"], ["/conv2/Conv_output_0"],
                         "/conv2/Conv", **conv),
        helper.make_node("Relu", ["/conv2/Conv_output_0"], ["/Relu_1_output_0"], "/Relu_1"),
        helper.make_node("MaxPool", ["/Relu_1_output_0"], ["/pool_1/MaxPool_output_0"], "/pool_1/MaxPool", **pool),
        helper.make_node("Flatten", ["/pool_1/MaxPool_output_0"], ["/Flatten_output_0"], "/Flatten", axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["output"], "/fc/Gemm", alpha=1.0, beta=1.0,
                         transB=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="modelpress-tests")
    model.ir_version = 8
    # The exporter records every intermediate's type and shape (value_info); so does this copy of its graph.
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _save(graph, path: str | Path) -> Path:
    """Opset 18, IR 8, fully checked, saved."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="modelpress-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def matmul_block_onnx(path: str | Path, d: int = 64, seed: int = 0) -> Path:
    """A transformer-style MLP on [batch, seq, d] 'x' (MatMul/Add/Relu/MatMul/Add): what weight-only INT4/INT8
    quantizes (MatMulNBits), built without PyTorch."""
    rng = np.random.default_rng(seed)
    weights = {"up.weight": _uniform(rng, (d, 4 * d), d), "up.bias": _uniform(rng, (4 * d,), d),
               "down.weight": _uniform(rng, (4 * d, d), 4 * d), "down.bias": _uniform(rng, (d,), 4 * d)}
    nodes = [
        helper.make_node("MatMul", ["x", "up.weight"], ["/up/MatMul_output_0"], "/up/MatMul"),
        helper.make_node("Add", ["/up/MatMul_output_0", "up.bias"], ["/up/Add_output_0"], "/up/Add"),
        helper.make_node("Relu", ["/up/Add_output_0"], ["/Relu_output_0"], "/Relu"),
        helper.make_node("MatMul", ["/Relu_output_0", "down.weight"], ["/down/MatMul_output_0"], "/down/MatMul"),
        helper.make_node("Add", ["/down/MatMul_output_0", "down.bias"], ["y"], "/down/Add"),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return _save(graph, path)


def heavy_tail_mlp_onnx(path: str | Path, d: int = 32, seed: int = 0) -> Path:
    """MatMul -> Exp -> MatMul on [batch, d] 'x': the second MatMul reads a heavy-tailed activation made by an op
    TensorRT's rules leave unquantized (as a transformer's second FFN MatMul reads the GELU output)."""
    rng = np.random.default_rng(seed)
    weights = {"up.weight": rng.normal(0, 0.6, (d, 4 * d)).astype(np.float32),
               "down.weight": rng.normal(0, 0.1, (4 * d, d)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "up.weight"], ["h"], "/up/MatMul"),
             helper.make_node("Exp", ["h"], ["e"], "/Exp"),
             helper.make_node("MatMul", ["e", "down.weight"], ["y"], "/down/MatMul")]
    graph = helper.make_graph(nodes, "main_graph", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", d])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()])
    return _save(graph, path)

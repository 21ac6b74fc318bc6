"""Synthetic models for measuring how cost grows with size (benchmarks/scale.py) and for tests past protobuf's
2 GB line: no real model of that size ships in a package, and these are cheap to build layer by layer."""

from __future__ import annotations

from pathlib import Path


def matmul_stack(path: str | Path, layers: int = 2, dim: int = 128, *, repeat: bool = False, seed: int = 0) -> Path:
    """x[batch, dim] -> MatMul by a dim x dim float32 weight, `layers` times -> Relu, the weights in PATH.data,
    written layer by layer (never the whole model in memory). Weights are random, scaled by 1/sqrt(dim) so
    activations stay of order one; `repeat` writes the first layer's bytes for every layer (a model just past
    2 GB is then one random draw)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from modelpress.onnxutil import data_file_name

    path = Path(path)
    rng = np.random.default_rng(seed)
    nodes, inits, x, w = [], [], "x", None
    with open(path.parent / data_file_name(path), "wb") as f:
        for i in range(layers):
            if w is None or not repeat:
                w = (rng.standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim)).astype(np.float32).tobytes()
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[dim, dim])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_file_name(path)), ("offset", str(f.tell())), ("length", str(len(w)))):
                t.external_data.add(key=k, value=v)
            f.write(w)
            inits.append(t)
            nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"h{i}"], name=f"mm{i}"))
            x = f"h{i}"
    nodes.append(helper.make_node("Relu", [x], ["y"], name="relu"))
    g = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])], inits)
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path

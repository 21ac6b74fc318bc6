"""Small facts about ONNX files: is it one, how big, which ops, which opset."""

from __future__ import annotations

import collections
from pathlib import Path

from modelpress.errors import ModelpressError


def check_onnx_file(path: str | Path) -> Path:
    """Fail with one clear line if `path` is missing, not ONNX, or truncated."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise ModelpressError(f"no such file: {path}")
    if not path.is_file():
        raise ModelpressError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelpressError(f"{path} is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise ModelpressError(f"{path} is not an ONNX model or is truncated (protobuf does not parse)") from None
    except Exception as e:
        raise ModelpressError(f"cannot read {path} as ONNX: {e}") from None
    if model.ir_version <= 0 or not model.graph.node:
        raise ModelpressError(f"{path} is not an ONNX model (no IR version or no graph nodes)")
    return path


def model_size_bytes(path: str | Path) -> int:
    """Size on disk, external data files included."""
    import onnx

    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    for t in _initializers(model.graph):
        for kv in t.external_data:
            if kv.key == "location" and kv.value not in seen:
                seen.add(kv.value)
                total += (path.parent / kv.value).stat().st_size
    return total


def _initializers(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node:
                yield from _initializers(attr.g)


def op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the graph has (quantized ops show up as ConvInteger, QLinearConv, ...)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in model.graph.node).most_common())


def opset_of(path: str | Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# --------------------------------------------------------------------------- parameters and FLOPs

_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "QLinearMatMul", "Gemm", "FusedConv",
            "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul"}


def graph_stats(path: str | Path, dims: dict[str, int] | None = None) -> dict[str, int | None]:
    """Parameters (elements of all initializers, quantized ones included) and multiply-accumulates of the
    Conv/MatMul/Gemm family at batch 1, read from the graph itself after shape inference.

    Symbolic dims other than those given in `dims` count as 1 (batch 1). `macs` is None when no shapes could
    be inferred. FLOPs = 2 x MACs.
    """
    import numpy as np
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path), load_external_data=False)
    params = 0
    inits = {}
    for t in _initializers(model.graph):
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        params += n
        inits[t.name] = list(t.dims)
    dims = dims or {}
    del model.graph.value_info[:]  # stale shapes (symbolic batch) would win over the fixed ones below
    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.dim_param:
                value = dims.get(d.dim_param, 1)
                d.Clear()
                d.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return {"params": params, "macs": None, "flops": None}
    shapes: dict[str, list[int]] = dict(inits)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dd = vi.type.tensor_type.shape.dim
        if dd and all(d.dim_value > 0 for d in dd):
            shapes[vi.name] = [d.dim_value for d in dd]
    macs, known = 0, 0
    for node in inferred.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        out = shapes.get(node.output[0])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k = None
        if node.op_type in ("Conv", "ConvInteger", "FusedConv", "QLinearConv"):
            w = shapes.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            if w:
                k = int(np.prod(w[1:]))
        elif node.op_type == "MatMulNBits":
            k = attrs.get("K")
        else:
            a = shapes.get(node.input[0])
            if a:
                k = a[0] if node.op_type == "Gemm" and attrs.get("transA") else a[-1]
        if out and k:
            macs += int(np.prod(out)) * int(k)
            known += 1
    return {"params": params, "macs": macs if known else None, "flops": 2 * macs if known else None}

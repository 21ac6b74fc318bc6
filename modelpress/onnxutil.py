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

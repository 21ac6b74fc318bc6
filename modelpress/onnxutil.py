"""Small facts about ONNX files: is it one, how big, which ops, which opset."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

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
    if model.ir_version < 3:
        raise ModelpressError(f"{path}: ONNX IR version {model.ir_version} is too old (modelpress needs IR 3 or newer, "
                              "with opset imports); re-export the model with a current exporter")
    _check_opset_imports(model, path)
    _check_external_data(model, path)
    return path


def _graphs(graph):
    """`graph` and every subgraph under it (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _check_opset_imports(model, path: Path) -> None:
    norm = lambda d: d or "ai.onnx"  # noqa: E731  ('' and 'ai.onnx' are the same domain)
    imported = {}
    for o in model.opset_import:
        imported[norm(o.domain)] = o.version
    if "ai.onnx" in imported and imported["ai.onnx"] < 1:
        raise ModelpressError(f"{path}: invalid opset version {imported['ai.onnx']} for the default ONNX domain")
    used = {norm(n.domain) for g in _graphs(model.graph) for n in g.node}
    for f in model.functions:
        used |= {norm(n.domain) for n in f.node}
    missing = sorted(used - set(imported) - {norm(f.domain) for f in model.functions})
    if missing:
        from modelpress.yamlsafe import short

        raise ModelpressError(f"{path}: the model has no opset import for operator domain(s) {short(missing, 120)} "
                              "(an invalid or very old model); re-export it with a current exporter")


def external_locations(model) -> list[str]:
    """The external-data file names a model's tensors point at (initializers, Constant values, subgraphs)."""
    return sorted({kv.value for t in all_tensors(model) for kv in t.external_data if kv.key == "location"})


def all_tensors(model):
    """Every TensorProto in the model that could hold data: initializers, Constant values, subgraphs, functions."""
    def from_attrs(attrs):
        for attr in attrs:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for st in attr.sparse_tensors:
                yield st.values
                yield st.indices

    for g in _graphs(model.graph):
        yield from g.initializer
        for st in g.sparse_initializer:
            yield st.values
            yield st.indices
        for node in g.node:
            yield from from_attrs(node.attribute)
    for f in model.functions:
        for node in f.node:
            yield from from_attrs(node.attribute)


def _check_external_data(model, path: Path) -> None:
    """Each external data file must exist inside the model's folder and hold the bytes the model points at."""
    import os
    import re

    import onnx

    from modelpress.yamlsafe import short

    folder = Path(os.path.realpath(path.parent))
    sizes: dict[str, int] = {}
    for t in all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {kv.key: kv.value for kv in t.external_data}
        loc = info.get("location", "")
        name = short(t.name, 60)
        if not loc:
            raise ModelpressError(f"{path}: tensor {name} keeps its data externally but names no file")
        if Path(loc).is_absolute() or re.match(r"^[A-Za-z]:|^[\\/]", loc) or ".." in re.split(r"[\\/]", loc) \
                or "\0" in loc:
            raise ModelpressError(f"{path}: external data file {short(loc)} of tensor {name} is outside the model's "
                                  "folder (an absolute path or '..'); refusing to read it")
        if loc not in sizes:
            target = path.parent / loc
            real = Path(os.path.realpath(target))
            if not (real == folder or real.is_relative_to(folder)):
                raise ModelpressError(f"{path}: external data file {short(loc)} of tensor {name} links outside the "
                                      "model's folder; refusing to read it")
            if not target.is_file():
                raise ModelpressError(f"{path}: external data file {short(loc)} of tensor {name} is missing (it must "
                                      "sit beside the model)")
            sizes[loc] = target.stat().st_size
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0))
        except ValueError:
            raise ModelpressError(f"{path}: tensor {name} has an invalid external data offset or length") from None
        if offset < 0 or length < 0 or offset + length > sizes[loc]:
            raise ModelpressError(f"{path}: external data file {short(loc)} is {sizes[loc]:,} bytes, too short for "
                                  f"tensor {name} (offset {offset:,} + length {length:,}): truncated or not this "
                                  "model's data")


def model_size_bytes(path: str | Path) -> int:
    """Size on disk, external data files included (each counted once)."""
    return sum(p.stat().st_size for p in dict.fromkeys(model_files(path)))


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

def graph_stats(path: str | Path, dims: dict[str, int] | None = None) -> dict[str, Any]:
    """Parameters (elements of all initializers, quantized ones included), multiply-accumulates of the
    Conv/MatMul/Gemm family at batch 1, read from the graph itself after shape inference, and the op counts
    (`ops`, as op_counts gives them: one load of the graph for both).

    Symbolic dims other than those given in `dims` count as 1 (batch 1). `macs` is None when no shapes could
    be inferred. FLOPs = 2 x MACs.
    """
    import numpy as np
    import onnx
    from onnx import shape_inference

    from modelpress.ops import has

    model = onnx.load(str(path), load_external_data=False)
    ops = dict(collections.Counter(n.op_type for n in model.graph.node).most_common())
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
        return {"params": params, "macs": None, "flops": None, "ops": ops}
    shapes: dict[str, list[int]] = dict(inits)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dd = vi.type.tensor_type.shape.dim
        if dd and all(d.dim_value > 0 for d in dd):
            shapes[vi.name] = [d.dim_value for d in dd]
    macs, known = 0, 0
    for node in inferred.graph.node:
        if not has(node.op_type, "mac"):
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
    return {"params": params, "macs": macs if known else None, "flops": 2 * macs if known else None, "ops": ops}


# --------------------------------------------------------------------------- external data (models past 2 GB)

# Outputs are written with external data when their input had it, or when the model's tensors exceed this: a
# protobuf cannot hold more than 2 GB, and a large inline .onnx is parsed in one piece (a full extra copy).
EXTERNAL_THRESHOLD_BYTES = 1 << 30
EXTERNAL_MIN_TENSOR_BYTES = 1024  # smaller tensors stay inline (shape constants, scales)


def data_file_name(model_path: str | Path) -> str:
    """The one external-data file modelpress writes for a model: `NAME.onnx.data`, beside it."""
    return Path(model_path).name + ".data"


def has_external_data(path: str | Path) -> bool:
    """Whether the model at `path` keeps tensors in external files (reads the graph only, never the weights)."""
    import onnx

    return bool(external_locations(onnx.load(str(path), load_external_data=False)))


def model_files(path: str | Path) -> list[Path]:
    """The model file followed by its external data files (what a copy, a hash or a bundle must carry)."""
    import onnx

    path = Path(path)
    return [path, *(path.parent / loc for loc in external_locations(onnx.load(str(path), load_external_data=False)))]


def wants_external_data(model_in: str | Path) -> bool:
    """Whether a pass's output from `model_in` should keep its weights externally: when the input does, or
    when the input is past EXTERNAL_THRESHOLD_BYTES."""
    files = model_files(model_in)  # one parse of the graph for both questions (it runs before every pass)
    return len(files) > 1 or sum(f.stat().st_size for f in dict.fromkeys(files)) > EXTERNAL_THRESHOLD_BYTES


def save_model(model, path: str | Path, external: bool) -> None:
    """Write a ModelProto whose tensors are in memory. With `external`, every tensor of at least
    EXTERNAL_MIN_TENSOR_BYTES goes into one file `PATH.data` beside it (written tensor by tensor, each one's
    bytes released once written), so no serialization ever holds the weights; without it, one protobuf (which
    fails past 2 GB: callers decide with wants_external_data)."""
    import onnx

    path = Path(path)
    if not external:
        onnx.save_model(model, str(path))
        return
    data = path.parent / data_file_name(path)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=EXTERNAL_MIN_TENSOR_BYTES, convert_attribute=False)


def ort_output_options(so, model_out: str | Path, external: bool) -> None:
    """SessionOptions entries that make ONNX Runtime's `optimized_model_filepath` write its initializers to
    `OUT.onnx.data` (else it writes one protobuf, which fails past 2 GB)."""
    if external:
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    data_file_name(model_out))
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                    str(EXTERNAL_MIN_TENSOR_BYTES))


def relocate_external_data(model, new_location: str, offsets: dict[tuple[str, int], int] | None = None) -> None:
    """Point every external tensor of `model` (a proto loaded without its data) at `new_location`; with
    `offsets`, (old location, old offset) -> new offset."""
    for t in all_tensors(model):
        info = {kv.key: kv.value for kv in t.external_data}
        if "location" not in info:
            continue
        new_off = None if offsets is None else offsets[(info["location"], int(info.get("offset", 0)))]
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = new_location
            elif kv.key == "offset" and new_off is not None:
                kv.value = str(new_off)
        if new_off is not None and "offset" not in info:
            t.external_data.add(key="offset", value=str(new_off))

"""Per-layer quantization sensitivity with ONNX Runtime's qdq_loss_debug.

For each quantized activation, the SQNR between the tensor before and after its own
QuantizeLinear/DequantizeLinear pair, on real inputs: the error that quantizing that
tensor alone adds. Around a Relu (which QDQ folds into the uint8 range) both sides are compared
after the Relu, since the negatives that range clips are zeroed anyway, and the error is charged
to the node that computes the Relu's input (the Conv or Gemm). For each weight, the SQNR of its
quantized copy. A node's score is the worse of the two; lower SQNR (dB) = more sensitive.
Ranked most sensitive first.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.data import Dataset
from modelpress.io import captured_output


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    activation_sqnr_db: float | None  # output activation: before vs after its own QDQ
    weight_sqnr_db: float | None

    @property
    def score(self) -> float:
        vals = [v for v in (self.activation_sqnr_db, self.weight_sqnr_db) if v is not None and math.isfinite(v)]
        return min(vals) if vals else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sqnr_db": self.score}


def layer_sensitivity(model: str | Path, calib: Dataset, options: dict[str, Any] | None = None,
                      max_samples: int = 32) -> list[LayerSensitivity]:
    """Rank the quantizable nodes of `model` by how much static INT8 hurts each (most sensitive first)."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from modelpress.optimizers import optimize
    from modelpress.calibration import Reader

    data = calib.take(max_samples)
    float_model = onnx.load(str(model), load_external_data=False)  # the graph only: the weights stay on disk
    producers = {o: n for n in float_model.graph.node for o in n.output}
    weight_users = {i: n for n in float_model.graph.node for i in n.input}
    with tempfile.TemporaryDirectory(prefix="modelpress-sens-") as tmp:
        t = Path(tmp)
        qdq = t / "qdq.onnx"
        opts = {"max_calib_samples": max_samples, **(options or {}), "format": "qdq"}
        optimize(model, qdq, "static-int8", opts, data, min_fidelity="none", repair=False)
        with captured_output():
            dbg.modify_model_output_intermediate_tensors(str(model), str(t / "float_aug.onnx"))
            dbg.modify_model_output_intermediate_tensors(str(qdq), str(t / "qdq_aug.onnx"))
            float_acts = dbg.collect_activations(str(t / "float_aug.onnx"), Reader(data, 1))
            qdq_acts = dbg.collect_activations(str(t / "qdq_aug.onnx"), Reader(data, 1))
            matching = dbg.create_activation_matching(qdq_acts, float_acts)
            weights = dbg.create_weight_matching(str(model), str(qdq))
    # ORT's compute_weight_error fails on 0-d weights (numpy scalars): measure each weight here instead
    w_err = {name: float(dbg.compute_signal_to_quantization_noice_ratio(_arrays(m["float"]), _arrays(m["dequantized"])))
             for name, m in weights.items() if "float" in m and "dequantized" in m}

    feeds_relu = {i for n in float_model.graph.node if n.op_type == "Relu" for i in n.input}
    layers: dict[str, LayerSensitivity] = {}
    for tensor, match in matching.items():
        node = producers.get(tensor)
        if node is None or not match.get("pre_qdq") or not match.get("post_qdq"):
            continue
        pre, post = _arrays(match["pre_qdq"]), _arrays(match["post_qdq"])
        if len(pre) != len(post):
            continue
        if tensor in feeds_relu or node.op_type == "Relu":
            pre, post = [np.maximum(a, 0) for a in pre], [np.maximum(a, 0) for a in post]
            if node.op_type == "Relu" and node.input[0] in producers:
                node = producers[node.input[0]]
        layers.setdefault(node.name, LayerSensitivity(node.name, node.op_type, None, None)).activation_sqnr_db = \
            float(dbg.compute_signal_to_quantization_noice_ratio(pre, post))
    for weight, err in w_err.items():
        node = weight_users.get(weight)
        if node is not None:
            layers.setdefault(node.name, LayerSensitivity(node.name, node.op_type, None, None)).weight_sqnr_db = float(err)
    return sorted(layers.values(), key=lambda s: s.score)


def _arrays(value) -> list[np.ndarray]:
    """qdq_loss_debug gives a list of arrays per tensor, or a bare scalar for 0-d tensors."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [np.asarray(a, dtype=np.float64).reshape(-1) for a in items]

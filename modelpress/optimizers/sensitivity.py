"""Per-layer quantization sensitivity with ONNX Runtime's qdq_loss_debug.

For each quantized activation, the SQNR between the tensor before and after its own
QuantizeLinear/DequantizeLinear pair, on real inputs: the error that quantizing that
tensor alone adds. Around a Relu (which QDQ folds into the uint8 range) both sides are compared
after the Relu, since the negatives that range clips are zeroed anyway, and the error is charged
to the node that computes the Relu's input (the Conv or Gemm). Where the producer is not quantized, the error
is charged to each node that reads the tensor through its Q/DQ pair instead (input_sqnr_db): keeping that node
in FP32 is what removes the pair (a transformer's second FFN MatMul reads the GELU output,
whose outliers per-tensor INT8 cannot hold; the GELU's Mul/Erf are not what to keep in FP32).
For each weight, the SQNR of its quantized copy. A node's score is the worst of the three; lower SQNR
(dB) = more sensitive. Ranked most sensitive first.
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


# A tensor holding values this large carries a sentinel (a Hugging Face attention mask adds finfo(float32).min).
# One per-tensor INT8 scale cannot hold it and the attention scores beside it: they all round to 0, the softmax goes
# flat, and still the tensor's SQNR looks good, since the sentinel dominates the signal's power. Such a tensor ranks
# most sensitive (-inf dB). (all-MiniLM-L6-v2 under static-int8: worst cosine 0.36 with the mask's Add quantized,
# 0.94 with only its MatMuls; keeping even 128 of 214 nodes in FP32, ranked by SQNR alone, stayed at 0.44.)
SENTINEL = 1e30


@dataclass
class LayerSensitivity:
    node: str
    op_type: str
    activation_sqnr_db: float | None  # output activation: before vs after its own QDQ
    weight_sqnr_db: float | None
    input_sqnr_db: float | None = None  # the worst activation it reads through a Q/DQ pair

    @property
    def score(self) -> float:
        vals = [v for v in (self.activation_sqnr_db, self.weight_sqnr_db, self.input_sqnr_db)
                if v is not None and (math.isfinite(v) or v == -math.inf)]
        return min(vals) if vals else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a sentinel's -inf dB is null there, with `sentinel: true`."""
        safe = lambda v: v if v is None or math.isfinite(v) else None  # noqa: E731
        d = {k: safe(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**d, "sqnr_db": safe(self.score), "sentinel": self.score == -math.inf}


def layer_sensitivity(model: str | Path, calib: Dataset, options: dict[str, Any] | None = None,
                      max_samples: int = 32) -> list[LayerSensitivity]:
    """Rank the quantizable nodes of `model` by how much static INT8 hurts each (most sensitive first)."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from modelpress.calibration import Reader
    from modelpress.optimizers import optimize
    from modelpress.optimizers.ort_quant import default_op_types

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
        readers = _qdq_readers(onnx.load(str(qdq), load_external_data=False))
    types = set(opts.get("op_types") or default_op_types())  # what static-int8 quantized in this ranking
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
        sqnr = float(dbg.compute_signal_to_quantization_noice_ratio(pre, post))
        if max(float(np.max(np.abs(a), initial=0.0)) for a in pre) >= SENTINEL:
            sqnr = -math.inf  # an attention mask's finfo.min: SQNR looks fine while the values beside it are lost
        layers.setdefault(node.name, LayerSensitivity(node.name, node.op_type, None, None)).activation_sqnr_db = sqnr
        # the readers too where the producer is not quantized (else the pair is the producer's), and for a sentinel
        # (its pair goes only when the producer and every reader are kept in FP32: the mask's Add and the Softmax)
        for reader in readers.get(tensor, ()) if node.op_type not in types or sqnr == -math.inf else ():
            if reader.name and reader.name != node.name:
                s = layers.setdefault(reader.name, LayerSensitivity(reader.name, reader.op_type, None, None))
                s.input_sqnr_db = sqnr if s.input_sqnr_db is None else min(s.input_sqnr_db, sqnr)
    for weight, err in w_err.items():
        node = weight_users.get(weight)
        if node is not None:
            layers.setdefault(node.name, LayerSensitivity(node.name, node.op_type, None, None)).weight_sqnr_db = float(err)
    return sorted(layers.values(), key=lambda s: s.score)


def _qdq_readers(qdq_model) -> dict[str, list]:
    """tensor -> the nodes of the Q/DQ model that read it through QuantizeLinear -> DequantizeLinear."""
    g = qdq_model.graph
    q_of = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.output[0]: q_of[n.input[0]] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in q_of}
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            if i in dq_of and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                readers.setdefault(dq_of[i], []).append(n)
    return readers


def _arrays(value) -> list[np.ndarray]:
    """qdq_loss_debug gives a list of arrays per tensor, or a bare scalar for 0-d tensors."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [np.asarray(a, dtype=np.float64).reshape(-1) for a in items]

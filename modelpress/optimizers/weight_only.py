"""Weight-only INT4 / INT8 for MatMuls (transformers, LLMs) with ONNX Runtime's MatMulNBits quantizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.io import captured_output
from modelpress.optimizers import register_pass
from modelpress.optimizers.base import Pass, PassConfig, PassResult


@dataclass
class WeightOnlyConfig(PassConfig):
    block_size: int = 32
    symmetric: bool = True
    algorithm: Literal["rtn", "hqq", "gptq"] = "rtn"  # gptq needs calibration data; hqq is 4-bit only
    accuracy_level: int = 0  # MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8
    max_calib_samples: int = 64

    def validate(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ModelpressError("weight-only: block_size must be a power of two >= 16")


class _WeightOnly(Pass):
    bits: int
    config_cls = WeightOnlyConfig

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb

        from modelpress.optimizers.ort_quant import Reader, check_quantized

        c: WeightOnlyConfig = self.config  # type: ignore[assignment]
        if c.algorithm == "gptq":
            calib, _ = self.calibration(model_in, calib)
            algo = mnb.GPTQWeightOnlyQuantConfig(Reader(calib.take(c.max_calib_samples), 1), block_size=c.block_size)
        elif c.algorithm == "hqq":
            if self.bits != 4:
                raise ModelpressError("weight-only: algorithm=hqq is 4-bit only")
            algo = mnb.HQQWeightOnlyQuantConfig(block_size=c.block_size, bits=self.bits)
        else:
            algo = mnb.DefaultWeightOnlyQuantConfig(block_size=c.block_size, is_symmetric=c.symmetric,
                                                    accuracy_level=c.accuracy_level or None, bits=self.bits)
        with captured_output():
            q = mnb.MatMulNBitsQuantizer(onnx.load(str(model_in)), bits=self.bits, block_size=c.block_size,
                                         is_symmetric=c.symmetric, accuracy_level=c.accuracy_level or None, algo_config=algo)
            q.process()
            q.model.save_model_to_file(str(model_out), use_external_data_format=False)
        check_quantized(model_out, self.name)
        return PassResult(self.name, c.to_dict(), [])


@register_pass
class Int4Weight(_WeightOnly):
    name = "int4-weight"
    summary = "weight-only INT4 for MatMuls (MatMulNBits; RTN, HQQ or GPTQ), block-wise scales"
    bits = 4


@register_pass
class Int8Weight(_WeightOnly):
    name = "int8-weight"
    summary = "weight-only INT8 for MatMuls (MatMulNBits; RTN or GPTQ), block-wise scales"
    bits = 8

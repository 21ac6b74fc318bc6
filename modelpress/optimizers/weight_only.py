"""Weight-only INT4 / INT8 for MatMuls (transformers, LLMs) with ONNX Runtime's MatMulNBits quantizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.io import captured_output
from modelpress.optimizers.base import Pass, PassConfig, PassResult


@dataclass
class WeightOnlyConfig(PassConfig):
    block_size: int = 32
    symmetric: bool = True
    algorithm: Literal["rtn", "hqq", "gptq"] = "rtn"  # gptq needs calibration data; hqq is 4-bit only
    accuracy_level: int = 0  # MatMulNBits compute type: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8
    max_calib_samples: int = 64
    # Gather too: embedding tables become GatherBlockQuantized (RTN only); for LLMs with tied embeddings the
    # table is most of what is left in FP32 after the MatMuls
    op_types: list[str] = field(default_factory=lambda: ["MatMul"])

    def validate(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ModelpressError("weight-only: block_size must be a power of two >= 16")
        bad = [o for o in self.op_types if o not in ("MatMul", "Gather")]
        if bad or not self.op_types:
            raise ModelpressError(f"weight-only: op_types must be MatMul and/or Gather, got {self.op_types}")
        if "Gather" in self.op_types and self.algorithm != "rtn":
            raise ModelpressError("weight-only: quantizing Gather needs algorithm=rtn")


class _WeightOnly(Pass):
    bits: int
    config_cls = WeightOnlyConfig
    quantizes = True

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """External data in, external data out (`OUT.onnx.data`). Memory: ~1.5x the model (measured at 2.4 GB):
        MatMulNBitsQuantizer edits a loaded ModelProto (the model once, plus the packed weights and one tensor's
        temporaries)."""
        import onnx
        from onnxruntime.quantization import matmul_nbits_quantizer as mnb

        from modelpress.calibration import Reader
        from modelpress.onnxutil import wants_external_data
        from modelpress.optimizers.ort_quant import check_quantized

        c: WeightOnlyConfig = self.config  # type: ignore[assignment]
        if c.algorithm in ("gptq", "hqq"):  # onnxruntime runs both on PyTorch
            from modelpress._deps import require

            require("torch", f"{self.name} algorithm={c.algorithm}")
        if c.algorithm == "gptq":
            calib, _ = self.calibration(model_in, calib)
            algo = mnb.GPTQWeightOnlyQuantConfig(Reader(calib.take(c.max_calib_samples), 1), block_size=c.block_size)
        elif c.algorithm == "hqq":
            if self.bits != 4:
                raise ModelpressError("weight-only: algorithm=hqq is 4-bit only")
            algo = mnb.HQQWeightOnlyQuantConfig(block_size=c.block_size, bits=self.bits)
        else:
            algo = mnb.DefaultWeightOnlyQuantConfig(block_size=c.block_size, is_symmetric=c.symmetric,
                                                    accuracy_level=c.accuracy_level or None, bits=self.bits,
                                                    op_types_to_quantize=tuple(c.op_types),
                                                    quant_axes=(("MatMul", 0), ("Gather", 1)))
        external = wants_external_data(model_in)
        with captured_output():
            q = mnb.MatMulNBitsQuantizer(onnx.load(str(model_in)), bits=self.bits, block_size=c.block_size,
                                         is_symmetric=c.symmetric, accuracy_level=c.accuracy_level or None, algo_config=algo)
            q.process()
            # past 2 GB one protobuf cannot hold it: OUT.onnx.data, as the input had external data
            q.model.save_model_to_file(str(model_out), use_external_data_format=external)
        check_quantized(model_out, self.name)
        return PassResult(self.name, c.to_dict(), [])

    def repairs(self, ctx, first):
        """Smaller blocks (finer scales, a little more size), then, for 4 bits, HQQ's optimized scales."""
        from modelpress.optimizers.repair import with_options

        c: WeightOnlyConfig = self.config  # type: ignore[assignment]
        block = c.block_size
        while block > 16 and ctx.has_budget():
            block //= 2
            att = ctx.attempt(with_options(self, block_size=block), f"block_size={block}")
            yield att
            if att.passed:
                return
        if self.bits == 4 and c.algorithm == "rtn" and c.op_types == ["MatMul"] and ctx.has_budget():
            yield ctx.attempt(with_options(self, algorithm="hqq"), "algorithm=hqq")


class Int4Weight(_WeightOnly):
    name = "int4-weight"
    primary_option = "block_size"
    summary = "weight-only INT4 for MatMuls (MatMulNBits; RTN, HQQ or GPTQ), block-wise scales"
    bits = 4


class Int8Weight(_WeightOnly):
    name = "int8-weight"
    primary_option = "block_size"
    summary = "weight-only INT8 for MatMuls (MatMulNBits; RTN or GPTQ), block-wise scales"
    bits = 8

"""Facts about ONNX ops that several parts of modelpress need, in one table (op facts belong to ops; technique
facts live on each Pass class, runtime facts on each Runner class).

- `quantized`: the op marks a graph that is already quantized (a quantizing pass refuses it; a pass that should
  have quantized something but emitted none of these wrote nothing useful);
- `integer_kernel`: the op runs an 8-bit integer kernel, fast only where the CPU has VNNI (the report says so when
  such an op dominates a slow variant);
- `mac`: the op does multiply-accumulates (what `graph_stats` counts as FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class OpFacts:
    quantized: bool = False
    integer_kernel: bool = False
    mac: bool = False


OPS: dict[str, OpFacts] = {
    "Conv": OpFacts(mac=True),
    "MatMul": OpFacts(mac=True),
    "Gemm": OpFacts(mac=True),
    "FusedConv": OpFacts(mac=True),
    "FusedMatMul": OpFacts(mac=True),
    "ConvInteger": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "MatMulInteger": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "QLinearConv": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "QLinearMatMul": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "DynamicQuantizeMatMul": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "QGemm": OpFacts(quantized=True, integer_kernel=True, mac=True),
    "MatMulNBits": OpFacts(quantized=True, mac=True),
    "QAttention": OpFacts(quantized=True, integer_kernel=True),
    "QuantizeLinear": OpFacts(quantized=True),
    "DequantizeLinear": OpFacts(quantized=True),
    "DynamicQuantizeLinear": OpFacts(quantized=True),
}


def has(op_type: str, fact: str) -> bool:
    return getattr(OPS.get(op_type, _NONE), fact)


def quantized_among(op_types: Iterable[str]) -> set[str]:
    return {op for op in op_types if has(op, "quantized")}


_NONE = OpFacts()

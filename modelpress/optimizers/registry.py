"""The technique registry: name -> "module:Class", each module imported only when its technique is used
(as Olive's registry does), so importing modelpress.optimizers imports no pass and no pass imports the
registry back. One registry for every input kind (ONNX passes and PyTorch passes alike). A new technique is
one module with a `Pass` subclass (modelpress.optimizers.base) and one line below."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelpress.optimizers.base import Pass
from modelpress.registry import LazyRegistry

PASSES: Mapping[str, type[Pass]] = LazyRegistry({
    "graph": "modelpress.optimizers.graph:GraphOptimize",
    "fp16": "modelpress.optimizers.fp16:Fp16",
    "dynamic-int8": "modelpress.optimizers.ort_quant:DynamicInt8",
    "static-int8": "modelpress.optimizers.ort_quant:StaticInt8",
    "int4-weight": "modelpress.optimizers.weight_only:Int4Weight",
    "int8-weight": "modelpress.optimizers.weight_only:Int8Weight",
    "inc-static": "modelpress.optimizers.inc:IncStatic",
    "inc-dynamic": "modelpress.optimizers.inc:IncDynamic",
    "inc-tune": "modelpress.optimizers.inc:IncTune",
    "trt-int8": "modelpress.optimizers.tensorrt:TrtInt8",
    # input_kind "torch": they change the PyTorch model, before export
    "prune-unstructured": "modelpress.optimizers.pytorch.pruning:UnstructuredPrune",
    "prune-nm": "modelpress.optimizers.pytorch.pruning:NMPrune",
    "prune-structured": "modelpress.optimizers.pytorch.pruning:StructuredPrune",
    "lowrank": "modelpress.optimizers.pytorch.lowrank:LowRank",
})
register_pass = PASSES.register  # type: ignore[attr-defined]


def build_pass(name: str, options: dict[str, Any] | None = None) -> Pass:
    return PASSES.build(name, options, "technique")  # type: ignore[attr-defined]

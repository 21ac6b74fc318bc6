"""Exporters: framework model -> ONNX, verified."""

from modelpress.exporters.torch_onnx import (
    EXPORTERS,
    ExportConfig,
    ExportResult,
    ParityResult,
    export_onnx,
    load_model_source,
    sidecar_path,
)

__all__ = ["EXPORTERS", "ExportConfig", "ExportResult", "ParityResult", "export_onnx", "load_model_source", "sidecar_path"]

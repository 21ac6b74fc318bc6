"""ONNX Runtime runners: CPU, and the CUDA / TensorRT execution providers on GPU machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from modelpress.errors import ModelpressError, first_line
from modelpress.onnxutil import check_onnx_file
from modelpress.runtimes.base import Runner, TensorSpec

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in arg.shape)
    return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)


class OrtRunner(Runner):
    """An `onnxruntime.InferenceSession` with a fixed provider list."""

    providers: ClassVar[list[Any]] = ["CPUExecutionProvider"]
    supports_op_profile = True

    def __init__(self, model_path: str | Path, options=None) -> None:
        super().__init__(model_path, options)
        self._session = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        first = cls.providers[0] if isinstance(cls.providers[0], str) else cls.providers[0][0]
        if first not in have:
            return False, f"{first} is not in this onnxruntime build (has: {', '.join(have)})"
        return True, ""

    def session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_threads
        so.inter_op_num_threads = self.options.inter_op_threads
        so.graph_optimization_level = graph_opt_level(self.options.graph_optimization)
        so.log_severity_level = 3  # errors only: warnings go to our report, not the terminal
        if self.options.profile_ops_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = self.options.profile_ops_prefix
        return so

    def load_impl(self) -> None:
        import onnxruntime as ort

        check_onnx_file(self.model_path)
        try:
            self._session = ort.InferenceSession(
                str(self.model_path), sess_options=self.session_options(), providers=self.providers
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/...: all mean "this model won't load"
            raise ModelpressError(f"onnxruntime cannot load {self.model_path}: {first_line(e)}") from e

    @property
    def session(self):
        if self._session is None:
            raise RuntimeError("runner not loaded; call load() first")
        return self._session

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, dict(feeds))
        except Exception as e:
            raise ModelpressError(f"inference failed on {self.model_path.name}: {first_line(e)}") from e
        return {o.name: v for o, v in zip(self.session.get_outputs(), outs)}

    def end_profiling(self) -> str | None:
        """Stop the per-op trace and return its JSON path (only with profile_ops_prefix)."""
        return self.session.end_profiling() if self.options.profile_ops_prefix else None

    def close_impl(self) -> None:
        self._session = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_inputs()]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_outputs()]


def graph_opt_level(name: str):
    import onnxruntime as ort

    return {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[name]


class OrtCpuRunner(OrtRunner):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU execution provider"
    providers = ["CPUExecutionProvider"]


class OrtCudaRunner(OrtRunner):
    name = "ort-cuda"
    fast_fp16 = True
    description = "ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]


class OrtTensorrtRunner(OrtRunner):
    name = "ort-tensorrt"
    fast_fp16 = True
    description = "ONNX Runtime, TensorRT execution provider with FP16 and an engine cache (needs onnxruntime-gpu + TensorRT)"
    providers = [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                       "trt_engine_cache_path": ".modelpress-trt-cache"}),
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]

"""OpenVINO as a runtime: it reads ONNX directly (no conversion step), compiled for its CPU plugin with the
profile's thread count, one stream and the latency hint, so an edge profile means the same thing here as on
ONNX Runtime. Install with `pip install 'modelpress[openvino]'`."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from modelpress.errors import ModelpressError, first_line
from modelpress.runtimes.base import Runner, TensorSpec


def _spec(port: Any) -> TensorSpec:
    dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), str(np.dtype(port.get_element_type().to_dtype())), dims)


class OpenVinoCpuRunner(Runner):
    name = "openvino"
    description = "OpenVINO, CPU plugin (reads ONNX directly; f32, latency hint, one stream, the profile's threads)"

    def __init__(self, model_path, options=None) -> None:
        super().__init__(model_path, options)
        self._compiled = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False, "openvino is not installed (pip install 'modelpress[openvino]')"
        return True, ""

    def config(self) -> dict[str, Any]:
        """The CPU plugin's properties for these options (intra-op threads 0 = the plugin's default)."""
        # f32 precision: on CPUs with AVX512-BF16/AMX the plugin would otherwise run an FP32 model in bfloat16,
        # which is a different artifact than the one measured for accuracy
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        if self.options.intra_op_threads:
            cfg["INFERENCE_NUM_THREADS"] = self.options.intra_op_threads
        return cfg

    def load_impl(self) -> None:
        import openvino as ov

        from modelpress.onnxutil import check_onnx_file

        check_onnx_file(self.model_path)
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(str(self.model_path)), "CPU", self.config())
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for every unsupported model
            raise ModelpressError(f"openvino cannot load {self.model_path}: {first_line(e)}") from e

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self._compiled(dict(feeds))
        except Exception as e:
            raise ModelpressError(f"inference failed on {self.model_path.name}: {first_line(e)}") from e
        return {port.get_any_name(): np.asarray(v) for port, v in res.items()}

    def close_impl(self) -> None:
        self._compiled = None

    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(p) for p in self._require().inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(p) for p in self._require().outputs]

    def _require(self):
        if self._compiled is None:
            raise RuntimeError("runner not loaded; call load() first")
        return self._compiled

"""OpenVINO as a runtime: it reads ONNX directly (no conversion step), compiled for its CPU plugin with the
profile's thread count, one stream and the latency hint, so an edge profile means the same thing here as on
ONNX Runtime. Install with `pip install 'modelpress[openvino]'`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal, Mapping

import numpy as np

from modelpress.errors import ModelpressError, first_line
from modelpress.runtimes.base import Runner, RunnerOptions, TensorSpec


@dataclass
class OpenVinoOptions(RunnerOptions):
    """The CPU plugin's knobs (recipe: `profile: {runner: openvino, runtime_options: {...}}`).

    `inference_precision` f32 by default: on CPUs with AVX512-BF16/AMX the plugin would otherwise run an FP32
    model in bfloat16, which is a different artifact than the one measured for accuracy."""

    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    num_streams: int = 1
    inference_precision: Literal["f32", "bf16", "f16"] = "f32"


def _spec(port: Any) -> TensorSpec:
    dims = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), str(np.dtype(port.get_element_type().to_dtype())), dims)


class OpenVinoCpuRunner(Runner):
    name = "openvino"
    description = "OpenVINO, CPU plugin (reads ONNX directly; f32, latency hint, one stream, the profile's threads)"
    options_cls = OpenVinoOptions
    package = "openvino"
    supports_op_profile = True  # the plugin's performance counters (PERF_COUNT)

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

    def config(self, perf_count: bool = False) -> dict[str, Any]:
        """The CPU plugin's properties for these options (intra-op threads 0 = the plugin's default)."""
        o = self.options
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": o.performance_hint, "NUM_STREAMS": o.num_streams,
                               "INFERENCE_PRECISION_HINT": o.inference_precision}
        if o.intra_op_threads:
            cfg["INFERENCE_NUM_THREADS"] = o.intra_op_threads
        if perf_count:
            cfg["PERF_COUNT"] = True
        return cfg

    def _compile(self, perf_count: bool = False):
        import openvino as ov

        try:
            core = ov.Core()
            return core.compile_model(core.read_model(str(self.model_path)), "CPU", self.config(perf_count))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for every unsupported model
            raise ModelpressError(f"openvino cannot load {self.model_path}: {first_line(e)}") from e

    def load_impl(self) -> None:
        from modelpress.onnxutil import check_onnx_file

        check_onnx_file(self.model_path)
        self._compiled = self._compile()

    def op_times_impl(self, feeds: list[Mapping[str, np.ndarray]], iterations: int) -> dict[str, float]:
        """Microseconds per layer type from the plugin's performance counters, on a second compiled model (the
        counters slow the timed one). Layers the plugin fused away report no time and are left out."""
        req = self._compile(perf_count=True).create_infer_request()
        totals: dict[str, float] = defaultdict(float)
        for i in range(iterations):
            req.infer(dict(feeds[i % len(feeds)]))
            for info in req.profiling_info:
                us = info.real_time.total_seconds() * 1e6
                if us > 0:
                    totals[info.node_type] += us
        return dict(totals)

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

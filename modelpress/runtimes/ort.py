"""ONNX Runtime runners: CPU, and the CUDA / TensorRT execution providers on GPU machines."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping

import numpy as np

from modelpress.errors import ModelpressError, first_line
from modelpress.onnxutil import check_onnx_file
from modelpress.runtimes.base import Runner, RunnerOptions, TensorSpec

ORT_DTYPES = {
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
    return TensorSpec(arg.name, ORT_DTYPES.get(arg.type, arg.type), shape)


@dataclass
class OrtOptions(RunnerOptions):
    """ONNX Runtime's own knobs (recipe: `profile: {runtime_options: {graph_optimization: basic}}`)."""

    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


@dataclass
class OrtGpuOptions(OrtOptions):
    device_id: int = 0


@dataclass
class OrtTensorrtOptions(OrtGpuOptions):
    fp16: bool = True
    int8: bool = False
    int8_calibration_table: str | None = None  # a table written by `modelpress calibrate --format tensorrt`
    engine_cache_dir: str = ".modelpress-trt-cache"
    timing_cache: bool = True


class OrtRunner(Runner):
    """An `onnxruntime.InferenceSession`; the provider list comes from the options (`providers()`)."""

    options_cls = OrtOptions
    package = "onnxruntime"
    supports_op_profile = True
    provider_names: ClassVar[tuple[str, ...]] = ("CPUExecutionProvider",)

    def __init__(self, model_path: str | Path, options=None) -> None:
        super().__init__(model_path, options)
        self._session = None

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if cls.provider_names[0] not in have:
            return False, f"{cls.provider_names[0]} is not in this onnxruntime build (has: {', '.join(have)})"
        return True, ""

    def providers(self) -> list[Any]:
        """The providers with their options, in priority order."""
        return list(self.provider_names)

    def session_options(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_threads
        so.inter_op_num_threads = self.options.inter_op_threads
        so.graph_optimization_level = graph_opt_level(self.options.graph_optimization)
        so.log_severity_level = 3  # errors only: warnings go to our report, not the terminal
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def _new_session(self, profile_prefix: str | None = None):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(self.model_path), sess_options=self.session_options(profile_prefix),
                                        providers=self.providers())
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/...: all mean "this model won't load"
            raise ModelpressError(f"onnxruntime cannot load {self.model_path}: {first_line(e)}") from e

    def load_impl(self) -> None:
        check_onnx_file(self.model_path)
        self._session = self._new_session()

    def _kernel_events(self, feeds: list[Mapping[str, np.ndarray]], iterations: int) -> list[dict[str, Any]]:
        """The kernel events of ONNX Runtime's own profiler, from a second session (profiling slows the timed one)."""
        with tempfile.TemporaryDirectory(prefix="modelpress-ops-") as tmp:
            sess = self._new_session(os.path.join(tmp, "ops"))
            for i in range(iterations):
                sess.run(None, dict(feeds[i % len(feeds)]))
            with open(sess.end_profiling()) as f:
                return [ev for ev in json.load(f)
                        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time")]

    def op_times_impl(self, feeds: list[Mapping[str, np.ndarray]], iterations: int) -> dict[str, float]:
        """Microseconds per op type."""
        totals: dict[str, float] = defaultdict(float)
        for ev in self._kernel_events(feeds, iterations):
            totals[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)
        return dict(totals)

    def placement(self, feeds: list[Mapping[str, np.ndarray]]) -> dict[str, list[str]]:
        """Which execution provider ran each node (provider -> node names), from one profiled call: silent
        fallback from TensorRT to CUDA or CPU is the first thing users of those providers trip over. Nodes a
        provider fused (TensorRT subgraphs, fused kernels) appear under the fused node's name."""
        where: dict[str, set[str]] = defaultdict(set)
        for ev in self._kernel_events(feeds, 1):
            args = ev.get("args", {})
            where[args.get("provider", "?")].add(ev["name"][: -len("_kernel_time")])
        return {p: sorted(n) for p, n in sorted(where.items())}

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


class OrtCudaRunner(OrtRunner):
    name = "ort-cuda"
    fast_fp16 = True
    description = "ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)"
    options_cls = OrtGpuOptions
    provider_names = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def providers(self) -> list[Any]:
        return [("CUDAExecutionProvider", {"device_id": self.options.device_id}), "CPUExecutionProvider"]


class OrtTensorrtRunner(OrtRunner):
    name = "ort-tensorrt"
    fast_fp16 = True
    description = "ONNX Runtime, TensorRT execution provider with FP16 and an engine cache (needs onnxruntime-gpu + TensorRT)"
    options_cls = OrtTensorrtOptions
    provider_names = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def providers(self) -> list[Any]:
        """TensorRT EP options as onnxruntime documents them (trt_* keys), CUDA then CPU for what TensorRT
        does not take."""
        o = self.options
        trt: dict[str, Any] = {"device_id": o.device_id, "trt_fp16_enable": o.fp16, "trt_int8_enable": o.int8,
                               "trt_engine_cache_enable": True, "trt_engine_cache_path": o.engine_cache_dir,
                               "trt_timing_cache_enable": o.timing_cache}
        if o.int8_calibration_table:
            trt["trt_int8_calibration_table_name"] = o.int8_calibration_table
        return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {"device_id": o.device_id}),
                "CPUExecutionProvider"]
